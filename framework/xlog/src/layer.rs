//! tracing integration: [`XlogLayer`] and [`MakeWriter`] for [`Xlog`].

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::io;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, Layer};

use crate::format::{Level, Record, MAX_LINE_LEN};
use crate::writer::Xlog;

/// A tracing [`Layer`] that writes every event as a Mars line: level letter from the event
/// level (TRACE → `V`), the target as tag, file and line from the metadata, the module path as
/// function, and the message followed by the other fields as ` key=value`.
///
/// An event emitted from inside the writer while it writes another line (by the
/// [`LogCipher`](phobos_plugin_api::cipher::LogCipher) while it encrypts, by the clock, by
/// code they call) is logged after that line, as [`Xlog::log`] does with any line logged from
/// there. This needs the layer under the global subscriber: a scoped dispatcher
/// (`with_default`, `set_default`) discards such an event itself, before any layer sees it.
///
/// ```
/// use tracing_subscriber::prelude::*;
/// let dir = tempfile::tempdir().unwrap();
/// let guard = phobos_xlog::Xlog::builder().log_dir(dir.path()).name_prefix("app").build().unwrap();
/// let subscriber = tracing_subscriber::registry().with(phobos_xlog::XlogLayer::new(guard.xlog()));
/// tracing::subscriber::with_default(subscriber, || tracing::info!(user = 7, "logged in"));
/// drop(guard); // flushes
/// ```
#[derive(Clone, Debug)]
pub struct XlogLayer {
    xlog: Xlog,
}

impl XlogLayer {
    /// A layer writing to `xlog`.
    pub fn new(xlog: Xlog) -> Self {
        XlogLayer { xlog }
    }
}

/// Per-thread buffers: the message, then the other fields (joined after the message).
struct Buffers {
    message: String,
    fields: String,
}

impl Buffers {
    fn new() -> Self {
        Buffers {
            message: String::with_capacity(256),
            fields: String::with_capacity(128),
        }
    }
}

thread_local! {
    static MESSAGE: RefCell<Buffers> = RefCell::new(Buffers::new());
}

impl<S: Subscriber> Layer<S> for XlogLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        let level = match *meta.level() {
            tracing::Level::TRACE => Level::Verbose,
            tracing::Level::DEBUG => Level::Debug,
            tracing::Level::INFO => Level::Info,
            tracing::Level::WARN => Level::Warn,
            tracing::Level::ERROR => Level::Error,
        };
        if level < self.xlog.config().level {
            return;
        }
        let write = |m: &mut Buffers| {
            m.message.clear();
            m.fields.clear();
            event.record(&mut FieldVisitor {
                message: &mut m.message,
                fields: &mut m.fields,
                had_message: false,
            });
            if !m.fields.is_empty() {
                if !m.message.is_empty() {
                    m.message.push(' ');
                }
                m.message.push_str(&m.fields);
            }
            let record = Record {
                level,
                tag: meta.target(),
                file: meta.file().unwrap_or(""),
                line: meta.line().unwrap_or(0),
                func: meta.module_path().unwrap_or(""),
                message: m.message.as_bytes(),
            };
            self.xlog.log(&record);
        };
        let done = MESSAGE.try_with(|m| match m.try_borrow_mut() {
            Ok(mut m) => write(&mut m),
            // Re-entrant: an event from inside a field's Debug impl, or from a panic hook
            // while that impl panics (the panic's own line). Format it in buffers of its own.
            Err(_) => write(&mut Buffers::new()),
        });
        if done.is_err() {
            // The thread's buffers are gone (an event from a thread-local destructor).
            write(&mut Buffers::new());
        }
    }
}

/// Writes the `message` field into `message` and every other field as `name=value` into
/// `fields`, so the line reads `message k=v k=v` whatever the field order, without allocating.
struct FieldVisitor<'a> {
    message: &'a mut String,
    fields: &'a mut String,
    had_message: bool,
}

impl FieldVisitor<'_> {
    /// Where `field`'s value goes; writes the `name=` prefix for a non-message field.
    fn target(&mut self, field: &Field) -> &mut String {
        if field.name() == "message" && !self.had_message {
            self.had_message = true;
            return self.message;
        }
        if !self.fields.is_empty() {
            push_capped(self.fields, " ");
        }
        push_capped(self.fields, field.name());
        push_capped(self.fields, "=");
        self.fields
    }
}

impl Visit for FieldVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        push_capped(self.target(field), value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // The error a full buffer returns stops the value's formatting early.
        let _ = write!(Capped(self.target(field)), "{value:?}");
    }
}

/// Text kept per buffer: a line is cut to [`MAX_LINE_LEN`] anyway, so formatting more of a
/// huge field only costs time and leaves a buffer that large on the thread for good.
const BUFFER_CAP: usize = MAX_LINE_LEN;

/// Appends `s` to `buf` up to [`BUFFER_CAP`] bytes (ending on a character boundary); whether
/// all of it fitted.
fn push_capped(buf: &mut String, s: &str) -> bool {
    let room = BUFFER_CAP.saturating_sub(buf.len());
    if s.len() <= room {
        buf.push_str(s);
        return true;
    }
    // At least `room` bytes, so the line is cut where it would have been.
    let mut end = room;
    while !s.is_char_boundary(end) {
        end += 1;
    }
    buf.push_str(&s[..end]);
    false
}

