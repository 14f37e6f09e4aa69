//! Whole-writer tests (with the toy cipher and the minimal test decoder).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use phobos_plugin_api::cipher::{
    BlockDecryptor, BlockEncryptor, CipherError, CipherKind, LogCipher, HEADER_KEY_LEN,
};

use crate::testutil::{clock, decode_file, quiet_logger, toy, toy_if, ToyCipher};
use crate::{Clock, Compression, Level, Mode, Overflow, Record, WallTime, Xlog};

fn xlog_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "xlog"))
        .collect();
    v.sort();
    v
}

fn text_of(dir: &Path) -> String {
    let mut all = Vec::new();
    for f in xlog_files(dir) {
        all.extend_from_slice(&decode_file(&fs::read(f).unwrap()));
    }
    String::from_utf8(all).unwrap()
}

fn lines_of(text: &str) -> Vec<&str> {
    text.lines().filter(|l| l.starts_with("[I]")).collect()
}

#[test]
fn every_mode_writes_decodable_mars_lines() {
    for (mode, durability) in [
        (Mode::Async, crate::Durability::Durable),
        (Mode::Async, crate::Durability::Buffered),
        (Mode::Sync, crate::Durability::Durable),
    ] {
        for c in [Compression::Zlib, Compression::Zstd] {
            for keyed in [false, true] {
                let dir = tempfile::tempdir().unwrap();
                let b = toy_if(
                    Xlog::builder()
                        .log_dir(dir.path())
                        .name_prefix("t")
                        .mode(mode)
                        .durability(durability)
                        .compression(c)
                        .clock(clock()),
                    keyed,
                );
                let g = b.build().unwrap();
                for i in 0..2000 {
                    if i == 1000 {
                        g.flush().unwrap();
                    }
                    let msg = format!("message number {i} with some payload {}", i * 31);
                    g.log(&Record {
                        tag: "net",
                        file: "src/net/conn.rs",
                        line: 42,
                        func: "conn::send",
                        ..Record::new(Level::Info, msg.as_bytes())
                    });
                }
                drop(g);
                let text = text_of(dir.path());
                let lines = lines_of(&text);
                assert_eq!(
                    lines.len(),
                    2000,
                    "{mode:?} {durability:?} {c:?} keyed={keyed}"
                );
                let pid = std::process::id();
                assert!(lines[7].starts_with(&format!("[I][2024-03-14 +8.0 10:26:53.137][{pid}, ")));
                assert!(lines[7].ends_with(
                    "][net][conn.rs:42, conn::send][message number 7 with some payload 217"
                ));
                assert!(text.starts_with("^^^^^^^^^^Mar 14 2024^^^10:26:53^^^^^^^^^^"));
                assert!(text.trim_end().ends_with("+0800 10:26:53]"));
                assert!(
                    text.contains("$$$$$$$$$$Mar 14 2024^^^10:26:53$$$$$$$$$$")
                        || text.contains("$$$$$$$$$$Mar 14 2024")
                );
                let name = dir.path().join("t_20240314.xlog");
                assert!(name.exists());
                let mmap = fs::read(dir.path().join("t.mmap3")).unwrap();
                assert!(
                    mmap.iter().all(|&b| b == 0),
                    "clean close zeroes the buffer"
                );
            }
        }
    }
}

#[test]
fn keyed_sync_mode_writes_no_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let g = Xlog::builder()
        .log_dir(dir.path())
        .name_prefix("s")
        .mode(Mode::Sync)
        .cipher(toy())
        .clock(clock())
        .build()
        .unwrap();
    g.log_message(Level::Warn, "tag", b"SECRET-PAYLOAD-0123456789");
    let raw = fs::read(dir.path().join("s_20240314.xlog")).unwrap();
    assert!(!raw.windows(14).any(|w| w == b"SECRET-PAYLOAD"));
    drop(g);
    assert!(text_of(dir.path()).contains("SECRET-PAYLOAD-0123456789"));
}

#[test]
fn unclean_stop_is_recovered_with_tips_on_the_next_open() {
    let dir = tempfile::tempdir().unwrap();
    let g = Xlog::builder()
        .log_dir(dir.path())
        .name_prefix("c")
        .cipher(toy())
        .clock(clock())
        .build()
        .unwrap();
    for i in 0..100 {
        g.log_message(Level::Info, "x", format!("before crash {i}").as_bytes());
    }
    // Simulate a crash: copy the buffer file as it is now, then let the guard close.
    let staged = fs::read(dir.path().join("c.mmap3")).unwrap();
    std::mem::forget(g);
    let dir2 = tempfile::tempdir().unwrap();
    fs::write(dir2.path().join("c.mmap3"), &staged).unwrap();
    let g = Xlog::builder()
        .log_dir(dir2.path())
        .name_prefix("c")
        .cipher(toy())
        .clock(clock())
        .build()
        .unwrap();
    g.log_message(Level::Info, "x", b"after restart");
    drop(g);
    let text = text_of(dir2.path());
    let begin = text.find("~~~~~ begin of mmap ~~~~~\n").unwrap();
    let end = text.find("~~~~~ end of mmap ~~~~~[").unwrap();
    let recovered = &text[begin..end];
    let n = lines_of(recovered).len();
    assert_eq!(n, 100);
    assert!(recovered.contains("before crash 99\n"));
    assert!(text[end..].contains("after restart"));
}

#[test]
fn files_split_while_running_and_never_exceed_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let g = Xlog::builder()
        .log_dir(dir.path())
        .name_prefix("p")
        .max_file_size(8_000)
        .clock(clock())
        .build()
        .unwrap();
    for i in 0..3000 {
        g.log_message(
            Level::Info,
            "t",
            format!("line {i} {}", "abc".repeat(i % 40)).as_bytes(),
        );
        if i % 300 == 299 {
            g.flush().unwrap();
        }
    }
    drop(g);
    let files = xlog_files(dir.path());
    assert!(files.len() >= 3, "{files:?}");
    for f in &files {
        assert!(fs::metadata(f).unwrap().len() <= 8_000);
    }
    assert_eq!(lines_of(&text_of(dir.path())).len(), 3000);
}

#[test]
fn second_writer_on_the_same_buffer_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let g = Xlog::builder()
        .log_dir(dir.path())
        .name_prefix("d")
        .build()
        .unwrap();
    let e = Xlog::builder()
        .log_dir(dir.path())
        .name_prefix("d")
        .build()
        .unwrap_err();
    assert!(matches!(e, crate::BuildError::BufferInUse(_)), "{e}");
    drop(g);
}

#[test]
fn drop_policy_counts_and_reports_nothing_when_keeping_up() {
    let dir = tempfile::tempdir().unwrap();
    let g = Xlog::builder()
        .log_dir(dir.path())
        .name_prefix("o")
        .overflow(Overflow::Drop)
        .level(Level::Debug)
        .build()
        .unwrap();
    g.log_message(Level::Verbose, "t", b"filtered out");
    g.log_message(Level::Debug, "t", b"kept");
    g.flush().unwrap();
    assert_eq!(g.dropped_lines(), 0);
    drop(g);
    let t = text_of(dir.path());
    assert!(!t.contains("filtered out"));
    assert!(t.contains("kept"));
}

#[test]
fn closed_writer_drops_and_flush_errors() {
    let dir = tempfile::tempdir().unwrap();
    let g = Xlog::builder()
        .log_dir(dir.path())
        .name_prefix("z")
        .banners(false)
        .build()
        .unwrap();
    let h = g.xlog();
    drop(g);
    h.log_message(Level::Info, "t", b"late");
    assert_eq!(h.dropped_lines(), 1);
    assert!(h.flush().is_err());
}

#[test]
fn append_lines_logs_levels_and_raw_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let g = quiet_logger(dir.path(), "a");
    let input: &[u8] = b"[E]bad thing\nplain line\r\n\xff\xfebinary\nno newline at end";
    let n = crate::append_lines(&g, input, "cli").unwrap();
    assert_eq!(n, 4);
    drop(g);
    let raw = decode_file(&fs::read(dir.path().join("a_20240314.xlog")).unwrap());
    let lines: Vec<&[u8]> = raw
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(lines.len(), 4);
    assert!(lines[0].starts_with(b"[E][2024-03-14 +8.0 10:26:53.137]"));
    assert!(lines[0].ends_with(b"][cli][:0, ][bad thing"));
    assert!(lines[1].starts_with(b"[I]") && lines[1].ends_with(b"[plain line"));
    assert!(lines[2].ends_with(b"[\xff\xfebinary"));
    assert!(lines[3].ends_with(b"[no newline at end"));
}

#[test]
fn dropped_lines_are_reported_in_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let g = Xlog::builder()
        .log_dir(dir.path())
        .name_prefix("r")
        .banners(false)
        .build()
        .unwrap();
    g.simulate_dropped_lines(7);
    g.log_message(Level::Info, "t", b"after the drops");
    assert_eq!(g.dropped_lines(), 7);
    drop(g);
    let t = text_of(dir.path());
    let warn = t.lines().next().unwrap();
    assert!(warn.starts_with("[W]"), "{warn}");
    assert!(
        warn.ends_with("][xlog][:0, ][xlog dropped 7 lines: the writer fell behind"),
        "{warn}"
    );
    assert!(t.lines().nth(1).unwrap().ends_with("after the drops"));
}

#[test]
fn drop_policy_drops_instead_of_waiting_when_the_queue_is_full() {
    // Buffered mode with the compressor thread blocked behind the staging lock: the queue
    // fills up and further lines are dropped and counted, never blocking the caller. The
    // compressor may take one whole queue (up to its limit) before it blocks, so the lines
    // logged must exceed twice the limit for a drop to be certain.
    let dir = tempfile::tempdir().unwrap();
    let g = Xlog::builder()
        .log_dir(dir.path())
        .name_prefix("q")
        .banners(false)
        .durability(crate::Durability::Buffered)
        .overflow(Overflow::Drop)
        .build()
        .unwrap();
    let line = vec![b'x'; 1000];
    let dropped = g.with_staging_locked(|| {
        for _ in 0..2 * crate::writer::PENDING_MAX / line.len() + 100 {
            g.log_message(Level::Info, "t", &line);
        }
        g.dropped_lines()
    });
    assert!(
        dropped > 0,
        "the queue and one batch cannot hold twice the limit"
    );
    g.flush().unwrap();
    drop(g);
    let t = text_of(dir.path());
    assert!(
        t.contains(&format!("xlog dropped {dropped} lines")),
        "drop report missing"
    );
}

#[test]
fn cache_dir_holds_the_buffer_and_cached_days_then_moves_them() {
    let log = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let cfg = crate::XlogConfig {
        log_dir: log.path().into(),
        cache_dir: Some(cache.path().into()),
        name_prefix: "cd".into(),
        cache_days: 1,
        ..crate::XlogConfig::default()
    };
    let g = Xlog::builder()
        .config(cfg)
        .clock(clock())
        .banners(false)
        .build()
        .unwrap();
    assert!(cache.path().join("cd.mmap3").exists());
    assert!(!log.path().join("cd.mmap3").exists());
    g.log_message(Level::Info, "t", b"cached line");
    g.flush().unwrap();
    let name = "cd_20240314.xlog";
    let cached = crate::mmap::disk_space(cache.path()).is_some_and(|(_, _, a)| a >= 1 << 30);
    // With >= 1 GiB free the day's file goes to the cache dir first (Mars's rule).
    assert_eq!(cache.path().join(name).exists(), cached);
    assert_eq!(log.path().join(name).exists(), !cached);
    // Housekeeping moves cache files older than cache_days (the fixed clock is in 2024).
    let (_, moved) = g.run_housekeeping();
    assert_eq!(moved, 0, "the cached file is not older than cache_days");
    drop(g);
    if cached {
        assert!(text_of(cache.path()).contains("cached line"));
    } else {
        assert!(text_of(log.path()).contains("cached line"));
    }
}

#[test]
fn housekeeping_deletes_expired_logs() {
    let dir = tempfile::tempdir().unwrap();
    let old = fs::File::create(dir.path().join("x_20000101.xlog")).unwrap();
    old.set_modified(
        std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(946_684_800),
    )
    .unwrap();
    let g = Xlog::builder()
        .log_dir(dir.path())
        .name_prefix("x")
        .banners(false)
        .build()
        .unwrap();
    let (deleted, _) = g.run_housekeeping();
    assert_eq!(deleted, 1);
    assert!(!dir.path().join("x_20000101.xlog").exists());
    drop(g);
}

/// Runs `f` on another thread and returns its result, or panics if it has not returned after
/// a minute: a hang detector for tests whose failure mode is waiting forever, not a timing
/// threshold (each case finishes in milliseconds).
fn without_hanging<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(std::time::Duration::from_secs(60)) {
        Ok(v) => v,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!("{what} hung"),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => panic!("{what} panicked"),
    }
}

#[test]
fn a_flush_interval_too_large_for_the_clock_means_never() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    // As loaded from a JSON config (seconds).
    let cfg: crate::XlogConfig = serde_json::from_str(&format!(
        r#"{{"log_dir": {:?}, "name_prefix": "fi", "flush_interval": {}}}"#,
        path.display().to_string(),
        u64::MAX
    ))
    .unwrap();
    assert_eq!(cfg.flush_interval.as_secs(), u64::MAX);
    let text = without_hanging("logging with a huge flush interval", move || {
        let g = Xlog::builder()
            .config(cfg)
            .banners(false)
            .clock(clock())
            .build()
            .unwrap();
        g.log_message(Level::Info, "t", b"first");
        g.flush().unwrap();
        g.log_message(Level::Info, "t", b"second");
        assert_eq!(g.dropped_lines(), 0);
        drop(g);
        text_of(&path)
    });
    assert_eq!(lines_of(&text).len(), 2, "{text}");
}

