//! The text of a log line, exactly as Mars's `log_formater` writes it.
//!
//! ```text
//! [I][2024-03-14 +8.0 10:26:53.137][16997, 16997*][auth][login.cc:151, Login::OnResult][msg\n
//!  │  │          │    │             │       │     │   │     └ file after the last `\` or `/`
//!  │  │          │    │             │       │     │   └ tag (may be empty)
//!  │  │          │    │             │       │     └ `*` when tid == main thread id
//!  │  │          │    └ local time, milliseconds truncated
//!  │  │          └ UTC offset in hours, printf `%+.1f` (`+5.5`, `-3.5`, `+0.0`)
//!  │  └ local date
//!  └ level letter V D I W E F
//! ```
//!
//! The message has no closing bracket; a `\n` is added only when the message lacks one. A
//! record without metadata is just its message (plus `\n`). Message bytes are copied as given,
//! valid UTF-8 or not.

use std::cell::RefCell;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::clock::{LocalDateTime, WallTime};

/// Largest formatted line, in bytes, newline included (Mars formats into 16 KiB). The tag,
/// file and function are cut to [`MAX_FIELD_LEN`] bytes each and the message to what is left,
/// so every line, whatever its fields, fits.
pub const MAX_LINE_LEN: usize = 16 * 1024;

/// Largest tag, file name or function name printed, in bytes (cut at a character boundary).
pub const MAX_FIELD_LEN: usize = 1024;

/// Severity of a record. Ordered: `Verbose < Debug < … < Fatal`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// `V`, Mars level 0.
    Verbose,
    /// `D`, Mars level 1.
    Debug,
    /// `I`, Mars level 2.
    Info,
    /// `W`, Mars level 3.
    Warn,
    /// `E`, Mars level 4.
    Error,
    /// `F`, Mars level 5. Logging a Fatal line also flushes the staged block to the file.
    Fatal,
}

impl Level {
    /// The letter Mars prints for this level.
    pub fn letter(self) -> u8 {
        match self {
            Level::Verbose => b'V',
            Level::Debug => b'D',
            Level::Info => b'I',
            Level::Warn => b'W',
            Level::Error => b'E',
            Level::Fatal => b'F',
        }
    }

    /// The level for a letter (`V D I W E F`, upper case), if any.
    pub fn from_letter(letter: u8) -> Option<Level> {
        Some(match letter {
            b'V' => Level::Verbose,
            b'D' => Level::Debug,
            b'I' => Level::Info,
            b'W' => Level::Warn,
            b'E' => Level::Error,
            b'F' => Level::Fatal,
            _ => return None,
        })
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Verbose => "verbose",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
            Level::Fatal => "fatal",
        })
    }
}

impl FromStr for Level {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let l = s.to_ascii_lowercase();
        Ok(match l.as_str() {
            "v" | "verbose" | "trace" => Level::Verbose,
            "d" | "debug" => Level::Debug,
            "i" | "info" => Level::Info,
            "w" | "warn" | "warning" => Level::Warn,
            "e" | "error" => Level::Error,
            "f" | "fatal" => Level::Fatal,
            _ => return Err(format!("unknown log level {s:?}")),
        })
    }
}

/// One log record with Mars's metadata.
#[derive(Clone, Copy, Debug)]
pub struct Record<'a> {
    /// Severity.
    pub level: Level,
    /// Tag (Mars's `tag`; the tracing target in the [`crate::XlogLayer`]).
    pub tag: &'a str,
    /// Source file; only the part after the last `\` or `/` is printed.
    pub file: &'a str,
    /// Source line.
    pub line: u32,
    /// Function (or module) name.
    pub func: &'a str,
    /// The message bytes, logged as given.
    pub message: &'a [u8],
}

impl<'a> Record<'a> {
    /// A record with only a level and a message (empty tag, file and function).
    pub fn new(level: Level, message: &'a [u8]) -> Self {
        Record {
            level,
            tag: "",
            file: "",
            line: 0,
            func: "",
            message,
        }
    }
}

/// Process and thread identity printed in `[pid, tid*]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThreadIds {
    /// Process id.
    pub pid: i64,
    /// Thread id (Linux `gettid`).
    pub tid: i64,
    /// Id of the main thread; Mars on Linux uses the pid.
    pub main_tid: i64,
}

impl ThreadIds {
    /// The ids of the calling thread.
    pub fn current() -> Self {
        let pid = current_pid();
        ThreadIds {
            pid,
            tid: current_tid(),
            main_tid: pid,
        }
    }
}

/// Appends the Mars text of `record`, logged at `time` by `ids`, to `out`.
pub fn format_line(out: &mut Vec<u8>, record: &Record<'_>, time: WallTime, ids: ThreadIds) {
    let start = out.len();
    out.push(b'[');
    out.push(record.level.letter());
    out.extend_from_slice(b"][");
    if time.unix_secs != 0 {
        push_time_prefix(out, time);
        out.push(b'.');
        push_padded(out, u64::from(time.millis()), 3);
    }
    out.extend_from_slice(b"][");
    push_i64(out, ids.pid);
    out.extend_from_slice(b", ");
    push_i64(out, ids.tid);
    if ids.tid == ids.main_tid {
        out.push(b'*');
    }
    out.extend_from_slice(b"][");
    out.extend_from_slice(capped(record.tag).as_bytes());
    out.extend_from_slice(b"][");
    out.extend_from_slice(capped(file_name(record.file)).as_bytes());
    out.push(b':');
    push_i64(out, i64::from(record.line));
    out.extend_from_slice(b", ");
    out.extend_from_slice(capped(record.func).as_bytes());
    out.extend_from_slice(b"][");
    push_message(out, start, record.message);
}

