//! The batch lane: a cheaper home for the usual task of a batch.
//!
//! A driver that admits many tasks per input ([`Engine::queue_task`]) mostly admits tasks
//! that differ only in command id and body, over a link that is up, and mostly sees each of
//! them sent and answered and nothing else. The lane keeps such tasks as members of a
//! *group*: the group holds what they share (the spec's parameters, the admission instant
//! and total deadline, the connection and instant of the pass that sent them) and a member
//! holds only its tag, order, command, body and attempt timeouts. Admitting a member,
//! framing it and ending it on its response then skip the regular task's spec copy, queue,
//! per-task timers and profile box.
//!
//! # Exactly a regular task
//!
//! A member behaves exactly as the regular task it stands for; the lane changes only the
//! bookkeeping. That holds because the lane takes part in only three inputs: admission
//! ([`Engine::queue_task`] / [`Engine::start_task`]), the dispatch pass, and the response
//! that ends the member (in [`Engine::handle_data`]). Anything else turns members back into
//! regular tasks first (*demotion*), with the state, timers, queue place and profile the
//! regular path would have given them, and the regular code takes it from there:
//!
//! - every other input of the engine (a timer, a cancel, the link closing, a network change,
//!   an auth result, …) demotes every member before it does anything else;
//! - inside `handle_data`: response bytes arriving in pieces, a response the response check
//!   does not accept, and the link going down (a malformed frame, a rejected identify)
//!   demote the members concerned first;
//! - at dispatch, a group whose link cannot take it in one pass as it is (not connected, a
//!   resend window, regular tasks waiting) is demoted into the link's queue; a member that a
//!   limit refuses or the codec cannot frame is demoted and ended by the regular code.
//!
//! The lane's timer ([`TimerKind::LaneWake`]) is armed no later than the earliest total or
//! first-packet deadline of any member, so demotion (at the start of
//! [`Engine::handle_timeout`]) always comes before a member's own deadline would have fired.
//! A test drives random scripts through two engines, one with the lane and one without, and
//! compares every action and event (`tests/lane.rs`).
//!
//! Which tasks join: tasks admitted to a long link that is connected, with no resend
//! window and no regular task waiting, whose spec has no encoder, is not send-only and is
//! not a long poll. A group of tasks that need auth goes out in the lane only if the auth
//! plugin says their host is authenticated when the pass runs (asked once per group, see
//! `group_authed`). Tasks of one input with the same parameters share one group
//! (one group per input may be waiting for its dispatch pass): a spec is compared with the
//! waiting group's parameters, or, through [`Engine::queue_tasks_like`], a whole call's
//! tasks join the group its first task opened without a comparison each.
//!
//! Members of one group answered one after another in one input may end together, in one
//! [`EndBatch`] ([`Engine::set_end_batches`]): the lane keeps the last end it emitted
//! (`Tail`) and adds the next one to it while they share their group, instant and weak-network
//! verdict, and nothing else was emitted in between.
//!
//! Within one read, the responses of a group's members that follow an end joined into a
//! batch form a *run* ([`Run`]), taken in one loop ([`Engine::lane_run`]): each then costs
//! its decoding, its member's removal, the estimator's sample (small fast ones counted and
//! recorded together), the link's counts and its place in the batch, everything else having
//! been worked out once for the run.
//!
//! What it saves: the benchmark's batch client at 100 tasks in flight on loopback went from
//! 3,459 instructions per task to 2,795 with the lane (and the driver's cheaper batch
//! ends), to 2,475 through `queue_tasks_like`, to 2,028 with end batches and smaller cuts,
//! and (its pho-like form, through `queue_tasks_like`) from 1,937 to 1,785 with runs and to
//! about 1,720 joining a call's tasks in one go, and from 1,608 to 1,543 with members held
//! in their group by id, to 1,415 with a run's frames taken in one loop and to 1,363 with
//! its estimator samples recorded together; counted without the benchmark's own summary of
//! a run, a call's tasks joining as one block of ids took it from 1,029 to 980
//! (`docs/lab/throughput.md`).
//!
//! # Members by id
//!
//! The engine hands out task ids in sequence, so the members of a group, admitted in one
//! input, mostly have consecutive ids. A group keeps its members in a list indexed by id
//! less the group's first id, and the lane keeps its groups sorted by first id: a member is
//! found by a binary search among the groups (or, in a run, straight in the run's group),
//! and admitting or ending one touches only its place in the list. An id given to a task
//! that did not join (another link's, a short-link task's) between two members is a *hole*
//! in the list, found the regular way; a task whose id is further than [`MAX_GAP`] ids
//! past the group's last one (the ids wrapped, or the codec reserves many in a row) does
//! not join. Ranges never overlap: a group opens only at an id outside every other group's
//! range and grows only up to the next group's first id. (Once ids have wrapped, a new
//! task's id skips the ids of members held, as it skips those of regular tasks, so ids are
//! given out as without the lane; one that falls in an older group's range, the id of a
//! hole or of a member that ended, goes to a regular task.)

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use phobos_plugin_api::codec::{Decoded, FrameKind};
use phobos_plugin_api::panics::into_message;
use phobos_plugin_api::{CmdId, IpPort, Seq, TaskId};

use super::batch::LikeTask;
use super::timeouts::{self, AttemptTimeouts, NetQuality};
use super::{
    frame, limits_of, retry_room_ns, Attempt, Engine, LinkState, Task, TaskState, DEFAULT_RETRIES,
    SHORT_TASK, TASK_ID_WRAP, WEAK_FAST_TASK, WEAK_SLOW_TASK,
};
use crate::error::{CodecFailure, PluginKind};
use crate::io::{ConnId, Event, LinkName};
use crate::slab::Slab;
use crate::task::{BatchedEnd, EndBatch, Response, TaskProfile, TaskSpec};
use crate::timer::TimerKind;

/// The lane's groups and members.
#[derive(Debug)]
pub(super) struct Lane {
    /// Whether tasks may join ([`Engine::set_batch_lane`]).
    pub(super) enabled: bool,
    groups: Slab<Group>,
    /// The groups by first id, ascending: `(first, group)`.
    by_first: Vec<(u32, u32)>,
    /// Members held, in every group.
    live: usize,
    /// The group of this input waiting for its dispatch pass: (link, group).
    waiting: Option<(usize, u32)>,
    /// When [`TimerKind::LaneWake`] fires, if armed.
    ///
    /// Design: kept here, not in the engine's timer table: under steady traffic the lane
    /// empties and fills again every round, and disarming and arming the timer in the table
    /// each time cost about a thousand instructions a round (its heap drops outdated
    /// entries as they surface). [`Engine::poll_timeout`] and [`Engine::next_timer`] take
    /// it into account, so the engine wakes at the same instants.
    wake: Option<Instant>,
    /// Tasks the lane ended itself.
    #[cfg(test)]
    ended: u64,
    /// Member lists of freed groups, kept for their allocation.
    spare_lists: Vec<Vec<Member>>,
    /// The serial number of the next group.
    next_serial: u64,
    /// The last end the lane emitted, which the next one may join ([`Engine::set_end_batches`]).
    tail: Option<Tail>,
    /// The run of ends the frames of this read are adding to, if any ([`Engine::lane_run`]).
    pub(super) run: Option<Run>,
}