/// A writer built from `b` that wrote and flushed the line "written before", then lost its
/// writer thread (the test hook makes it panic).
fn with_dead_writer(b: crate::XlogBuilder) -> crate::XlogGuard {
    let g = b.build().unwrap();
    g.log_message(Level::Info, "t", b"written before");
    g.flush().unwrap();
    g.panic_writer_thread();
    g
}

#[test]
fn a_dead_writer_thread_blocks_no_caller() {
    for durability in [crate::Durability::Durable, crate::Durability::Buffered] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_owned();
        let g = with_dead_writer(
            Xlog::builder()
                .log_dir(&path)
                .name_prefix("dw")
                .durability(durability)
                .banners(false)
                .clock(clock()),
        );
        let (flushed, dropped) = without_hanging("logging to a dead writer", move || {
            g.log_message(Level::Info, "t", b"staged, then the writer dies");
            let first = g.flush();
            // Fill both slots and more: lines are dropped, not waited for.
            let line = vec![b'y'; 4000];
            for _ in 0..200 {
                g.log_message(Level::Info, "t", &line);
            }
            let second = g.flush();
            let dropped = g.dropped_lines();
            drop(g);
            ((first, second), dropped)
        });
        assert!(
            matches!(flushed.1, Err(crate::FlushError::WriterDied)),
            "{durability:?}: {flushed:?}"
        );
        assert!(dropped > 0, "{durability:?}");
        // What the dead writer did not write stays in the buffer file for the next start.
        let g = Xlog::builder()
            .log_dir(&path)
            .name_prefix("dw")
            .banners(false)
            .clock(clock())
            .build()
            .unwrap();
        drop(g);
        let text = text_of(&path);
        assert_eq!(text.matches("written before").count(), 1, "{durability:?}");
        assert_eq!(
            text.matches("staged, then the writer dies").count(),
            1,
            "{durability:?}"
        );
    }
}

/// The counts of `xlog dropped N lines: the writer thread died` warnings in `text`, summed.
fn reported_writer_gone_drops(text: &str) -> u64 {
    text.lines()
        .filter_map(|l| l.split("xlog dropped ").nth(1))
        .filter_map(|l| l.strip_suffix(" lines: the writer thread died"))
        .map(|n| n.parse::<u64>().unwrap())
        .sum()
}

/// Lines dropped because the writer thread died reach the log although the dead thread is the
/// one that writes: the thread that drops one writes the warning straight to the log file (at
/// the 1st, 2nd, 4th, 8th… such drop, so logging on costs a few appends, not one a line), and
/// flush and close write what is left. Every dropped line is counted in the file exactly once,
/// with and without a key. (Before, the warning was only ever staged, in slots nobody wrote:
/// none reached the file.)
#[test]
fn lines_dropped_because_the_writer_thread_died_are_reported_in_the_log() {
    for durability in [crate::Durability::Durable, crate::Durability::Buffered] {
        for keyed in [false, true] {
            let what = format!("{durability:?}, keyed {keyed}");
            let dir = tempfile::tempdir().unwrap();
            // The writer of this folder, for the first start and the next.
            let builder = || {
                let b = Xlog::builder().log_dir(dir.path()).name_prefix("dr");
                toy_if(b.banners(false).clock(clock()), keyed)
            };
            let g = with_dead_writer(builder().durability(durability));
            let (g, dropped) = without_hanging("logging to a dead writer", move || {
                let line = vec![b'y'; 4000];
                for _ in 0..200 {
                    g.log_message(Level::Info, "t", &line);
                }
                // Buffered: the lines are staged (and dropped) by the compressor thread; the
                // flush waits for it. Durable: the logging thread itself reports.
                if durability == crate::Durability::Buffered {
                    let _ = g.flush();
                }
                let dropped = g.dropped_lines();
                (g, dropped)
            });
            assert!(dropped > 0, "{what}");
            let early = reported_writer_gone_drops(&text_of(dir.path()));
            assert!(early > 0, "{what}: reported before the close");
            for _ in 0..5 {
                g.log_message(Level::Info, "t", b"dropped after the flush");
            }
            let dropped = g.dropped_lines();
            without_hanging("closing a dead writer", move || drop(g));
            let text = text_of(dir.path());
            assert_eq!(reported_writer_gone_drops(&text), dropped, "{what}: {text}");
            // The next start appends what the dead writer left staged, and no warning twice.
            drop(builder().build().unwrap());
            let text = text_of(dir.path());
            assert_eq!(reported_writer_gone_drops(&text), dropped, "{what}: {text}");
            assert_eq!(text.matches("written before").count(), 1, "{what}");
            assert!(text.contains(&"y".repeat(4000)), "{what}: the staged lines");
        }
    }
}

/// With Mars's cipher, the warning written straight to the file after the writer thread died
/// is a Mars block that the real decoder reads with the private key, with no error line.
#[test]
fn the_dead_writer_warning_of_a_mars_keyed_writer_decodes_with_the_private_key() {
    let public = vectors_key("public_key");
    let cipher = phobos_cipher_mars::MarsCipher::from_public_key_hex(&public).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let g = with_dead_writer(
        Xlog::builder()
            .log_dir(dir.path())
            .name_prefix("dm")
            .banners(false)
            .cipher(Arc::new(cipher))
            .clock(clock()),
    );
    let dropped = without_hanging("logging to a dead writer", move || {
        let line = vec![b'y'; 4000];
        for _ in 0..200 {
            g.log_message(Level::Info, "t", &line);
        }
        let dropped = g.dropped_lines();
        drop(g);
        dropped
    });
    assert!(dropped > 0);
    let day = fs::read(dir.path().join("dm_20240314.xlog")).unwrap();
    let text = String::from_utf8(decode_with_the_vectors_key(&day)).unwrap();
    assert!(!text.contains("decode_log_file.py"), "{text}");
    assert_eq!(reported_writer_gone_drops(&text), dropped, "{text}");
}

#[test]
fn lines_after_the_day_file_is_renamed_or_deleted_go_to_a_new_file_at_its_path() {
    for deleted in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let g = quiet_logger(dir.path(), "mv");
        let day = dir.path().join("mv_20240314.xlog");
        g.log_message(Level::Info, "t", b"before the move");
        g.flush().unwrap();
        let moved = dir.path().join("uploaded.bin");
        if deleted {
            fs::remove_file(&day).unwrap();
        } else {
            fs::rename(&day, &moved).unwrap();
        }
        g.log_message(Level::Info, "t", b"after the move");
        g.flush().unwrap();
        g.log_message(Level::Info, "t", b"and later");
        drop(g);
        let now = String::from_utf8(decode_file(&fs::read(&day).unwrap())).unwrap();
        assert_eq!(lines_of(&now).len(), 2, "deleted={deleted}: {now}");
        assert!(now.contains("after the move") && now.contains("and later"));
        assert!(!now.contains("before the move"));
        if !deleted {
            let old = String::from_utf8(decode_file(&fs::read(&moved).unwrap())).unwrap();
            assert_eq!(lines_of(&old).len(), 1, "{old}");
        }
    }
}

/// Logs `blocks` flushed blocks of `n` lines, then `n` staged lines, and "crashes": returns
/// the buffer file and the day's log as they are then.
fn crash_with_staged_lines(prefix: &str, blocks: usize, n: usize) -> (Vec<u8>, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let g = quiet_logger(dir.path(), prefix);
    for b in 0..=blocks {
        for i in 0..n {
            g.log_message(Level::Info, "t", format!("block {b} line {i}").as_bytes());
        }
        if b < blocks {
            g.flush().unwrap();
        }
    }
    let staged = fs::read(dir.path().join(format!("{prefix}.mmap3"))).unwrap();
    let log = fs::read(dir.path().join(format!("{prefix}_20240314.xlog"))).unwrap();
    std::mem::forget(g);
    (staged, log)
}

/// Opens a writer on `staged` and `log` (a restart after the crash); returns its directory
/// and the day's log after it closed.
fn restart_after_crash(prefix: &str, staged: &[u8], log: &[u8]) -> (tempfile::TempDir, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join(format!("{prefix}.mmap3")), staged).unwrap();
    let day = dir.path().join(format!("{prefix}_20240314.xlog"));
    fs::write(&day, log).unwrap();
    let g = quiet_logger(dir.path(), prefix);
    drop(g);
    let after = fs::read(&day).unwrap();
    (dir, after)
}

/// Logs ten lines labelled `what` (`"<what> line <i>"`).
fn ten_lines(g: &Xlog, what: &str) {
    for i in 0..10 {
        g.log_message(Level::Info, "t", format!("{what} line {i}").as_bytes());
    }
}

/// A crash now, of the writer of `prefix` in `dir`: what its staging file and the day's log
/// hold is what the next start finds; each of the [`ten_lines`] of every label in `expected`
/// must be in the log once after it.
fn crash_keeps_each_line_once(dir: &Path, prefix: &str, expected: &[&str]) {
    let staged = fs::read(dir.join(format!("{prefix}.mmap3"))).expect("a staging file");
    let log = fs::read(dir.join(format!("{prefix}_20240314.xlog"))).unwrap();
    let (after, _) = restart_after_crash(prefix, &staged, &log);
    let text = text_of(after.path());
    for what in expected {
        for i in 0..10 {
            let line = format!("{what} line {i}\n");
            assert_eq!(text.matches(&line).count(), 1, "{line:?} in {text}");
        }
    }
}

/// A crash right after the next start appended the blocks it recovered, before it cleared
/// the staging file: the start after that finds them in the log (their intents say where)
/// and does not append them again. (Appended with no intent, they were appended twice.)
#[test]
fn recovered_blocks_are_appended_once_even_if_the_start_that_appended_them_crashed() {
    let running = tempfile::tempdir().unwrap();
    let g = quiet_logger(running.path(), "rc");
    ten_lines(&g, "staged");
    let staged = fs::read(running.path().join("rc.mmap3")).unwrap();
    let dir = recovery_crashed("rc", &staged);
    assert!(text_of(dir.path()).contains("staged line 0\n"), "appended");
    drop(quiet_logger(dir.path(), "rc"));
    let text = text_of(dir.path());
    for i in 0..10 {
        let line = format!("staged line {i}\n");
        assert_eq!(text.matches(&line).count(), 1, "{line:?} in {text}");
    }
    drop(g);
}

/// The real buffer file Mars left when it was killed, and the text of its block (the decoder
/// crate's copy of the shared test vectors, `06_crash_recovery`).
fn mars_crash_vector() -> (Vec<u8>, Vec<u8>) {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../xlog-decode/tests/data");
    let read = |rel: &str| fs::read(data.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    (
        read("06_crash_recovery/after_crash/crash.mmap3"),
        read("06_crash_recovery/expected_mmap3_block.log"),
    )
}

/// The key `name` (`public_key`, `private_key`) of the shared test vectors (`keys.txt`), in
/// hex.
fn vectors_key(name: &str) -> String {
    let keys = fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../xlog-decode/tests/data/keys.txt"),
    )
    .unwrap();
    let prefix = format!("{name} = ");
    let hex = keys.lines().find_map(|l| l.strip_prefix(prefix.as_str()));
    hex.unwrap_or_else(|| panic!("{name} in keys.txt"))
        .trim()
        .to_owned()
}

/// `bytes` decoded with the private key of the shared test vectors (`keys.txt`).
fn decode_with_the_vectors_key(bytes: &[u8]) -> Vec<u8> {
    let private = vectors_key("private_key");
    let cipher = phobos_cipher_mars::MarsCipher::from_private_key_hex(&private).unwrap();
    phobos_xlog_decode::Decoder::builder()
        .cipher(Arc::new(cipher))
        .build()
        .decode(bytes)
}

/// A start that recovers the buffer file `staged` (named after `prefix`) in a new folder and
/// crashes after appending its blocks, before clearing the buffer file (the test hook).
/// Returns the folder.
fn recovery_crashed(prefix: &str, staged: &[u8]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join(format!("{prefix}.mmap3")), staged).unwrap();
    crate::writer::CRASH_AFTER_RECOVERY.with(|c| c.set(true));
    let crashed = Xlog::builder()
        .log_dir(dir.path())
        .name_prefix(prefix)
        .banners(false)
        .clock(clock())
        .build();
    crate::writer::CRASH_AFTER_RECOVERY.with(|c| c.set(false));
    assert!(crashed.is_err(), "stopped after the recovery");
    dir
}

