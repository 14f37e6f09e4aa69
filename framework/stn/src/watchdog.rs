//! The watchdog: reports when the driver loop or a plugin call is blocked too long (Mars's
//! ANR check on its network thread).
//!
//! The driver marks the start and end of every loop iteration ([`Watchdog::enter`],
//! [`Watchdog::leave`]) and wraps every off-loop plugin call that holds a thread (a blocking
//! IP source or login, run on the blocking pool: [`Watchdog::call`]; an async call waiting on
//! its network blocks nothing, and has its own time limit in the core). A blocked
//! iteration or call is reported once, with a `tracing` warning and the
//! [`STALL_COUNTER`](crate::metrics::STALL_COUNTER) counter:
//!
//! - while it is still blocked, by the watchdog task ([`Watchdog::check`] on a `tokio::time`
//!   interval; on a multi-threaded runtime this sees a loop stuck in synchronous code);
//! - or, at the latest, when the iteration ends ([`Watchdog::leave`] checks its own length),
//!   which also covers a current-thread runtime where the watchdog task cannot run meanwhile.
//!
//! All times are arguments, so the logic is tested with made-up instants; the task uses
//! `tokio::time`, so paused-time tests see virtual time.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Something found blocked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stall {
    /// What was blocked: `"driver loop"`, `"driver loop (in an end handler)"` (an
    /// [`EndHandler`](crate::EndHandler) call still running or run in the blocked
    /// iteration) or the plugin call's name.
    pub what: String,
    /// How long it had been blocked when reported.
    pub blocked: Duration,
}

/// Shared between the driver, its spawned plugin calls and the watchdog task.
#[derive(Clone, Debug)]
pub struct Watchdog {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    threshold: Duration,
    state: Mutex<State>,
    reported: AtomicU64,
    /// The loop's iteration has called an end handler ([`Watchdog::in_handler`]).
    ///
    /// Design: an atomic, not a field under the lock: it is set once per iteration that
    /// calls handlers, on the busiest path there is, and read only when reporting.
    in_handler: AtomicBool,
}

#[derive(Debug, Default)]
struct State {
    /// Start of the current loop iteration, and whether it was reported already.
    busy: Option<(Instant, bool)>,
    calls: HashMap<u64, Call>,
    next_call: u64,
}

#[derive(Debug)]
struct Call {
    what: String,
    started: Instant,
    reported: bool,
}

/// Ends a plugin call's watch when dropped (also when the call's task is aborted).
#[derive(Debug)]
pub struct CallGuard {
    watchdog: Watchdog,
    id: u64,
}

impl Watchdog {
    /// A watchdog reporting anything blocked longer than `threshold`.
    pub fn new(threshold: Duration) -> Self {
        Watchdog {
            inner: Arc::new(Inner {
                threshold,
                state: Mutex::new(State::default()),
                reported: AtomicU64::new(0),
                in_handler: AtomicBool::new(false),
            }),
        }
    }

    /// The threshold.
    pub fn threshold(&self) -> Duration {
        self.inner.threshold
    }

    /// How many stalls were reported so far.
    pub fn reported(&self) -> u64 {
        self.inner.reported.load(Ordering::Relaxed)
    }

    /// The loop starts handling an input at `now`.
    pub fn enter(&self, now: Instant) {
        self.inner.in_handler.store(false, Ordering::Relaxed);
        self.lock().busy = Some((now, false));
    }

    /// The loop's current iteration calls end handlers: a stall of this iteration is
    /// reported as one in an end handler.
    pub(crate) fn in_handler(&self) {
        self.inner.in_handler.store(true, Ordering::Relaxed);
    }

    /// What a blocked iteration is reported as.
    fn loop_name(&self) -> String {
        if self.inner.in_handler.load(Ordering::Relaxed) {
            "driver loop (in an end handler)".to_owned()
        } else {
            "driver loop".to_owned()
        }
    }

    /// The loop is idle again at `now`. Returns the stall if the iteration was too long and
    /// not yet reported.
    pub fn leave(&self, now: Instant) -> Option<Stall> {
        let (started, reported) = self.lock().busy.take()?;
        let blocked = now.saturating_duration_since(started);
        if reported || blocked <= self.inner.threshold {
            return None;
        }
        Some(self.report(self.loop_name(), blocked))
    }

    /// Starts watching a plugin call named `what` at `now`.
    pub fn call(&self, what: impl Into<String>, now: Instant) -> CallGuard {
        let mut st = self.lock();
        let id = st.next_call;
        st.next_call += 1;
        st.calls.insert(
            id,
            Call {
                what: what.into(),
                started: now,
                reported: false,
            },
        );
        CallGuard {
            watchdog: self.clone(),
            id,
        }
    }

    /// Everything blocked longer than the threshold at `now` and not reported yet; each is
    /// reported (counted and logged) once.
    pub fn check(&self, now: Instant) -> Vec<Stall> {
        let threshold = self.inner.threshold;
        let mut found = Vec::new();
        {
            let mut st = self.lock();
            if let Some((started, reported)) = st.busy.as_mut() {
                let blocked = now.saturating_duration_since(*started);
                if !*reported && blocked > threshold {
                    *reported = true;
                    found.push((self.loop_name(), blocked));
                }
            }
            for call in st.calls.values_mut() {
                let blocked = now.saturating_duration_since(call.started);
                if !call.reported && blocked > threshold {
                    call.reported = true;
                    found.push((call.what.clone(), blocked));
                }
            }
        }
        found
            .into_iter()
            .map(|(what, blocked)| self.report(what, blocked))
            .collect()
    }

