//! [`SmartHeartbeat`]: Mars's adaptive heartbeat (spec §12).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use phobos_plugin_api::{HeartbeatContext, HeartbeatPolicy, HeartbeatPolicyFactory, NetKind};
use serde::{Deserialize, Serialize};

use crate::clock::{unix_secs, SystemClock, WallClock};
use crate::state::{HeartType, LabelState, Labels, CEILING_MS, MIN_HEART_MS};
use crate::{interval_from_ms, ConfigError};

/// Mars's smart heartbeat: learns, per network label, the longest interval that keeps the
/// link alive while the app is inactive.
///
/// # Behaviour (spec §12)
///
/// - The app is active, the link has had fewer than 3 answered heartbeats, or the network
///   has no label → 210 s. Otherwise the label's learnt interval.
/// - Each answered heartbeat at the label's interval, following another at the same interval,
///   counts a success; 5 successes step the interval up by 60 s (to at most 580 s, where the
///   search stops: *stable*).
/// - 2 failures at an interval above 210 s step it down by 80 s and stop the search (or, when
///   already stable, restart it from 210 s).
/// - A stable label below 580 s that has not changed for 7 days probes 20 s higher.
/// - Doze detection (inactive app on a mobile network): interval timers firing ≥ 20 s late
///   count as doze, others as normal; with doze ≥ 2 and doze > 2 × normal the device is in
///   *doze style* and the search jumps straight between 210 s and 580 s.
/// - The learnt state of at most 20 labels is exported as text
///   ([`export_state`](HeartbeatPolicyFactory::export_state), Mars's `Heartbeat.ini` keys).
///
/// The schedule on a fresh label with an inactive app and every heartbeat answered is
/// 210 s × 8, 270 × 6, 330 × 6, 390 × 6, 450 × 6, 510 × 6, 570 × 6, then 580 s for good.
///
/// # Calling protocol
///
/// The framework asks [`next_interval`](HeartbeatPolicy::next_interval) once per heartbeat,
/// right after sending it, and then reports that heartbeat's outcome through
/// [`on_ack`](HeartbeatPolicy::on_ack) or [`on_timeout`](HeartbeatPolicy::on_timeout); a link
/// closing with a heartbeat outstanding counts as a failure. (So, as in Mars, an outcome is
/// judged against the interval that follows the heartbeat.)
///
/// # Design decisions
///
/// - Where the spec leaves counters implicit, every change of interval (step up, step down,
///   found, restart, probe) zeroes both the success and the failure counter.
/// - Doze style resets a label that was not found in doze style (and is not at 580 s) to
///   210 s, unstable, marked [`HeartType::Doze`], so the doze search can run; Mars leaves the
///   exact reset implicit.
/// - Each link's policy learns on its own copy of its network's state, loaded when it is
///   built (as each Mars long link has its own smart-heartbeat object), and writes it back
///   to the factory's table, which is what is exported: so two links on one network each
///   need their own answered heartbeats to step up, and the table holds the last written.
///   Before, they counted into one shared state, and one link's schedule climbed about
///   twice as fast with two links up.
/// - The doze counters and the forced interval belong to the factory (one per client) and
///   are not exported.
/// - A probe never goes above the 580 s ceiling, and an interval outside 210 ..= 580 s (which
///   only a hand-edited state could produce; imports are clamped) is reset to 210 s.
/// - A network change on a live link moves the policy to the new label and restarts its count
///   of answered heartbeats, as a new connection would.
#[derive(Clone, Debug)]
pub struct SmartHeartbeat {
    shared: Arc<Mutex<Shared>>,
}

impl SmartHeartbeat {
    /// The registry name of this factory.
    pub const NAME: &'static str = "smart";

    /// A factory for `config`, reading wall time from the system clock.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Interval`] when `forced_interval_ms` is neither 0 nor 1 s ..= 1 h.
    pub fn new(config: SmartHeartbeatConfig) -> Result<Self, ConfigError> {
        Self::with_clock(config, Arc::new(SystemClock))
    }

