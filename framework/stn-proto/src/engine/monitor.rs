//! App activity (§2.3) and the reconnect pacing of one link (§7.9).

use std::time::{Duration, Instant};

use rand::Rng;

/// The activity bucket reconnect pacing is keyed by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Bucket {
    Fg1Min,
    Fg10Min,
    FgLong,
    BgActive,
    Inactive,
}

/// Foreground / active state fed by the host.
#[derive(Debug)]
pub(crate) struct Activity {
    pub(crate) foreground: bool,
    pub(crate) active: bool,
    pub(crate) last_change: Instant,
}

impl Activity {
    /// Mars's start state: background, active, changed "now".
    pub(crate) fn new(now: Instant) -> Self {
        Activity {
            foreground: false,
            active: true,
            last_change: now,
        }
    }

    pub(crate) fn bucket(&self, now: Instant) -> Bucket {
        if !self.active {
            return Bucket::Inactive;
        }
        if !self.foreground {
            return Bucket::BgActive;
        }
        let since = now.saturating_duration_since(self.last_change);
        if since < Duration::from_secs(60) {
            Bucket::Fg1Min
        } else if since < Duration::from_secs(600) {
            Bucket::Fg10Min
        } else {
            Bucket::FgLong
        }
    }
}

/// What asked for a connection (§7.9 rows).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Trigger {
    /// A task is waiting for the link (`kTaskConnect`).
    Task,
    /// The link went down, or the app state changed (`kLongLinkConnect`).
    Automatic,
    /// The network changed: connect at once.
    NetworkChange,
    /// The paced reconnect timer fired (Mars's "rebuild alarm").
    Rebuild,
}

/// The environment a pacing decision depends on.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PacingEnv {
    pub(crate) bucket: Bucket,
    pub(crate) has_account: bool,
    pub(crate) has_network: bool,
}

/// Reconnect pacing state of one link.
#[derive(Debug, Default)]
pub(crate) struct Monitor {
    /// When the previous connect cycle started (Mars's `dns_tick`).
    pub(crate) last_attempt: Option<Instant>,
    /// Index into [`INACTIVE_BACKOFF`].
    backoff: usize,
    /// The last connection delivered a task response before it broke: a task waiting for
    /// the link reconnects at once (Phobos's [`Recovery`](crate::Recovery)); cleared when a
    /// cycle starts.
    pub(crate) fast_reconnect: bool,
}

impl Monitor {
    /// How long to wait before connecting; zero means "now". Pure: calling it again (as
    /// every trigger may) gives the same answer.
    ///
    /// Design: Mars moves the inactive back-off index on every call, and its task loop calls
    /// once a second, so a waiting task escalates the wait to 600 s within seconds (§18.12).
    /// Here the index moves only when a cycle actually starts ([`Monitor::on_cycle_start`]).
    pub(crate) fn wait(
        &self,
        now: Instant,
        trigger: Trigger,
        env: PacingEnv,
        rng: &mut impl Rng,
    ) -> Duration {
        let posttime = self
            .last_attempt
            .map_or(Duration::MAX, |t| now.saturating_duration_since(t));
        // The paced timer was armed by an earlier decision (whichever row gave the shorter
        // wait): when it fires, connect.
        if matches!(trigger, Trigger::NetworkChange | Trigger::Rebuild) {
            return Duration::ZERO;
        }
        // Design: the task row's wait is for connects that fail; a connection that carried
        // a response and then broke is paid for by that response, so one reconnect goes at
        // once (the flag clears when the cycle starts, so a failing reconnect is paced).
        if trigger == Trigger::Task && self.fast_reconnect {
            return Duration::ZERO;
        }
        if env.bucket != Bucket::Inactive {
            let interval = interval(trigger, env, rng);
            return interval.saturating_sub(posttime);
        }
        let idx = self.next_backoff(posttime);
        let wait = Duration::from_secs(INACTIVE_BACKOFF[idx]).saturating_sub(posttime);
        wait.min(Duration::from_secs(600))
    }

    /// A connect cycle starts now, for `cause` (`None`: the app forced it, which leaves the
    /// back-off index as it is, as Mars's `MakesureLonglinkConnected` does).
    ///
    /// The inactive back-off index moves as the decision that started the cycle moved it
    /// (§7.9): a network change, or any cycle while the app is active, resets it; a cycle
    /// started at once by a task or the link's status steps it by `posttime`; the rebuild
    /// timer carries out the decision that armed it, which stepped it up (a decision with
    /// `posttime` of 600 s or more gives no wait, so it never arms the timer). Design: taking
    /// the rebuild's `posttime` now instead (it has reached the wait, 600 s at the top of the
    /// table) stepped the index down, and a failing link alternated 480 s and 600 s.
    pub(crate) fn on_cycle_start(&mut self, now: Instant, inactive: bool, cause: Option<Trigger>) {
        let posttime = self
            .last_attempt
            .map_or(Duration::MAX, |t| now.saturating_duration_since(t));
        self.backoff = match cause {
            None => self.backoff,
            Some(_) if !inactive => 0,
            Some(Trigger::NetworkChange) => 0,
            Some(Trigger::Rebuild) => (self.backoff + 1).min(INACTIVE_BACKOFF.len() - 1),
            Some(Trigger::Task | Trigger::Automatic) => self.next_backoff(posttime),
        };
        self.last_attempt = Some(now);
        self.fast_reconnect = false;
    }

