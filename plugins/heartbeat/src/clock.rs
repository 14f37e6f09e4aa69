//! Wall time for the smart heartbeat, injected so logic never reads the system clock itself.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// A source of wall-clock time.
pub trait WallClock: Send + Sync + fmt::Debug + 'static {
    /// The current wall-clock time.
    fn now(&self) -> SystemTime;
}

/// The operating system's clock ([`SystemTime::now`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl WallClock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that only moves when told to; clones share the same time. For tests and for
/// drivers running in virtual time.
#[derive(Clone, Debug)]
pub struct ManualClock(Arc<Mutex<SystemTime>>);

impl ManualClock {
    /// A clock showing `start`.
    pub fn new(start: SystemTime) -> Self {
        ManualClock(Arc::new(Mutex::new(start)))
    }

    /// A clock showing `secs` seconds after the Unix epoch.
    pub fn at_unix_secs(secs: u64) -> Self {
        Self::new(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut t = self.lock();
        *t += by;
    }

    /// Sets the clock to `to` (which may be earlier).
    pub fn set(&self, to: SystemTime) {
        *self.lock() = to;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SystemTime> {
        // A poisoned lock only means a test panicked while holding it; the time is still valid.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl WallClock for ManualClock {
    fn now(&self) -> SystemTime {
        *self.lock()
    }
}

/// Seconds since the Unix epoch, 0 for earlier times.
pub(crate) fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told_and_clones_share_it() {
        let c = ManualClock::at_unix_secs(100);
        let d = c.clone();
        assert_eq!(unix_secs(c.now()), 100);
        d.advance(Duration::from_secs(5));
        assert_eq!(unix_secs(c.now()), 105);
        c.set(SystemTime::UNIX_EPOCH);
        assert_eq!(unix_secs(d.now()), 0);
        assert!(unix_secs(SystemClock.now()) > 1_600_000_000);
    }
}