    /// A factory for `config` reading wall time from `clock`.
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new).
    pub fn with_clock(
        config: SmartHeartbeatConfig,
        clock: Arc<dyn WallClock>,
    ) -> Result<Self, ConfigError> {
        let forced = match config.forced_interval_ms {
            None => None,
            Some(ms) => Some(interval_from_ms(ms)?),
        };
        Ok(SmartHeartbeat {
            shared: Arc::new(Mutex::new(Shared {
                labels: Labels::default(),
                doze: 0,
                normal: 0,
                forced,
                clock,
            })),
        })
    }

    /// Overrides the learnt interval for every link (Mars's externally forced value):
    /// `Some(Some(d))` always `d`, `Some(None)` no periodic heartbeats, `None` back to learning.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Interval`] for an interval outside 1 s ..= 1 h (zero means off).
    pub fn force_interval(&self, forced: Option<Option<Duration>>) -> Result<(), ConfigError> {
        let forced = match forced {
            None => None,
            Some(None) => Some(None),
            Some(Some(d)) => Some(interval_from_ms(crate::ms_of(d))?),
        };
        self.lock().forced = forced;
        Ok(())
    }

    /// A copy of what has been learnt about `label`.
    pub fn label_state(&self, label: &str) -> Option<LabelState> {
        self.lock().labels.0.get(label).cloned()
    }

    /// Whether timers have been firing late enough to call the device doze-style.
    pub fn is_doze_style(&self) -> bool {
        self.lock().is_doze_style()
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        lock(&self.shared)
    }
}

impl Default for SmartHeartbeat {
    fn default() -> Self {
        SmartHeartbeat::with_clock(SmartHeartbeatConfig::default(), Arc::new(SystemClock))
            .expect("the default config is valid")
    }
}

impl HeartbeatPolicyFactory for SmartHeartbeat {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn build(&self, _now: Instant, ctx: &HeartbeatContext) -> Box<dyn HeartbeatPolicy> {
        let label = label_of(ctx);
        // Mars loads (or creates) the label's state when a connection is established, into
        // the link's own object.
        let state = label.as_ref().map(|label| {
            let mut shared = self.lock();
            let now = shared.now_secs();
            shared.labels.entry(label, ctx.net, now).clone()
        });
        Box::new(SmartPolicy {
            shared: self.shared.clone(),
            label,
            state,
            net: ctx.net,
            app_active: ctx.app_active,
            conn_successes: 0,
            last_heart_ms: MIN_HEART_MS,
            pre_heart_ms: 0,
            cur_heart_local_ms: 0,
            waiting: false,
        })
    }

    fn export_state(&self) -> Option<String> {
        Some(self.lock().labels.export())
    }

    fn import_state(&self, state: &str) -> bool {
        let mut shared = self.lock();
        let now = shared.now_secs();
        match Labels::import(state, now) {
            Some(labels) => {
                shared.labels = labels;
                true
            }
            None => false,
        }
    }
}

/// How a [`SmartHeartbeat`] is set up.
///
/// ```
/// use phobos_heartbeat::SmartHeartbeatConfig;
///
/// let c: SmartHeartbeatConfig = serde_json::from_str("{}").unwrap();
/// assert_eq!(c.forced_interval_ms, None);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmartHeartbeatConfig {
    /// Use this interval (ms) instead of learning; `0` turns periodic heartbeats off. Default
    /// `None`: learn.
    pub forced_interval_ms: Option<u64>,
}

/// State shared by a factory and its policies.
#[derive(Debug)]
struct Shared {
    labels: Labels,
    /// Late timer firings (doze) and on-time ones (normal), floor 0.
    doze: u32,
    normal: u32,
    /// `Some(None)`: forced off; `Some(Some(d))`: forced to `d`.
    forced: Option<Option<Duration>>,
    clock: Arc<dyn WallClock>,
}

impl Shared {
    fn now_secs(&self) -> u64 {
        unix_secs(self.clock.now())
    }

    fn is_doze_style(&self) -> bool {
        self.doze >= DOZE_MIN_COUNT && self.doze > 2 * self.normal
    }
}

/// The per-link policy of a [`SmartHeartbeat`].
#[derive(Debug)]
struct SmartPolicy {
    shared: Arc<Mutex<Shared>>,
    /// `None` when the network has no label: learning is off.
    label: Option<String>,
    /// This link's copy of the label's state (`Some` exactly when `label` is).
    state: Option<LabelState>,
    net: NetKind,
    app_active: bool,
    /// Answered heartbeats on this link (Mars's `success_heart_count_`).
    conn_successes: u32,
    /// The interval last handed out.
    last_heart_ms: u64,
    /// The two intervals before the current outcome (Mars's `pre_heart`/`cur_heart_local`).
    pre_heart_ms: u64,
    cur_heart_local_ms: u64,
    /// A heartbeat was sent and has no outcome yet.
    waiting: bool,
}

