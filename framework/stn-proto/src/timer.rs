//! Every timer of the core, in one table.
//!
//! Each timer fires at its exact deadline (the driver sleeps until
//! [`Engine::poll_timeout`](crate::Engine::poll_timeout)); there is no periodic tick like
//! Mars's 1 s task loop. Link fields are indexes into [`Config::links`](crate::Config::links).

use std::cell::Cell;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
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
    /// The handshake of a connect attempt whose transport is up ran out of time (Phobos
    /// [`Recovery::handshake_timeout`](crate::Recovery#structfield.handshake_timeout)).
    Handshake(ConnId),
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
    /// An `EnsureAuth` call for the auth host at this index ran out of its limit.
    AuthLimit(usize),
    /// While the main link is down: ask the app to poll (90 s / 240 s without account /
    /// 600 s inactive, ×3 without network; §15.4).
    TimingSync,
    /// A task of the batch lane may reach one of its deadlines: its tasks become regular
    /// tasks, with their own timers (see `engine/lane.rs`). Armed no later than the
    /// earliest such deadline. Kept by the lane itself rather than in the timer table;
    /// [`Engine::next_timer`](crate::Engine::next_timer) names it when it is the earliest.
    LaneWake,
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
/// map entry per *task* and sorted lanes where arming is a push at the back. So do the
/// link's heartbeat, heartbeat reply and stall probe, in [`LinkTimers`]: ordinary traffic
/// re-arms them every round. The three structures are merged on the way out, so the order
/// is the same as one table's.
#[derive(Debug)]
pub(crate) struct TimerTable {
    heap: BinaryHeap<Reverse<(Instant, TimerKind)>>,
    by_kind: FxHashMap<TimerKind, Instant>,
    /// The last [`deadline`](Self::deadline) answer for a kind in `by_kind`, until that map
    /// changes.
    ///
    /// Design: the dispatch pass asks whether the link's stall probe is armed once per task
    /// sent; with this, a pass hashes the kind once.
    last_lookup: Cell<Option<(TimerKind, Option<Instant>)>>,
    tasks: TaskTimers,
    links: LinkTimers,
}

impl TimerTable {
    /// An empty table. `epoch` is an instant no deadline will precede (the engine's start).
    pub(crate) fn new(epoch: Instant) -> Self {
        TimerTable {
            heap: BinaryHeap::new(),
            by_kind: FxHashMap::default(),
            last_lookup: Cell::new(None),
            tasks: TaskTimers::new(epoch),
            links: LinkTimers::default(),
        }
    }

    /// Arms (or re-arms) the per-task timer `kind` of the task stored at `slot` at
    /// `now + after`. `kind` names the task; `slot` is where the engine stores it, which the
    /// per-task timers are indexed by (see [`TaskTimers`]). Any other kind is armed as by
    /// [`set`](Self::set).
    ///
    /// Design: a task timer's deadline is kept as nanoseconds since the table's epoch, and
    /// converting an `Instant` costs a timespec subtraction; every task timer is armed
    /// relative to the input's `now`, so `now` is converted once per input, not once per
    /// timer.
    #[inline]
    pub(crate) fn set_task_after(
        &mut self,
        slot: u32,
        kind: TimerKind,
        now: Instant,
        after: Duration,
    ) {
        match task_level(kind) {
            Some((id, level)) => {
                let ns = self.tasks.ns_after(now, after);
                self.tasks.set_ns(slot, id, level, ns);
            }
            None => self.set(kind, now + after),
        }
    }

    /// `now + after` on the [`now_ns`](Self::now_ns) scale: the deadline
    /// [`set_task_after`](Self::set_task_after) would arm.
    #[inline]
    pub(crate) fn ns_after(&mut self, now: Instant, after: Duration) -> u64 {
        self.tasks.ns_after(now, after)
    }

    /// `base + after` on the [`now_ns`](Self::now_ns) scale, saturating as
    /// [`ns_after`](Self::ns_after) does.
    #[inline]
    pub(crate) fn ns_plus(&self, base: u64, after: Duration) -> u64 {
        ns_plus(base, after)
    }

    /// Arms the per-task timer `kind` of the task stored at `slot` at `ns` (on the
    /// [`now_ns`](Self::now_ns) scale). Any other kind is ignored.
    pub(crate) fn set_task_ns(&mut self, slot: u32, kind: TimerKind, ns: u64) {
        if let Some((id, level)) = task_level(kind) {
            self.tasks.set_ns(slot, id, level, ns);
        }
    }

