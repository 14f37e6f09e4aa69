//! Wall-clock time for timestamps, block hours and file dates: [`Clock`].
//!
//! Everything in xlog that depends on the time of day asks an injected [`Clock`], so tests can
//! pin timestamps and time zones. [`SystemClock`] is the default.

use std::cell::Cell;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{Local, Offset, TimeZone};

/// A point in wall-clock time together with the local UTC offset in force at that moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WallTime {
    /// Seconds since the Unix epoch (UTC).
    pub unix_secs: i64,
    /// Sub-second part, in nanoseconds (0..1_000_000_000).
    pub nanos: u32,
    /// Local offset from UTC, in seconds (east positive: `+8:00` is `28_800`).
    pub utc_offset_secs: i32,
}

impl WallTime {
    /// Builds a wall time from Unix seconds, nanoseconds and a UTC offset in seconds.
    pub fn new(unix_secs: i64, nanos: u32, utc_offset_secs: i32) -> Self {
        Self {
            unix_secs,
            nanos: nanos.min(999_999_999),
            utc_offset_secs,
        }
    }

    /// Seconds since the epoch shifted into local time (used for calendar fields).
    pub fn local_secs(&self) -> i64 {
        self.unix_secs + i64::from(self.utc_offset_secs)
    }

    /// The local calendar date and time of day.
    pub fn local(&self) -> LocalDateTime {
        LocalDateTime::from_local_secs(self.local_secs())
    }

    /// Milliseconds within the second, truncated (as Mars prints them).
    pub fn millis(&self) -> u32 {
        self.nanos / 1_000_000
    }
}

/// Calendar fields of a local time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalDateTime {
    /// Year, e.g. 2024.
    pub year: i32,
    /// Month 1–12.
    pub month: u32,
    /// Day of month 1–31.
    pub day: u32,
    /// Hour 0–23.
    pub hour: u32,
    /// Minute 0–59.
    pub minute: u32,
    /// Second 0–59.
    pub second: u32,
}

impl LocalDateTime {
    /// Splits seconds since the epoch (already shifted to local time) into calendar fields.
    pub fn from_local_secs(secs: i64) -> Self {
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        Self {
            year,
            month,
            day,
            hour: (rem / 3600) as u32,
            minute: (rem % 3600 / 60) as u32,
            second: (rem % 60) as u32,
        }
    }

    /// `YYYYMMDD`, the date part of log file names.
    pub fn ymd_compact(&self) -> String {
        format!("{:04}{:02}{:02}", self.year, self.month, self.day)
    }
}

/// Source of wall-clock time and the local time zone.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The current time and the UTC offset in force at that time.
    ///
    /// It may log through the writer it serves, even at every call. Every logged line asks
    /// the clock for its time first, so a line the clock logs is not timed by asking it
    /// again: it gets the last time a clock gave its thread (the system clock's if none has
    /// yet), and lands before the line whose time was being asked for. A line logged while
    /// the writer holds its own locks is written once they are released.
    fn now(&self) -> WallTime;
}

thread_local! {
    /// Whether this thread is inside a [`Clock::now`] call made by xlog.
    static ASKING: Cell<bool> = const { Cell::new(false) };
    /// The last time a clock gave this thread.
    static LAST: Cell<Option<WallTime>> = const { Cell::new(None) };
}

/// `clock.now()`, as every part of xlog asks it: a call made from inside a clock's own
/// `now` (the clock logged a line) does not ask again but gets the last time a clock gave
/// this thread, or the system clock's when none has yet.
///
/// Design: a clock that logs at every call would otherwise recurse until the stack
/// overflows, each line asking the clock whose line it is. The guard is per thread, not per
/// clock, like the guard of the write path (`writer/nested.rs`): a clock logging into
/// another writer, whose clock logs back, is stopped too.
pub(crate) fn ask(clock: &dyn Clock) -> WallTime {
    if ASKING.get() {
        return LAST.get().unwrap_or_else(|| SystemClock.now());
    }
    /// Clears the flag however `now` returns (it may unwind).
    struct Asking;
    impl Drop for Asking {
        fn drop(&mut self) {
            ASKING.set(false);
        }
    }
    ASKING.set(true);
    let _asking = Asking;
    let now = clock.now();
    LAST.set(Some(now));
    now
}

/// The system clock with the system's local time zone (`TZ`, `/etc/localtime`).
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> WallTime {
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let secs = since.as_secs() as i64;
        let offset = cached_offset(secs);
        WallTime::new(secs, since.subsec_nanos(), offset)
    }
}

/// A clock that always reports the same instant (tests, reproducible output).
#[derive(Clone, Copy, Debug)]
pub struct FixedClock(pub WallTime);

impl Clock for FixedClock {
    fn now(&self) -> WallTime {
        self.0
    }
}

thread_local! {
    // (unix second, offset): time-zone rules change at most on second boundaries, and asking
    // chrono once per second per thread keeps the hot path at one `SystemTime::now()`.
    static OFFSET_CACHE: Cell<(i64, i32)> = const { Cell::new((i64::MIN, 0)) };
}

fn cached_offset(secs: i64) -> i32 {
    OFFSET_CACHE.with(|c| {
        let (s, off) = c.get();
        if s == secs {
            return off;
        }
        let off = match Local.timestamp_opt(secs, 0) {
            chrono::LocalResult::Single(t) | chrono::LocalResult::Ambiguous(t, _) => {
                t.offset().fix().local_minus_utc()
            }
            chrono::LocalResult::None => 0,
        };
        c.set((secs, off));
        off
    })
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar.
fn civil_from_days(z: i64) -> (i32, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    ((if m <= 2 { y + 1 } else { y }) as i32, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_match_known_values() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_796), (2024, 3, 14));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }

    #[test]
    fn local_fields_apply_the_offset() {
        // 2024-03-14 02:26:53 UTC is 10:26:53 in +8.
        let t = WallTime::new(1_710_383_213, 137_000_000, 8 * 3600);
        let l = t.local();
        assert_eq!(
            (l.year, l.month, l.day, l.hour, l.minute, l.second),
            (2024, 3, 14, 10, 26, 53)
        );
        assert_eq!(t.millis(), 137);
        assert_eq!(l.ymd_compact(), "20240314");
    }

    #[test]
    fn system_clock_is_sane() {
        let t = SystemClock.now();
        assert!(t.unix_secs > 1_600_000_000);
        assert!(t.utc_offset_secs.abs() <= 14 * 3600);
    }
}