/// A run: the last event is the [`EndBatch`] of group `g` that the last frame of this read
/// added an end to, through the whole of `on_response` and `after_lane_success`.
///
/// Design: the next response of a member of the same group in the same read shares
/// everything those paths worked out but the member's own facts: the instant, the cost
/// since the group's pass, the weak-network verdict (marking or relieving it again with the
/// same time taken changes nothing), the newest answered send, the end's key. So while the
/// run lasts, such a response only removes its member, feeds the estimator, moves the
/// link's counts and adds its end to the batch ([`Engine::lane_run`]). Any frame that goes
/// another way ends the run first, so nothing it changes can slip past.
#[derive(Clone, Copy, Debug)]
pub(super) struct Run {
    g: u32,
    key: EndKey,
    /// The cost of the group's round trip (the same for every member).
    cost: Duration,
    /// How many events were queued when the run began: its batch is the last.
    events: usize,
}

/// The last end the lane emitted: its task and what its profile shares with the next
/// member's end if that one may join it in one [`EndBatch`].
#[derive(Clone, Copy, Debug)]
struct Tail {
    key: EndKey,
    id: TaskId,
}

/// What a member's end shares with the ends of its group's other members that end in the
/// same input: the group (by serial number: slab slots are reused), the instant, and
/// whether the network counted as weak then. The profile and elapsed time follow from them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct EndKey {
    serial: u64,
    now: Instant,
    weak: bool,
}

/// Most member lists [`Lane::spare_lists`] keeps.
const SPARE_LISTS: usize = 16;

/// Most ends an [`EndBatch`] reserves room for when it is made.
const MAX_ENDS_RESERVED: usize = 1024;

impl Lane {
    /// An empty lane, turned on.
    pub(super) fn new() -> Self {
        Lane {
            enabled: true,
            groups: Slab::default(),
            by_first: Vec::new(),
            live: 0,
            waiting: None,
            wake: None,
            #[cfg(test)]
            ended: 0,
            spare_lists: Vec::new(),
            next_serial: 0,
            tail: None,
            run: None,
        }
    }

    /// Members held.
    pub(super) fn len(&self) -> usize {
        self.live
    }

    /// Whether no member is held.
    pub(super) fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// The group whose id range holds `id` (a member's, a hole's or a gone member's id), as
    /// the group and the index of the id in its list.
    #[inline]
    fn range_of(&self, id: TaskId) -> Option<(u32, usize)> {
        let k = self.by_first.partition_point(|&(first, _)| first <= id.0);
        let &(first, g) = self.by_first.get(k.checked_sub(1)?)?;
        let i = (id.0 - first) as usize;
        (i < self.groups.get(g)?.members.len()).then_some((g, i))
    }

    /// Where the member of id `id` is held: its group and index.
    #[inline]
    pub(super) fn find(&self, id: TaskId) -> Option<(u32, usize)> {
        let (g, i) = self.range_of(id)?;
        self.groups.get(g)?.members[i].held.then_some((g, i))
    }

    /// The first id of the group after group `g` by first id (`u32::MAX` when there is
    /// none): `g`'s range may not grow to it.
    #[inline]
    fn range_limit(&self, g: u32) -> Option<u32> {
        let first = self.groups.get(g)?.first;
        if self.by_first.last() == Some(&(first, g)) {
            return Some(u32::MAX);
        }
        let k = self.by_first.partition_point(|&(f, _)| f <= first);
        Some(self.by_first.get(k).map_or(u32::MAX, |&(f, _)| f))
    }

    /// Whether `id` lies in a group's id range, held or not: a task of such an id may not
    /// open a group (the older group's members would be looked up in the new one).
    pub(super) fn covers(&self, id: TaskId) -> bool {
        self.range_of(id).is_some()
    }
}

/// What the members of one group share.
#[derive(Debug)]
struct Group {
    /// The parameters the members share: every field but the command, body and extension,
    /// which are each member's own (a member has no extension) and are never read here.
    ///
    /// Design: shared, so that the calls of a caller that starts many with the same
    /// parameters (`phobos-stn`'s `TaskBatch::start_like`) open their groups without a copy
    /// ([`Engine::queue_tasks_like`]).
    spec: Arc<TaskSpec>,
    /// Unique among the engine's groups ([`EndKey`]).
    serial: u64,
    link: usize,
    /// Admission: the budget's start, as an instant and on the timer table's scale.
    admitted: Instant,
    admitted_ns: u64,
    /// The total deadline on the timer table's scale.
    total_ns: u64,
    /// The id of `members[0]`.
    first: u32,
    /// Task `first + i` at `i`, in admission order: a member, a member that left, or a hole
    /// (an id given to a task that did not join).
    members: Vec<Member>,
    /// Members still held.
    live: u32,
    /// The pass that sent the group.
    sent: Option<Sent>,
}

/// The dispatch pass that sent a group: one connection, one instant.
#[derive(Clone, Copy, Debug)]
struct Sent {
    conn: ConnId,
    at: Instant,
    ns: u64,
    addr: IpPort,
    addr_index: usize,
    connect_start: Instant,
    connected_at: Instant,
}

/// One task of a group, by its place in the group's id range.
#[derive(Debug)]
struct Member {
    /// Whether the task is held here (false: it left, or its id is a hole).
    held: bool,
    tag: u64,
    order: u64,
    cmd_id: CmdId,
    /// The request body while the member is held (`None` once it left, and for a hole).
    ///
    /// Design: an `Option`, so that a left member holds nothing to drop: a group's list is
    /// cleared when its last member leaves, and dropping an empty `Bytes` per place was an
    /// indirect call each, about 15 instructions a task.
    body: Option<Bytes>,
    /// Set when the pass sent it: its attempt's timeouts, frame length and frame start in
    /// the connection's outgoing bytes.
    sent: Option<(AttemptTimeouts, usize, u64)>,
}

impl Member {
    /// The member a like task becomes (its body taken), admitted `order`th.
    #[inline]
    fn of_like(task: &mut LikeTask, order: u64) -> Member {
        Member {
            held: true,
            tag: task.tag,
            order,
            cmd_id: task.cmd_id,
            body: Some(std::mem::take(&mut task.body)),
            sent: None,
        }
    }

    /// The place of an id that is not a member's.
    const HOLE: Member = Member {
        held: false,
        tag: 0,
        order: 0,
        cmd_id: CmdId(0),
        body: None,
        sent: None,
    };
}

impl Group {
    /// Member `i` leaves: it is no longer held, its request body is dropped, and the group
    /// counts one member fewer. (The lane's own count is the caller's.)
    #[inline]
    fn release(&mut self, i: usize) {
        if let Some(member) = self.members.get_mut(i) {
            member.held = false;
            member.body = None;
            self.live -= 1;
        }
    }
}