/// A `.mmap3` of Mars's layout (one block, no slot metadata) recovered by a start that
/// crashed at any point of its append: after the append, before clearing the buffer file
/// (the test hook), and, the log it left cut in place, before the block's first byte, inside
/// its header, inside its body, before its end byte and before the end tip. The start after
/// that finds the block in the log (or cuts off the part there) and each of the block's 60
/// lines is in the log once. (The Mars layout had nowhere to record the write intent: the
/// block was appended twice.) Slot 0 stays byte for byte what Mars left, for Mars's own
/// recovery to read.
#[test]
fn a_mars_buffer_file_is_recovered_once_whichever_point_the_start_recovering_it_crashed_at() {
    let (mars, expected) = mars_crash_vector();
    let lines: Vec<&[u8]> = expected.split_inclusive(|&b| b == b'\n').collect();
    assert_eq!(lines.len(), 60);
    let dir = recovery_crashed("crash", &mars);
    let staged = fs::read(dir.path().join("crash.mmap3")).unwrap();
    assert_eq!(&staged[..mars.len()], &mars[..], "slot 0 as Mars left it");
    // A crash once the file had grown, before the intent was recorded.
    let mut grown = mars.clone();
    grown.resize(crate::staging::FILE_LEN, 0);
    let (_grown_dir, after) = restart_after_crash("crash", &grown, &[]);
    let text = decode_with_the_vectors_key(&after);
    assert!(lines.iter().all(|l| count_in(&text, l) == 1), "grown");
    // A file cut short (Mars's, or ours in slot 1) is not grown: zeros would join a body.
    for len in [100_000, crate::staging::SLOT_LEN + 1000] {
        let mut cut = mars.clone();
        cut.resize(len, 0);
        let short = recovery_crashed("crash", &cut);
        let left = fs::metadata(short.path().join("crash.mmap3"))
            .unwrap()
            .len();
        assert_eq!(left, len as u64);
    }
    let log = fs::read(dir.path().join("crash_20240314.xlog")).unwrap();
    let h = crate::block::BlockHeader::parse(&mars).unwrap();
    let body = &mars[crate::block::HEADER_LEN..][..h.len as usize];
    let at = log
        .windows(body.len())
        .position(|w| w == body)
        .expect("the block appended")
        - crate::block::HEADER_LEN;
    let end = at + crate::block::HEADER_LEN + body.len() + 1;
    for cut in [at, at + 1, at + 40, at + 1000, end - 1, end, log.len()] {
        // In place: the write intent names the log file by its inode too.
        let dir = recovery_crashed("crash", &mars);
        let day = dir.path().join("crash_20240314.xlog");
        assert_eq!(fs::read(&day).unwrap(), log, "the same crash");
        fs::OpenOptions::new()
            .write(true)
            .open(&day)
            .unwrap()
            .set_len(cut as u64)
            .unwrap();
        drop(quiet_logger(dir.path(), "crash"));
        let text = decode_with_the_vectors_key(&fs::read(&day).unwrap());
        for l in &lines {
            assert_eq!(
                count_in(&text, l),
                1,
                "cut at {cut} ({at}..{end}): {}",
                String::from_utf8_lossy(l)
            );
        }
    }
}

#[test]
fn a_staging_file_removed_with_its_folder_is_made_anew_and_lines_staged_later_survive_a_crash() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("logs");
    fs::create_dir(&dir).unwrap();
    let g = quiet_logger(&dir, "rm");
    g.log_message(Level::Info, "t", b"before the removal");
    g.flush().unwrap();
    // An app clearing its cache folder while it logs.
    fs::remove_dir_all(&dir).unwrap();
    let lines = |what: &str| ten_lines(&g, what);
    let crash = |expected: &[&str]| crash_keeps_each_line_once(&dir, "rm", expected);
    // The first block written after the removal makes the file anew and moves the free slot,
    // which the next lines are staged into.
    lines("written");
    g.flush().unwrap();
    lines("staged first");
    crash(&["written", "staged first"]);
    // The slot of the first block moved once that block was written: lines staged there
    // survive too.
    g.flush().unwrap();
    lines("staged second");
    crash(&["written", "staged first", "staged second"]);
    std::mem::forget(g);
}

#[test]
fn a_writer_in_heap_memory_makes_the_staging_file_once_it_can_and_later_lines_survive_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hb.mmap3");
    // A directory where the staging file belongs: the writer starts in heap memory.
    fs::create_dir(&path).unwrap();
    let g = quiet_logger(dir.path(), "hb");
    assert!(!g.is_mapped());
    let lines = |what: &str| ten_lines(&g, what);
    // A block written while the path is still blocked: no file can be made yet.
    lines("in heap");
    g.flush().unwrap();
    assert!(!g.is_mapped() && path.is_dir());
    fs::remove_dir(&path).unwrap();
    // The next written block makes the file and moves the slots into it.
    lines("written");
    g.flush().unwrap();
    assert!(g.is_mapped(), "the writer has its staging file");
    lines("staged first");
    let crash = |expected: &[&str]| crash_keeps_each_line_once(dir.path(), "hb", expected);
    crash(&["in heap", "written", "staged first"]);
    // The slot of the block written when the file was made moved too.
    g.flush().unwrap();
    lines("staged second");
    crash(&["in heap", "written", "staged first", "staged second"]);
    std::mem::forget(g);
}

/// The fixed test clock, which holds the writer thread inside `now` while `hold` is set,
/// until `release` is sent.
#[derive(Debug)]
struct HoldingClock {
    hold: AtomicBool,
    held: Mutex<std::sync::mpsc::Sender<()>>,
    release: Mutex<std::sync::mpsc::Receiver<()>>,
}

impl Clock for HoldingClock {
    fn now(&self) -> WallTime {
        if std::thread::current().name() == Some("xlog-writer")
            && self.hold.swap(false, Ordering::SeqCst)
        {
            let _ = self.held.lock().unwrap().send(());
            let _ = self.release.lock().unwrap().recv();
        }
        clock().now()
    }
}

/// A logger of prefix `prefix` in `<root>/logs` whose clock is a [`HoldingClock`]: the root,
/// the logger, the clock, where the clock says the writer thread is held, and where to
/// release it.
fn holding_logger(prefix: &str) -> HoldingLogger {
    holding_logger_with(prefix, |b| b)
}

/// What [`holding_logger`] returns.
type HoldingLogger = (
    tempfile::TempDir,
    crate::XlogGuard,
    Arc<HoldingClock>,
    std::sync::mpsc::Receiver<()>,
    std::sync::mpsc::Sender<()>,
);

/// [`holding_logger`] with more settings made by `configure`.
fn holding_logger_with(
    prefix: &str,
    configure: impl FnOnce(crate::XlogBuilder) -> crate::XlogBuilder,
) -> HoldingLogger {
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel();
    let holding = Arc::new(HoldingClock {
        hold: AtomicBool::new(false),
        held: Mutex::new(held_tx),
        release: Mutex::new(release_rx),
    });
    let root = tempfile::tempdir().unwrap();
    let b = Xlog::builder()
        .log_dir(root.path().join("logs"))
        .name_prefix(prefix)
        .banners(false)
        .clock(holding.clone());
    let g = configure(b).build().unwrap();
    (root, g, holding, held_rx, release_tx)
}

#[test]
fn a_block_being_staged_when_the_staging_file_is_made_anew_moves_to_it_whole() {
    let (root, g, holding, held_rx, release_tx) = holding_logger("st");
    let dir = root.path().join("logs");
    g.log_message(Level::Info, "t", b"first block");
    fs::remove_dir_all(&dir).unwrap();
    // The writer thread stops at the start of the first block's job, before it makes the
    // file anew; meanwhile lines start the next block, in the old file's mapping.
    holding.hold.store(true, Ordering::SeqCst);
    let flusher = {
        let g = g.clone();
        std::thread::spawn(move || g.flush())
    };
    held_rx.recv().unwrap();
    for i in 0..10 {
        g.log_message(Level::Info, "t", format!("started line {i}").as_bytes());
    }
    release_tx.send(()).unwrap();
    flusher.join().unwrap().unwrap();
    // A crash now: the block being staged moved to the new file with its lines.
    let staged = fs::read(dir.join("st.mmap3")).expect("a staging file made anew");
    let log = fs::read(dir.join("st_20240314.xlog")).unwrap();
    let (after, _) = restart_after_crash("st", &staged, &log);
    let text = text_of(after.path());
    for i in 0..10 {
        let line = format!("started line {i}\n");
        assert_eq!(text.matches(&line).count(), 1, "{line:?} in {text}");
    }
    assert!(text.contains("first block\n"), "{text}");
    // And the run goes on from the new file: every line reaches the log once.
    drop(g);
    let text = text_of(&dir);
    for i in 0..10 {
        let line = format!("started line {i}\n");
        assert_eq!(text.matches(&line).count(), 1, "{line:?} in {text}");
    }
}

/// The lines a warning reports once its block failed are reported again, and only those:
/// a later block's warning, staged while the failed one was being written, accounts for its
/// own. The log's warnings add up to the lines dropped. (The failure made the next warning
/// report everything since the last block written, the later block's lines a second time:
/// 8 lines dropped read as 11.)
#[test]
fn warnings_after_a_failed_block_add_up_to_the_lines_dropped() {
    let (root, g, holding, held_rx, release_tx) = holding_logger("oc");
    let dir = root.path().join("logs");
    let day = dir.join("oc_20240314.xlog");
    g.simulate_dropped_lines(5);
    g.log_message(Level::Info, "t", b"a");
    // The first block (with "dropped 5") fails: a folder stands where its log file goes.
    fs::create_dir(&day).unwrap();
    holding.hold.store(true, Ordering::SeqCst);
    let flusher = {
        let g = g.clone();
        std::thread::spawn(move || g.flush())
    };
    held_rx.recv().unwrap();
    // Meanwhile 3 more are dropped: "dropped 3" is staged in the next block.
    g.simulate_dropped_lines(3);
    g.log_message(Level::Info, "t", b"b");
    release_tx.send(()).unwrap();
    flusher.join().unwrap().unwrap();
    fs::remove_dir(&day).unwrap();
    g.log_message(Level::Info, "t", b"c");
    g.flush().unwrap();
    let dropped = g.dropped_lines();
    assert_eq!(dropped, 8);
    drop(g);
    let text = text_of(&dir);
    let reported: u64 = text
        .lines()
        .filter_map(|l| l.split("xlog dropped ").nth(1))
        .filter_map(|r| r.split(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(reported, dropped, "{text}");
    assert!(text.contains("b\n") && text.contains("c\n"), "{text}");
}

/// A Fatal line logged while the writer thread holds the other slot (no spare to seal its
/// block with) is written as soon as that slot comes back, without a flush. (It waited in
/// the staging file until the block filled, a flush, or the flush interval.)
#[test]
fn a_fatal_line_logged_while_no_slot_is_spare_is_written_when_one_comes_back() {
    let (root, g, holding, held_rx, release_tx) = holding_logger("fa");
    let dir = root.path().join("logs");
    g.log_message(Level::Info, "t", b"first block");
    // The writer thread stops at the start of the first block's job: it holds that slot.
    holding.hold.store(true, Ordering::SeqCst);
    let flusher = {
        let g = g.clone();
        std::thread::spawn(move || g.flush())
    };
    held_rx.recv().unwrap();
    g.log_message(Level::Fatal, "t", b"the fatal line");
    release_tx.send(()).unwrap();
    flusher.join().unwrap().unwrap();
    // The flush returned once the writer gave the first block's slot back; by then the
    // Fatal line's block was sealed. Wait for it to be written, without sealing anything.
    assert_eq!(
        g.wait_for_sealed_blocks(),
        0,
        "the Fatal line's block is open"
    );
    let text = text_of(&dir);
    assert!(text.contains("the fatal line\n"), "{text}");
    drop(g);
}

#[test]
fn lines_logged_by_several_threads_while_the_folder_is_taken_away_again_and_again_arrive_once() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("logs");
    let g = quiet_logger(&dir, "mv");
    let stop = Arc::new(AtomicBool::new(false));
    // Each thread logs until told to stop (at most 4,000 lines, so that the test's time stays
    // bounded), and says how many lines it logged.
    let loggers: Vec<_> = (0..4)
        .map(|t| {
            let (g, stop) = (g.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut i = 0;
                while (!stop.load(Ordering::SeqCst) || i < 100) && i < 4000 {
                    g.log_message(Level::Info, "t", format!("thread {t} line {i}").as_bytes());
                    i += 1;
                }
                i
            })
        })
        .collect();
    // The folder is moved away (its log files and staging file with it) over and over while
    // the threads log: each time the writer makes the folder, the log and the staging file
    // anew, and moves the slots while lines are being staged into them.
    let mut moved = Vec::new();
    for r in 0..30 {
        // A line of this thread's own, so that every flush writes a block (and the folder is
        // there again to be moved) however the logging threads are scheduled.
        g.log_message(Level::Info, "t", format!("main {r}").as_bytes());
        g.flush().unwrap();
        let to = root.path().join(format!("moved{r}"));
        fs::rename(&dir, &to).unwrap();
        moved.push(to);
    }
    stop.store(true, Ordering::SeqCst);
    let counts: Vec<usize> = loggers.into_iter().map(|l| l.join().unwrap()).collect();
    let write_failed = g.write_failed_lines();
    drop(g);
    // (The folder is not there again if nothing was written after the last move.)
    let mut text = if dir.exists() {
        text_of(&dir)
    } else {
        String::new()
    };
    for d in &moved {
        text.push_str(&text_of(d));
    }
    let mut seen = std::collections::HashMap::new();
    for line in lines_of(&text) {
        if let Some(at) = line.find("thread ") {
            *seen.entry(&line[at..]).or_insert(0) += 1;
        }
    }
    for (t, &n) in counts.iter().enumerate() {
        for i in 0..n {
            let line = format!("thread {t} line {i}");
            assert_eq!(seen.get(line.as_str()), Some(&1), "{line:?}");
        }
    }
    for r in 0..30 {
        assert_eq!(text.matches(&format!("main {r}\n")).count(), 1, "main {r}");
    }
    assert_eq!(seen.len(), counts.iter().sum::<usize>());
    assert_eq!(write_failed, 0, "lines lost to failed writes");
}