    /// `now` as nanoseconds on the table's own scale (converted once per input, like the
    /// deadlines of [`set_task_after`](Self::set_task_after)): for the engine's per-task
    /// stamps, whose differences then cost a subtraction, not a timespec subtraction each.
    #[inline]
    pub(crate) fn now_ns(&mut self, now: Instant) -> u64 {
        self.tasks.ns_after(now, Duration::ZERO)
    }

    /// Arms (or re-arms) the per-task timer `kind` of the task stored at `slot` at `at`
    /// (see [`set_task_after`](Self::set_task_after); any other kind as [`set`](Self::set)).
    pub(crate) fn set_task_at(&mut self, slot: u32, kind: TimerKind, at: Instant) {
        match task_level(kind) {
            Some((id, level)) => {
                let ns = self.tasks.ns(at);
                self.tasks.set_ns(slot, id, level, ns);
            }
            None => self.set(kind, at),
        }
    }

    /// When the per-task timer `kind` of the task stored at `slot` fires, if armed (any other
    /// kind as [`deadline`](Self::deadline)); unlike `deadline`, no scan for the slot.
    pub(crate) fn task_deadline(&self, slot: u32, kind: TimerKind) -> Option<Instant> {
        match task_level(kind) {
            Some((id, level)) => self.tasks.deadline(slot, id, level),
            None => self.deadline(kind),
        }
    }

    /// When the total-timeout timer of task `id` stored at `slot` fires, on the
    /// [`now_ns`](Self::now_ns) scale, if armed: a comparison with stamps on that scale costs
    /// no timespec arithmetic.
    #[inline]
    pub(crate) fn total_deadline_ns(&self, slot: u32, id: TaskId) -> Option<u64> {
        let s = self.tasks.slots.get(slot as usize).filter(|s| s.id == id)?;
        (s.at[0] != UNARMED).then_some(s.at[0])
    }

    /// Disarms the per-task timer `kind` of the task stored at `slot` (any other kind as
    /// [`cancel`](Self::cancel) does).
    pub(crate) fn cancel_task_timer(&mut self, slot: u32, kind: TimerKind) {
        match task_level(kind) {
            Some((id, level)) => self.tasks.cancel(slot, id, level),
            None => self.cancel(kind),
        }
    }

    /// Disarms every per-task timer (total, first packet, packet-to-packet, read/write) of
    /// the task stored at `slot` at once.
    pub(crate) fn cancel_task(&mut self, slot: u32) {
        self.tasks.cancel_all(slot);
    }

    /// Drops the per-task entries disarmed since the last call from the front of their
    /// lanes (see [`TaskTimers`]): the engine calls it at the end of every input. Only a
    /// matter of cost: the table is exact either way.
    pub(crate) fn settle(&mut self) {
        self.tasks.settle();
    }