impl SmartPolicy {
    fn track_context(&mut self, ctx: &HeartbeatContext) {
        self.app_active = ctx.app_active;
        self.net = ctx.net;
        let label = label_of(ctx);
        if label != self.label {
            self.label = label;
            self.conn_successes = 0;
            self.state = self.label.as_ref().map(|label| {
                let mut shared = lock(&self.shared);
                let now = shared.now_secs();
                shared.labels.entry(label, ctx.net, now).clone()
            });
        }
    }

    /// Writes this link's copy back to the factory's table; `touch` marks it modified now
    /// (Mars's save).
    fn store(&mut self, shared: &mut Shared, touch: bool) {
        let (Some(label), Some(state)) = (&self.label, &mut self.state) else {
            return;
        };
        let now = shared.now_secs();
        if touch {
            state.modify_time = now;
        }
        *shared.labels.entry(label, self.net, now) = state.clone();
    }

    /// Mars's `OnHeartResult(success, timed_out)`.
    fn on_result(&mut self, success: bool, timed_out: bool) {
        // 1. Remember the last two intervals; count this link's answered heartbeats.
        self.pre_heart_ms = self.cur_heart_local_ms;
        self.cur_heart_local_ms = self.last_heart_ms;
        if success {
            self.conn_successes += 1;
        }
        let shared_arc = Arc::clone(&self.shared);
        let mut shared = lock(&shared_arc);
        let touch = self.learn(&shared, success, timed_out);
        self.store(&mut shared, touch);
    }

    /// Steps 2–7 of `OnHeartResult` on this link's copy; returns whether to save it (step 8;
    /// the early returns of steps 2, 3 and 5 do not save).
    fn learn(&mut self, shared: &Shared, success: bool, timed_out: bool) -> bool {
        let now = shared.now_secs();
        let doze_style = shared.is_doze_style();
        let Some(st) = self.state.as_mut() else {
            return false;
        };

        // 2. The first heartbeats of a link only say whether the network works at all.
        if self.conn_successes <= STABLE_TEST_COUNT {
            st.min_heart_fail_count = if success {
                0
            } else {
                st.min_heart_fail_count.saturating_add(1)
            };
            return false;
        }
        // 3. Only outcomes at the label's interval teach anything about it.
        if self.last_heart_ms != st.cur_ms() {
            return false;
        }
        // 4. Count.
        if success {
            if self.last_heart_ms == self.pre_heart_ms {
                st.succ_count = st.succ_count.saturating_add(1);
                st.fail_count = 0;
            }
        } else {
            st.fail_count = st.fail_count.saturating_add(1);
            if timed_out {
                st.succ_count = 0;
            }
        }
        // 5. Stable: nothing to learn from a success, except a probe after a quiet week.
        if st.stable && success {
            let quiet = now.saturating_sub(st.modify_time) >= PROBE_AFTER.as_secs();
            if st.cur_ms() < CEILING_MS && quiet {
                let probe = (st.cur_ms() + SUCCESS_STEP_MS).min(CEILING_MS);
                st.set_cur_ms(probe);
                st.stable = false;
                st.succ_count = 0;
                st.fail_count = 0;
                return true;
            }
            return false;
        }
        // 6. Searching and enough successes: step up, or stop at the ceiling.
        if !st.stable && success && st.succ_count >= BASE_SUCC_COUNT {
            if st.cur_ms() >= CEILING_MS {
                st.set_cur_ms(CEILING_MS);
                st.stable = true;
                st.heart_type = heart_type(doze_style);
            } else if doze_style {
                st.set_cur_ms(CEILING_MS);
            } else {
                st.set_cur_ms((st.cur_ms() + HEART_STEP_MS).min(CEILING_MS));
            }
            st.succ_count = 0;
            st.fail_count = 0;
        }
        // 7. Repeated failures above the floor: restart a stable search, or settle lower.
        if !success && self.last_heart_ms != MIN_HEART_MS && st.fail_count >= MAX_FAIL_COUNT {
            if st.stable {
                st.set_cur_ms(MIN_HEART_MS);
                st.stable = false;
            } else {
                let lower = if doze_style {
                    MIN_HEART_MS
                } else {
                    st.cur_ms()
                        .saturating_sub(HEART_STEP_MS + SUCCESS_STEP_MS)
                        .max(MIN_HEART_MS)
                };
                st.set_cur_ms(lower);
                st.stable = true;
                st.heart_type = heart_type(doze_style);
            }
            st.succ_count = 0;
            st.fail_count = 0;
        }
        // 8. Save.
        true
    }
}