    /// Runs [`check`](Self::check) every half threshold, forever (tokio time).
    pub async fn run(self) {
        let mut tick =
            tokio::time::interval((self.inner.threshold / 2).max(Duration::from_millis(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.check(tokio::time::Instant::now().into_std());
        }
    }

    fn report(&self, what: String, blocked: Duration) -> Stall {
        self.inner.reported.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(crate::metrics::STALL_COUNTER, "what" => what.clone()).increment(1);
        tracing::warn!(
            what = %what,
            blocked_ms = blocked.as_millis() as u64,
            threshold_ms = self.inner.threshold.as_millis() as u64,
            "blocked longer than the watchdog threshold"
        );
        Stall { what, blocked }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding this lock; recover the data if something did.
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        let call = self.watchdog.lock().calls.remove(&self.id);
        // Design: a call that blocked the thread the watchdog's own task runs on (an
        // in-process plugin that says it does not block, polled on the driver's thread; a
        // current-thread runtime) was never seen blocked: it is reported as it ends, as a
        // long loop iteration is ([`Watchdog::leave`]). Unreported, the plugin the watchdog
        // is there to catch went unnoticed.
        if let Some(call) = call.filter(|c| !c.reported) {
            let now = tokio::time::Instant::now().into_std();
            let blocked = now.saturating_duration_since(call.started);
            if blocked > self.watchdog.inner.threshold {
                self.watchdog.report(call.what, blocked);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_millis(100);

    #[test]
    fn an_iteration_that_called_an_end_handler_is_reported_as_one() {
        let w = Watchdog::new(T);
        let t0 = Instant::now();
        w.enter(t0);
        w.in_handler();
        let stalls = w.check(t0 + 2 * T);
        assert_eq!(stalls.len(), 1);
        assert_eq!(stalls[0].what, "driver loop (in an end handler)");
        assert_eq!(w.leave(t0 + 3 * T), None, "reported once");
        // The next iteration calls none.
        w.enter(t0 + 3 * T);
        assert_eq!(
            w.leave(t0 + 5 * T).map(|s| s.what),
            Some("driver loop".to_owned())
        );
    }

    /// A plugin call the watchdog's task never saw blocked (it blocked that task's thread)
    /// is reported as it ends; one seen and reported while blocked is not reported again,
    /// and a short one is not reported.
    #[tokio::test(start_paused = true)]
    async fn a_long_call_unseen_while_it_ran_is_reported_when_it_ends() {
        let w = Watchdog::new(T);
        let now = || tokio::time::Instant::now().into_std();
        let call = w.call("ipsource hog", now());
        tokio::time::advance(3 * T).await;
        drop(call);
        assert_eq!(w.reported(), 1);
        let call = w.call("ipsource seen", now());
        tokio::time::advance(2 * T).await;
        assert_eq!(w.check(now()).len(), 1);
        tokio::time::advance(T).await;
        drop(call);
        assert_eq!(w.reported(), 2, "reported once");
        drop(w.call("ipsource quick", now()));
        assert_eq!(w.reported(), 2);
    }

    #[test]
    fn a_short_iteration_is_not_reported() {
        let w = Watchdog::new(T);
        let t0 = Instant::now();
        w.enter(t0);
        assert!(w.check(t0 + T).is_empty());
        assert_eq!(w.leave(t0 + T), None);
        assert_eq!(w.reported(), 0);
    }

    #[test]
    fn a_long_iteration_is_reported_once_while_blocked() {
        let w = Watchdog::new(T);
        let t0 = Instant::now();
        w.enter(t0);
        let s = w.check(t0 + 3 * T);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].what, "driver loop");
        assert_eq!(s[0].blocked, 3 * T);
        assert!(w.check(t0 + 5 * T).is_empty());
        assert_eq!(w.leave(t0 + 6 * T), None, "already reported while blocked");
        assert_eq!(w.reported(), 1);
    }

    #[test]
    fn a_long_iteration_unseen_by_the_task_is_reported_when_it_ends() {
        let w = Watchdog::new(T);
        let t0 = Instant::now();
        w.enter(t0);
        let s = w.leave(t0 + 2 * T).expect("reported at the end");
        assert_eq!(s.blocked, 2 * T);
        w.enter(t0 + 2 * T);
        assert_eq!(w.leave(t0 + 2 * T + T / 2), None);
        assert_eq!(w.reported(), 1);
    }

    #[test]
    fn slow_plugin_calls_are_reported_once_and_forgotten_when_done() {
        let w = Watchdog::new(T);
        let t0 = Instant::now();
        let slow = w.call("ipsource dns", t0);
        let fast = w.call("auth basic", t0 + 2 * T);
        let s = w.check(t0 + 2 * T + T / 2);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].what, "ipsource dns");
        drop(slow);
        drop(fast);
        assert!(w.check(t0 + 10 * T).is_empty());
        assert_eq!(w.reported(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_task_reports_a_call_blocked_in_virtual_time() {
        let w = Watchdog::new(T);
        let task = tokio::spawn(w.clone().run());
        let guard = w.call("slow plugin", tokio::time::Instant::now().into_std());
        tokio::time::sleep(3 * T).await;
        assert_eq!(w.reported(), 1);
        drop(guard);
        tokio::time::sleep(3 * T).await;
        assert_eq!(w.reported(), 1);
        task.abort();
    }
}