/// Most ids a member may follow the group's last one by (the ids between become holes):
/// tasks of the same input that did not join, or ids the codec reserves.
const MAX_GAP: u32 = 64;

/// What a member holds of its spec (whose extension is empty: [`joins`]).
pub(super) struct Request {
    pub(super) cmd_id: CmdId,
    pub(super) body: Bytes,
}

impl Request {
    /// The command and body of `spec` (taken out of it).
    pub(super) fn take(spec: &mut TaskSpec) -> Request {
        Request {
            cmd_id: spec.cmd_id,
            body: std::mem::take(&mut spec.body),
        }
    }
}

/// A member's facts when its response arrives ([`Engine::lane_expects`]).
#[derive(Clone, Copy, Debug)]
pub(super) struct Answered {
    i: usize,
    id: TaskId,
    g: u32,
    serial: u64,
    tag: u64,
    t: AttemptTimeouts,
    sent_len: usize,
    sent: Sent,
    admitted: Instant,
    admitted_ns: u64,
}

/// Stamps into `p` what the regular pass's send stamps into a task's profile, for a member
/// sent in pass `sent` over `link` with timeouts `t` in a frame of `sent_len` bytes.
#[inline]
fn stamp_sent(
    p: &mut TaskProfile,
    link: LinkName,
    sent: &Sent,
    first_packet_timeout: Duration,
    sent_len: usize,
) {
    p.attempts = 1;
    p.link = Some(link);
    p.addr = Some(sent.addr);
    p.connect_start = Some(sent.connect_start);
    p.connect_end = Some(sent.connected_at);
    p.send_start = Some(sent.at);
    p.send_end = Some(sent.at);
    p.sent_bytes = sent_len;
    p.first_packet_timeout = Some(first_packet_timeout);
}

/// Stores the member `member` makes, task `id`, at its place in `group` (holes before it
/// for the ids between, see [`extends`]), made where it is stored; `live` counts the
/// lane's members. What admitting one member does, one by one ([`Engine::add_member`]) or a
/// call's tasks in a row ([`Engine::join_many`]).
#[inline(always)]
fn push_member(group: &mut Group, live: &mut usize, id: TaskId, member: impl FnOnce() -> Member) {
    let at = id.0.wrapping_sub(group.first) as usize;
    if at > group.members.len() {
        group.members.resize_with(at, || Member::HOLE);
    }
    group.members.push(member());
    group.live += 1;
    *live += 1;
}

/// Whether task `id` may join `group` at its place, `id - first`: after the group's last id,
/// by at most [`MAX_GAP`] ids. (That no other group's range begins in between is
/// [`Lane::range_limit`]'s part.)
#[inline]
fn extends(group: &Group, id: TaskId) -> bool {
    let next = group.first.wrapping_add(group.members.len() as u32);
    id.0.checked_sub(next).is_some_and(|gap| gap <= MAX_GAP)
}

/// Whether a spec may join the lane (what the lane does not carry).
///
/// Design: a member carries no extension (the usual task has none), which spares every
/// member a second buffer to store and drop.
fn joins(spec: &TaskSpec) -> bool {
    joins_params(spec) && spec.extension.is_empty()
}

/// [`joins`] for the parameters of a task without an extension (a like task's).
fn joins_params(spec: &TaskSpec) -> bool {
    spec.encoder.is_none() && !spec.send_only && spec.long_polling.is_none()
}

impl Engine {
    /// Turns the batch lane on or off (on by default). With it on, the usual task of a
    /// batch costs less to admit, send and end; what the engine does is the same (see the
    /// `lane` module's documentation), so this is for comparisons: a differential test runs
    /// random scripts both ways and compares every action and event. Turning it off lets
    /// no new task in; the tasks already there stay until they end or are demoted.
    pub fn set_batch_lane(&mut self, on: bool) {
        self.lane.enabled = on;
    }

    /// Whether the lane is on (for tests).
    #[cfg(test)]
    pub(crate) fn lane_on(&self) -> bool {
        self.lane.enabled
    }

    /// Tasks the lane ended itself, not demoted first.
    #[cfg(test)]
    pub(crate) fn lane_ended(&self) -> u64 {
        self.lane.ended
    }

    /// The group waiting for this input's dispatch pass, as (link, group), when a task with
    /// `spec`'s parameters, no extension and a body of `body_len` bytes may join it as task
    /// `id`.
    ///
    /// Design: the group's spec passed admission for the same link state in this input, so
    /// a member only needs the body check (and, as [`joins`] asks, no extension: the
    /// caller's check).
    #[inline]
    pub(super) fn fits_waiting(
        &self,
        now: Instant,
        spec: &TaskSpec,
        cmd_id: CmdId,
        body_len: usize,
        id: TaskId,
    ) -> Option<(usize, u32)> {
        let (li, g) = self.lane.waiting?;
        let group = self.lane.groups.get(g)?;
        // Command 0 never takes the long link (§3.2): such a task goes the regular way,
        // which refuses it or sends it over the short link. A task admitted at another
        // instant than the group's (a driver that stamps each input with its own clock read)
        // has a budget of its own: its members share the group's admission and deadline.
        (body_len <= self.max_body_len
            && cmd_id != CmdId(0)
            && group.admitted == now
            && spec.same_params(&group.spec)
            && id.0 < self.lane.range_limit(g)?
            && extends(group, id))
        .then_some((li, g))
    }

    /// Whether `(link, group)` is still the group waiting for this input's dispatch pass.
    pub(super) fn lane_waits(&self, group: (usize, u32)) -> bool {
        self.lane.waiting == Some(group)
    }

    /// Admits task `id` (its command and body) into group `g` of link `li` (see
    /// [`fits_waiting`](Self::fits_waiting)).
    pub(super) fn join(&mut self, (li, g): (usize, u32), id: TaskId, tag: u64, request: Request) {
        self.add_member(g, id, tag, request);
        self.dirty[li] = true;
    }