impl HeartbeatPolicy for SmartPolicy {
    fn next_interval(&mut self, _now: Instant, ctx: &HeartbeatContext) -> Option<Duration> {
        self.track_context(ctx);
        // Asked right after a heartbeat was sent: that heartbeat is now outstanding.
        self.waiting = true;
        let shared_arc = Arc::clone(&self.shared);
        let mut shared = lock(&shared_arc);
        if let Some(forced) = shared.forced {
            self.last_heart_ms = forced.map_or(0, |d| d.as_millis() as u64);
            return forced;
        }
        let learnt = !ctx.app_active && self.conn_successes >= STABLE_TEST_COUNT;
        let doze_style = shared.is_doze_style();
        let Some(st) = self.state.as_mut().filter(|_| learnt) else {
            self.last_heart_ms = MIN_HEART_MS;
            return Some(Duration::from_millis(MIN_HEART_MS));
        };
        let out_of_range = !(MIN_HEART_MS..=CEILING_MS).contains(&st.cur_ms());
        let doze_reset =
            doze_style && st.heart_type != HeartType::Doze && st.cur_ms() != CEILING_MS;
        if out_of_range || doze_reset {
            st.set_cur_ms(MIN_HEART_MS);
            st.stable = false;
            st.succ_count = 0;
            st.fail_count = 0;
            if doze_reset {
                st.heart_type = HeartType::Doze;
            }
            self.store(&mut shared, true);
        }
        let cur = self.state.as_ref().map_or(MIN_HEART_MS, LabelState::cur_ms);
        self.last_heart_ms = cur;
        Some(Duration::from_millis(cur))
    }

    fn on_ack(&mut self, _now: Instant, _rtt: Duration) {
        if std::mem::take(&mut self.waiting) {
            self.on_result(true, false);
        }
    }

    fn on_timeout(&mut self, now: Instant) {
        if std::mem::take(&mut self.waiting) {
            self.on_result(false, true);
        }
        // The link is being dropped.
        self.on_disconnect(now);
    }

    fn on_fired_late(&mut self, _now: Instant, late: Duration) {
        if self.app_active || !self.net.is_mobile() {
            return;
        }
        let mut shared = lock(&self.shared);
        if late >= DOZE_DEVIATION {
            shared.doze = shared.doze.saturating_add(1);
            shared.normal = shared.normal.saturating_sub(1);
        } else {
            shared.normal = shared.normal.saturating_add(1);
            shared.doze = shared.doze.saturating_sub(1);
        }
    }

    fn on_network_change(&mut self, _now: Instant, ctx: &HeartbeatContext) {
        self.track_context(ctx);
    }

    fn on_disconnect(&mut self, _now: Instant) {
        if std::mem::take(&mut self.waiting) {
            self.on_result(false, false);
        }
        let Some(st) = self.state.as_mut() else {
            return;
        };
        st.succ_count = 0;
        if st.stable {
            self.last_heart_ms = MIN_HEART_MS;
        }
        let shared_arc = Arc::clone(&self.shared);
        let mut shared = lock(&shared_arc);
        self.store(&mut shared, false);
    }
}

fn label_of(ctx: &HeartbeatContext) -> Option<String> {
    (!ctx.net_label.is_empty() && ctx.net.is_available()).then(|| ctx.net_label.clone())
}

fn heart_type(doze_style: bool) -> HeartType {
    if doze_style {
        HeartType::Doze
    } else {
        HeartType::Smart
    }
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    // Nothing panics while holding the lock; if something did, the state is still usable.
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// `HeartStep`: the step up after enough successes.
const HEART_STEP_MS: u64 = 60_000;
/// `SuccessStep`: the probe step, and part of the step down (60 s + 20 s).
const SUCCESS_STEP_MS: u64 = crate::state::SUCCESS_STEP_MS;
/// `MaxHeartFailCount`.
const MAX_FAIL_COUNT: u32 = 2;
/// `BaseSuccCount`.
const BASE_SUCC_COUNT: u32 = 5;
/// `NetStableTestCount`: answered heartbeats on a link before its label's interval is used.
const STABLE_TEST_COUNT: u32 = 3;
/// A stable label unchanged this long probes a longer interval.
const PROBE_AFTER: Duration = Duration::from_secs(7 * 24 * 3600);
/// A timer firing at least this late counts as doze.
const DOZE_DEVIATION: Duration = Duration::from_millis(20_000);
/// Doze style needs at least this many doze firings.
const DOZE_MIN_COUNT: u32 = 2;
