//! Every timer of the core, in one table.
//!
//! Each timer fires at its exact deadline (the driver sleeps until
//! [`Engine::poll_timeout`](crate::Engine::poll_timeout)); there is no periodic tick like
//! Mars's 1 s task loop. Link fields are indexes into [`Config::links`](crate::Config::links).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use phobos_plugin_api::TaskId;

use crate::io::ConnId;
use rustc_hash::FxHashMap;

/// One kind of timer. At most one timer of each value is armed at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum TimerKind {
    /// The task's whole budget ends (§6.1; default 40 s): ends the task, no retry.
    TaskTotal(TaskId),
    /// No response byte within the first-packet timeout of the running attempt (§6.2).
    FirstPacket(TaskId),
    /// Response bytes of the running attempt stopped for the packet-to-packet timeout.
    PacketToPacket(TaskId),
    /// The running attempt's read/write budget (first packet + 64 KiB at the minimum rate) ends.
    ReadWrite(TaskId),
    /// A zombie's remaining budget ends (§14): it ends with a total timeout.
    ZombieExpiry(TaskId),
    /// Zombies are due for a restart (60 s after saving, 60 s after the last start).
    ZombieRestart,
    /// The link's retry pause (1 s after a failure) ends: retried tasks may go again.
    RetryPause(usize),
    /// The IP source call in flight for the link took longer than the source's limit (§10,
    /// default 2 s): it counts as an empty answer and the chain moves on to the next source.
    Resolve(usize),
    /// One connect attempt's own timeout (10 s).
    ConnectAttempt(ConnId),
    /// The race may start the link's next address: the stagger after the previous start
    /// (`MarsClassic` 2.5 s; `Phobos` 250 ms, adapted to measured connect times).
    RaceStep(usize),
    /// The link's next heartbeat slot (the policy's interval after the last write).
    Heartbeat(usize),
    /// The link's heartbeat or identify reply is overdue (8 s; 5 s after a late slot).
    HeartbeatReply(usize),
    /// 500 ms after the link went down: evaluate the automatic reconnect (§7.9).
    ReconnectWake(usize),
    /// A paced reconnect of the link is due (§7.9 interval table or inactive back-off).
    Reconnect(usize),
    /// 10 min after going to background: the app becomes inactive (§2.3).
    Inactivity,
    /// The next signalling-keeper frame (every 5 s while keeping, §7.11).
    SignalKeep,
    /// Ask the driver again to authenticate this host (index into the engine's host list).
    AuthRetry(usize),
    /// While the main link is down: ask the app to poll (90 s / 240 s without account /
    /// 600 s inactive, ×3 without network; §15.4).
    TimingSync,
}

/// Deadlines by kind, ordered by time.
///
/// Design: a binary heap with lazy deletion. Per-task timers are re-armed on every request
/// and response (3–4 per task), and a re-arm or cancel here is one hash-map write plus, for
/// a re-arm, one heap push; the outdated heap entry is dropped when it reaches the top (an
/// entry is live while `by_kind` still holds its deadline). The top is kept live after every
/// change so [`next`](Self::next) is a peek, and the heap is rebuilt from `by_kind` when
/// outdated entries outnumber live ones, so memory stays proportional to armed timers. Timers
/// due at the same instant fire in `TimerKind` order.
#[derive(Debug, Default)]
pub(crate) struct TimerTable {
    heap: BinaryHeap<Reverse<(Instant, TimerKind)>>,
    by_kind: FxHashMap<TimerKind, Instant>,
}

impl TimerTable {
    /// Arms (or re-arms) `kind` at `at`.
    pub(crate) fn set(&mut self, kind: TimerKind, at: Instant) {
        let old = self.by_kind.insert(kind, at);
        if old == Some(at) {
            // Same deadline: its heap entry is still live.
            return;
        }
        self.heap.push(Reverse((at, kind)));
        if self.heap.len() > 2 * self.by_kind.len() + 64 {
            self.rebuild();
        } else if let Some(old) = old {
            self.outdated(old, kind);
        }
    }

    /// Arms `kind` at `at` unless it is already armed earlier.
    pub(crate) fn set_earliest(&mut self, kind: TimerKind, at: Instant) {
        match self.by_kind.get(&kind) {
            Some(&old) if old <= at => {}
            _ => self.set(kind, at),
        }
    }

    /// Disarms `kind`.
    pub(crate) fn cancel(&mut self, kind: TimerKind) {
        if let Some(old) = self.by_kind.remove(&kind) {
            self.outdated(old, kind);
        }
    }

    /// When `kind` fires, if armed.
    #[cfg(test)]
    pub(crate) fn deadline(&self, kind: TimerKind) -> Option<Instant> {
        self.by_kind.get(&kind).copied()
    }

    /// Whether `kind` is armed.
    pub(crate) fn is_armed(&self, kind: TimerKind) -> bool {
        self.by_kind.contains_key(&kind)
    }

    /// The earliest armed timer.
    pub(crate) fn next(&self) -> Option<(Instant, TimerKind)> {
        self.heap.peek().map(|e| e.0)
    }