/// Appends a line without metadata: the message plus `\n` if it lacks one.
pub fn format_plain(out: &mut Vec<u8>, message: &[u8]) {
    let start = out.len();
    push_message(out, start, message);
}

/// Mars's "mark info": `[pid,tid][YYYY-MM-DD +zzzz HH:MM:SS]` (note: `strftime %z` offset).
pub fn mark_info(time: WallTime, ids: ThreadIds) -> String {
    format!("[{},{}][{}]", ids.pid, ids.tid, mark_time(time))
}

/// `YYYY-MM-DD +zzzz HH:MM:SS`, local time: Mars's `strftime("%Y-%m-%d %z %H:%M:%S")`, the
/// time in its mark info and clock-jump tip.
pub(crate) fn mark_time(time: WallTime) -> String {
    let l = time.local();
    format!(
        "{:04}-{:02}-{:02} {} {:02}:{:02}:{:02}",
        l.year,
        l.month,
        l.day,
        strftime_z(time.utc_offset_secs),
        l.hour,
        l.minute,
        l.second
    )
}

/// The UTC offset as Mars prints it in lines: hours with printf `%+.1f`.
pub fn offset_hours(utc_offset_secs: i32) -> String {
    format!("{:+.1}", f64::from(utc_offset_secs) / 3600.0)
}

fn strftime_z(off: i32) -> String {
    let sign = if off < 0 { '-' } else { '+' };
    let a = off.unsigned_abs();
    format!("{sign}{:02}{:02}", a / 3600, a % 3600 / 60)
}

fn push_message(out: &mut Vec<u8>, start: usize, message: &[u8]) {
    // Keep the whole line within MAX_LINE_LEN, newline included.
    let room = MAX_LINE_LEN.saturating_sub(out.len() - start + 1);
    let msg = &message[..message.len().min(room)];
    out.extend_from_slice(msg);
    if msg.last() != Some(&b'\n') {
        out.push(b'\n');
    }
}

/// `field` cut to at most [`MAX_FIELD_LEN`] bytes, at a character boundary.
fn capped(field: &str) -> &str {
    let mut end = field.len().min(MAX_FIELD_LEN);
    while !field.is_char_boundary(end) {
        end -= 1;
    }
    &field[..end]
}

fn file_name(path: &str) -> &str {
    let cut = path.rfind('\\').or_else(|| path.rfind('/'));
    match cut {
        Some(i) if i + 1 < path.len() => &path[i + 1..],
        _ => path,
    }
}

thread_local! {
    // Formatting the date and zone costs more than the rest of the line; it changes once a
    // second, so each thread keeps the last one.
    static TIME_CACHE: RefCell<(i64, i32, Vec<u8>)> = const { RefCell::new((i64::MIN, 0, Vec::new())) };
}

fn push_time_prefix(out: &mut Vec<u8>, time: WallTime) {
    let text = |time: WallTime| {
        let l: LocalDateTime = time.local();
        format!(
            "{:04}-{:02}-{:02} {} {:02}:{:02}:{:02}",
            l.year,
            l.month,
            l.day,
            offset_hours(time.utc_offset_secs),
            l.hour,
            l.minute,
            l.second
        )
    };
    let cached = TIME_CACHE.try_with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != time.unix_secs || c.1 != time.utc_offset_secs {
            *c = (
                time.unix_secs,
                time.utc_offset_secs,
                text(time).into_bytes(),
            );
        }
        out.extend_from_slice(&c.2);
    });
    if cached.is_err() {
        // Logging from a thread-local destructor, after the cache is gone.
        out.extend_from_slice(text(time).as_bytes());
    }
}

fn push_i64(out: &mut Vec<u8>, v: i64) {
    if v < 0 {
        out.push(b'-');
    }
    let mut n = v.unsigned_abs();
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&tmp[i..]);
}