/// A [`fmt::Write`] into a buffer that fails once [`BUFFER_CAP`] is reached.
struct Capped<'a>(&'a mut String);

impl fmt::Write for Capped<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if push_capped(self.0, s) {
            Ok(())
        } else {
            Err(fmt::Error)
        }
    }
}

/// An [`io::Write`] handed out by `Xlog`'s [`MakeWriter`]: every complete line written to it
/// is logged as a line without metadata (the formatting layer already made the text). An
/// unfinished line is logged when the writer is dropped.
#[derive(Debug)]
pub struct XlogWriter {
    xlog: Xlog,
    pending: Vec<u8>,
    /// Bytes copied into `pending` so far (tests: the work is linear in the input).
    #[cfg(test)]
    copied: usize,
}

impl io::Write for XlogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // Each line is logged straight from `buf` (no shifting of a pending buffer per line,
        // which made one large write quadratic); only an unfinished line is kept, and only
        // its first MAX_LINE_LEN bytes: the line is cut there anyway.
        let mut rest = buf;
        while let Some(i) = rest.iter().position(|&b| b == b'\n') {
            let (line, tail) = rest.split_at(i + 1);
            if self.pending.is_empty() {
                self.xlog.log_plain(line);
            } else {
                self.keep(line);
                self.xlog.log_plain(&self.pending);
                self.pending.clear();
            }
            rest = tail;
        }
        self.keep(rest);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl XlogWriter {
    /// Appends to the unfinished line, up to [`MAX_LINE_LEN`] bytes.
    fn keep(&mut self, bytes: &[u8]) {
        let room = MAX_LINE_LEN.saturating_sub(self.pending.len());
        let take = bytes.len().min(room);
        self.pending.extend_from_slice(&bytes[..take]);
        #[cfg(test)]
        {
            self.copied += take;
        }
    }
}

impl Drop for XlogWriter {
    fn drop(&mut self) {
        if !self.pending.is_empty() {
            self.xlog.log_plain(&self.pending);
        }
    }
}

impl<'a> MakeWriter<'a> for Xlog {
    type Writer = XlogWriter;

    fn make_writer(&'a self) -> XlogWriter {
        XlogWriter {
            xlog: self.clone(),
            pending: Vec::new(),
            #[cfg(test)]
            copied: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tracing_subscriber::prelude::*;

    use crate::testutil::decode_file;
    use crate::{FixedClock, WallTime, Xlog, XlogLayer};

    #[test]
    fn events_become_mars_lines_with_target_file_and_fields() {
        let dir = tempfile::tempdir().unwrap();
        let guard = Xlog::builder()
            .log_dir(dir.path())
            .name_prefix("tr")
            .banners(false)
            .clock(Arc::new(FixedClock(WallTime::new(
                1_710_383_213,
                5_000_000,
                0,
            ))))
            .build()
            .unwrap();
        let sub = tracing_subscriber::registry().with(XlogLayer::new(guard.xlog()));
        let line = line!() + 2;
        tracing::subscriber::with_default(sub, || {
            tracing::warn!(target: "net::conn", peer = "10.0.0.1", retries = 3, "connect failed");
            tracing::trace!("fine detail");
        });
        // The MakeWriter side: fmt-layer output becomes lines without metadata.
        let sub = tracing_subscriber::fmt()
            .with_writer(guard.xlog())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(sub, || tracing::error!("via make_writer"));
        drop(guard);
        let text = decode_file(&std::fs::read(dir.path().join("tr_20240314.xlog")).unwrap());
        let text = String::from_utf8(text).unwrap();
        let mut lines = text.lines();
        let first = lines.next().unwrap();
        assert!(
            first.starts_with("[W][2024-03-14 +0.0 02:26:53.005]["),
            "{first}"
        );
        assert!(
            first.ends_with(&format!(
                "][net::conn][layer.rs:{line}, phobos_xlog::layer::tests][connect failed \
                 peer=10.0.0.1 retries=3"
            )),
            "{first}"
        );
        assert!(lines.next().unwrap().ends_with("][fine detail"));
        let third = lines.next().unwrap();
        assert!(
            third.contains("ERROR") && third.ends_with("via make_writer"),
            "{third}"
        );
    }

    /// A write of many lines copies nothing but its unfinished last line, and a line split
    /// across writes is copied once: the writer's work is linear in what it is handed (it
    /// used to shift its whole buffer down per line: ~8 TB of copying for 2 million lines).
    #[test]
    fn the_writer_copies_only_unfinished_lines() {
        use std::io::Write;
        use tracing_subscriber::fmt::MakeWriter;

        let dir = tempfile::tempdir().unwrap();
        let guard = crate::testutil::quiet_logger(dir.path(), "wr");
        let xlog = guard.xlog();
        let mut w = xlog.make_writer();
        w.write_all(&b"abc\n".repeat(100_000)).unwrap();
        assert_eq!(
            w.copied, 0,
            "complete lines are logged from the caller's buffer"
        );
        w.write_all(b"abc\nhalf a ").unwrap();
        w.write_all(b"line\nnext").unwrap();
        assert_eq!(w.copied, "half a ".len() + "line\n".len() + "next".len());
        w.write_all(&[b'x'; 3 * crate::format::MAX_LINE_LEN])
            .unwrap();
        assert!(w.pending.len() <= crate::format::MAX_LINE_LEN);
    }
}