    /// Arms (or re-arms) `kind` at `at`. A per-task kind is found by a scan of the armed
    /// tasks: the engine uses [`set_task_after`](Self::set_task_after) for those.
    pub(crate) fn set(&mut self, kind: TimerKind, at: Instant) {
        if let Some((id, level)) = task_level(kind) {
            let slot = self.tasks.slot_of(id);
            let ns = self.tasks.ns(at);
            self.tasks.set_ns(slot, id, level, ns);
            return;
        }
        if let Some((li, i)) = LinkTimers::index(kind) {
            self.links.set(li, i, Some(at));
            return;
        }
        self.last_lookup.set(None);
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

    /// Disarms `kind` (a per-task kind by a scan, as in [`set`](Self::set)).
    pub(crate) fn cancel(&mut self, kind: TimerKind) {
        if let Some((id, level)) = task_level(kind) {
            let slot = self.tasks.slot_of(id);
            self.tasks.cancel(slot, id, level);
            return;
        }
        if let Some((li, i)) = LinkTimers::index(kind) {
            self.links.set(li, i, None);
            return;
        }
        self.last_lookup.set(None);
        if let Some(old) = self.by_kind.remove(&kind) {
            self.outdated(old, kind);
        }
    }

    /// When `kind` fires, if armed (a per-task kind by a scan, as in [`set`](Self::set)).
    pub(crate) fn deadline(&self, kind: TimerKind) -> Option<Instant> {
        match task_level(kind) {
            Some((id, level)) => self.tasks.deadline(self.tasks.slot_of(id), id, level),
            None if LinkTimers::index(kind).is_some() => self.links.deadline(kind),
            None => {
                if let Some((k, at)) = self.last_lookup.get() {
                    if k == kind {
                        return at;
                    }
                }
                let at = self.by_kind.get(&kind).copied();
                self.last_lookup.set(Some((kind, at)));
                at
            }
        }
    }

    /// Whether `kind` is armed.
    pub(crate) fn is_armed(&self, kind: TimerKind) -> bool {
        self.deadline(kind).is_some()
    }

    /// The earliest armed timer.
    pub(crate) fn next(&self) -> Option<(Instant, TimerKind)> {
        let other = self.heap.peek().map(|e| e.0);
        let earlier =
            |a: Option<(Instant, TimerKind)>, b: Option<(Instant, TimerKind)>| match (a, b) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        earlier(earlier(other, self.tasks.next()), self.links.first)
    }

    /// Removes and returns the earliest timer due at `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(Instant, TimerKind)> {
        self.tasks.settle();
        let (at, kind) = self.next()?;
        if at > now {
            return None;
        }
        if task_level(kind).is_some() {
            self.tasks.pop_front();
            return Some((at, kind));
        }
        if let Some((li, i)) = LinkTimers::index(kind) {
            self.links.set(li, i, None);
            return Some((at, kind));
        }
        self.heap.pop();
        self.last_lookup.set(None);
        self.by_kind.remove(&kind);
        self.tidy();
        Some((at, kind))
    }