fn push_padded(out: &mut Vec<u8>, v: u64, width: usize) {
    let mut tmp = [b'0'; 20];
    let mut n = v;
    let mut i = tmp.len();
    while n > 0 || tmp.len() - i < width {
        i -= 1;
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    out.extend_from_slice(&tmp[i..]);
}

thread_local! {
    static TID: i64 = read_tid();
}

/// The process id, cached like Mars does (`getpid` is a system call on current glibc).
fn current_pid() -> i64 {
    static PID: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *PID.get_or_init(|| i64::from(std::process::id()))
}

/// The calling thread's kernel thread id (cached per thread).
pub fn current_tid() -> i64 {
    // From a thread-local destructor the cache may be gone: read the id again.
    TID.try_with(|t| *t).unwrap_or_else(|_| read_tid())
}

fn read_tid() -> i64 {
    // `/proc/thread-self` links to `<pid>/task/<tid>`: the tid without any FFI.
    if let Ok(p) = std::fs::read_link("/proc/thread-self") {
        if let Some(tid) = p
            .file_name()
            .and_then(|s| s.to_str())
            .and_then(|s| s.parse().ok())
        {
            return tid;
        }
    }
    use std::sync::atomic::{AtomicI64, Ordering};
    static NEXT: AtomicI64 = AtomicI64::new(1);
    i64::from(std::process::id()) * 1000 + NEXT.fetch_add(1, Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> ThreadIds {
        ThreadIds {
            pid: 16997,
            tid: 16997,
            main_tid: 16997,
        }
    }

    #[test]
    fn formats_a_mars_line_exactly() {
        let mut out = Vec::new();
        let t = WallTime::new(1_710_383_213, 274_999_999, 8 * 3600);
        let r = Record {
            level: Level::Info,
            tag: "auth",
            file: "/src/app/login.cc",
            line: 151,
            func: "Login::OnResult",
            message: b"login result uid=3281552",
        };
        format_line(&mut out, &r, t, ids());
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "[I][2024-03-14 +8.0 10:26:53.274][16997, 16997*][auth][login.cc:151, \
             Login::OnResult][login result uid=3281552\n"
        );
    }

    #[test]
    fn other_thread_has_no_star_and_message_newline_is_kept() {
        let mut out = Vec::new();
        let t = WallTime::new(1_710_383_213, 685_000_000, 8 * 3600);
        let r = Record {
            level: Level::Verbose,
            tag: "db",
            file: "c:\\x\\store.cc",
            line: 117,
            func: "Store::Commit",
            message: b"commit\n",
        };
        format_line(
            &mut out,
            &r,
            t,
            ThreadIds {
                pid: 16997,
                tid: 17000,
                main_tid: 16997,
            },
        );
        assert_eq!(
            out,
            b"[V][2024-03-14 +8.0 10:26:53.685][16997, 17000][db][store.cc:117, \
              Store::Commit][commit\n"
                .to_vec()
        );
    }

    #[test]
    fn zone_rendering_matches_printf() {
        assert_eq!(offset_hours(8 * 3600), "+8.0");
        assert_eq!(offset_hours(5 * 3600 + 1800), "+5.5");
        assert_eq!(offset_hours(-(3 * 3600 + 1800)), "-3.5");
        assert_eq!(offset_hours(0), "+0.0");
        assert_eq!(offset_hours(5 * 3600 + 45 * 60), "+5.8");
        assert_eq!(strftime_z(8 * 3600), "+0800");
        assert_eq!(strftime_z(-(3 * 3600 + 1800)), "-0330");
    }

    #[test]
    fn zero_seconds_print_an_empty_time_and_bytes_pass_through() {
        let mut out = Vec::new();
        format_line(
            &mut out,
            &Record::new(Level::Error, b"\xff\xfe"),
            WallTime::new(0, 0, 0),
            ids(),
        );
        assert_eq!(out, b"[E][][16997, 16997*][][:0, ][\xff\xfe\n".to_vec());
    }

    #[test]
    fn long_messages_are_cut_to_the_line_limit() {
        let mut out = Vec::new();
        let msg = vec![b'x'; 40_000];
        format_line(
            &mut out,
            &Record::new(Level::Info, &msg),
            WallTime::new(1, 0, 0),
            ids(),
        );
        assert_eq!(out.len(), MAX_LINE_LEN);
        assert_eq!(out.last(), Some(&b'\n'));
    }

    #[test]
    fn huge_tag_file_and_function_are_cut_so_the_line_fits() {
        let big = "é".repeat(200_000);
        let mut out = Vec::new();
        format_line(
            &mut out,
            &Record {
                tag: &big,
                file: &big,
                func: &big,
                ..Record::new(Level::Info, b"the message")
            },
            WallTime::new(1, 0, 0),
            ids(),
        );
        assert!(out.len() <= MAX_LINE_LEN, "{}", out.len());
        assert!(out.ends_with(b"][the message\n"));
        assert!(
            std::str::from_utf8(&out).is_ok(),
            "cut at character boundaries"
        );
        let tag = "é".repeat(MAX_FIELD_LEN / 2);
        assert!(out
            .windows(tag.len() + 2)
            .any(|w| w == format!("[{tag}]").as_bytes()));
    }

    #[test]
    fn mark_info_uses_strftime_offset() {
        let t = WallTime::new(1_795_650_730, 0, 8 * 3600);
        assert_eq!(
            mark_info(t, ids()),
            "[16997,16997][2026-11-26 +0800 07:52:10]"
        );
    }

    #[test]
    fn levels_parse_and_print() {
        assert_eq!("W".parse::<Level>().unwrap(), Level::Warn);
        assert_eq!(Level::from_letter(b'F'), Some(Level::Fatal));
        assert_eq!(Level::from_letter(b'x'), None);
        assert!(Level::Verbose < Level::Fatal);
    }
}