#[test]
fn a_stale_intent_whose_flag_byte_flips_hides_no_staged_line() {
    use crate::staging::{META_BASE, META_LEN};
    let (mut staged, log) = crash_with_staged_lines("fl", 2, 10);
    for slot in 0..2 {
        // Byte 8 of a slot's meta is the write-intent flag.
        staged[META_BASE + slot * META_LEN + 8] = 1;
    }
    let (dir, _) = restart_after_crash("fl", &staged, &log);
    let text = text_of(dir.path());
    assert_each_line_once(&text, 3, 10);
}

#[test]
fn a_bogus_intent_does_not_truncate_the_days_log() {
    use crate::staging::{META_BASE, META_LEN, SLOT_LEN};
    let (mut staged, log) = crash_with_staged_lines("bi", 1, 10);
    let slot = (0..2).find(|s| staged[s * SLOT_LEN] != 0).unwrap();
    let m = &mut staged[META_BASE + slot * META_LEN..][..META_LEN];
    // An intent naming the day's file at offset 10 with a huge block length (flag, dir,
    // name length, offset, written length and CRC, name).
    let name = b"bi_20240314.xlog";
    m[8] = 1;
    m[9] = 0;
    m[10..12].copy_from_slice(&(name.len() as u16).to_le_bytes());
    m[16..24].copy_from_slice(&10u64.to_le_bytes());
    m[96..100].copy_from_slice(&0xFFFF_0000u32.to_le_bytes());
    m[100..104].copy_from_slice(&0x1234_5678u32.to_le_bytes());
    m[128..128 + name.len()].copy_from_slice(name);
    let (dir, after) = restart_after_crash("bi", &staged, &log);
    assert!(
        after.starts_with(&log),
        "the day's log was cut: {} bytes before, now starts with {:?}",
        log.len(),
        &after[..after.len().min(12)]
    );
    let text = text_of(dir.path());
    assert_each_line_once(&text, 2, 10);
}

#[test]
fn a_line_with_a_huge_tag_is_cut_to_fit_and_leaves_no_sequence_gap() {
    let dir = tempfile::tempdir().unwrap();
    let g = quiet_logger(dir.path(), "big");
    g.log_message(Level::Info, "t", b"before");
    g.flush().unwrap();
    let tag = "T".repeat(400_000);
    g.log_message(Level::Info, &tag, b"the big one");
    g.flush().unwrap();
    g.log_message(Level::Info, "t", b"after");
    assert_eq!(g.dropped_lines(), 0);
    drop(g);
    let raw = fs::read(dir.path().join("big_20240314.xlog")).unwrap();
    let mut seqs = Vec::new();
    let mut off = 0;
    while off < raw.len() {
        let v = crate::block::BlockView::parse(&raw[off..]).unwrap();
        seqs.push(v.header.seq);
        off += v.total_len();
    }
    assert_eq!(
        seqs,
        [1, 2, 3],
        "one block per flush, numbered without gaps"
    );
    let text = text_of(dir.path());
    let big = text.lines().find(|l| l.ends_with("the big one")).unwrap();
    assert!(big.len() < crate::format::MAX_LINE_LEN, "{}", big.len());
    assert_eq!(lines_of(&text).len(), 3);
}

#[test]
fn failed_writes_are_counted_apart_and_reported_once_a_block_gets_through() {
    let dir = tempfile::tempdir().unwrap();
    // A directory where the day's file belongs: every append fails.
    let day = dir.path().join("wf_20240314.xlog");
    fs::create_dir(&day).unwrap();
    let g = quiet_logger(dir.path(), "wf");
    for i in 0..3 {
        g.log_message(Level::Info, "t", format!("lost {i}").as_bytes());
    }
    g.flush().unwrap();
    assert_eq!(g.write_failed_lines(), 3);
    // This block carries the warning about the 3 lines, and fails too.
    g.log_message(Level::Info, "t", b"lost as well");
    g.flush().unwrap();
    assert_eq!(g.write_failed_lines(), 5, "the warning and the line");
    fs::remove_dir(&day).unwrap();
    g.log_message(Level::Info, "t", b"gets through");
    g.flush().unwrap();
    assert_eq!(g.dropped_lines(), 0);
    let err = g.last_write_error().unwrap();
    drop(g);
    let text = text_of(dir.path());
    let warn: Vec<&str> = text.lines().filter(|l| l.starts_with("[W]")).collect();
    assert_eq!(warn.len(), 1, "{text}");
    assert!(
        warn[0].ends_with(&format!(
            "][xlog][:0, ][xlog lost 5 lines: writing the log file failed: {err}"
        )),
        "{}",
        warn[0]
    );
    assert!(err.contains("os error"), "{err}");
    assert!(text.contains("gets through"));
}

/// A writer in sync mode, keyed with the toy cipher if `keyed`.
fn sync_logger(dir: &Path, prefix: &str, keyed: bool) -> crate::XlogGuard {
    let b = Xlog::builder()
        .log_dir(dir)
        .name_prefix(prefix)
        .mode(Mode::Sync)
        .banners(false)
        .clock(clock());
    let b = if keyed { b.cipher(toy()) } else { b };
    b.build().unwrap()
}

/// Sync mode reports dropped lines in the log as async mode does, with the next line logged.
/// (It never reported them.)
#[test]
fn sync_mode_reports_dropped_lines_in_the_log() {
    for keyed in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let g = sync_logger(dir.path(), "sd", keyed);
        g.simulate_dropped_lines(7);
        g.log_message(Level::Info, "t", b"after the drops");
        g.log_message(Level::Info, "t", b"one more");
        drop(g);
        let t = text_of(dir.path());
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3, "keyed {keyed}: {t}");
        assert!(lines[0].starts_with("[W]"), "keyed {keyed}: {t}");
        assert!(
            lines[0].ends_with("][xlog][:0, ][xlog dropped 7 lines: the writer fell behind"),
            "keyed {keyed}: {t}"
        );
        assert!(
            lines[1].ends_with("][after the drops"),
            "keyed {keyed}: {t}"
        );
        assert!(lines[2].ends_with("][one more"), "keyed {keyed}: {t}");
    }
}

/// Sync mode counts lines whose append failed and reports them, as async mode does, once a
/// line gets through; a warning that cannot be written is written with a later line, and is
/// not itself counted. (Sync mode counted the lines but never reported them.)
#[test]
fn sync_mode_reports_failed_writes_once_a_line_gets_through() {
    for keyed in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the day's file belongs: every append fails.
        let day = dir.path().join("sf_20240314.xlog");
        fs::create_dir(&day).unwrap();
        let g = sync_logger(dir.path(), "sf", keyed);
        for i in 0..3 {
            g.log_message(Level::Info, "t", format!("lost {i}").as_bytes());
        }
        assert_eq!(g.write_failed_lines(), 3, "keyed {keyed}");
        // The warning about the lines before goes first, and fails too.
        g.log_message(Level::Info, "t", b"lost as well");
        assert_eq!(g.write_failed_lines(), 4, "keyed {keyed}");
        fs::remove_dir(&day).unwrap();
        g.log_message(Level::Info, "t", b"gets through");
        g.log_message(Level::Info, "t", b"and the next");
        assert_eq!(g.dropped_lines(), 0, "keyed {keyed}");
        let err = g.last_write_error().unwrap();
        drop(g);
        let text = text_of(dir.path());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "keyed {keyed}: {text}");
        assert!(
            lines[0].starts_with("[W]")
                && lines[0].ends_with(&format!(
                    "][xlog][:0, ][xlog lost 4 lines: writing the log file failed: {err}"
                )),
            "keyed {keyed}: {text}"
        );
        assert!(
            lines[1].ends_with("][gets through"),
            "keyed {keyed}: {text}"
        );
        assert!(
            lines[2].ends_with("][and the next"),
            "keyed {keyed}: {text}"
        );
    }
}

/// A folder as a crashed writer of `prefix` left it (one staged block of 10 lines, a day's
/// log with the block before it), where the day's file cannot be written (a directory stands
/// in for a full disk): the folder, the staging file, the day's file and its log.
fn crashed_with_a_full_disk(prefix: &str) -> (tempfile::TempDir, PathBuf, PathBuf, Vec<u8>) {
    let (staged, log) = crash_with_staged_lines(prefix, 1, 10);
    let dir = tempfile::tempdir().unwrap();
    let mmap = dir.path().join(format!("{prefix}.mmap3"));
    let day = dir.path().join(format!("{prefix}_20240314.xlog"));
    fs::write(&mmap, &staged).unwrap();
    fs::create_dir(&day).unwrap();
    (dir, mmap, day, log)
}

#[test]
fn a_writer_opens_when_recovered_lines_cannot_be_written_and_appends_them_later() {
    let (dir, mmap, day, log) = crashed_with_a_full_disk("df");
    let recovered_lines = |file: &[u8]| {
        let mut text = Vec::new();
        for r in crate::staging::recover(file, 0) {
            text.extend_from_slice(&decode_file(&r.block));
        }
        lines_of(&String::from_utf8(text).unwrap()).len()
    };
    let open = || quiet_logger(dir.path(), "df");
    // Opened and closed while writing fails: the staged lines stay in the buffer file.
    let g = open();
    assert_eq!(g.pending_recovered_blocks(), 1);
    assert_eq!(recovered_lines(&fs::read(&mmap).unwrap()), 10);
    g.log_message(Level::Info, "t", b"lost while failing");
    g.flush().unwrap();
    assert_eq!(g.pending_recovered_blocks(), 1);
    assert_eq!(recovered_lines(&fs::read(&mmap).unwrap()), 10);
    assert_eq!(g.write_failed_lines(), 2, "the open warning and the line");
    drop(g);
    assert_eq!(recovered_lines(&fs::read(&mmap).unwrap()), 10);
    // Open again, still failing, then writing works again while the writer runs.
    let g = open();
    assert_eq!(g.pending_recovered_blocks(), 1);
    fs::remove_dir(&day).unwrap();
    fs::write(&day, &log).unwrap();
    g.log_message(Level::Info, "t", b"after the disk came back");
    g.flush().unwrap();
    assert_eq!(g.pending_recovered_blocks(), 0);
    drop(g);
    assert!(fs::read(&mmap).unwrap().iter().all(|&b| b == 0));
    let text = text_of(dir.path());
    assert_each_line_once(&text, 2, 10);
    assert_eq!(text.matches("~~~~~ begin of mmap ~~~~~").count(), 1);
    assert!(text.contains("after the disk came back"));
    // The second open's warning got through with the line after it.
    assert!(text.contains(
        "[xlog could not append the 1 blocks recovered from {} to the log file: \
         Is a directory (os error 21); they are kept and appended once writing works again\n"
            .replace("{}", &mmap.display().to_string())
            .as_str()
    ));
    assert!(!text.contains("lost while failing"));
}

/// A crash right after the writer thread appended the recovered blocks whose append at
/// open failed, before it freed their slots: the next start finds them in the log (their
/// intents say where) and does not append them again. (Appended with no intent, as one
/// piece, they were appended twice.) The writer thread retries them with their slots still
/// holding them when it wakes for its housekeeping before any block was sealed.
#[test]
fn recovered_blocks_appended_late_are_appended_once_even_if_the_writer_crashed_then() {
    let (dir, mmap, day, log) = crashed_with_a_full_disk("rl");
    let g = quiet_logger(dir.path(), "rl");
    assert_eq!(g.pending_recovered_blocks(), 1);
    g.crash_after_retried_recovery();
    fs::remove_dir(&day).unwrap();
    fs::write(&day, &log).unwrap();
    g.wake_writer_and_wait_until_gone();
    let staged = fs::read(&mmap).unwrap();
    let log = fs::read(&day).unwrap();
    let before = String::from_utf8(decode_file(&log)).unwrap();
    assert!(before.contains("block 1 line 0\n"), "appended: {before}");
    let held = crate::staging::recover(&staged, 0);
    assert!(
        held.iter().any(|r| decode_file(&r.block)
            .windows(14)
            .any(|w| w == b"block 1 line 0")),
        "its slot still holds it"
    );
    // The next start, in the same folder (an intent names its log file by inode too), on the
    // files as the crash left them.
    drop(g);
    fs::write(&mmap, &staged).unwrap();
    fs::write(&day, &log).unwrap();
    drop(quiet_logger(dir.path(), "rl"));
    assert_each_line_once(&text_of(dir.path()), 2, 10);
}