    /// Admits `task`, the first of a [`queue_tasks_like`](Self::queue_tasks_like) call (or
    /// the first after a task that did not join), with `params`' parameters, exactly as
    /// [`start_task_tagged`](Self::start_task_tagged) would admit a copy of them with the
    /// task's command and body; returns the waiting group when the task joined or opened
    /// it.
    ///
    /// Design: the usual first task opens a group whose parameters are `params` itself,
    /// shared, after the one admission check a task gets: no spec is copied or dropped per
    /// call. Any other case takes the regular way with a spec of its own.
    pub(super) fn admit_like(
        &mut self,
        now: Instant,
        params: &Arc<TaskSpec>,
        task: &mut LikeTask,
    ) -> Option<(usize, u32)> {
        let id = match self.begin_task(now) {
            Ok(id) => id,
            Err(id) => {
                task.id = id;
                self.end_unsequenced(now, id, task.tag);
                return None;
            }
        };
        task.id = id;
        let (cmd_id, tag, len) = (task.cmd_id, task.tag, task.body.len());
        if self.lane.enabled {
            let request = |task: &mut LikeTask| Request {
                cmd_id,
                body: std::mem::take(&mut task.body),
            };
            if let Some(group) = self.fits_waiting(now, params, cmd_id, len, id) {
                self.join(group, id, tag, request(task));
                return Some(group);
            }
            if joins_params(params) {
                if let Ok(li) = self.admit_parts(params, cmd_id, len) {
                    if li != SHORT_TASK && self.opens_group_as(li, id) {
                        self.open_group_with(now, li, id, tag, params.clone(), request(task));
                        return self.lane.waiting;
                    }
                }
            }
        }
        let mut spec = params.clone_params();
        spec.cmd_id = cmd_id;
        spec.body = std::mem::take(&mut task.body);
        self.admit_with_id(now, id, spec, tag);
        self.waiting_group_of(id)
    }

    /// Admits the leading tasks of `tasks` whose bodies fit into group `g` of link `li`
    /// (the waiting group, [`lane_waits`](Self::lane_waits)) as [`join`](Self::join) would
    /// one by one, writing each one's id; returns how many it admitted. (A task given an id
    /// the group cannot take, past a wrap of the ids or a long run of ids the codec
    /// reserves, is admitted the regular way with that id, and is the last one counted; so
    /// is one given no sequence number, which ends at once.)
    ///
    /// Design: the tasks of a [`queue_tasks_like`](Self::queue_tasks_like) call join in a
    /// row, so the group is looked up once for all of them. Nothing between two joins reads
    /// what the other changes (ids come in sequence whether or not the one before has its
    /// member yet; orders too), so the engine ends up as the one-by-one joins leave it.
    pub(super) fn join_many(
        &mut self,
        now: Instant,
        (li, g): (usize, u32),
        tasks: &mut [LikeTask],
    ) -> usize {
        let max = self.max_body_len;
        // The tasks after the first one that cannot join (a body over the lane's size, or
        // command 0, see `fits_waiting`) are admitted one by one.
        let n = tasks
            .iter()
            .take_while(|t| t.body.len() <= max && t.cmd_id != CmdId(0))
            .count();
        let Some(limit) = self.lane.range_limit(g) else {
            return 0;
        };
        // Admitted at the group's instant only (see `fits_waiting`).
        if n == 0
            || self
                .lane
                .groups
                .get(g)
                .is_none_or(|group| group.admitted != now)
        {
            return 0;
        }
        if let Some(group) = self.lane.groups.get_mut(g) {
            group.members.reserve(n);
        }
        let mut done = self.join_block(g, limit, &mut tasks[..n]);
        if done == n {
            self.tasks_begun(now, done);
            self.dirty[li] = true;
            return done;
        }
        // A task given an id the group cannot take, admitted after the joins; or one given
        // no sequence number, ended after them.
        let mut other = None;
        let mut unsequenced = None;
        for task in &mut tasks[done..n] {
            let (id, sequenced) = match self.alloc_task_id() {
                Ok(id) => (id, true),
                Err(id) => (id, false),
            };
            task.id = id;
            done += 1;
            if !sequenced {
                unsequenced = Some((id, task.tag));
                break;
            }
            let Some(group) = self.lane.groups.get_mut(g) else {
                break;
            };
            if id.0 >= limit || !extends(group, id) {
                let mut spec = group.spec.clone_params();
                spec.cmd_id = task.cmd_id;
                spec.body = std::mem::take(&mut task.body);
                other = Some((id, spec, task.tag));
                break;
            }
            let order = self.next_order;
            self.next_order += 1;
            push_member(group, &mut self.lane.live, id, || {
                Member::of_like(task, order)
            });
        }
        // What `begin_task` does per task, which nothing in the loop reads.
        self.tasks_begun(now, done);
        self.dirty[li] = true;
        if let Some((id, spec, tag)) = other {
            self.admit_with_id(now, id, spec, tag);
        }
        if let Some((id, tag)) = unsequenced {
            self.end_unsequenced(now, id, tag);
        }
        done
    }

    /// The leading tasks of `tasks` (bodies checked) that join group `g` as one block of
    /// ids: the ids the engine gives next, in a row, none the codec reserves, before any
    /// wrap, and all below `limit` (the next group's first id; before a wrap no group
    /// follows the waiting one, so this holds by itself). Writes each task's id and
    /// member; returns how many. What [`join_many`](Self::join_many)'s loop does one by one
    /// (ids, orders, places), with the checks made once for the block.
    fn join_block(&mut self, g: u32, limit: u32, tasks: &mut [LikeTask]) -> usize {
        let first = self.next_task;
        if first == 0 || self.ids_wrapped {
            return 0;
        }
        let room = (TASK_ID_WRAP.min(limit) as usize).saturating_sub(first as usize);
        let codec = &*self.cfg.codec;
        // The block ends before the first id the codec reserves. One guard for the block
        // (`plugins.rs`): a panic, reported here, takes no block, and the one-by-one path
        // asks again under its own guard.
        let block = || {
            (first..)
                .take(tasks.len().min(room))
                .take_while(|&id| !codec.is_reserved_seq(Seq(id)))
                .count()
        };
        let k = catch_unwind(AssertUnwindSafe(block)).unwrap_or_else(|p| {
            let m = into_message(p);
            self.caught.record(
                PluginKind::Codec,
                &|| codec.name().to_owned(),
                "is_reserved_seq",
                m,
            );
            0
        });
        let Some(group) = self.lane.groups.get_mut(g) else {
            return 0;
        };
        if k == 0 || !extends(group, TaskId(first)) {
            return 0;
        }
        let at = first.wrapping_sub(group.first) as usize;
        if at > group.members.len() {
            group.members.resize_with(at, || Member::HOLE);
        }
        let order = self.next_order;
        group
            .members
            .extend(
                tasks[..k]
                    .iter_mut()
                    .zip(first..)
                    .zip(order..)
                    .map(|((task, id), order)| {
                        task.id = TaskId(id);
                        Member::of_like(task, order)
                    }),
            );
        group.live += k as u32;
        self.lane.live += k;
        self.next_order += k as u64;
        // `k` ids from `first`, all below the wrap: the next is past them.
        self.next_task = first + k as u32;
        k
    }

    /// The group waiting for this input's dispatch pass, as (link, group), when task `id`
    /// is one of its members.
    pub(super) fn waiting_group_of(&self, id: TaskId) -> Option<(usize, u32)> {
        let (li, g) = self.lane.waiting?;
        let (found, _) = self.lane.find(id)?;
        (found == g).then_some((li, g))
    }

    /// Whether task `id`, admitted to link `li`, may open a group: the spec has what the lane
    /// carries, the link takes it in one pass now, and `id` lies outside every group's range
    /// (after the ids wrapped, it may be the id of an older group's hole or of a member that
    /// ended).
    #[inline]
    pub(super) fn opens_group(&self, li: usize, id: TaskId, spec: &TaskSpec) -> bool {
        joins(spec) && self.opens_group_as(li, id)
    }