    /// How many timers are armed.
    pub(crate) fn len(&self) -> usize {
        self.by_kind.len() + self.tasks.armed + self.links.armed()
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

/// The link-level kinds that ordinary traffic re-arms: by link, the heartbeat slot, the
/// heartbeat reply and the stall probe.
///
/// Design: every write restarts the heartbeat interval and every round of a link that goes
/// quiet between rounds arms and disarms its stall probe; in the heap each was a hash-map
/// write and a push, and an outdated entry popped later. Here arming and disarming store
/// into the link's place, and the earliest is kept aside: it changes with an earlier
/// deadline, and is found again by a scan of the links' few places when it is disarmed or
/// moved later. A `TaskBatch` at one task in flight went from 17,193 instructions a task to
/// 16,534 (`docs/lab/throughput.md`).
#[derive(Debug, Default)]
struct LinkTimers {
    /// By link: [`Heartbeat`](TimerKind::Heartbeat), [`HeartbeatReply`](TimerKind::HeartbeatReply),
    /// [`StallProbe`](TimerKind::StallProbe).
    at: Vec<[Option<Instant>; 3]>,
    /// The earliest of them (ties by kind, as everywhere in the table).
    first: Option<(Instant, TimerKind)>,
}

impl LinkTimers {
    /// Where `kind` lives here: (link, place), for the kinds kept here.
    #[inline]
    fn index(kind: TimerKind) -> Option<(usize, usize)> {
        match kind {
            TimerKind::Heartbeat(li) => Some((li, 0)),
            TimerKind::HeartbeatReply(li) => Some((li, 1)),
            TimerKind::StallProbe(li) => Some((li, 2)),
            _ => None,
        }
    }

    /// The kind at place `i` of link `li`.
    fn kind(li: usize, i: usize) -> TimerKind {
        match i {
            0 => TimerKind::Heartbeat(li),
            1 => TimerKind::HeartbeatReply(li),
            _ => TimerKind::StallProbe(li),
        }
    }

    /// When `kind` (one kept here) fires, if armed.
    fn deadline(&self, kind: TimerKind) -> Option<Instant> {
        let (li, i) = Self::index(kind)?;
        self.at.get(li)?[i]
    }

    /// Arms place `i` of link `li` at `at`, or disarms it (`None`).
    #[inline]
    fn set(&mut self, li: usize, i: usize, at: Option<Instant>) {
        if li >= self.at.len() {
            if at.is_none() {
                return;
            }
            self.at.resize(li + 1, [None; 3]);
        }
        let old = std::mem::replace(&mut self.at[li][i], at);
        if old == at {
            return;
        }
        let kind = Self::kind(li, i);
        match at {
            Some(at) if self.first.is_none_or(|f| (at, kind) < f) => self.first = Some((at, kind)),
            // Disarmed or moved later: if it was the earliest, find the earliest again.
            _ if self.first.is_some_and(|f| f.1 == kind) => self.first = self.scan(),
            _ => {}
        }
    }

    /// How many are armed (counted: only the table's `len` asks).
    fn armed(&self) -> usize {
        self.at.iter().flatten().filter(|at| at.is_some()).count()
    }

    /// The earliest armed place, by a scan.
    ///
    /// Design: out of line: it runs at most once per change of the earliest, while the
    /// arming paths it would be inlined into run on every write and pass (one task in
    /// flight: 16,534 instructions a task out of line, 16,653 inlined).
    #[inline(never)]
    fn scan(&self) -> Option<(Instant, TimerKind)> {
        let mut first = None;
        for (li, places) in self.at.iter().enumerate() {
            for (i, at) in places.iter().enumerate() {
                if let Some(at) = *at {
                    let e = (at, Self::kind(li, i));
                    if first.is_none_or(|f| e < f) {
                        first = Some(e);
                    }
                }
            }
        }
        first
    }
}

/// `base + after` on the nanosecond scale: `ns` saturates at twice its midpoint (2^63), and
/// so does this.
#[inline]
fn ns_plus(base: u64, after: Duration) -> u64 {
    (u128::from(base) + after.as_nanos()).min(1 << 63) as u64
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

/// The per-task deadlines of the task stored at one slot.
#[derive(Clone, Copy, Debug)]
struct Slots {
    /// The task they belong to (a slot is reused by later tasks).
    id: TaskId,
    /// By level (see [`task_level`]), as [`TaskTimers::ns`] values; [`UNARMED`] for a level
    /// not armed.
    at: [u64; 4],
}

/// A level not armed.
const UNARMED: u64 = u64::MAX;

/// How far from the back of its lane an out-of-order deadline may be inserted; one further
/// in goes to the overflow heap instead (so an insert moves at most this many entries).
const MAX_LANE_SHIFT: usize = 32;

/// Bits of a key holding the slot.
const SLOT_BITS: u32 = 30;

/// The per-task timers.
///
/// Design: deadlines indexed by the task's slot in the engine's task slab, and sorted lanes
/// with lazy deletion. Each level (total, first packet, packet-to-packet, read/write) has a
/// lane: a deque of keys sorted by `(deadline, task)`. A task's timers of one level are
/// mostly armed with the same duration at a non-decreasing `now`, so a new deadline is
/// almost always the lane's latest and arming is a push at the back; the rare earlier one is
/// inserted near the back by binary search, or — when it belongs more than
/// [`MAX_LANE_SHIFT`] entries in — pushed on a small overflow heap. Disarming touches only
/// the slot's deadlines: the lane entry stays, outdated, and is dropped when it reaches the
/// front. So a task armed at admission and at sending and ended by its response costs three
/// pushes at a lane's back and three pops at its front, and no hashing (the binary heap and
/// id-keyed map this replaces paid two pushes, pops through ~8 levels and seven hash
/// lookups).
///
/// An entry is live while its slot still holds its task and its deadline at its level.
/// Every lane front and the heap top are kept live after every change, so
/// [`next`](Self::next) is a peek at five entries; when outdated entries (a long-lived task
/// at a lane's front holds back the outdated entries behind it) outnumber twice the slots
/// (the most tasks the engine has held at once), everything live is rebuilt into sorted
/// lanes, so memory stays proportional to the slot table. The bound is the slots, not the
/// armed deadlines: right after a read ended a link's tasks but one, a new batch arms few
/// deadlines behind that one's many outdated entries, and a bound on armed deadlines then
/// rebuilt the whole table once per round of a busy link (a sort of every live deadline,
/// about 60 instructions per task). A rebuild scans every slot, so it now comes at most once
/// per two slots' worth of arming. A key packs `(deadline, level, task, slot)` into one
/// `u128` whose order is the `TimerKind` order of these kinds, so ties fire exactly as in one
/// table.
#[derive(Debug)]
struct TaskTimers {
    epoch: Instant,
    /// By slot.
    slots: Vec<Slots>,
    lanes: [VecDeque<u128>; 4],
    overflow: BinaryHeap<Reverse<u128>>,
    /// Entries in the lanes and the overflow heap, live or not.
    entries: usize,
    /// Armed deadlines (not tasks), for [`TimerTable::len`].
    armed: usize,
    /// The last `now` given to [`ns_after`](Self::ns_after), converted.
    now_ns: Option<(Instant, u64)>,
}

/// Packs a key.
fn key(ns: u64, level: usize, id: TaskId, slot: u32) -> u128 {
    debug_assert!(slot < 1 << SLOT_BITS, "slot {slot} out of range");
    (u128::from(ns) << 64)
        | ((level as u128) << 62)
        | (u128::from(id.0) << SLOT_BITS)
        | u128::from(slot & ((1 << SLOT_BITS) - 1))
}

/// The parts of a key: deadline, level, task, slot.
fn unkey(k: u128) -> (u64, usize, TaskId, u32) {
    (
        (k >> 64) as u64,
        ((k >> 62) & 3) as usize,
        TaskId((k >> SLOT_BITS) as u32),
        (k & ((1 << SLOT_BITS) - 1)) as u32,
    )
}

impl TaskTimers {
    fn new(epoch: Instant) -> Self {
        TaskTimers {
            epoch,
            slots: Vec::new(),
            lanes: Default::default(),
            overflow: BinaryHeap::new(),
            entries: 0,
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
    #[inline]
    fn ns_after(&mut self, now: Instant, after: Duration) -> u64 {
        let base = match self.now_ns {
            Some((at, ns)) if at == now => ns,
            _ => {
                let ns = self.ns(now);
                self.now_ns = Some((now, ns));
                ns
            }
        };
        ns_plus(base, after)
    }

    /// The slot holding armed deadlines of `id`, else one holding none (only for the
    /// scanning [`TimerTable`] methods).
    fn slot_of(&self, id: TaskId) -> u32 {
        let armed = |s: &Slots| s.id == id && s.at != [UNARMED; 4];
        let free = |s: &Slots| s.at == [UNARMED; 4];
        let found = self.slots.iter().position(armed);
        match found.or_else(|| self.slots.iter().position(free)) {
            Some(i) => i as u32,
            None => self.slots.len() as u32,
        }
    }

    /// Arms `level` of the task `id` stored at `slot` at `ns`.
    ///
    /// Design: inlined, with the rare paths (a new slot, a slot the last task left armed,
    /// an out-of-order deadline, a rebuild) out of line: this runs three times per task.
    #[inline]
    fn set_ns(&mut self, slot: u32, id: TaskId, level: usize, ns: u64) {
        let Some(s) = self.slots.get_mut(slot as usize) else {
            return self.set_ns_new_slot(slot, id, level, ns);
        };
        if s.id != id {
            if s.at != [UNARMED; 4] {
                return self.set_ns_new_slot(slot, id, level, ns);
            }
            // A new task in a slot whose last task left nothing armed.
            s.id = id;
        }
        let old = s.at[level];
        if old == ns {
            return;
        }
        s.at[level] = ns;
        if old == UNARMED {
            self.armed += 1;
        }
        let k = key(ns, level, id, slot);
        let lane = &mut self.lanes[level];
        match lane.back() {
            Some(&last) if last > k => self.push_out_of_order(k),
            _ => {
                lane.push_back(k);
                self.entries += 1;
            }
        }
        if self.entries > self.armed + 2 * self.slots.len() + 64 {
            self.rebuild();
        }
    }

    /// [`set_ns`](Self::set_ns) for a slot not seen yet, or one whose last task left
    /// deadlines armed (they are outdated now).
    #[cold]
    #[inline(never)]
    fn set_ns_new_slot(&mut self, slot: u32, id: TaskId, level: usize, ns: u64) {
        let i = slot as usize;
        if i >= self.slots.len() {
            self.slots.resize(
                i + 1,
                Slots {
                    id,
                    at: [UNARMED; 4],
                },
            );
        }
        self.cancel_all(slot);
        self.slots[i].id = id;
        self.set_ns(slot, id, level, ns);
    }

    /// Adds a live entry that sorts before the last of its lane: into the lane near its
    /// back, or onto the overflow heap.
    #[cold]
    #[inline(never)]
    fn push_out_of_order(&mut self, k: u128) {
        self.entries += 1;
        let lane = &mut self.lanes[unkey(k).1];
        let at = lane.partition_point(|&e| e < k);
        if lane.len() - at > MAX_LANE_SHIFT {
            self.overflow.push(Reverse(k));
        } else {
            lane.insert(at, k);
        }
    }

    fn cancel(&mut self, slot: u32, id: TaskId, level: usize) {
        let Some(s) = self.slots.get_mut(slot as usize).filter(|s| s.id == id) else {
            return;
        };
        let old = s.at[level];
        if old == UNARMED {
            return;
        }
        s.at[level] = UNARMED;
        self.armed -= 1;
    }

    fn cancel_all(&mut self, slot: u32) {
        let Some(s) = self.slots.get_mut(slot as usize) else {
            return;
        };
        let at = std::mem::replace(&mut s.at, [UNARMED; 4]);
        self.armed -= at.iter().filter(|&&ns| ns != UNARMED).count();
    }

    fn deadline(&self, slot: u32, id: TaskId, level: usize) -> Option<Instant> {
        let s = self.slots.get(slot as usize).filter(|s| s.id == id)?;
        (s.at[level] != UNARMED).then(|| self.instant(s.at[level]))
    }

    /// The earliest live key: the first live entry of each lane and the heap (right at the
    /// front once [`settle`](Self::settle) ran).
    fn first(&self) -> Option<u128> {
        let live = |l: &VecDeque<u128>| l.iter().copied().find(|&k| self.is_live(k));
        let fronts = self.lanes.iter().filter_map(live);
        let top = match self.overflow.peek() {
            Some(r) if self.is_live(r.0) => Some(r.0),
            // Outdated entries below a live top are reached by `settle`; an outdated top
            // means the heap was not settled: look at every entry.
            Some(_) => self
                .overflow
                .iter()
                .map(|r| r.0)
                .filter(|&k| self.is_live(k))
                .min(),
            None => None,
        };
        fronts.chain(top).min()
    }

    /// The earliest armed per-task timer.
    fn next(&self) -> Option<(Instant, TimerKind)> {
        let (ns, level, id, _) = unkey(self.first()?);
        let kind = match level {
            0 => TimerKind::TaskTotal(id),
            1 => TimerKind::FirstPacket(id),
            2 => TimerKind::PacketToPacket(id),
            _ => TimerKind::ReadWrite(id),
        };
        Some((self.instant(ns), kind))
    }

    /// Disarms the earliest armed per-task timer.
    fn pop_front(&mut self) {
        if let Some(k) = self.first() {
            let (_, level, id, slot) = unkey(k);
            self.cancel(slot, id, level);
        }
    }

    /// Drops the outdated entries at the front of every lane and the top of the heap, so
    /// the next [`first`](Self::first) is a peek. Only a matter of cost: lookups are exact
    /// either way.
    fn settle(&mut self) {
        for level in 0..self.lanes.len() {
            while let Some(&f) = self.lanes[level].front() {
                if self.is_live(f) {
                    break;
                }
                self.lanes[level].pop_front();
                self.entries -= 1;
            }
        }
        while let Some(&Reverse(f)) = self.overflow.peek() {
            if self.is_live(f) {
                break;
            }
            self.overflow.pop();
            self.entries -= 1;
        }
    }

    /// Whether a key is its task's armed deadline at its level.
    fn is_live(&self, k: u128) -> bool {
        let (ns, level, id, slot) = unkey(k);
        self.slots
            .get(slot as usize)
            .is_some_and(|s| s.id == id && s.at[level] == ns)
    }

    /// Keeps only the live entries, one per armed deadline, in sorted lanes.
    #[cold]
    #[inline(never)]
    fn rebuild(&mut self) {
        let mut live: Vec<u128> = Vec::with_capacity(self.armed);
        for (slot, s) in self.slots.iter().enumerate() {
            for (level, &ns) in s.at.iter().enumerate() {
                if ns != UNARMED {
                    live.push(key(ns, level, s.id, slot as u32));
                }
            }
        }
        live.sort_unstable();
        for lane in &mut self.lanes {
            lane.clear();
        }
        self.overflow.clear();
        self.entries = live.len();
        for k in live {
            self.lanes[unkey(k).1].push_back(k);
        }
    }

    /// Every lane is sorted, every entry is counted, and once settled every front is live
    /// (tests).
    #[cfg(test)]
    fn check(&self, settled: bool) {
        let n: usize = self.lanes.iter().map(VecDeque::len).sum();
        assert_eq!(n + self.overflow.len(), self.entries);
        for (level, lane) in self.lanes.iter().enumerate() {
            assert!(lane.iter().zip(lane.iter().skip(1)).all(|(a, b)| a <= b));
            assert!(lane.iter().all(|&k| unkey(k).1 == level));
            assert!(!settled || lane.front().is_none_or(|&k| self.is_live(k)));
        }
        assert!(!settled || self.overflow.peek().is_none_or(|r| self.is_live(r.0)));
        assert!(self.entries <= self.armed + 2 * self.slots.len() + 65);
        let armed: usize = self
            .slots
            .iter()
            .map(|s| s.at.iter().filter(|&&ns| ns != UNARMED).count())
            .sum();
        assert_eq!(armed, self.armed);
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
            if i % 5 == 0 {
                a.set_task_at(i % 50, kind, now + after);
            } else {
                a.set_task_after(i % 50, kind, now, after);
            }
            b.set(kind, now + after);
            assert_eq!(a.deadline(kind), b.deadline(kind));
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
            let kind = match rand(8) {
                0 => TimerKind::TaskTotal(TaskId(rand(40) as u32)),
                1 => TimerKind::FirstPacket(TaskId(rand(40) as u32)),
                2 => TimerKind::PacketToPacket(TaskId(rand(40) as u32)),
                3 => TimerKind::ReadWrite(TaskId(rand(40) as u32)),
                4 => TimerKind::Heartbeat(rand(3) as usize),
                5 => TimerKind::HeartbeatReply(rand(3) as usize),
                6 => TimerKind::StallProbe(rand(4) as usize),
                _ => TimerKind::ConnectAttempt(ConnId(rand(5))),
            };
            let at = now + Duration::from_millis(rand(50));
            match rand(11) {
                10 => {
                    // Every per-task timer of one task at once.
                    let id = TaskId(rand(40) as u32);
                    t.cancel_task(t.tasks.slot_of(id));
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
            let settled = rand(2) == 0;
            if settled {
                t.settle();
            }
            t.tasks.check(settled);
        }
    }

    /// The lanes against a plain list with many tasks and mostly increasing deadlines (the
    /// shape lanes are built for) mixed with early ones far inside a lane (the overflow heap)
    /// and long-lived ones holding back outdated entries (the rebuild).
    #[test]
    fn lanes_match_a_plain_list_with_out_of_order_and_long_lived_deadlines() {
        let t0 = crate::tests::epoch::epoch();
        let mut t = TimerTable::new(t0);
        let mut model: Vec<(Instant, TimerKind)> = Vec::new();
        let mut now = t0;
        let mut rng =
            <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0x51ab_1e5e_ed00_0001);
        let mut rand = |n: u64| rand::Rng::gen_range(&mut rng, 0..n);
        let mut overflowed = false;
        for _ in 0..30_000 {
            let id = TaskId(rand(300) as u32);
            let kind = match rand(4) {
                0 => TimerKind::TaskTotal(id),
                1 => TimerKind::FirstPacket(id),
                2 => TimerKind::PacketToPacket(id),
                _ => TimerKind::ReadWrite(id),
            };
            let after = match rand(20) {
                // Early: lands far inside its lane.
                0 => Duration::from_millis(rand(5)),
                // Long-lived: stays at a lane's front.
                1 => Duration::from_secs(3600),
                _ => Duration::from_millis(500 + rand(3)),
            };
            match rand(10) {
                0..=4 => {
                    t.set_task_after(id.0, kind, now, after);
                    model.retain(|e| e.1 != kind);
                    model.push((now + after, kind));
                }
                5 | 6 => {
                    t.cancel(kind);
                    model.retain(|e| e.1 != kind);
                }
                7 => {
                    t.cancel_task(id.0);
                    model.retain(|e| task_level(e.1).is_none_or(|(i, _)| i != id));
                }
                _ => {
                    now += Duration::from_millis(rand(30));
                    model.sort();
                    while let Some(&first) = model.first().filter(|e| e.0 <= now) {
                        assert_eq!(t.pop_due(now), Some(first));
                        model.remove(0);
                    }
                    assert_eq!(t.pop_due(now), None);
                }
            }
            overflowed |= !t.tasks.overflow.is_empty();
            // Also: outdated entries never outnumber armed deadlines by much (the rebuild).
            let settled = rand(2) == 0;
            if settled {
                t.settle();
            }
            t.tasks.check(settled);
            model.sort();
            assert_eq!(t.next(), model.first().copied());
            assert_eq!(t.len(), model.len());
            assert_eq!(
                t.deadline(kind),
                model.iter().find(|e| e.1 == kind).map(|e| e.0)
            );
        }
        assert!(overflowed, "the overflow heap was never used");
    }
}