    fn next_backoff(&self, posttime: Duration) -> usize {
        if posttime < Duration::from_secs(600) {
            (self.backoff + 1).min(INACTIVE_BACKOFF.len() - 1)
        } else {
            self.backoff.saturating_sub(1)
        }
    }
}

/// The interval table (§7.9), seconds, with the automatic row's adjustment.
fn interval(trigger: Trigger, env: PacingEnv, rng: &mut impl Rng) -> Duration {
    let col = match env.bucket {
        Bucket::Fg1Min => 0,
        Bucket::Fg10Min => 1,
        Bucket::FgLong => 2,
        Bucket::BgActive => 3,
        Bucket::Inactive => 4,
    };
    let secs = match trigger {
        Trigger::Task => TASK_ROW[col],
        Trigger::NetworkChange | Trigger::Rebuild => 0,
        Trigger::Automatic => {
            let x = AUTO_ROW[col];
            if matches!(env.bucket, Bucket::FgLong | Bucket::Inactive) {
                if env.bucket == Bucket::Inactive && !env.has_account {
                    SEVEN_DAYS
                } else if !env.has_network {
                    x * 3 + 600
                } else if !env.has_account {
                    x * 2 + 300
                } else {
                    x + rng.gen_range(0..20)
                }
            } else {
                x
            }
        }
    };
    Duration::from_secs(secs)
}

/// Task-driven intervals by bucket (s).
const TASK_ROW: [u64; 5] = [5, 10, 20, 30, 300];
/// Automatic intervals by bucket (s).
const AUTO_ROW: [u64; 5] = [15, 30, 120, 300, 600];
/// Inactive, no account.
const SEVEN_DAYS: u64 = 604_800;
/// The inactive back-off table (s).
pub(crate) const INACTIVE_BACKOFF: [u64; 7] = [0, 60, 120, 240, 360, 480, 600];

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;

    fn env(bucket: Bucket) -> PacingEnv {
        PacingEnv {
            bucket,
            has_account: true,
            has_network: true,
        }
    }

    #[test]
    fn buckets_follow_foreground_time() {
        let t0 = crate::tests::epoch::epoch();
        let mut a = Activity::new(t0);
        assert_eq!(a.bucket(t0), Bucket::BgActive);
        a.foreground = true;
        assert_eq!(a.bucket(t0 + Duration::from_secs(59)), Bucket::Fg1Min);
        assert_eq!(a.bucket(t0 + Duration::from_secs(60)), Bucket::Fg10Min);
        assert_eq!(a.bucket(t0 + Duration::from_secs(600)), Bucket::FgLong);
        a.active = false;
        assert_eq!(a.bucket(t0), Bucket::Inactive);
    }

    #[test]
    fn automatic_row_matches_the_connect_monitor_table() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let s = |b, acc, net, rng: &mut ChaCha8Rng| {
            interval(
                Trigger::Automatic,
                PacingEnv {
                    bucket: b,
                    has_account: acc,
                    has_network: net,
                },
                rng,
            )
            .as_secs()
        };
        assert_eq!(s(Bucket::Fg1Min, true, true, &mut rng), 15);
        assert_eq!(s(Bucket::Fg10Min, true, true, &mut rng), 30);
        assert_eq!(s(Bucket::BgActive, true, true, &mut rng), 300);
        assert_eq!(s(Bucket::Inactive, false, true, &mut rng), SEVEN_DAYS);
        assert_eq!(s(Bucket::FgLong, true, false, &mut rng), 960);
        assert_eq!(s(Bucket::FgLong, false, true, &mut rng), 540);
        for _ in 0..50 {
            let v = s(Bucket::FgLong, true, true, &mut rng);
            assert!((120..140).contains(&v), "{v}");
        }
    }

    #[test]
    fn active_wait_is_interval_minus_time_since_last_cycle() {
        let t0 = crate::tests::epoch::epoch();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut m = Monitor::default();
        assert_eq!(
            m.wait(t0, Trigger::Task, env(Bucket::Fg1Min), &mut rng),
            Duration::ZERO
        );
        m.on_cycle_start(t0, false, Some(Trigger::Task));
        let w = m.wait(
            t0 + Duration::from_secs(2),
            Trigger::Task,
            env(Bucket::Fg1Min),
            &mut rng,
        );
        assert_eq!(w, Duration::from_secs(3));
        let w = m.wait(
            t0 + Duration::from_secs(2),
            Trigger::Automatic,
            env(Bucket::BgActive),
            &mut rng,
        );
        assert_eq!(w, Duration::from_secs(298));
        let w = m.wait(t0, Trigger::NetworkChange, env(Bucket::Inactive), &mut rng);
        assert_eq!(w, Duration::ZERO);
    }

    #[test]
    fn inactive_backoff_moves_once_per_cycle_not_per_call() {
        let t0 = crate::tests::epoch::epoch();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut m = Monitor::default();
        m.on_cycle_start(t0, true, Some(Trigger::Task));
        let e = env(Bucket::Inactive);
        let now = t0 + Duration::from_secs(10);
        // Asking every second does not escalate (Mars §18.12 would reach 600 s).
        for _ in 0..20 {
            assert_eq!(
                m.wait(now, Trigger::Task, e, &mut rng),
                Duration::from_secs(50)
            );
        }
        m.on_cycle_start(t0 + Duration::from_secs(60), true, Some(Trigger::Rebuild));
        let w = m.wait(t0 + Duration::from_secs(70), Trigger::Task, e, &mut rng);
        assert_eq!(w, Duration::from_secs(110));
        assert_eq!(m.wait(now, Trigger::Rebuild, e, &mut rng), Duration::ZERO);
    }
}