/// A retry of a recovered block that fails part way (the disk has room for the writer's
/// small blocks, not for it) is cut back, and its write intent goes with it: a crash before
/// the next retry leaves an intent naming nothing. (Left in place, the next start believed
/// it, took the blocks appended since for a partial append of the recovered one, and cut the
/// log file back, losing them.)
#[test]
fn a_failed_retry_of_a_recovered_block_leaves_no_intent_that_cuts_later_blocks_off() {
    let (dir, mmap, day, log) = crashed_with_a_full_disk("ri");
    let g = quiet_logger(dir.path(), "ri");
    assert_eq!(g.pending_recovered_blocks(), 1);
    // Room again, but not for the recovered block (its 10 lines of about 60 bytes; the
    // writer's own blocks here are a line or two).
    fs::remove_dir(&day).unwrap();
    fs::write(&day, &log).unwrap();
    g.fail_appends_over(Some(300));
    g.log_message(Level::Info, "t", b"written after the failed retry");
    g.flush().unwrap();
    assert_eq!(g.pending_recovered_blocks(), 1, "the retry failed");
    let before = String::from_utf8(decode_file(&fs::read(&day).unwrap())).unwrap();
    assert!(
        before.contains("written after the failed retry"),
        "{before}"
    );
    // A crash now: the next start, in the same folder, on the files as the crash left them.
    let (staged, log) = (fs::read(&mmap).unwrap(), fs::read(&day).unwrap());
    g.fail_appends_over(None);
    drop(g);
    fs::write(&mmap, &staged).unwrap();
    fs::write(&day, &log).unwrap();
    drop(quiet_logger(dir.path(), "ri"));
    let text = text_of(dir.path());
    assert!(text.contains("written after the failed retry"), "{text}");
    assert_each_line_once(&text, 2, 10);
}

#[test]
fn recovered_blocks_still_unwritten_when_the_staging_file_is_removed_go_into_a_new_one_at_close() {
    let (staged, _) = crash_with_staged_lines("dr", 1, 10);
    let root = tempfile::tempdir().unwrap();
    let (logs, cache) = (root.path().join("logs"), root.path().join("cache"));
    // Neither folder can take the day's file (a directory stands in for a full disk).
    let block_writes = |dir: &Path| fs::create_dir_all(dir.join("dr_20240314.xlog")).unwrap();
    block_writes(&logs);
    block_writes(&cache);
    let mmap = cache.join("dr.mmap3");
    fs::write(&mmap, &staged).unwrap();
    let g = Xlog::builder()
        .log_dir(&logs)
        .cache_dir(&cache)
        .name_prefix("dr")
        .banners(false)
        .clock(clock())
        .build()
        .unwrap();
    g.log_message(Level::Info, "t", b"lost while failing");
    g.flush().unwrap();
    assert_eq!(g.pending_recovered_blocks(), 1);
    // The cache folder is cleared and made again (still full) after the last block: the
    // close makes the staging file anew and puts the recovered block into it.
    fs::remove_dir_all(&cache).unwrap();
    block_writes(&cache);
    drop(g);
    let mut lines = Vec::new();
    for r in crate::staging::recover(&fs::read(&mmap).unwrap(), 0) {
        lines.extend_from_slice(&decode_file(&r.block));
    }
    let text = String::from_utf8(lines).unwrap();
    assert_eq!(lines_of(&text).len(), 10, "{text}");
}

#[test]
fn with_both_slots_holding_unwritten_recovered_blocks_logging_goes_on() {
    use crate::staging::{META_BASE, META_LEN, SLOT_LEN};
    let (mut staged, _) = crash_with_staged_lines("d2", 1, 10);
    // A second staged block (a copy, one generation later) in the other slot.
    let a = (0..2).find(|s| staged[s * SLOT_LEN] != 0).unwrap();
    let b = 1 - a;
    staged.copy_within(a * SLOT_LEN..(a + 1) * SLOT_LEN, b * SLOT_LEN);
    let (ma, mb) = (META_BASE + a * META_LEN, META_BASE + b * META_LEN);
    staged.copy_within(ma..ma + META_LEN, mb);
    let gen = u64::from_le_bytes(staged[mb..mb + 8].try_into().unwrap()) + 1;
    staged[mb..mb + 8].copy_from_slice(&gen.to_le_bytes());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    fs::write(path.join("d2.mmap3"), &staged).unwrap();
    let day = path.join("d2_20240314.xlog");
    fs::create_dir(&day).unwrap();
    let text = without_hanging("logging with both slots held", move || {
        let g = Xlog::builder()
            .log_dir(&path)
            .name_prefix("d2")
            .clock(clock())
            .build()
            .unwrap();
        assert_eq!(g.pending_recovered_blocks(), 2);
        for i in 0..5 {
            g.log_message(Level::Info, "t", format!("while failing {i}").as_bytes());
            g.flush().unwrap();
        }
        fs::remove_dir(&day).unwrap();
        g.log_message(Level::Info, "t", b"after");
        g.flush().unwrap();
        assert_eq!(g.pending_recovered_blocks(), 0);
        drop(g);
        text_of(&path)
    });
    for i in 0..10 {
        let line = format!("block 1 line {i}\n");
        assert_eq!(text.matches(&line).count(), 2, "{line:?} in:\n{text}");
    }
    assert!(text.contains("after"));
}

/// Every line `block b line i` (b < `blocks`, i < `lines`) is in `text` exactly once.
fn assert_each_line_once(text: &str, blocks: usize, lines: usize) {
    for b in 0..blocks {
        for i in 0..lines {
            let line = format!("block {b} line {i}\n");
            assert_eq!(text.matches(&line).count(), 1, "{line:?} in:\n{text}");
        }
    }
}

/// The toy cipher, with encryptors that log through the writer in `target` from inside
/// `encrypt`, as a plugin calling the logger directly would: `lines` lines of `len` bytes on
/// each of the next `calls` calls (after the writer is built and put into `target`).
#[derive(Debug)]
struct LogsWhileEncrypting {
    target: Arc<Mutex<Option<Xlog>>>,
    calls: Arc<AtomicUsize>,
    lines: usize,
    len: usize,
}

#[derive(Debug)]
struct LoggingEnc {
    toy: Box<dyn BlockEncryptor>,
    target: Arc<Mutex<Option<Xlog>>>,
    calls: Arc<AtomicUsize>,
    lines: usize,
    len: usize,
}

impl LogsWhileEncrypting {
    /// The cipher, and the handle to put the writer into.
    fn new(calls: usize, lines: usize, len: usize) -> (Arc<Self>, Arc<Mutex<Option<Xlog>>>) {
        let target = Arc::new(Mutex::new(None));
        let cipher = LogsWhileEncrypting {
            target: Arc::clone(&target),
            calls: Arc::new(AtomicUsize::new(calls)),
            lines,
            len,
        };
        (Arc::new(cipher), target)
    }
}

impl LogCipher for LogsWhileEncrypting {
    fn name(&self) -> &str {
        "logs-while-encrypting"
    }
    fn kind(&self) -> CipherKind {
        CipherKind::MarsCompatible
    }
    fn new_encryptor(&self) -> Result<Box<dyn BlockEncryptor>, CipherError> {
        Ok(Box::new(LoggingEnc {
            toy: ToyCipher.new_encryptor()?,
            target: Arc::clone(&self.target),
            calls: Arc::clone(&self.calls),
            lines: self.lines,
            len: self.len,
        }))
    }
    fn new_decryptor(
        &self,
        key: &[u8; HEADER_KEY_LEN],
    ) -> Result<Box<dyn BlockDecryptor>, CipherError> {
        ToyCipher.new_decryptor(key)
    }
}

impl BlockEncryptor for LoggingEnc {
    fn header_key(&self) -> [u8; HEADER_KEY_LEN] {
        self.toy.header_key()
    }
    fn encrypt(&mut self, plain: &[u8], out: &mut Vec<u8>) -> Result<usize, CipherError> {
        let target = self.target.lock().unwrap().clone();
        let armed = self
            .calls
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if let (Some(xlog), true) = (target, armed) {
            for i in 0..self.lines {
                let mut msg = format!("from the cipher {i} ").into_bytes();
                msg.resize(self.len.max(msg.len()), b'c');
                xlog.log_message(Level::Warn, "cipher", &msg);
            }
        }
        self.toy.encrypt(plain, out)
    }
    fn finish_block(&mut self, rest: &[u8], out: &mut Vec<u8>) -> Result<(), CipherError> {
        self.toy.finish_block(rest, out)
    }
}

/// A writer using `cipher` in `mode`, handed to `target` for the cipher to log into.
fn logged_into_by(
    dir: &Path,
    mode: Mode,
    cipher: Arc<LogsWhileEncrypting>,
    target: &Mutex<Option<Xlog>>,
) -> crate::XlogGuard {
    let g = Xlog::builder()
        .log_dir(dir)
        .name_prefix("re")
        .mode(mode)
        .banners(false)
        .clock(clock())
        .cipher(cipher)
        .build()
        .unwrap();
    *target.lock().unwrap() = Some(g.xlog());
    g
}

#[test]
fn a_line_the_cipher_logs_in_sync_mode_follows_the_line_it_was_encrypting() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    let (text, dropped) = without_hanging("a cipher logging while it encrypts", move || {
        let (cipher, target) = LogsWhileEncrypting::new(0, 1, 0);
        let g = logged_into_by(&path, Mode::Sync, Arc::clone(&cipher), &target);
        for i in 0..3 {
            // Sync mode encrypts every line on the caller's thread, under the staging lock.
            cipher.calls.store(1, Ordering::SeqCst);
            g.log_message(Level::Info, "t", format!("line {i}").as_bytes());
        }
        target.lock().unwrap().take();
        let dropped = g.dropped_lines();
        drop(g);
        (text_of(&path), dropped)
    });
    assert_eq!(dropped, 0);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 6, "{text}");
    for (i, pair) in lines.chunks(2).enumerate() {
        assert!(pair[0].ends_with(&format!("][line {i}")), "{text}");
        assert!(pair[1].starts_with("[W]"), "{text}");
        assert!(pair[1].ends_with("][from the cipher 0 "), "{text}");
    }
}

#[test]
fn a_cipher_that_logs_at_every_call_cannot_feed_itself_forever() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    let (text, dropped) = without_hanging("a cipher logging at every call", move || {
        let (cipher, target) = LogsWhileEncrypting::new(usize::MAX, 1, 0);
        let g = logged_into_by(&path, Mode::Sync, cipher, &target);
        for i in 0..3 {
            g.log_message(Level::Info, "t", format!("line {i}").as_bytes());
        }
        target.lock().unwrap().take();
        let dropped = g.dropped_lines();
        drop(g);
        (text_of(&path), dropped)
    });
    // Each line's encryption logs a line, written after it; that line's own encryption logs
    // another, which is dropped and counted rather than written (and so on for ever). The
    // drops are reported before the next line, and the warning's encryption logs a line too:
    // a bounded number of lines per line logged. The close reports the drops the last line
    // caused (the cipher no longer logs by then).
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() <= 4 * 3 + 1, "{text}");
    let mut next = 0;
    for (at, l) in lines.iter().enumerate() {
        if l.ends_with(&format!("][line {next}")) {
            assert!(lines[at + 1].ends_with("][from the cipher 0 "), "{text}");
            next += 1;
        } else {
            let known = l.ends_with("][from the cipher 0 ")
                || (l.contains("][xlog][:0, ][xlog dropped ")
                    && l.ends_with(
                        " lines: logged from inside the writer (by its cipher or clock)",
                    ));
            assert!(known, "{l} in {text}");
        }
    }
    assert_eq!(next, 3, "{text}");
    let reported: u64 = text
        .split("xlog dropped ")
        .skip(1)
        .filter_map(|r| r.split(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(dropped >= 3 && reported == dropped, "{dropped}: {text}");
}

#[test]
fn lines_the_cipher_logs_on_the_writer_thread_are_written_or_counted_never_waited_for() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    // More than a staging slot holds: the writer thread, holding the other slot while it
    // encrypts, can never make room for them itself.
    let (lines, len) = (40, 8000);
    let (text, dropped) = without_hanging("a cipher logging on the writer thread", move || {
        let (cipher, target) = LogsWhileEncrypting::new(0, lines, len);
        let g = logged_into_by(&path, Mode::Async, Arc::clone(&cipher), &target);
        g.log_message(Level::Info, "t", b"before");
        // In async mode only the writer thread calls the cipher: once per block it writes.
        cipher.calls.store(1, Ordering::SeqCst);
        g.flush().unwrap();
        g.log_message(Level::Info, "t", b"after");
        g.flush().unwrap();
        target.lock().unwrap().take();
        let dropped = g.dropped_lines();
        drop(g);
        (text_of(&path), dropped)
    });
    assert!(text.contains("][before\n"), "{text}");
    assert!(text.contains("][after\n"), "{text}");
    let logged = text.matches("][from the cipher ").count() as u64;
    assert!(logged > 0, "{text}");
    assert_eq!(
        logged + dropped,
        lines as u64,
        "each line written or counted"
    );
    if dropped > 0 {
        let report = format!("xlog dropped {dropped} lines");
        assert!(text.contains(&report), "{report:?} missing");
    }
}

/// The test clock, which the next time it is asked for the time on thread `fires_on` (by
/// name; `None`: an unnamed thread) after `armed` is set, logs a line through the writer in
/// `target` and tries to flush it.
#[derive(Debug, Default)]
struct LogsWhenAsked {
    target: Mutex<Option<Xlog>>,
    fires_on: Option<&'static str>,
    armed: AtomicBool,
    flushed: Mutex<Option<Result<(), crate::FlushError>>>,
}