    /// Removes and returns the earliest timer due at `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(Instant, TimerKind)> {
        let &Reverse((at, kind)) = self.heap.peek()?;
        if at > now {
            return None;
        }
        self.heap.pop();
        self.by_kind.remove(&kind);
        self.tidy();
        Some((at, kind))
    }

    /// How many timers are armed.
    pub(crate) fn len(&self) -> usize {
        self.by_kind.len()
    }

    /// The entry `(at, kind)` no longer counts: if it is the top, uncover the next live one.
    /// (Only the top matters; deeper outdated entries wait for their turn or a rebuild.)
    fn outdated(&mut self, at: Instant, kind: TimerKind) {
        if self.heap.peek() == Some(&Reverse((at, kind))) {
            self.tidy();
        }
    }

    /// Drops outdated entries from the top of the heap.
    fn tidy(&mut self) {
        while let Some(&Reverse((at, kind))) = self.heap.peek() {
            if self.by_kind.get(&kind) == Some(&at) {
                break;
            }
            self.heap.pop();
        }
    }

    /// Rebuilds the heap from the live deadlines, once outdated entries make up most of it.
    fn rebuild(&mut self) {
        // Reuse the allocation: this runs often on a busy link.
        let mut entries = std::mem::take(&mut self.heap).into_vec();
        entries.clear();
        entries.extend(self.by_kind.iter().map(|(&kind, &at)| Reverse((at, kind))));
        self.heap = BinaryHeap::from(entries);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn rearming_moves_the_deadline_and_pop_is_in_order() {
        let t0 = crate::tests::epoch::epoch();
        let mut t = TimerTable::default();
        t.set(TimerKind::Inactivity, t0 + Duration::from_secs(5));
        t.set(TimerKind::SignalKeep, t0 + Duration::from_secs(3));
        t.set(TimerKind::Inactivity, t0 + Duration::from_secs(1));
        assert_eq!(t.len(), 2);
        assert_eq!(
            t.next(),
            Some((t0 + Duration::from_secs(1), TimerKind::Inactivity))
        );
        assert_eq!(t.pop_due(t0), None);
        let now = t0 + Duration::from_secs(4);
        assert_eq!(t.pop_due(now).map(|x| x.1), Some(TimerKind::Inactivity));
        assert_eq!(t.pop_due(now).map(|x| x.1), Some(TimerKind::SignalKeep));
        assert_eq!(t.pop_due(now), None);
    }

    #[test]
    fn set_earliest_keeps_the_earlier_deadline() {
        let t0 = crate::tests::epoch::epoch();
        let mut t = TimerTable::default();
        t.set_earliest(TimerKind::Reconnect(0), t0 + Duration::from_secs(5));
        t.set_earliest(TimerKind::Reconnect(0), t0 + Duration::from_secs(9));
        assert_eq!(
            t.deadline(TimerKind::Reconnect(0)),
            Some(t0 + Duration::from_secs(5))
        );
        t.set_earliest(TimerKind::Reconnect(0), t0 + Duration::from_secs(2));
        assert_eq!(
            t.deadline(TimerKind::Reconnect(0)),
            Some(t0 + Duration::from_secs(2))
        );
        t.cancel(TimerKind::Reconnect(0));
        assert_eq!(t.next(), None);
    }

    /// The heap with lazy deletion must behave exactly like "the armed timers, earliest
    /// first, ties by kind": checked against a plain list under a long random mix of
    /// arm/re-arm/cancel/pop (enough operations to force many rebuilds).
    #[test]
    fn matches_a_plain_list_under_random_operations() {
        let t0 = crate::tests::epoch::epoch();
        let mut t = TimerTable::default();
        let mut model: Vec<(Instant, TimerKind)> = Vec::new();
        let mut now = t0;
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut rand = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for _ in 0..20_000 {
            let kind = match rand(4) {
                0 => TimerKind::TaskTotal(TaskId(rand(40) as u32)),
                1 => TimerKind::FirstPacket(TaskId(rand(40) as u32)),
                2 => TimerKind::Heartbeat(rand(3) as usize),
                _ => TimerKind::ConnectAttempt(ConnId(rand(5))),
            };
            let at = now + Duration::from_millis(rand(50));
            match rand(10) {
                0..=4 => {
                    t.set(kind, at);
                    model.retain(|e| e.1 != kind);
                    model.push((at, kind));
                }
                5 => {
                    t.set_earliest(kind, at);
                    match model.iter_mut().find(|e| e.1 == kind) {
                        Some(e) => e.0 = e.0.min(at),
                        None => model.push((at, kind)),
                    }
                }
                6 | 7 => {
                    t.cancel(kind);
                    model.retain(|e| e.1 != kind);
                }
                _ => {
                    now += Duration::from_millis(rand(20));
                    model.sort();
                    while let Some(&first) = model.first().filter(|e| e.0 <= now) {
                        assert_eq!(t.pop_due(now), Some(first));
                        model.remove(0);
                    }
                    assert_eq!(t.pop_due(now), None);
                }
            }
            model.sort();
            assert_eq!(t.next(), model.first().copied());
            assert_eq!(t.len(), model.len());
            assert_eq!(t.is_armed(kind), model.iter().any(|e| e.1 == kind));
            assert!(t.heap.len() <= 2 * t.by_kind.len() + 65);
        }
    }
}