    /// [`opens_group`](Self::opens_group) for a spec that [`joins`].
    fn opens_group_as(&self, li: usize, id: TaskId) -> bool {
        self.lane.waiting.is_none() && self.takes_group(li) && !self.lane.covers(id)
    }

    /// Whether link `li` can take a group in one pass as it is: connected, no resend window,
    /// no regular task waiting.
    fn takes_group(&self, li: usize) -> bool {
        let link = &self.links[li];
        matches!(&link.state, LinkState::Connected(s) if s.window.is_none() && s.unsent == 0)
            && link.queue.is_empty()
            && !link.refused
    }

    /// Opens a group for task `id` on link `li` (see [`opens_group`](Self::opens_group)),
    /// with `spec`'s parameters; the task is its first member.
    pub(super) fn open_group(
        &mut self,
        now: Instant,
        li: usize,
        id: TaskId,
        tag: u64,
        mut spec: TaskSpec,
    ) {
        // The spec itself is the group's parameters, its body taken out for the member.
        let request = Request::take(&mut spec);
        self.open_group_with(now, li, id, tag, Arc::new(spec), request);
    }

    /// [`open_group`](Self::open_group) with the parameters and the first member's request
    /// apart.
    fn open_group_with(
        &mut self,
        now: Instant,
        li: usize,
        id: TaskId,
        tag: u64,
        spec: Arc<TaskSpec>,
        request: Request,
    ) {
        let retries = spec.retry_count.unwrap_or(DEFAULT_RETRIES);
        let total = timeouts::task_total(
            spec.server_cost,
            retries,
            spec.long_polling,
            spec.total_timeout,
        );
        let admitted_ns = self.timers.now_ns(now);
        let total_ns = self.timers.ns_after(now, total);
        let template = spec;
        let members = self.lane.spare_lists.pop().unwrap_or_default();
        let serial = self.lane.next_serial;
        self.lane.next_serial += 1;
        let g = self.lane.groups.insert_with(|_| Group {
            spec: template,
            serial,
            link: li,
            admitted: now,
            admitted_ns,
            total_ns,
            first: id.0,
            members,
            live: 0,
            sent: None,
        });
        // Ids only grow until they wrap: the new group usually goes last, and never into
        // another's range (`opens_group`).
        let k = self.lane.by_first.partition_point(|&(f, _)| f < id.0);
        self.lane.by_first.insert(k, (id.0, g));
        self.add_member(g, id, tag, request);
        self.lane.waiting = Some((li, g));
        self.dirty[li] = true;
        self.lane_wake_by(now + total);
    }

    fn add_member(&mut self, g: u32, id: TaskId, tag: u64, request: Request) {
        let order = self.next_order;
        self.next_order += 1;
        let member = || Member {
            held: true,
            tag,
            order,
            cmd_id: request.cmd_id,
            body: Some(request.body),
            sent: None,
        };
        if let Some(group) = self.lane.groups.get_mut(g) {
            push_member(group, &mut self.lane.live, id, member);
        }
    }

    /// Arms the lane's timer at `at` unless it is armed earlier.
    fn lane_wake_by(&mut self, at: Instant) {
        if self.lane.wake.is_none_or(|w| at < w) {
            self.lane.wake = Some(at);
        }
    }

    /// When the lane's timer ([`TimerKind::LaneWake`]) fires, if armed.
    pub(super) fn lane_wake(&self) -> Option<Instant> {
        self.lane.wake
    }

    /// The start of link `li`'s dispatch pass: sends the group waiting for it, when the link
    /// takes it as it is (returns true: the pass is done), or demotes it into the link's
    /// queue for the regular pass (returns false).
    pub(super) fn dispatch_lane(&mut self, li: usize, now: Instant) -> bool {
        let Some((wl, g)) = self.lane.waiting else {
            return false;
        };
        if wl != li {
            return false;
        }
        self.lane.waiting = None;
        if !self.takes_group(li) || !self.group_authed(g) {
            self.demote_group(g);
            return false;
        }
        self.send_group(li, g, now);
        true
    }

    /// Whether the members of group `g` may be sent as far as auth goes: they need none, or
    /// the auth plugin says their host is authenticated.
    ///
    /// Design: the regular pass asks [`AuthCheck::is_authed`] once per task; the members of
    /// a group share their host, so the lane asks once per group. The two agree as long as
    /// the plugin's answer does not change in the middle of one dispatch pass (the trait
    /// asks for a cheap query; a login that completes during the pass then counts as
    /// completed just after it). A group that may not go is demoted: the regular pass asks
    /// for the login and holds the tasks.
    ///
    /// [`AuthCheck::is_authed`]: phobos_plugin_api::AuthCheck::is_authed
    fn group_authed(&self, g: u32) -> bool {
        let Some(group) = self.lane.groups.get(g) else {
            return false;
        };
        if !group.spec.needs_auth {
            return true;
        }
        self.is_authed(self.auth_host_for(&group.spec, group.link))
    }