impl Clock for LogsWhenAsked {
    fn now(&self) -> WallTime {
        let target = self.target.lock().unwrap().clone();
        let here = std::thread::current().name() == self.fires_on;
        if let (Some(xlog), true) = (target, here) {
            if self.armed.swap(false, Ordering::SeqCst) {
                xlog.log_message(Level::Warn, "clock", b"from the clock");
                *self.flushed.lock().unwrap() = Some(xlog.flush());
            }
        }
        clock().now()
    }
}

#[test]
fn a_clock_that_logs_while_a_block_is_sealed_is_logged_after_that() {
    use crate::Durability::{Buffered, Durable};
    // Durable: `flush` seals on the caller's thread; buffered: the compressor thread seals the
    // block a Fatal line ends. Both ask the clock under the staging lock.
    let cases = [
        (Durable, None, Level::Info),
        (Buffered, Some("xlog-compressor"), Level::Fatal),
    ];
    for (durability, fires_on, level) in cases {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_owned();
        let what = format!("{durability:?}: a clock logging while a block is sealed");
        let (text, flushed) = without_hanging(&what, move || {
            let clock = Arc::new(LogsWhenAsked {
                fires_on,
                ..LogsWhenAsked::default()
            });
            let g = Xlog::builder()
                .log_dir(&path)
                .name_prefix("ck")
                .durability(durability)
                .banners(false)
                .clock(Arc::clone(&clock) as Arc<dyn Clock>)
                .build()
                .unwrap();
            *clock.target.lock().unwrap() = Some(g.xlog());
            // The compressor may seal before `log_message` returns: arm it before. The
            // caller's thread asks the clock in `log_message` too, outside the write path:
            // arm it after, for the seal in `flush`.
            let on_caller = fires_on.is_none();
            if !on_caller {
                clock.armed.store(true, Ordering::SeqCst);
            }
            g.log_message(level, "t", b"first");
            if on_caller {
                clock.armed.store(true, Ordering::SeqCst);
            }
            g.flush().unwrap();
            g.log_message(Level::Info, "t", b"after");
            clock.target.lock().unwrap().take();
            let flushed = clock.flushed.lock().unwrap().take();
            drop(g);
            (text_of(&path), flushed)
        });
        // A flush from inside the write path would wait for the writing that called it.
        assert!(
            matches!(flushed, Some(Err(crate::FlushError::Reentrant))),
            "{durability:?}: {flushed:?}"
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{durability:?}: {text}");
        assert!(lines[0].ends_with("][first"), "{durability:?}: {text}");
        assert!(
            lines[1].ends_with("][from the clock"),
            "{durability:?}: {text}"
        );
        assert!(lines[2].ends_with("][after"), "{durability:?}: {text}");
    }
}

/// The test clock that logs a line through the writer in `target` at every call (counted in
/// `logged`).
#[derive(Debug, Default)]
struct LogsAtEveryCall {
    target: Mutex<Option<Xlog>>,
    logged: AtomicUsize,
}

impl Clock for LogsAtEveryCall {
    fn now(&self) -> WallTime {
        let target = self.target.lock().unwrap().clone();
        if let Some(xlog) = target {
            self.logged.fetch_add(1, Ordering::SeqCst);
            xlog.log_message(Level::Warn, "clock", b"from the clock");
        }
        clock().now()
    }
}

#[test]
fn a_clock_that_logs_at_every_call_does_not_recurse_and_loses_no_line() {
    for mode in [Mode::Sync, Mode::Async] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_owned();
        let what = format!("{mode:?}: a clock logging at every call");
        let (text, dropped, logged) = without_hanging(&what, move || {
            let clock = Arc::new(LogsAtEveryCall::default());
            let g = Xlog::builder()
                .log_dir(&path)
                .name_prefix("ck")
                .mode(mode)
                .banners(false)
                .clock(Arc::clone(&clock) as Arc<dyn Clock>)
                .build()
                .unwrap();
            *clock.target.lock().unwrap() = Some(g.xlog());
            for i in 0..3 {
                g.log_message(Level::Info, "t", format!("line {i}").as_bytes());
            }
            clock.target.lock().unwrap().take();
            g.flush().unwrap();
            let dropped = g.dropped_lines();
            drop(g);
            (text_of(&path), dropped, clock.logged.load(Ordering::SeqCst))
        });
        let lines: Vec<&str> = text.lines().collect();
        // Each line asks the clock, which logs a line (timed without asking it again) before
        // the line that asked.
        let ours: Vec<usize> = (0..3)
            .map(|i| {
                let at = lines
                    .iter()
                    .position(|l| l.ends_with(&format!("][line {i}")));
                at.unwrap_or_else(|| panic!("{mode:?}: line {i} missing: {text}"))
            })
            .collect();
        assert!(ours.windows(2).all(|w| w[0] < w[1]), "{mode:?}: {text}");
        for &at in &ours {
            assert!(at > 0, "{mode:?}: {text}");
            assert!(
                lines[at - 1].ends_with("][from the clock"),
                "{mode:?}: {text}"
            );
        }
        // Every line the clock logged is written or counted as dropped; none vanishes.
        let written = text.matches("][from the clock\n").count();
        assert!(logged >= 3, "{mode:?}: {logged}");
        assert_eq!(written as u64 + dropped, logged as u64, "{mode:?}: {text}");
        // After the first answer, a line logged from inside the clock carries the time the
        // clock last gave (the fixed clock's), not the system's.
        for l in lines
            .iter()
            .filter(|l| l.ends_with("][from the clock"))
            .skip(1)
        {
            assert!(l.contains("2024-03-14"), "{mode:?}: {l}");
        }
    }
}

/// The text of a file of well-formed blocks as Mars's Python decoder reads it: of a zstd body
/// only the first [`MARS_ZSTD_READ_SIZE`] bytes (`read_from(reader, 100000, 1000000)`, format
/// doc §9.1; the rest is lost without an error). Also checks that no zstd body is that long.
fn text_by_the_python_rule(bytes: &[u8]) -> Vec<u8> {
    use crate::block::{magic_info, BlockView};
    use crate::staging::MARS_ZSTD_READ_SIZE;
    let mut out = Vec::new();
    let mut off = 0;
    while off < bytes.len() {
        let v = BlockView::parse(&bytes[off..]).expect("well-formed block");
        let info = magic_info(v.header.magic).expect("known magic");
        let mut body = v.body;
        if info.is_async && info.compression == Compression::Zstd {
            assert!(
                body.len() < MARS_ZSTD_READ_SIZE,
                "a zstd body of {} bytes (magic {:#04x})",
                body.len(),
                v.header.magic
            );
            body = &body[..body.len().min(MARS_ZSTD_READ_SIZE)];
        }
        out.extend_from_slice(&crate::testutil::decode_body(v.header.magic, body));
        off += v.total_len();
    }
    out
}

/// How often `needle` occurs in `hay`.
fn count_in(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).filter(|w| *w == needle).count()
}

/// A zstd writer (keyed with the toy cipher if `keyed`) whose writer thread is held at its
/// first block logs 500 lines and "crashes"; a writer started on what it left recovers them.
/// Returns the lines and the day's log after that restart.
fn zstd_lines_recovered_after_a_crash(keyed: bool) -> (Vec<String>, Vec<u8>) {
    let (root, g, holding, held_rx, release_tx) = holding_logger_with("zr", |b| {
        let b = b.compression(Compression::Zstd);
        if keyed {
            b.cipher(toy())
        } else {
            b
        }
    });
    let dir = root.path().join("logs");
    // The writer thread stops at the first block sealed: that block and the lines after it
    // are staged, none written, when the process dies.
    holding.hold.store(true, Ordering::SeqCst);
    let lines: Vec<String> = (0..500)
        .map(|i| format!("line {i:03} {}", "abcdefghij".repeat(15)))
        .collect();
    for l in &lines {
        g.log_message(Level::Info, "t", l.as_bytes());
    }
    held_rx.recv().unwrap();
    let staged = fs::read(dir.join("zr.mmap3")).unwrap();
    let log = fs::read(dir.join("zr_20240314.xlog")).unwrap_or_default();
    std::mem::forget(g);
    drop(release_tx);
    let (_after, day) = restart_after_crash("zr", &staged, &log);
    (lines, day)
}

/// A staged block is appended as it was staged (raw zstd blocks) when it is recovered after
/// a crash, and Mars's Python decoder reads only the first 100 000 bytes of a zstd body: a
/// block sealed at 2/3 of the 150 KiB slot (102 400 bytes) lost its last lines there without
/// an error (487 of 500). Blocks are now sealed and capped below that.
#[test]
fn zstd_blocks_recovered_after_a_crash_lose_no_line_to_marss_python_decoder() {
    for keyed in [false, true] {
        let (lines, day) = zstd_lines_recovered_after_a_crash(keyed);
        let text = text_by_the_python_rule(&day);
        for l in &lines {
            let line = format!("{l}\n");
            assert_eq!(
                count_in(&text, line.as_bytes()),
                1,
                "keyed {keyed}: {line:?}"
            );
        }
    }
}

/// The same with Mars's own Python decoder rule run by Python's `zstandard` (when python3 and
/// that module are installed; the test above is the guard where they are not).
#[test]
fn zstd_blocks_recovered_after_a_crash_decode_whole_with_python_zstandard() {
    let (lines, day) = zstd_lines_recovered_after_a_crash(false);
    let Some(text) = text_by_python_zstandard(&day) else {
        eprintln!("skipped: python3 with the zstandard module is not installed");
        return;
    };
    for l in &lines {
        let line = format!("{l}\n");
        assert_eq!(count_in(&text, line.as_bytes()), 1, "{line:?}");
    }
}

