//! Every timer of the core, in one table.
//!
//! Each timer fires at its exact deadline (the driver sleeps until
//! [`Engine::poll_timeout`](crate::Engine::poll_timeout)); there is no periodic tick like
//! Mars's 1 s task loop. Link fields are indexes into [`Config::links`](crate::Config::links).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

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
    /// Phobos stall probe of the link (see [`Recovery`](crate::Recovery)): a task is owed a
    /// response and the link has been quiet for `clamp(4 × rtt, 2 s, 4 s)`: send a probe.
    StallProbe(usize),
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
/// Design: a binary heap with lazy deletion. A re-arm or cancel here is one hash-map write
/// plus, for a re-arm, one heap push; the outdated heap entry is dropped when it reaches the
/// top (an entry is live while `by_kind` still holds its deadline). The top is kept live
/// after every change so [`next`](Self::next) is a peek, and the heap is rebuilt from
/// `by_kind` when outdated entries outnumber live ones, so memory stays proportional to armed
/// timers. Timers due at the same instant fire in `TimerKind` order.
///
/// The four per-task kinds (total, first packet, packet-to-packet, read/write) live apart,
/// in [`TaskTimers`]: they are armed and disarmed several times per task, so they get one
/// map entry and at most one live heap entry per *task* (its earliest deadline) instead of
/// one per timer, and reach that heap once per input ([`settle`](Self::settle)). The two
/// heaps are merged on the way out, so the order is the same as one table's.
#[derive(Debug)]
pub(crate) struct TimerTable {
    heap: BinaryHeap<Reverse<(Instant, TimerKind)>>,
    by_kind: FxHashMap<TimerKind, Instant>,
    tasks: TaskTimers,
}

impl TimerTable {
    /// An empty table. `epoch` is an instant no deadline will precede (the engine's start).
    pub(crate) fn new(epoch: Instant) -> Self {
        TimerTable {
            heap: BinaryHeap::new(),
            by_kind: FxHashMap::default(),
            tasks: TaskTimers::new(epoch),
        }
    }

    /// Arms (or re-arms) `kind` at `now + after`: the same as `set(kind, now + after)`.
    ///
    /// Design: a task timer's deadline is kept as nanoseconds since the table's epoch, and
    /// converting an `Instant` costs a timespec subtraction; every task timer is armed
    /// relative to the input's `now`, so `now` is converted once per input, not once per
    /// timer.
    pub(crate) fn set_after(&mut self, kind: TimerKind, now: Instant, after: Duration) {
        match task_level(kind) {
            Some((id, level)) => {
                let ns = self.tasks.ns_after(now, after);
                self.tasks.set_ns(id, level, ns);
            }
            None => self.set(kind, now + after),
        }
    }

    /// Arms (or re-arms) `kind` at `at`.
    pub(crate) fn set(&mut self, kind: TimerKind, at: Instant) {
        if let Some((id, level)) = task_level(kind) {
            self.tasks.set(id, level, at);
            return;
        }
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
        match self.deadline(kind) {
            Some(old) if old <= at => {}
            _ => self.set(kind, at),
        }
    }

    /// Disarms `kind`.
    pub(crate) fn cancel(&mut self, kind: TimerKind) {
        if let Some((id, level)) = task_level(kind) {
            self.tasks.cancel(id, level);
            return;
        }
        if let Some(old) = self.by_kind.remove(&kind) {
            self.outdated(old, kind);
        }
    }

    /// Disarms every per-task timer of `id` (total, first packet, packet-to-packet,
    /// read/write) at once.
    pub(crate) fn cancel_task(&mut self, id: TaskId) {
        self.tasks.cancel_all(id);
    }

    /// Moves the per-task timers changed since the last call into their heap (see
    /// [`TaskTimers`]). Only a matter of cost: the table is exact either way.
    pub(crate) fn settle(&mut self) {
        self.tasks.settle();
    }