    /// Frames every member of group `g` onto one write to link `li` (connected, nothing
    /// else queued): the regular pass's `send_task` for each, in admission order.
    fn send_group(&mut self, li: usize, g: u32, now: Instant) {
        let LinkState::Connected(s) = &self.links[li].state else {
            return;
        };
        let sent = Sent {
            conn: s.conn,
            at: now,
            ns: self.timers.now_ns(now),
            addr: s.addr,
            addr_index: s.addr_index,
            connect_start: s.connect_start,
            connected_at: s.connected_at,
        };
        // The pass's bytes are handed over after every earlier write of the connection.
        let emitted = s.emitted;
        let Some(group) = self.lane.groups.get_mut(g) else {
            return;
        };
        group.sent = Some(sent);
        let (first, len, live) = (group.first, group.members.len(), group.live as usize);
        let (freq, flow) = limits_of(&self.cfg, self.net, &group.spec);
        let (server_cost, total_ns) = (group.spec.server_cost, group.total_ns);
        let retries = group.spec.retry_count.unwrap_or(DEFAULT_RETRIES);
        let mobile = self.net.is_mobile();
        let excellent = self.estimator.quality() == NetQuality::Excellent;
        let mut out = self.send_buffer(live);
        let mut frames = 0;
        let running_before = self.links[li].running;
        let mut earliest: Option<Duration> = None;
        // The last member's timeouts and the inputs they came from (see the loop).
        let mut last = None;
        let mut i = 0;
        while i < len {
            if freq || flow {
                let id = TaskId(first + i as u32);
                let Some(group) = self.lane.groups.get(g) else {
                    break;
                };
                let Some(member) = group.members.get(i).filter(|x| x.held) else {
                    i += 1;
                    continue;
                };
                let body = member.body.clone().unwrap_or_default();
                if let Some((kind, param)) = self.check_limits(now, &body, freq, flow) {
                    self.demote_member(g, i);
                    self.limited(id, kind, param, now);
                    i += 1;
                    continue;
                }
            }
            // The members from `i` on that go out as they are, framed in one stretch: the
            // group, the link and the codec looked up once for it. With limits, a stretch is
            // the one member just checked; without, it ends at a member the codec cannot
            // frame, which is demoted and ended before the next stretch.
            //
            // Design: the group and the link used to be looked up again for every member
            // (the error path needs the whole engine); taking the lookups out of the usual
            // loop cut the pass by about 36 instructions a task (callgrind, pho-like at 100
            // in flight: `send_queued` 215 -> 179 a task).
            let end = if freq || flow { i + 1 } else { len };
            let Some(group) = self.lane.groups.get_mut(g) else {
                break;
            };
            let Some(members) = group.members.get_mut(i..end) else {
                break;
            };
            let link = &mut self.links[li];
            let codec = &*self.cfg.codec;
            let before = frames;
            let mut failed = None;
            for (j, member) in (i..).zip(members.iter_mut()) {
                if !member.held {
                    continue;
                }
                let id = TaskId(first + j as u32);
                let body = member.body.as_deref().unwrap_or_default();
                let frame_start = emitted + out.len() as u64;
                let sent_len =
                    match frame(codec, member.cmd_id, id, body, &[], &mut out, &self.caught) {
                        Ok(len) => len,
                        Err(e) => {
                            failed = Some((j, e));
                            break;
                        }
                    };
                frames += 1;
                // The formula's inputs that vary within a pass: the body's length and the
                // running tasks ahead (capped).
                let inputs = (body.len(), link.running.min(timeouts::MAX_QUEUED_AHEAD));
                let t = match last {
                    Some((same, t)) if same == inputs => t,
                    _ => {
                        let t = self.attempt_memo.attempt(
                            &self.cfg.timing,
                            timeouts::AttemptInputs {
                                mobile,
                                server_cost,
                                long_polling: None,
                                send_len: body.len(),
                                queued_ahead: link.running,
                                excellent,
                            },
                        );
                        let t = match self.retry_room {
                            Some(room) => retry_room_ns(room, sent.ns, Some(total_ns), retries, t),
                            None => t,
                        };
                        last = Some((inputs, t));
                        // The same timeouts as the member before cannot be earlier.
                        earliest = Some(earliest.map_or(t.first_packet, |e| e.min(t.first_packet)));
                        t
                    }
                };
                member.sent = Some((t, sent_len, frame_start));
                link.running += 1;
                if self.task_sent_events {
                    self.events.push_back(Event::TaskSent {
                        id,
                        link: link.name.clone(),
                        first_packet_timeout: t.first_packet,
                    });
                }
            }
            self.stats.requests_sent += (frames - before) as u64;
            match failed {
                Some((j, e)) => {
                    self.demote_member(g, j);
                    self.finish(
                        TaskId(first + j as u32),
                        now,
                        Err(CodecFailure::Encode(e).into()),
                    );
                    i = j + 1;
                }
                None => i = end,
            }
        }
        if self.links[li].running > running_before {
            self.arm_stall_probe(li, now);
        }
        self.note_frame_len(out.len(), frames);
        if let Some(first_packet) = earliest {
            self.lane_wake_by(now + first_packet);
        }
        if !out.is_empty() {
            self.write(li, now, out);
        }
    }

    /// What the lane knows of member `i` of group `g` (task `id`) when a response for it
    /// arrives on link `li`, if it is running there (the regular path's test: a response
    /// for a task not running, or running on another link, is dropped).
    #[inline]
    pub(super) fn lane_expects(&self, li: usize, g: u32, i: usize, id: TaskId) -> Option<Answered> {
        let group = self.lane.groups.get(g).filter(|x| x.link == li)?;
        let member = group.members.get(i).filter(|x| x.held)?;
        let (t, sent_len, _) = member.sent?;
        Some(Answered {
            i,
            id,
            g,
            serial: group.serial,
            tag: member.tag,
            t,
            sent_len,
            sent: group.sent?,
            admitted: group.admitted,
            admitted_ns: group.admitted_ns,
        })
    }

    /// The accepted response of the member `a` describes (from
    /// [`lane_expects`](Self::lane_expects) on link `li`, this input) arrived whole:
    /// `on_response`'s accepted path up to the task's end.
    pub(super) fn lane_response(
        &mut self,
        li: usize,
        a: Answered,
        response: Response,
        frame_len: usize,
        now: Instant,
    ) {
        let Answered {
            i,
            id,
            g,
            serial,
            tag,
            t,
            sent_len,
            sent,
            admitted,
            admitted_ns,
        } = a;
        let link = &mut self.links[li];
        if let LinkState::Connected(s) = &mut link.state {
            if s.conn == sent.conn && s.newest_answered.is_none_or(|(at, _)| sent.ns >= at) {
                s.newest_answered = Some((sent.ns, now));
            }
        }
        let now_ns = self.timers.now_ns(now);
        let cost = Duration::from_nanos(now_ns.saturating_sub(sent.ns));
        self.member_answered(li, (g, i), sent_len + frame_len, cost, now);
        let took = Duration::from_nanos(now_ns.saturating_sub(admitted_ns));
        if took >= WEAK_SLOW_TASK {
            self.mark_weak(now);
        } else if took < WEAK_FAST_TASK {
            self.relieve_weak(now);
        }
        let key = EndKey {
            serial,
            now,
            weak: self.is_weak(now),
        };
        let previous = self.lane.tail.replace(Tail { key, id });
        let end = BatchedEnd {
            id,
            tag,
            response,
            sent_bytes: sent_len,
            received_bytes: frame_len,
            first_packet_timeout: t.first_packet,
        };
        let joined = match previous.filter(|p| self.end_batches && p.key == key) {
            Some(p) => self.join_tail(p.id, end),
            None => Err(end),
        };
        match joined {
            Ok(()) => {
                self.stats.tasks_succeeded += 1;
                // A response check judges every response: none may skip it in a run.
                if self.cfg.response_check.is_none() {
                    self.lane.run = Some(Run {
                        g,
                        key,
                        cost,
                        events: self.events.len(),
                    });
                }
            }
            Err(end) => self.lane_end(li, end, admitted, &sent, now, took),
        }
    }

    /// Member `i` of group `g` (running on link `li`) was answered: the round
    /// trip (`size` bytes both ways, `cost` after its pass) is the estimator's sample, the
    /// link runs one task fewer, and the member leaves the lane. What every member's
    /// accepted response does, in a run ([`lane_run`](Self::lane_run)) or not.
    #[inline]
    fn member_answered(
        &mut self,
        li: usize,
        (g, i): (u32, usize),
        size: usize,
        cost: Duration,
        now: Instant,
    ) {
        self.estimator
            .record(now, self.net.is_mobile(), size, Some(cost));
        self.links[li].ended_running();
        self.leave(g, i, |_| ());
        #[cfg(test)]
        {
            self.lane.ended += 1;
        }
    }