/// The text of a file of no-key blocks (zstd async, plain sync) as Mars's Python decoder
/// reads it, run by Python's `zstandard`; `None` when python3 or that module is missing.
///
/// With `PHOBOS_ORACLES_REQUIRED` set (CI sets it, and installs the module), a missing module
/// fails the test instead: a check that silently did not run passed in CI for the cap this
/// oracle is the evidence of.
fn text_by_python_zstandard(day: &[u8]) -> Option<Vec<u8>> {
    let probe = std::process::Command::new("python3")
        .args(["-c", "import zstandard"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        assert!(
            std::env::var_os("PHOBOS_ORACLES_REQUIRED").is_none(),
            "PHOBOS_ORACLES_REQUIRED is set, but python3 with the zstandard module is not \
             installed (`python3 -m pip install zstandard`)"
        );
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("day.xlog");
    fs::write(&path, day).unwrap();
    // Blocks walked as §9.1 does; zstd bodies read as `decode_mars_nocrypt_log_file.py` does
    // (`read_from` is `read_to_iter`'s old name in the `zstandard` module).
    let script = r#"
import io, struct, sys, zstandard
data = open(sys.argv[1], "rb").read()
out = bytearray()
off = 0
while off < len(data):
    magic = data[off]
    (length,) = struct.unpack_from("<I", data, off + 5)
    body = data[off + 73 : off + 73 + length]
    if magic == 0x0D:
        d = zstandard.ZstdDecompressor()
        read = getattr(d, "read_from", None) or d.read_to_iter
        out += next(read(io.BytesIO(body), 100000, 1000000))
    elif magic in (0x08, 0x0B):
        out += body
    else:
        sys.exit("unexpected magic %d" % magic)
    off += 73 + length + 1
sys.stdout.buffer.write(bytes(out))
"#;
    let run = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    Some(run.stdout)
}

/// Lines that do not compress, staged while the writer thread is busy with the block before:
/// the block's compressed copy is no smaller than the staged one, which is then written as it
/// is. Staged up to the slot's 150 KiB, it passed Mars's Python decoder's 100 000 bytes. With
/// [`Overflow::Drop`] the lines that find the block full are dropped and counted, not staged
/// past what the decoder reads.
#[test]
fn incompressible_zstd_blocks_staged_while_the_writer_is_busy_lose_no_line_to_marss_python_decoder()
{
    // 20 lines fit in the two blocks; 30 do not (with `Block` the caller would wait for the
    // held writer thread).
    let cases = [(false, Overflow::Block, 20), (true, Overflow::Block, 20)];
    for (keyed, overflow, n) in cases.into_iter().chain([(false, Overflow::Drop, 30)]) {
        let (root, g, holding, held_rx, release_tx) = holding_logger_with("zb", |b| {
            let b = b.compression(Compression::Zstd).overflow(overflow);
            if keyed {
                b.cipher(toy())
            } else {
                b
            }
        });
        // The writer thread stops at the first block sealed; the next block fills past the
        // point where it would be sealed, with no slot to go on in, meanwhile.
        holding.hold.store(true, Ordering::SeqCst);
        let mut seed: u64 = 7;
        let lines: Vec<Vec<u8>> = (0..n)
            .map(|i| {
                let mut l = format!("line {i:02} ").into_bytes();
                l.extend((0..8000).map(|_| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    match (seed >> 56) as u8 {
                        b'\n' => b'.',
                        b => b,
                    }
                }));
                l
            })
            .collect();
        for l in &lines {
            g.log_message(Level::Info, "t", l);
        }
        held_rx.recv().unwrap();
        release_tx.send(()).unwrap();
        g.flush().unwrap();
        let dropped = g.dropped_lines();
        // Drops are reported with the next line logged.
        g.log_message(Level::Info, "t", b"after");
        drop(g);
        let dir = root.path().join("logs");
        let mut text = Vec::new();
        for f in xlog_files(&dir) {
            text.extend_from_slice(&text_by_the_python_rule(&fs::read(f).unwrap()));
        }
        let mut written = 0;
        for (i, l) in lines.iter().enumerate() {
            let mut line = l.clone();
            line.push(b'\n');
            let found = count_in(&text, &line);
            assert!(found <= 1, "keyed {keyed}: line {i} {found} times");
            written += found as u64;
        }
        let case = format!("keyed {keyed}, {overflow:?}");
        assert_eq!(written + dropped, n, "{case}: {dropped} dropped");
        match overflow {
            Overflow::Block => assert_eq!(dropped, 0, "{case}"),
            _ => {
                assert!(
                    dropped > 0,
                    "{case}: the busy block had room for every line"
                );
                // Each warning reports the drops since the one before.
                let reported: u64 = String::from_utf8_lossy(&text)
                    .split("xlog dropped ")
                    .skip(1)
                    .filter_map(|r| r.split(' ').next()?.parse::<u64>().ok())
                    .sum();
                assert_eq!(reported, dropped, "{case}");
            }
        }
    }
}

/// With banners off, lines dropped after the last line logged (the writer held up, the drop
/// policy on) are reported at close by a warning line of their own, with their count and
/// cause. (No later line carried the warning, so the log never showed them.)
#[test]
fn lines_dropped_after_the_last_line_are_reported_at_close_without_banners() {
    let (root, g, holding, held_rx, release_tx) =
        holding_logger_with("dl", |b| b.overflow(Overflow::Drop));
    // The writer thread stops at the first block sealed; the other slot fills, and the lines
    // after it find no room.
    holding.hold.store(true, Ordering::SeqCst);
    let mut logged = 0u64;
    while g.dropped_lines() < 5 {
        g.log_message(
            Level::Info,
            "t",
            format!("line {logged} {:0>900}", 0).as_bytes(),
        );
        logged += 1;
        assert!(logged < 1000, "no line was dropped");
    }
    held_rx.recv().unwrap();
    release_tx.send(()).unwrap();
    let dropped = g.dropped_lines();
    drop(g);
    let text = text_of(&root.path().join("logs"));
    // Warnings staged while the block had room for them but not for the lines report the
    // drops before them; the last one, at close, those after.
    let warnings: Vec<&str> = text.lines().filter(|l| l.starts_with("[W]")).collect();
    let mut reported = 0;
    for w in &warnings {
        let (_, rest) = w.split_once("][xlog][:0, ][xlog dropped ").expect(w);
        let (n, reason) = rest.split_once(" lines: ").expect(w);
        assert_eq!(reason, "the writer fell behind", "{w}");
        reported += n.parse::<u64>().unwrap();
    }
    assert_eq!(reported, dropped, "{warnings:?}");
    assert_eq!(text.lines().last(), warnings.last().copied());
    assert_eq!(lines_of(&text).len() as u64 + dropped, logged);
}

/// The toy cipher, whose encryption fails while `failing` is above 0 (one call each): with an
/// error, or with a panic when `panics` is set. With `at_make` set, making an encryptor
/// panics.
#[derive(Debug, Default)]
struct FailingCipher {
    failing: Arc<AtomicUsize>,
    panics: bool,
    at_make: bool,
}

#[derive(Debug)]
struct FailingEnc {
    toy: Box<dyn BlockEncryptor>,
    failing: Arc<AtomicUsize>,
    panics: bool,
}

impl LogCipher for FailingCipher {
    fn name(&self) -> &str {
        "failing"
    }
    fn kind(&self) -> CipherKind {
        CipherKind::MarsCompatible
    }
    fn new_encryptor(&self) -> Result<Box<dyn BlockEncryptor>, CipherError> {
        assert!(!self.at_make, "test: new_encryptor panics");
        Ok(Box::new(FailingEnc {
            toy: ToyCipher.new_encryptor()?,
            failing: Arc::clone(&self.failing),
            panics: self.panics,
        }))
    }
    fn new_decryptor(
        &self,
        key: &[u8; HEADER_KEY_LEN],
    ) -> Result<Box<dyn BlockDecryptor>, CipherError> {
        ToyCipher.new_decryptor(key)
    }
}

impl BlockEncryptor for FailingEnc {
    fn header_key(&self) -> [u8; HEADER_KEY_LEN] {
        self.toy.header_key()
    }
    fn encrypt(&mut self, plain: &[u8], out: &mut Vec<u8>) -> Result<usize, CipherError> {
        let fail = self
            .failing
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if fail {
            assert!(!self.panics, "test: encrypt panics");
            return Err(CipherError::Crypto("test: the cipher fails".into()));
        }
        self.toy.encrypt(plain, out)
    }
    fn finish_block(&mut self, rest: &[u8], out: &mut Vec<u8>) -> Result<(), CipherError> {
        self.toy.finish_block(rest, out)
    }
}

/// Lines a keyed sync-mode writer cannot encrypt are dropped and reported as such (not as
/// the writer falling behind), before the next line; those after the last line logged are
/// reported at close, banners off.
#[test]
fn lines_that_cannot_be_encrypted_are_reported_with_their_cause() {
    let dir = tempfile::tempdir().unwrap();
    let cipher = Arc::new(FailingCipher::default());
    let failing = Arc::clone(&cipher.failing);
    let g = Xlog::builder()
        .log_dir(dir.path())
        .name_prefix("ce")
        .mode(Mode::Sync)
        .banners(false)
        .clock(clock())
        .cipher(cipher)
        .build()
        .unwrap();
    g.log_message(Level::Info, "t", b"before");
    failing.store(1, Ordering::SeqCst);
    g.log_message(Level::Info, "t", b"not encrypted 1");
    // The warning about the first goes before the line, and cannot be encrypted either: it
    // is written with the next line, and not itself counted.
    failing.store(2, Ordering::SeqCst);
    g.log_message(Level::Info, "t", b"not encrypted 2");
    g.log_message(Level::Info, "t", b"after");
    failing.store(1, Ordering::SeqCst);
    g.log_message(Level::Info, "t", b"the last, not encrypted");
    assert_eq!(g.dropped_lines(), 3);
    drop(g);
    let text = text_of(dir.path());
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    let warning = |n| {
        format!("][xlog][:0, ][xlog dropped {n} lines: they could not be compressed or encrypted")
    };
    assert!(lines[0].ends_with("][before"), "{text}");
    assert!(
        lines[1].starts_with("[W]") && lines[1].ends_with(&warning(2)),
        "{text}"
    );
    assert!(lines[2].ends_with("][after"), "{text}");
    assert!(
        lines[3].starts_with("[W]") && lines[3].ends_with(&warning(1)),
        "{text}"
    );
}

/// The test clock, which the next time it is asked after `armed` is set logs a line through
/// the writer in `target` from another thread.
#[derive(Debug, Default)]
struct LogsFromAnotherThread {
    target: Mutex<Option<Xlog>>,
    armed: AtomicBool,
}

impl Clock for LogsFromAnotherThread {
    fn now(&self) -> WallTime {
        if self.armed.swap(false, Ordering::SeqCst) {
            let xlog = self.target.lock().unwrap().clone().unwrap();
            std::thread::spawn(move || xlog.log_message(Level::Info, "t", b"while closing"))
                .join()
                .unwrap();
        }
        clock().now()
    }
}

/// A line logged by another thread while the writer closes is dropped and reported as such
/// (here by the close banner), not as the writer falling behind.
#[test]
fn a_line_logged_while_the_writer_closes_is_reported_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(LogsFromAnotherThread::default());
    let g = Xlog::builder()
        .log_dir(dir.path())
        .name_prefix("cl")
        .clock(clock.clone())
        .build()
        .unwrap();
    *clock.target.lock().unwrap() = Some(g.xlog());
    g.log_message(Level::Info, "t", b"before");
    // The close asks the clock for its banner's time once it no longer takes lines.
    clock.armed.store(true, Ordering::SeqCst);
    let h = g.xlog();
    drop(g);
    clock.target.lock().unwrap().take();
    assert_eq!(h.dropped_lines(), 1);
    let text = text_of(dir.path());
    let lines: Vec<&str> = text.lines().collect();
    let n = lines.len();
    assert!(lines[n - 1].starts_with("$$$$$$$$$$"), "{text}");
    assert!(
        lines[n - 2].starts_with("[W]")
            && lines[n - 2].ends_with(
                "][xlog][:0, ][xlog dropped 1 lines: logged while the writer was closing"
            ),
        "{text}"
    );
    assert!(!text.contains("while closing\n"), "{text}");
}

/// A zstd encoder as Mars's zstd appender makes it: level 6, window log 16, no checksum.
fn mars_zstd_encoder() -> zstd::stream::write::Encoder<'static, Vec<u8>> {
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 6).unwrap();
    enc.window_log(16).unwrap();
    enc.include_checksum(false).unwrap();
    enc
}

/// `body` as a staged Mars zstd block (header and body, no end byte): magic `0x0D`, sequence
/// 7, hour 9, no key.
fn staged_mars_zstd_block(body: &[u8]) -> Vec<u8> {
    staged_block(0x0D, [0; 64], body)
}

/// `body` as a staged block of magic `magic` and key field `key` (header and body, no end
/// byte): sequence 7, hour 9.
fn staged_block(magic: u8, key: [u8; 64], body: &[u8]) -> Vec<u8> {
    let mut block = vec![0u8; crate::block::HEADER_LEN];
    crate::block::BlockHeader {
        magic,
        seq: 7,
        begin_hour: 9,
        end_hour: 9,
        len: body.len() as u32,
        key,
    }
    .emit((&mut block[..]).try_into().unwrap());
    block.extend_from_slice(body);
    block
}

/// Lines as a Mars-format zstd block left in a `.mmap3` holds them, and that block: magic
/// `0x0D`, sequence 7, no key, its body a zstd frame fed line by line with a flush after each
/// line and never finished (as Mars's zstd appender leaves it), grown until the body is at
/// least `min_body` bytes. Each line ends in `chars` random characters. Returns the lines
/// (with their `\n`) and the staged block (header and body, no end byte).
fn mars_zstd_block(min_body: usize, chars: usize) -> (Vec<Vec<u8>>, Vec<u8>) {
    use std::io::Write;
    let mut enc = mars_zstd_encoder();
    let mut lines = Vec::new();
    let mut seed: u64 = 11;
    while enc.get_ref().len() < min_body {
        // Random base64-like text: compressed as a whole it is still most of its size, so
        // the block's text does not fit one block under the cap.
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let hex: String = (0..chars)
            .map(|_| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                char::from(ALPHABET[(seed >> 58) as usize])
            })
            .collect();
        let line = format!(
            "[I][2024-03-14 +8.0 09:12:44.{:03}][4242, 4242*][mars][app.cc:10, Run]\
             [line {:05} {hex}\n",
            lines.len() % 1000,
            lines.len()
        );
        enc.write_all(line.as_bytes()).unwrap();
        enc.flush().unwrap();
        lines.push(line.into_bytes());
    }
    let block = staged_mars_zstd_block(enc.get_ref());
    (lines, block)
}

/// A Mars zstd block (level 6, window log 16, a flush after each line) of 100 000 body bytes
/// or more holding real log lines (the `01_async_zlib_nocrypt` vector's, numbered on), which
/// compress far better as a whole; returns its text and the block.
fn compressible_mars_zstd_block() -> (Vec<u8>, Vec<u8>) {
    use std::io::Write;
    let base = fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../xlog-decode/tests/data/01_async_zlib_nocrypt/expected.log"),
    )
    .unwrap();
    let mut enc = mars_zstd_encoder();
    let mut text = Vec::new();
    'fill: for i in 0.. {
        for l in base.split_inclusive(|&b| b == b'\n') {
            if enc.get_ref().len() >= 100_500 {
                break 'fill;
            }
            let line = [&l[..l.len() - 1], format!(" r={i}\n").as_bytes()].concat();
            enc.write_all(&line).unwrap();
            enc.flush().unwrap();
            text.extend_from_slice(&line);
        }
    }
    let block = staged_mars_zstd_block(enc.get_ref());
    (text, block)
}

/// A Mars zstd block over the cap is cut anew at the writer's configured zstd level, as every
/// block it writes (it was always level 1, so a writer set to compress harder got a recovered
/// block twice the size); a zlib writer's level is a zlib level and does not apply, zstd's
/// default does. Levels above [`RECUT_MAX_LEVEL`](crate::staging::RECUT_MAX_LEVEL) are
/// capped: the cut runs at open, on the caller's thread.
#[test]
fn a_zstd_block_cut_anew_at_recovery_is_compressed_at_the_configured_zstd_level() {
    let (text, block) = compressible_mars_zstd_block();
    let mut mmap3 = block.clone();
    mmap3.resize(crate::block::BUFFER_BLOCK_LEN, 0);
    let at_level = |level: i32| {
        let mut c = crate::compress::BlockCompressor::new(Compression::Zstd, level).unwrap();
        let mut out = Vec::new();
        c.compress_block(&text, &mut out).unwrap();
        out
    };
    assert!(
        at_level(9).len() < at_level(1).len() * 9 / 10,
        "level 9 compresses better"
    );
    for (compression, level, used) in [
        (Compression::Zstd, 9, 9),
        (Compression::Zstd, 22, crate::staging::RECUT_MAX_LEVEL),
        (Compression::Zlib, 9, Compression::Zstd.default_level()),
    ] {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("lv.mmap3"), &mmap3).unwrap();
        let g = Xlog::builder()
            .log_dir(dir.path())
            .name_prefix("lv")
            .compression(compression)
            .compression_level(level)
            .banners(false)
            .clock(clock())
            .build()
            .unwrap();
        drop(g);
        let day = fs::read(dir.path().join("lv_20240314.xlog")).unwrap();
        let blocks = blocks_of(&day);
        assert_eq!(blocks.len(), 3, "{compression:?} {level}: {blocks:?}");
        assert_eq!(
            blocks[1],
            (0x0D, 7, at_level(used).len()),
            "{compression:?} {level}: cut at level {used}"
        );
        assert_eq!(count_in(&decode_file(&day), &text), 1);
    }
}