    /// When `kind` fires, if armed.
    pub(crate) fn deadline(&self, kind: TimerKind) -> Option<Instant> {
        match task_level(kind) {
            Some((id, level)) => self.tasks.deadline(id, level),
            None => self.by_kind.get(&kind).copied(),
        }
    }

    /// Whether `kind` is armed.
    pub(crate) fn is_armed(&self, kind: TimerKind) -> bool {
        self.deadline(kind).is_some()
    }

    /// The earliest armed timer.
    pub(crate) fn next(&self) -> Option<(Instant, TimerKind)> {
        let other = self.heap.peek().map(|e| e.0);
        let task = self.tasks.next();
        match (other, task) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Removes and returns the earliest timer due at `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(Instant, TimerKind)> {
        self.tasks.settle();
        let (at, kind) = self.next()?;
        if at > now {
            return None;
        }
        if let Some((id, level)) = task_level(kind) {
            self.tasks.cancel(id, level);
            return Some((at, kind));
        }
        self.heap.pop();
        self.by_kind.remove(&kind);
        self.tidy();
        Some((at, kind))
    }

    /// How many timers are armed.
    pub(crate) fn len(&self) -> usize {
        self.by_kind.len() + self.tasks.armed
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

/// The per-task kinds, as (task, level); level order is `TimerKind` order.
fn task_level(kind: TimerKind) -> Option<(TaskId, usize)> {
    match kind {
        TimerKind::TaskTotal(id) => Some((id, 0)),
        TimerKind::FirstPacket(id) => Some((id, 1)),
        TimerKind::PacketToPacket(id) => Some((id, 2)),
        TimerKind::ReadWrite(id) => Some((id, 3)),
        _ => None,
    }
}

/// The deadlines of one task by level (see [`task_level`]), as [`TaskTimers::ns`] values;
/// [`UNARMED`] for a level not armed.
#[derive(Clone, Copy, Debug)]
struct Slots {
    at: [u64; 4],
    /// The earliest deadline changed and is not in the heap yet (the task is listed in
    /// [`TaskTimers::pending`]); the task's heap entries, if any, are outdated.
    pending: bool,
}

/// A level not armed.
const UNARMED: u64 = u64::MAX;

/// Pending tasks beyond which a change settles them at once (a driver admits up to a few
/// hundred tasks per input; `next` scans the pending list only when asked mid-input).
const MAX_PENDING: usize = 1024;

/// The per-task timers.
///
/// Design: one map entry per task holding its four deadlines, and at most one live heap
/// entry per task: its earliest `(deadline, level)`. A change of a task's earliest deadline
/// does not touch the heap at once: the task joins a short pending list, and
/// [`settle`](Self::settle) (which the engine calls at the end of every input) pushes the
/// earliest deadline of each pending task. So a task admitted and sent within one input —
/// total timeout armed, then first-packet and read/write — costs one push, and its end one
/// map removal and, when its entry is on top, one pop (a table with one entry per timer
/// paid seven map writes, three pushes and three pops). [`next`](Self::next) looks at the
/// heap top and the pending tasks, so it is exact whether or not `settle` ran.
///
/// An entry is live while its task is not pending and the entry equals the task's earliest
/// deadline; the top is kept live after every change, and the heap is rebuilt when outdated
/// entries outnumber the tasks, as in [`TimerTable`]. Deadlines are nanoseconds from an
/// epoch and a heap key packs `(deadline, level, task)` into one `u128`, so the heap
/// compares integers; that order is the `TimerKind` order of these kinds, so ties fire
/// exactly as in one table.
#[derive(Debug)]
struct TaskTimers {
    epoch: Instant,
    slots: FxHashMap<TaskId, Slots>,
    heap: BinaryHeap<Reverse<u128>>,
    /// Tasks whose earliest deadline is not in the heap (may hold ended tasks' ids).
    pending: Vec<TaskId>,
    /// Armed deadlines (not tasks), for [`TimerTable::len`].
    armed: usize,
    /// The last `now` given to [`ns_after`](Self::ns_after), converted.
    now_ns: Option<(Instant, u64)>,
}

/// Packs a heap key.
fn key(ns: u64, level: usize, id: TaskId) -> u128 {
    (u128::from(ns) << 64) | ((level as u128) << 32) | u128::from(id.0)
}

/// A task's earliest deadline and its level (the lower level first on a tie).
fn earliest(slots: &Slots) -> Option<(u64, usize)> {
    let mut best = (UNARMED, 0);
    for (level, &ns) in slots.at.iter().enumerate() {
        if ns < best.0 {
            best = (ns, level);
        }
    }
    (best.0 != UNARMED).then_some(best)
}

impl TaskTimers {
    fn new(epoch: Instant) -> Self {
        TaskTimers {
            epoch,
            slots: FxHashMap::default(),
            heap: BinaryHeap::new(),
            pending: Vec::new(),
            armed: 0,
            now_ns: None,
        }
    }

    /// `at` as nanoseconds from the epoch, offset by 2^62 so that an instant before the
    /// epoch (which the calling protocol rules out) still orders correctly; exact within
    /// ±146 years of the epoch.
    fn ns(&self, at: Instant) -> u64 {
        const MID: u64 = 1 << 62;
        match at.checked_duration_since(self.epoch) {
            Some(d) => MID + (d.as_nanos().min(u128::from(MID)) as u64),
            None => {
                MID - (self
                    .epoch
                    .duration_since(at)
                    .as_nanos()
                    .min(u128::from(MID)) as u64)
            }
        }
    }

    /// The instant of an [`ns`](Self::ns) value.
    fn instant(&self, ns: u64) -> Instant {
        const MID: u64 = 1 << 62;
        if ns >= MID {
            self.epoch + Duration::from_nanos(ns - MID)
        } else {
            self.epoch - Duration::from_nanos(MID - ns)
        }
    }

    /// `ns(now + after)`, converting `now` only when it changed since the last call.
    fn ns_after(&mut self, now: Instant, after: Duration) -> u64 {
        let base = match self.now_ns {
            Some((at, ns)) if at == now => ns,
            _ => {
                let ns = self.ns(now);
                self.now_ns = Some((now, ns));
                ns
            }
        };
        // `ns` saturates at twice its midpoint (2^63); so does this.
        (u128::from(base) + after.as_nanos()).min(1 << 63) as u64
    }

    fn set(&mut self, id: TaskId, level: usize, at: Instant) {
        let ns = self.ns(at);
        self.set_ns(id, level, ns);
    }

    fn set_ns(&mut self, id: TaskId, level: usize, ns: u64) {
        let slots = self.slots.entry(id).or_insert(Slots {
            at: [UNARMED; 4],
            pending: false,
        });
        if slots.at[level] == ns {
            return;
        }
        let before = earliest(slots);
        if slots.at[level] == UNARMED {
            self.armed += 1;
        }
        slots.at[level] = ns;
        if slots.pending || earliest(slots) == before {
            return;
        }
        slots.pending = true;
        self.pending.push(id);
        self.outdated(before.map(|(ns, level)| key(ns, level, id)));
        if self.pending.len() > MAX_PENDING {
            self.settle();
        }
    }

    fn cancel(&mut self, id: TaskId, level: usize) {
        let Some(slots) = self.slots.get_mut(&id) else {
            return;
        };
        if slots.at[level] == UNARMED {
            return;
        }
        let before = earliest(slots);
        slots.at[level] = UNARMED;
        self.armed -= 1;
        let after = earliest(slots);
        if after == before {
            return;
        }
        let was_pending = slots.pending;
        if after.is_none() {
            // Its id may stay in `pending`; `settle` and `next` skip ids without slots.
            self.slots.remove(&id);
        } else if !was_pending {
            slots.pending = true;
            self.pending.push(id);
        }
        if !was_pending {
            self.outdated(before.map(|(ns, level)| key(ns, level, id)));
            if self.pending.len() > MAX_PENDING {
                self.settle();
            }
        }
    }

    fn cancel_all(&mut self, id: TaskId) {
        let Some(slots) = self.slots.remove(&id) else {
            return;
        };
        self.armed -= slots.at.iter().filter(|&&ns| ns != UNARMED).count();
        if !slots.pending {
            self.outdated(earliest(&slots).map(|(ns, level)| key(ns, level, id)));
        }
    }

    fn deadline(&self, id: TaskId, level: usize) -> Option<Instant> {
        let ns = self.slots.get(&id)?.at[level];
        (ns != UNARMED).then(|| self.instant(ns))
    }

    /// The earliest armed per-task timer.
    fn next(&self) -> Option<(Instant, TimerKind)> {
        let mut best = self.heap.peek().map(|r| r.0);
        for &id in &self.pending {
            let Some(slots) = self.slots.get(&id).filter(|s| s.pending) else {
                continue;
            };
            if let Some((ns, level)) = earliest(slots) {
                let k = key(ns, level, id);
                if best.is_none_or(|b| k < b) {
                    best = Some(k);
                }
            }
        }
        let k = best?;
        let id = TaskId(k as u32);
        let kind = match (k >> 32) as u32 {
            0 => TimerKind::TaskTotal(id),
            1 => TimerKind::FirstPacket(id),
            2 => TimerKind::PacketToPacket(id),
            _ => TimerKind::ReadWrite(id),
        };
        Some((self.instant((k >> 64) as u64), kind))
    }

    /// Pushes the earliest deadline of every pending task into the heap.
    fn settle(&mut self) {
        for id in std::mem::take(&mut self.pending) {
            let Some(slots) = self.slots.get_mut(&id).filter(|s| s.pending) else {
                continue;
            };
            slots.pending = false;
            if let Some((ns, level)) = earliest(slots) {
                self.heap.push(Reverse(key(ns, level, id)));
            }
        }
        if self.heap.len() > 2 * self.slots.len() + 64 {
            self.rebuild();
        }
    }

    /// The heap entry `entry` is no longer live: if it is the top, uncover the next live one.
    fn outdated(&mut self, entry: Option<u128>) {
        if entry.is_some() && self.heap.peek().map(|r| r.0) == entry {
            self.tidy();
        }
    }

    /// Whether a heap key is its task's earliest deadline (and the task is not pending).
    fn is_live(&self, k: u128) -> bool {
        let id = TaskId(k as u32);
        self.slots
            .get(&id)
            .filter(|s| !s.pending)
            .and_then(earliest)
            .is_some_and(|(ns, level)| key(ns, level, id) == k)
    }

    fn tidy(&mut self) {
        while let Some(&Reverse(k)) = self.heap.peek() {
            if self.is_live(k) {
                break;
            }
            self.heap.pop();
        }
    }

    fn rebuild(&mut self) {
        let mut entries = std::mem::take(&mut self.heap).into_vec();
        entries.clear();
        self.pending.clear();
        for (&id, s) in self.slots.iter_mut() {
            s.pending = false;
            if let Some((ns, level)) = earliest(s) {
                entries.push(Reverse(key(ns, level, id)));
            }
        }
        self.heap = BinaryHeap::from(entries);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_after_arms_exactly_what_set_arms() {
        let t0 = crate::tests::epoch::epoch();
        let (mut a, mut b) = (TimerTable::new(t0), TimerTable::new(t0));
        let mut now = t0;
        for i in 0..200u32 {
            // Several timers per `now` (the cached conversion), then a new `now`.
            if i % 3 == 0 {
                now += Duration::from_nanos(u64::from(i) * 7_919_333);
            }
            let after = Duration::from_nanos(u64::from(i % 17) * 123_456_789 + 1);
            let kind = match i % 4 {
                0 => TimerKind::TaskTotal(TaskId(i % 50)),
                1 => TimerKind::FirstPacket(TaskId(i % 50)),
                2 => TimerKind::ReadWrite(TaskId(i % 50)),
                _ => TimerKind::Heartbeat(i as usize % 3),
            };
            a.set_after(kind, now, after);
            b.set(kind, now + after);
            assert_eq!(a.deadline(kind), b.deadline(kind));
            a.settle();
            b.settle();
            assert_eq!(a.next(), b.next());
        }
        assert_eq!(a.len(), b.len());
        let late = now + Duration::from_secs(100);
        while let Some(x) = b.pop_due(late) {
            assert_eq!(a.pop_due(late), Some(x));
        }
        assert_eq!(a.pop_due(late), None);
    }

    #[test]
    fn rearming_moves_the_deadline_and_pop_is_in_order() {
        let t0 = crate::tests::epoch::epoch();
        let mut t = TimerTable::new(t0);
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
        let mut t = TimerTable::new(t0);
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

    #[test]
    fn task_deadlines_round_trip_exactly_even_before_the_epoch() {
        let t0 = crate::tests::epoch::epoch();
        let start = t0 + Duration::from_secs(3600);
        let mut t = TimerTable::new(start);
        let early = t0 + Duration::from_nanos(1_234_567_891);
        let late = start + Duration::from_nanos(987_654_321);
        t.set(TimerKind::ReadWrite(TaskId(1)), late);
        t.set(TimerKind::TaskTotal(TaskId(2)), early);
        t.set(TimerKind::FirstPacket(TaskId(3)), late);
        assert_eq!(t.deadline(TimerKind::TaskTotal(TaskId(2))), Some(early));
        assert_eq!(
            t.pop_due(late),
            Some((early, TimerKind::TaskTotal(TaskId(2))))
        );
        // Same instant: TimerKind order, not arming order.
        assert_eq!(
            t.pop_due(late),
            Some((late, TimerKind::FirstPacket(TaskId(3))))
        );
        assert_eq!(
            t.pop_due(late),
            Some((late, TimerKind::ReadWrite(TaskId(1))))
        );
        assert_eq!(t.pop_due(late), None);
        assert_eq!(t.len(), 0);
    }

    /// The heap with lazy deletion must behave exactly like "the armed timers, earliest
    /// first, ties by kind": checked against a plain list under a long random mix of
    /// arm/re-arm/cancel/pop (enough operations to force many rebuilds).
    #[test]
    fn matches_a_plain_list_under_random_operations() {
        let t0 = crate::tests::epoch::epoch();
        let mut t = TimerTable::new(t0);
        let mut model: Vec<(Instant, TimerKind)> = Vec::new();
        let mut now = t0;
        let mut rng =
            <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0x2545_f491_4f6c_dd1d);
        let mut rand = |n: u64| rand::Rng::gen_range(&mut rng, 0..n);
        for _ in 0..20_000 {
            let kind = match rand(6) {
                0 => TimerKind::TaskTotal(TaskId(rand(40) as u32)),
                1 => TimerKind::FirstPacket(TaskId(rand(40) as u32)),
                2 => TimerKind::PacketToPacket(TaskId(rand(40) as u32)),
                3 => TimerKind::ReadWrite(TaskId(rand(40) as u32)),
                4 => TimerKind::Heartbeat(rand(3) as usize),
                _ => TimerKind::ConnectAttempt(ConnId(rand(5))),
            };
            let at = now + Duration::from_millis(rand(50));
            match rand(11) {
                9 if rand(2) == 0 => t.settle(),
                10 => {
                    // Every per-task timer of one task at once.
                    let id = TaskId(rand(40) as u32);
                    t.cancel_task(id);
                    model.retain(|e| task_level(e.1).is_none_or(|(i, _)| i != id));
                }
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
            assert!(t.tasks.heap.len() <= 2 * t.tasks.slots.len() + 65);
            assert!(t.tasks.pending.len() <= MAX_PENDING + 1);
        }
    }
}