    /// Takes the frames of the read on link `li` from `pos` on that the run may take (see
    /// [`Run`]), one after another: accepted responses of the next members of the run's
    /// group, with the link's usual busy state. Returns where the first frame it did not
    /// take begins (`pos` itself when it took none), having changed nothing for that one:
    /// the caller ends the run and takes that frame the regular way.
    ///
    /// Design: what holds for the first frame holds for the rest (nothing but this loop
    /// changes the engine meanwhile), so the link's state, the batch and the group are
    /// looked up once; each frame costs its decoding, its member's removal, the estimator's
    /// sample, the link's counts and its place in the batch.
    pub(super) fn lane_run(
        &mut self,
        li: usize,
        input: &Bytes,
        mut pos: usize,
        now: Instant,
    ) -> usize {
        let Some(run) = self.lane.run else {
            return pos;
        };
        if self.events.len() != run.events || !self.ranked_this_read || !self.zombies.is_empty() {
            return pos;
        }
        // The run began with its batch as the last event, and no event came since.
        let Some(Event::TasksEnded(batch)) = self.events.back_mut() else {
            return pos;
        };
        let link = &mut self.links[li];
        let LinkState::Connected(s) = &mut link.state else {
            return pos;
        };
        if s.window.is_some() {
            return pos;
        }
        let Some(group) = self.lane.groups.get_mut(run.g) else {
            return pos;
        };
        let codec = &*self.cfg.codec;
        let mobile = self.net.is_mobile();
        // The estimator's samples: meets that take its shortcut are counted and recorded at
        // once, in their place among the others.
        let mut quick = self.estimator.meets_take_shortcut(now, mobile, run.cost);
        let mut meets = 0;
        // The frames taken and the last one's task: the counts they move (the link's
        // running tasks and answers, the lane's and the group's members, the tasks
        // succeeded) are moved once, after the loop.
        //
        // Design: kept in locals, not written to the engine per frame (about five
        // read-modify-writes of memory a task); after a panic they still hold what the last
        // whole iteration left, as every variable does.
        let running = link.running;
        let mut taken = 0;
        let mut last = TaskId(0);
        // `after_lane_success`'s usual case: tasks still running after this one.
        //
        // Design: one panic guard for the run, not one per codec call (`plugins.rs`; a guard
        // per call cost the batch lane about 40 instructions a task). The codec is called
        // only at the top of an iteration, before anything changes, and the rest of an
        // iteration does not panic (its ranges are checked by `whole`), so after a panic
        // every variable holds what the last whole iteration left. The run then ends where
        // it is; the regular pass decodes the frame again under its own guard and answers
        // the panic (a dropped link, a fallback kind).
        let run_frames = || {
            while pos < input.len() && running - taken > 1 {
                let rest = &input[pos..];
                let Ok(Decoded::Frame(frame)) = codec.decode(rest) else {
                    break;
                };
                let FrameKind::Response(seq) = codec.classify(&frame.head) else {
                    break;
                };
                let id = TaskId(seq.0);
                let i = id.0.wrapping_sub(group.first) as usize;
                let Some(member) = group.members.get_mut(i).filter(|x| x.held) else {
                    break;
                };
                let Some((t, sent_len, _)) = member.sent else {
                    break;
                };
                let frame_len = frame.len;
                let whole = frame_len > 0
                    && frame_len <= rest.len()
                    && rest.get(frame.body.clone()).is_some()
                    && frame
                        .extension
                        .as_ref()
                        .is_none_or(|r| rest.get(r.clone()).is_some());
                if !whole {
                    break;
                }
                let shared = |r: &std::ops::Range<usize>| input.slice(pos + r.start..pos + r.end);
                batch.ends.push(BatchedEnd {
                    id,
                    tag: member.tag,
                    response: Response {
                        cmd_id: frame.head.cmd_id,
                        body: shared(&frame.body),
                        extension: frame.extension.as_ref().map(shared),
                    },
                    sent_bytes: sent_len,
                    received_bytes: frame_len,
                    first_packet_timeout: t.first_packet,
                });
                // What `member_answered` does.
                let size = sent_len + frame_len;
                if quick && size < timeouts::MEET_SIZE {
                    meets += 1;
                } else {
                    self.estimator.record_meets(std::mem::take(&mut meets));
                    self.estimator.record(now, mobile, size, Some(run.cost));
                    quick = self.estimator.meets_take_shortcut(now, mobile, run.cost);
                }
                // What `Group::release` does but the count.
                member.held = false;
                member.body = None;
                taken += 1;
                last = id;
                pos += frame_len;
            }
        };
        if let Err(p) = catch_unwind(AssertUnwindSafe(run_frames)) {
            // Reported here: a codec that panics only now would otherwise go unreported
            // when the regular pass decodes the frame again without a panic.
            let m = into_message(p);
            self.caught.record(
                PluginKind::Codec,
                &|| self.cfg.codec.name().to_owned(),
                "decode or classify",
                m,
            );
        }
        self.estimator.record_meets(meets);
        // The loop ran while more than one task ran, so `taken < running`; each member taken
        // was held in the group, so `taken <= group.live`.
        link.running = running - taken;
        // As a regular task's end does (`unlink_at`): tasks queued behind the link (held for
        // auth, or by a resend window) get a dispatch pass.
        if !link.queue.is_empty() {
            self.dirty[li] = true;
        }
        // (The run's first response set the link's answered probes to none; nothing in a
        // read adds to them.)
        s.responses = s
            .responses
            .saturating_add(u32::try_from(taken).unwrap_or(u32::MAX));
        group.live -= taken as u32;
        self.lane.live -= taken;
        #[cfg(test)]
        {
            self.lane.ended += taken as u64;
        }
        self.stats.tasks_succeeded += taken as u64;
        let emptied = group.live == 0;
        if taken > 0 {
            self.lane.tail = Some(Tail {
                key: run.key,
                id: last,
            });
        }
        if emptied {
            self.free_group(run.g);
        }
        pos
    }

    /// Emits the [`Event::TaskEnded`] of a member's end (`end`), sent in pass `sent`,
    /// admitted at `admitted`, answered `now`, `took` after admission.
    fn lane_end(
        &mut self,
        li: usize,
        end: BatchedEnd,
        admitted: Instant,
        sent: &Sent,
        now: Instant,
        took: Duration,
    ) {
        // Written into a spare box where it lies (no profile built aside and copied in).
        let mut profile = match self.spare_profiles.pop() {
            Some(spare) => spare,
            None => Box::new(TaskProfile::new(admitted)),
        };
        stamp_sent(
            &mut profile,
            self.links[li].name.clone(),
            sent,
            end.first_packet_timeout,
            end.sent_bytes,
        );
        // Every other field named, so a new one cannot be left holding an earlier task's
        // value.
        let TaskProfile {
            queued_at,
            ended_at,
            attempts: _,
            link: _,
            addr: _,
            connect_start: _,
            connect_end: _,
            send_start: _,
            send_end: _,
            first_byte,
            last_byte,
            decoded_at,
            sent_bytes: _,
            received_bytes,
            first_packet_timeout: _,
            zombie_rounds,
            weak_network,
        } = &mut *profile;
        *queued_at = admitted;
        *ended_at = now;
        *first_byte = Some(now);
        *last_byte = Some(now);
        *decoded_at = Some(now);
        *received_bytes = end.received_bytes;
        *zombie_rounds = 0;
        *weak_network = false;
        self.emit_end_after(end.id, end.tag, Ok(end.response), profile, now, took);
    }