/// How often each line (with its `\n`) occurs in `text`.
fn line_counts(text: &[u8]) -> std::collections::HashMap<&[u8], usize> {
    let mut counts = std::collections::HashMap::new();
    for l in text.split_inclusive(|&b| b == b'\n') {
        *counts.entry(l).or_default() += 1;
    }
    counts
}

/// The blocks of a file of well-formed blocks: (magic, sequence, body length).
fn blocks_of(bytes: &[u8]) -> Vec<(u8, u16, usize)> {
    let mut out = Vec::new();
    let mut off = 0;
    while off < bytes.len() {
        let v = crate::block::BlockView::parse(&bytes[off..]).expect("well-formed block");
        out.push((v.header.magic, v.header.seq, v.body.len()));
        off += v.total_len();
    }
    out
}

/// A zstd block of 100 000 body bytes or more, left in a `.mmap3` by Mars (whose 4/5 guard
/// lets a block grow to about 123 000 compressed bytes), is recovered as blocks whose bodies
/// Mars's Python decoder reads whole, every line once. (It was appended as it was, and that
/// decoder kept only what the first 100 000 bytes decode to.) Those it cannot read stay as
/// they are.
#[test]
fn a_mars_zstd_block_of_100000_bytes_or_more_is_recovered_in_blocks_marss_decoder_reads_whole() {
    // Short lines: Mars's flush after each costs so much that the text, compressed as a
    // whole, fits one block. Long lines of random text: it needs two or more.
    for (chars, min_blocks) in [(40, 1), (2000, 2)] {
        let (lines, block) = mars_zstd_block(120_000, chars);
        assert!(block.len() - crate::block::HEADER_LEN >= 120_000);
        // Mars's buffer file: one 150 KiB block, zeros after the staged bytes.
        let mut mmap3 = block.clone();
        mmap3.resize(crate::block::BUFFER_BLOCK_LEN, 0);
        let (_dir, day) = restart_after_crash("mz", &mmap3, &[]);
        // Tip, recovered blocks, tip: the first recovered one keeps the sequence, the others
        // carry 0 (no gap for the decoder to report).
        let blocks = blocks_of(&day);
        let recovered = &blocks[1..blocks.len() - 1];
        assert!(recovered.len() >= min_blocks, "{blocks:?}");
        assert!(
            recovered.iter().all(|b| b.0 == 0x0D && b.2 < 100_000),
            "{blocks:?}"
        );
        assert_eq!(recovered[0].1, 7);
        assert!(recovered[1..].iter().all(|b| b.1 == 0), "{blocks:?}");
        let python = text_by_the_python_rule(&day);
        let counts = line_counts(&python);
        for l in &lines {
            assert_eq!(
                counts.get(&l[..]),
                Some(&1),
                "{}",
                String::from_utf8_lossy(l)
            );
        }
        let whole = decode_file(&day);
        assert_eq!(count_in(&whole, &lines.concat()), 1, "the lines in order");
        if let Some(python) = text_by_python_zstandard(&day) {
            assert_eq!(
                count_in(&python, &lines.concat()),
                1,
                "python zstandard, {chars}"
            );
        }
    }
    large_zstd_blocks_that_cannot_be_read_are_recovered_as_they_are();
}

/// The same block in a buffer file of this crate's layout (with slot metadata, as an older
/// version left it): the write intent recorded for the new blocks makes the append
/// exactly-once when the start that appended them crashed before clearing the file.
#[test]
fn a_zstd_block_cut_anew_at_recovery_is_appended_once_even_if_that_start_crashed() {
    use crate::staging::{FILE_LEN, META_BASE};
    let (lines, block) = mars_zstd_block(110_000, 2000);
    let mut mmap3 = vec![0u8; FILE_LEN];
    mmap3[..block.len()].copy_from_slice(&block);
    mmap3[META_BASE..META_BASE + 8].copy_from_slice(&1u64.to_le_bytes());
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("mc.mmap3"), &mmap3).unwrap();
    crate::writer::CRASH_AFTER_RECOVERY.with(|c| c.set(true));
    let crashed = Xlog::builder()
        .log_dir(dir.path())
        .name_prefix("mc")
        .banners(false)
        .clock(clock())
        .build();
    crate::writer::CRASH_AFTER_RECOVERY.with(|c| c.set(false));
    assert!(crashed.is_err(), "stopped after the recovery");
    drop(quiet_logger(dir.path(), "mc"));
    let day = fs::read(dir.path().join("mc_20240314.xlog")).unwrap();
    let python = text_by_the_python_rule(&day);
    let counts = line_counts(&python);
    for l in &lines {
        assert_eq!(
            counts.get(&l[..]),
            Some(&1),
            "{}",
            String::from_utf8_lossy(l)
        );
    }
}

/// Large zstd blocks that cannot be cut anew are appended as they are, without a panic: a
/// keyed one (Mars's `0x0C`: only the server's private key reads it) and one whose body is
/// not zstd (damaged).
fn large_zstd_blocks_that_cannot_be_read_are_recovered_as_they_are() {
    let mut seed: u64 = 3;
    let body: Vec<u8> = (0..110_000)
        .map(|_| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 56) as u8
        })
        .collect();
    let (_, mars) = mars_zstd_block(110_000, 40);
    for (what, magic, body) in [
        ("keyed", 0x0C, &mars[crate::block::HEADER_LEN..]),
        ("damaged", 0x0D, &body[..]),
    ] {
        let mut mmap3 = staged_block(magic, [0x11; 64], body);
        mmap3.resize(crate::block::BUFFER_BLOCK_LEN, 0);
        let (_dir, day) = restart_after_crash("mk", &mmap3, &[]);
        let blocks = blocks_of(&day);
        assert_eq!(blocks.len(), 3, "{what}: {blocks:?}");
        assert_eq!(blocks[1], (magic, 7, body.len()), "{what}");
        assert_eq!(count_in(&day, body), 1, "{what}");
    }
}

/// A recovered block whose append failed at open waits in its slot; once the disk works
/// again, logging that needs the slot has the writer thread append the block from the slot
/// first, so a crash right then loses nothing. (The slot was taken back at once, its block
/// then only in memory until the writer thread's next try: a crash in between lost it.)
#[test]
fn a_held_recovered_block_is_appended_from_its_slot_before_logging_takes_the_slot_back() {
    let (dir, mmap, day, log) = crashed_with_a_full_disk("hs");
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel();
    let holding = Arc::new(HoldingClock {
        hold: AtomicBool::new(false),
        held: Mutex::new(held_tx),
        release: Mutex::new(release_rx),
    });
    let g = Xlog::builder()
        .log_dir(dir.path())
        .name_prefix("hs")
        .banners(false)
        .clock(holding.clone())
        .build()
        .unwrap();
    assert_eq!(g.pending_recovered_blocks(), 1);
    // The disk works again; the writer thread is held at its next try.
    fs::remove_dir(&day).unwrap();
    fs::write(&day, &log).unwrap();
    holding.hold.store(true, Ordering::SeqCst);
    let x = g.xlog();
    // More than the free slot holds: the lines need the held slot.
    let logger = std::thread::spawn(move || {
        for i in 0..200 {
            x.log_message(Level::Info, "t", format!("new {i} {:0>1000}", 0).as_bytes());
        }
    });
    held_rx.recv().unwrap();
    // A crash now.
    let (staged, log_now) = (fs::read(&mmap).unwrap(), fs::read(&day).unwrap());
    release_tx.send(()).unwrap();
    logger.join().unwrap();
    drop(g);
    assert_each_line_once(&text_of(dir.path()), 2, 10);
    let (_after, day_after) = restart_after_crash("hs", &staged, &log_now);
    assert_each_line_once(&String::from_utf8(decode_file(&day_after)).unwrap(), 2, 10);
}

/// In sync mode a line costs one `fstat` of the open file (its length, and whether it still
/// is the file at the path) and one `stat` of the path; after the day's file is renamed
/// away, the next line goes to a new file at the path. (The check and the length took two
/// `fstat`s and a `stat` a line.)
#[test]
fn a_sync_mode_line_stats_the_open_file_once_and_its_path_once() {
    use crate::files::STATS;
    let dir = tempfile::tempdir().unwrap();
    let g = sync_logger(dir.path(), "st", false);
    g.log_message(Level::Info, "t", b"opens the file");
    let before = STATS.with(std::cell::Cell::get);
    for i in 0..50 {
        g.log_message(Level::Info, "t", format!("line {i}").as_bytes());
    }
    assert_eq!(STATS.with(std::cell::Cell::get) - before, 2 * 50);
    let day = dir.path().join("st_20240314.xlog");
    let moved = dir.path().join("uploaded.bin");
    fs::rename(&day, &moved).unwrap();
    g.log_message(Level::Info, "t", b"after the move");
    g.log_message(Level::Info, "t", b"and later");
    drop(g);
    let old = String::from_utf8(decode_file(&fs::read(&moved).unwrap())).unwrap();
    assert_eq!(lines_of(&old).len(), 51, "{old}");
    let now = String::from_utf8(decode_file(&fs::read(&day).unwrap())).unwrap();
    assert_eq!(lines_of(&now).len(), 2, "{now}");
    assert!(now.contains("][after the move\n") && now.contains("][and later\n"));
}

/// An in-process cipher that panics while making its encryptor fails the writer's making
/// with an error naming the cipher and the panic, not with a panic.
#[test]
fn a_cipher_panicking_when_the_writer_is_made_is_a_build_error() {
    let dir = tempfile::tempdir().unwrap();
    let made = Xlog::builder()
        .log_dir(dir.path())
        .name_prefix("pm")
        .clock(clock())
        .cipher(Arc::new(FailingCipher {
            at_make: true,
            ..FailingCipher::default()
        }))
        .build();
    let err = made.expect_err("a build error").to_string();
    assert!(
        err.contains("\"failing\" panicked") && err.contains("new_encryptor panics"),
        "{err}"
    );
}

/// A line an in-process cipher panics on (sync mode: the logging thread encrypts) is lost
/// and reported as a line that could not be encrypted; the panic does not reach the app's
/// logging call, and the lines after it are written.
#[test]
fn a_line_the_cipher_panics_on_is_reported_lost_in_sync_mode() {
    let dir = tempfile::tempdir().unwrap();
    let cipher = Arc::new(FailingCipher {
        panics: true,
        ..FailingCipher::default()
    });
    let encrypts = Arc::clone(&cipher.failing);
    let g = Xlog::builder()
        .log_dir(dir.path())
        .name_prefix("ps")
        .mode(Mode::Sync)
        .banners(false)
        .clock(clock())
        .cipher(cipher)
        .build()
        .unwrap();
    g.log_message(Level::Info, "t", b"before");
    encrypts.store(1, Ordering::SeqCst);
    g.log_message(Level::Info, "t", b"the cipher panics on this one");
    g.log_message(Level::Info, "t", b"after");
    assert_eq!(g.dropped_lines(), 1);
    drop(g);
    let text = text_of(dir.path());
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].ends_with("][before"), "{text}");
    assert!(
        lines[1].starts_with("[W]")
            && lines[1]
                .ends_with("][xlog dropped 1 lines: they could not be compressed or encrypted"),
        "{text}"
    );
    assert!(lines[2].ends_with("][after"), "{text}");
}

/// In async mode the writer thread encrypts whole blocks: a panic there is answered as any
/// failure to compress or encrypt a block, by appending the block as it was staged (its
/// lines are kept), and the writer thread goes on with the next block.
#[test]
fn a_block_the_cipher_panics_on_is_kept_and_the_writer_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let cipher = Arc::new(FailingCipher {
        panics: true,
        ..FailingCipher::default()
    });
    let encrypts = Arc::clone(&cipher.failing);
    let g = Xlog::builder()
        .log_dir(dir.path())
        .name_prefix("pa")
        .banners(false)
        .clock(clock())
        .cipher(cipher)
        .build()
        .unwrap();
    g.log_message(Level::Info, "t", b"first block");
    g.flush().unwrap();
    encrypts.store(1, Ordering::SeqCst);
    g.log_message(Level::Info, "t", b"the cipher panics on this block");
    g.flush().expect("the writer thread is alive");
    assert_eq!(encrypts.load(Ordering::SeqCst), 0, "the cipher was asked");
    g.log_message(Level::Info, "t", b"third block");
    g.flush().expect("the writer thread is alive");
    assert_eq!(g.dropped_lines(), 0);
    drop(g);
    let text = text_of(dir.path());
    let lines = lines_of(&text);
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].ends_with("][first block"), "{text}");
    assert!(
        lines[1].ends_with("][the cipher panics on this block"),
        "{text}"
    );
    assert!(lines[2].ends_with("][third block"), "{text}");
}
