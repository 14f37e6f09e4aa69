//! The tracing integration's cost is bounded by the line limit, not by what it is handed: a
//! field of any size, a writer fed many lines at once, a line that never ends.

use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use phobos_xlog::format::MAX_LINE_LEN;
use phobos_xlog::XlogLayer;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::prelude::*;

mod common;
use common::{decoded, open};

/// A value whose `Debug` writes up to 256 MiB, counting what the formatter accepted.
struct Huge<'a>(&'a AtomicUsize);

impl fmt::Debug for Huge<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let chunk = "0123456789abcdef".repeat(64);
        for _ in 0..(256 << 20) / chunk.len() {
            f.write_str(&chunk)?;
            self.0.fetch_add(chunk.len(), Ordering::Relaxed);
        }
        Ok(())
    }
}

#[test]
fn a_huge_field_is_formatted_only_up_to_the_line_limit() {
    let dir = tempfile::tempdir().unwrap();
    let guard = open(dir.path());
    let accepted = AtomicUsize::new(0);
    let sub = tracing_subscriber::registry().with(XlogLayer::new(guard.xlog()));
    tracing::subscriber::with_default(sub, || {
        tracing::info!(big = ?Huge(&accepted), "huge");
        tracing::info!("after");
    });
    drop(guard);
    let accepted = accepted.load(Ordering::Relaxed);
    // Before: all 256 MiB were formatted into a per-thread buffer that kept that size.
    assert!(
        accepted <= 2 * MAX_LINE_LEN,
        "{accepted} bytes formatted for a line cut at {MAX_LINE_LEN}"
    );
    let text = decoded(dir.path());
    let mut lines = text.lines();
    let first = lines.next().unwrap();
    assert_eq!(first.len(), MAX_LINE_LEN - 1, "cut at the line limit");
    assert!(first.contains("][huge big=0123456789abcdef0123"), "{first}");
    assert!(lines.next().unwrap().ends_with("][after"));
}

#[test]
fn one_write_of_two_million_lines_logs_or_counts_each_line() {
    let dir = tempfile::tempdir().unwrap();
    let guard = open(dir.path());
    let xlog = guard.xlog();
    let lines = 2_000_000usize;
    let data = b"abc\n".repeat(lines);
    let (done, finished) = mpsc::channel();
    let writer = std::thread::spawn(move || {
        let mut w = xlog.make_writer();
        w.write_all(&data).unwrap();
        drop(w);
        done.send(xlog.dropped_lines()).unwrap();
    });
    // Before: every line shifted the rest of the buffer down, ~8 TB of copying (hours). The
    // work is pinned by `layer::tests::the_writer_copies_only_unfinished_lines`; the bound
    // here only keeps a regression from hanging the suite.
    let dropped = finished
        .recv_timeout(Duration::from_secs(600))
        .expect("2 million lines written (a hang guard, not a timing)");
    writer.join().unwrap();
    drop(guard);
    let text = decoded(dir.path());
    let logged = text.lines().filter(|l| *l == "abc").count();
    assert_eq!(
        logged as u64 + dropped,
        lines as u64,
        "every line logged or counted as dropped"
    );
}

#[test]
fn a_line_that_never_ends_is_kept_only_up_to_the_line_limit() {
    let dir = tempfile::tempdir().unwrap();
    let guard = open(dir.path());
    let mut w = guard.xlog().make_writer();
    let chunk = vec![b'x'; 1 << 20];
    for _ in 0..64 {
        w.write_all(&chunk).unwrap();
    }
    w.write_all(b"\nnext\n").unwrap();
    drop(w);
    drop(guard);
    let text = decoded(dir.path());
    let mut lines = text.lines();
    let first = lines.next().unwrap();
    assert_eq!(first.len(), MAX_LINE_LEN - 1);
    assert!(first.bytes().all(|b| b == b'x'));
    assert_eq!(lines.next(), Some("next"));
}