    /// Adds `end` to the end the lane emitted last (task `last`), which shares its
    /// [`EndKey`], if that end is still the last event: into its [`EndBatch`], or turning it
    /// into one. Gives `end` back otherwise (the driver took the events meanwhile, or another
    /// event came after).
    fn join_tail(&mut self, last: TaskId, end: BatchedEnd) -> Result<(), BatchedEnd> {
        match self.events.back_mut() {
            Some(Event::TasksEnded(batch)) if batch.ends.last().is_some_and(|e| e.id == last) => {
                batch.ends.push(end);
                return Ok(());
            }
            // A failure cannot share a batch; `of_one` gives it back below.
            Some(Event::TaskEnded(e)) if e.id == last => {}
            _ => return Err(end),
        }
        let Some(Event::TaskEnded(last_end)) = self.events.pop_back() else {
            // Checked just above.
            return Err(end);
        };
        // Room for the members still held, which may end in this input too.
        let room = self.lane.len().min(MAX_ENDS_RESERVED) + 2;
        match EndBatch::of_one(last_end, room) {
            Ok(mut batch) => {
                batch.ends.push(end);
                self.events.push_back(Event::TasksEnded(batch));
                Ok(())
            }
            Err(last_end) => {
                // A failure: put back as it was.
                self.events.push_back(Event::TaskEnded(last_end));
                Err(end)
            }
        }
    }

    /// Member `i` of group `g` leaves the lane; `take` gets what is needed of it first (its
    /// request body is dropped then). A group whose last member left is freed.
    fn leave<R>(&mut self, g: u32, i: usize, take: impl FnOnce(&mut Member) -> R) -> Option<R> {
        let group = self.lane.groups.get_mut(g)?;
        let r = take(group.members.get_mut(i).filter(|x| x.held)?);
        group.release(i);
        self.lane.live -= 1;
        if group.live == 0 {
            self.free_group(g);
        }
        Some(r)
    }

    /// Frees group `g`, whose members all left.
    fn free_group(&mut self, g: u32) {
        let Some(mut group) = self.lane.groups.remove(g) else {
            return;
        };
        if let Ok(k) = self.lane.by_first.binary_search(&(group.first, g)) {
            self.lane.by_first.remove(k);
        }
        if self.lane.spare_lists.len() < SPARE_LISTS {
            group.members.clear();
            self.lane
                .spare_lists
                .push(std::mem::take(&mut group.members));
        }
        if self.lane.waiting.is_some_and(|(_, w)| w == g) {
            self.lane.waiting = None;
        }
        if self.lane.is_empty() {
            self.lane.wake = None;
        }
    }

    /// Demotes every member: the lane is empty afterwards.
    pub(super) fn demote_all(&mut self) {
        if self.lane.is_empty() {
            return;
        }
        let groups: Vec<u32> = self.lane.groups.indexes().collect();
        for g in groups {
            self.demote_group(g);
        }
    }

    /// Demotes every member of group `g`, in admission order.
    fn demote_group(&mut self, g: u32) {
        let mut i = 0;
        // The group is freed once its last member is demoted.
        while let Some(group) = self.lane.groups.get(g) {
            let Some(member) = group.members.get(i) else {
                return;
            };
            if member.held {
                self.demote_member(g, i);
            }
            i += 1;
        }
    }

    /// Turns member `i` of group `g` into the regular task it stands for: queued (in its
    /// link's queue) or running, with the timers, profile and counts the regular path would
    /// have given it. (A member the dispatch pass refuses is demoted and ended at once:
    /// whether its limits count as checked does not matter.)
    pub(super) fn demote_member(&mut self, g: u32, i: usize) {
        let Some(group) = self.lane.groups.get(g) else {
            return;
        };
        if !group.members.get(i).is_some_and(|x| x.held) {
            return;
        }
        let id = TaskId(group.first.wrapping_add(i as u32));
        let mut spec = group.spec.clone_params();
        let (li, admitted, admitted_ns, total_ns, sent) = (
            group.link,
            group.admitted,
            group.admitted_ns,
            group.total_ns,
            group.sent,
        );
        let retries = spec.retry_count.unwrap_or(DEFAULT_RETRIES);
        let taken = self.leave(g, i, |x| {
            spec.cmd_id = x.cmd_id;
            spec.body = x.body.take().unwrap_or_default();
            (x.tag, x.order, x.sent)
        });
        let Some((tag, order, member_sent)) = taken else {
            return;
        };
        let mut profile = TaskProfile::new(admitted);
        let (state, attempts) = match (member_sent, sent) {
            (Some((t, sent_len, frame_start)), Some(sent)) => {
                stamp_sent(
                    &mut profile,
                    self.links[li].name.clone(),
                    &sent,
                    t.first_packet,
                    sent_len,
                );
                let attempt = Attempt {
                    conn: sent.conn,
                    sent_at: sent.at,
                    sent_ns: sent.ns,
                    timeouts: t,
                    last_progress: None,
                    sent_len,
                    addr_index: sent.addr_index,
                    frame_start,
                    // The lane holds no member while the driver holds bytes of the
                    // connection (`takes_group`); a backlog that begins demotes them first.
                    unwritten: false,
                };
                (TaskState::Running(attempt), 1)
            }
            _ => (TaskState::Queued, 0),
        };
        let priority = spec.priority;
        let profile = Some(self.profile_box(profile));
        let running = matches!(state, TaskState::Running(_));
        let first_packet = match &state {
            TaskState::Running(a) => Some(self.timers.ns_plus(a.sent_ns, a.timeouts.first_packet)),
            TaskState::Queued => None,
        };
        let slot = self.tasks.insert_with(id, |slot| Task {
            id,
            slot,
            tag,
            link: li,
            order,
            retries_left: retries,
            attempts,
            budget_start: admitted,
            queued_ns: admitted_ns,
            state,
            limits_checked: running,
            auth_cleared: false,
            profile,
            spec,
        });
        self.timers
            .set_task_ns(slot, TimerKind::TaskTotal(id), total_ns);
        match first_packet {
            Some(ns) => self
                .timers
                .set_task_ns(slot, TimerKind::FirstPacket(id), ns),
            None => {
                self.links[li].queue.insert((priority, order, id, slot));
                self.dirty[li] = true;
            }
        }
    }
}
