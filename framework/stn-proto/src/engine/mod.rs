//! [`Engine`]: the long-link task engine state machine.

mod batch;
pub use batch::LikeTask;
mod chain;
mod dial;
mod lane;
mod limits;
mod monitor;
mod plugins;
mod queue;
pub(crate) mod ranking;
mod short;
mod tasks;
mod timeouts;
mod zombies;

pub use self::batch::MAX_SPARE_PROFILES;
pub use self::chain::is_dialable;
pub use self::ranking::{AddrRecord, NetworkRecords, RankingState, RankingStateError};

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use phobos_plugin_api::{
    AddrSource, AuthError, CmdId, Decoded, EncodeError, FrameHead, FrameKind, HeartbeatContext,
    IdentifyRequest, IdentifyVerdict, IpPort, LinkPurpose, NetKind, PacketCodec, RawFrame,
    ResolveError, ResolvedAddr, Seq, TaskId,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::config::{
    Config, ConfigError, ResponseVerdict, SourceSpec, MAX_DURATION_SETTING, MIN_HEARTBEAT_INTERVAL,
};
use crate::error::{
    AuthFailure, CodecFailure, DialFailure, LimitKind, LinkError, LocalError, ParamError,
    SocketFailure, TaskError, TimeoutLevel,
};
use crate::io::{
    Action, AttemptReport, CloseCause, ConnId, ConnectReport, DialError, Event, LinkName,
    LinkStatus, Stats, TransportFacts,
};
use crate::task::{EncodeVia, Response, TaskEnd, TaskOutcome, TaskProfile, TaskSpec, MAX_PRIORITY};
use crate::timer::{TimerKind, TimerTable};
use rustc_hash::FxHashMap;

use self::chain::ChainWalk;
use self::dial::{stagger, DialRules, DialStep, Dialer};
use self::limits::{FlowLimit, FrequencyLimit};
use self::monitor::{Activity, Monitor, PacingEnv, Trigger};
use self::plugins::{PanicLog, Policy};
use self::queue::TaskQueue;
use self::ranking::{Candidate, PlanRules, Ranking};
use self::tasks::TaskTable;
use self::timeouts::{AttemptTimeouts, Estimator, NetQuality};
use self::zombies::Zombies;

pub use self::short::{
    ExchangeError, HttpRequest, HttpResponse, ShortLinkConfig, SHORT_LINK, SHORT_REQUEST_INVALID,
};

/// The sans-IO long-link task engine: task queue, scheduling, retries, multi-level timeouts,
/// long-link lifecycle (connect race, identify, heartbeat, reconnect pacing), limits and
/// zombie tasks.
///
/// # Calling protocol
///
/// One owner (the driver's task) calls it; nothing inside blocks, reads a clock or does IO.
///
/// 1. Feed one input: a command from the app ([`start_task`](Self::start_task),
///    [`cancel_task`](Self::cancel_task), [`set_foreground`](Self::set_foreground),
///    [`set_network`](Self::set_network), …), an IO result (`handle_*`), or
///    [`handle_timeout`](Self::handle_timeout) when the instant returned by
///    [`poll_timeout`](Self::poll_timeout) has come.
/// 2. Drain [`poll_action`](Self::poll_action) until `None` and carry the actions out in order.
/// 3. Drain [`poll_event`](Self::poll_event) until `None` and hand them to the app.
/// 4. Re-arm the driver's single timer at [`poll_timeout`](Self::poll_timeout).
///
/// Every input takes `now`, which must not go backwards. Inputs naming a [`ConnId`] the core
/// no longer knows are ignored (an unknown *connected* attempt gets an [`Action::Abort`]).
pub struct Engine {
    cfg: Config,
    rng: ChaCha8Rng,
    /// Queued and running tasks, unboxed in a slab ([`TaskTable`]).
    tasks: TaskTable,
    links: Vec<Link>,
    link_by_name: FxHashMap<LinkName, usize>,
    conns: FxHashMap<ConnId, usize>,
    timers: TimerTable,
    actions: VecDeque<Action>,
    events: VecDeque<Event>,
    /// Plugin panics caught since the last drain of `events` (`plugins.rs`).
    caught: PanicLog,
    next_task: u32,
    /// Whether task ids have wrapped around: until then a new id cannot be in use.
    ids_wrapped: bool,
    next_conn: u64,
    next_order: u64,
    activity: Activity,
    net: NetKind,
    net_label: String,
    has_account: bool,
    estimator: Estimator,
    freq: FrequencyLimit,
    flow: FlowLimit,
    zombies: Zombies,
    last_start: Option<Instant>,
    /// Profile boxes given back by the driver ([`Engine::recycle_profile`]), reused for new
    /// tasks. The boxes themselves are what is kept (each end carries one).
    #[allow(clippy::vec_box)]
    spare_profiles: Vec<Box<TaskProfile>>,
    keeper: Keeper,
    auth_hosts: Vec<AuthHost>,
    dirty: Vec<bool>,
    /// The dispatch pass's ready tasks: (id, slot).
    scratch: Vec<(TaskId, u32)>,
    stats: Stats,
    /// Last time the weak-network detector saw a sign of a weak network (§15.2).
    weak_mark: Option<Instant>,
    /// Per-address history and bans (§11).
    ranking: Ranking,
    /// Smoothed connect time on the current network (EWMA, gain 1/8), for the stagger.
    srtt: Option<Duration>,
    /// Short-link tasks and their attempts (`short.rs`).
    short: short::ShortLink,
    /// Set by [`queue_task`](Self::queue_task): admission leaves the dispatch pass to
    /// [`send_queued`](Self::send_queued).
    defer_dispatch: bool,
    /// The average frame of the last dispatch pass, in bytes (see `batch.rs`).
    frame_len_hint: usize,
    /// The longest long-link body admitted ([`max_body_len`]).
    max_body_len: usize,
    /// The shared default link name ([`LinkName::default`]) and its link, if configured.
    default_link: Option<(LinkName, usize)>,
    /// Whether [`Event::TaskSent`] is emitted ([`set_task_sent_events`](Self::set_task_sent_events)).
    task_sent_events: bool,
    /// Whether tasks ending together may come as one [`Event::TasksEnded`]
    /// ([`set_end_batches`](Self::set_end_batches)).
    end_batches: bool,
    /// The dispatch pass's per-attempt timeouts, remembered from task to task.
    attempt_memo: timeouts::AttemptMemo,
    /// The long-link retry room, if on ([`Recovery::long_retry_room`](crate::Recovery)).
    retry_room: Option<RetryRoom>,
    /// A response of the read being decoded already counted as a success of the link's
    /// address (`on_response`).
    ///
    /// Design: every frame of one read has the same `now` and address, so the ranking's
    /// rate limit (one success per address per 10 s) would turn the later calls away: they
    /// are not made.
    ranked_this_read: bool,
    /// The batch lane's groups and members (`lane.rs`).
    lane: lane::Lane,
}

/// One task the engine holds (queued or running).
#[derive(Debug)]
struct Task {
    id: TaskId,
    /// Where [`Engine::tasks`] stores it (set on insertion); its per-task timers are keyed
    /// by it.
    slot: u32,
    /// The starter's tag, given back on the end ([`TaskEnd::tag`]).
    tag: u64,
    spec: TaskSpec,
    link: usize,
    order: u64,
    retries_left: u32,
    attempts: u32,
    /// When the current budget started (admission, or a zombie restart).
    budget_start: Instant,
    /// When the task was admitted, on the timer table's nanosecond scale
    /// ([`TimerTable::now_ns`]).
    queued_ns: u64,
    state: TaskState,
    limits_checked: bool,
    /// The auth plugin answered `ensure_authed` for this attempt (cleared for the next one).
    auth_cleared: bool,
    /// Boxed from admission, and taken (leaving `None`) when the task ends.
    ///
    /// Design: the end carries the profile boxed; boxing it at admission keeps the stored
    /// task small, and taking it out of the `Option` lets the task be dropped where it is
    /// stored instead of being moved out of the slab (a few hundred bytes copied several
    /// times over).
    profile: Option<Box<TaskProfile>>,
}

impl Link {
    /// One of the link's running tasks stopped running (ended, or went back to the queue).
    ///
    /// Every decrement pairs with the increment of `send_task`; a miscount would be a bug,
    /// caught by the debug assertion in tests, and must not wrap in a release build (the
    /// resend window would then let nothing out).
    fn ended_running(&mut self) {
        debug_assert!(
            self.running > 0,
            "running count of {} underflows",
            self.name
        );
        self.running = self.running.saturating_sub(1);
    }
}

impl Task {
    /// The profile: always there while the task is stored.
    fn profile_mut(&mut self) -> Option<&mut TaskProfile> {
        self.profile.as_deref_mut()
    }

    /// Takes the profile for the task's end (a fresh one should it be gone).
    fn take_profile(&mut self, now: Instant) -> Box<TaskProfile> {
        self.profile
            .take()
            .unwrap_or_else(|| Box::new(TaskProfile::new(now)))
    }
}

#[derive(Debug)]
enum TaskState {
    /// Waiting in its link's queue.
    Queued,
    /// Its request is on the link.
    Running(Attempt),
}

#[derive(Clone, Copy, Debug)]
struct Attempt {
    conn: ConnId,
    sent_at: Instant,
    /// `sent_at` on the timer table's nanosecond scale ([`TimerTable::now_ns`]).
    sent_ns: u64,
    timeouts: AttemptTimeouts,
    last_progress: Option<Instant>,
    sent_len: usize,
    /// The connection's address position in its connect cycle (0 = first choice).
    addr_index: usize,
    /// Where the attempt's frame starts in the connection's outgoing bytes (counted from the
    /// connection's first byte handed to the driver).
    frame_start: u64,
    /// The driver's last report said it still held the frame's first byte
    /// ([`Engine::handle_unsent`]): the attempt's clocks have not started, and `sent_at` is
    /// the dispatch instant until they do.
    unwritten: bool,
}

/// A failed task kept to be retried later within its total timeout (§14).
///
/// Design: boxed, so the zombie map moves a pointer, not the ~600-byte task.
#[derive(Debug)]
struct Zombie {
    task: ZombieTask,
    saved_at: Instant,
    remaining: Duration,
}

/// The task a [`Zombie`] keeps: a long-link task, or a short-link one (§14: every task
/// ended through Mars's `__CallBack`).
#[derive(Debug)]
enum ZombieTask {
    Long(Box<Task>),
    Short(Box<short::ShortTask>),
}

impl ZombieTask {
    fn tag(&self) -> u64 {
        match self {
            ZombieTask::Long(t) => t.tag,
            ZombieTask::Short(t) => t.tag,
        }
    }

    fn take_profile(&mut self, now: Instant) -> Box<TaskProfile> {
        match self {
            ZombieTask::Long(t) => t.take_profile(now),
            ZombieTask::Short(t) => {
                Box::new(std::mem::replace(&mut t.profile, TaskProfile::new(now)))
            }
        }
    }

    /// The long link the task waits for, if it is a long-link task.
    fn link(&self) -> Option<usize> {
        match self {
            ZombieTask::Long(t) => Some(t.link),
            ZombieTask::Short(_) => None,
        }
    }
}

struct Link {
    name: LinkName,
    state: LinkState,
    /// Queued tasks by (priority, admission order).
    queue: TaskQueue,
    /// How many of its tasks are running (their request is on the link).
    ///
    /// Design: a count, not a set: it changes twice per task, while the walks over the
    /// running tasks (the link going down, a stall probe) are rare and scan the task slab.
    running: usize,
    retry_pause_until: Option<Instant>,
    monitor: Monitor,
    /// The server rejected the identify frame: no reconnect until the app asks.
    refused: bool,
    /// A connection of this link broke and no later one has proven itself yet: new
    /// connections start with the resend window ([`Recovery`](crate::Recovery)).
    suspect: bool,
    /// Reconnects at once after damaged bytes broke a connection that delivered no response
    /// ([`Recovery::damaged_reconnects`](crate::Recovery::damaged_reconnects)), since the
    /// last connection that did.
    damaged_reconnects: u32,
}

enum LinkState {
    Idle,
    Resolving {
        walk: ChainWalk,
    },
    Connecting {
        dialer: Dialer,
        cycle_start: Instant,
    },
    Connected(Box<Session>),
}

/// One established connection.
struct Session {
    conn: ConnId,
    addr: IpPort,
    /// The address's position in the connect cycle's list (0 = the first choice).
    addr_index: usize,
    connect_start: Instant,
    connected_at: Instant,
    rx: BytesMut,
    last_recv: Option<Instant>,
    heartbeat: Policy,
    heartbeat_interval: Option<Duration>,
    /// The policy turned periodic heartbeats off; the heartbeat timer is armed only to ask it
    /// again ([`HEARTBEAT_RECHECK`]).
    heartbeat_off: bool,
    heartbeat_sent: Option<Instant>,
    identify: Identify,
    /// At most this many tasks in flight (the resend window after a drop); `None`: no limit.
    window: Option<usize>,
    /// Task responses this connection delivered.
    responses: u32,
    /// The link's smoothed round trip: the connect time until the first heartbeat reply,
    /// which replaces it; then heartbeat replies (EWMA 1/8).
    rtt: Duration,
    /// Whether `rtt` holds a heartbeat's round trip yet (not just the connect time).
    rtt_measured: bool,
    /// A stall probe waits for any byte (the heartbeat in flight has the probe's deadline);
    /// the timeout level the owed task reports if none comes.
    probing: Option<TimeoutLevel>,
    /// The heartbeat in flight was sent by the stall probe, not by the policy's schedule.
    probe_heartbeat: bool,
    /// The heartbeat reply is overdue and the transport's facts were asked for
    /// ([`Action::InspectTransport`]); not answered yet.
    inspecting: bool,
    /// Probes answered since a task last made progress (each doubles the next quiet time).
    probes_answered: u32,
    /// When the last probe's reply arrived: it proves the connection alive but not that the
    /// server answers tasks, so it does not spare a link in the shared-fate judgment.
    last_probe_reply: Option<Instant>,
    /// Of the tasks this connection answered, the one sent last: (when it was sent, on the
    /// timer table's nanosecond scale; when its response came). The shared-fate judgment
    /// spares the link for a timed-out task only if a task sent after it was answered since
    /// (see `on_attempt_timeout`).
    newest_answered: Option<(u64, Instant)>,
    /// Bytes handed to the driver on this connection ([`Action::Send`]), in all.
    emitted: u64,
    /// Of those, the bytes the driver last said it still held ([`Engine::handle_unsent`]).
    unsent: u64,
    /// When the driver last reported that the socket took bytes it had held: the peer is
    /// acknowledging, so the path is alive.
    write_progress: Option<Instant>,
    /// Running attempts whose frame's first byte the driver still held at its last report,
    /// in the order of the stream: (frame start, task, slot). An entry whose task ended or
    /// moved on meanwhile is skipped when it comes up.
    unwritten: VecDeque<(u64, TaskId, u32)>,
}

/// Bytes moving on link `li`'s connection `s` (received, or taken by the socket after the
/// driver held them) show the path alive: a transport inspection under way is moot, and a
/// heartbeat reply that is due may be queued behind those bytes, so its deadline moves to
/// `reply` from `now`. What [`Engine::handle_data`] and [`Engine::handle_unsent`] share.
fn path_moving(s: &mut Session, timers: &mut TimerTable, reply: Duration, li: usize, now: Instant) {
    s.inspecting = false;
    if s.heartbeat_sent.is_some() {
        timers.set(TimerKind::HeartbeatReply(li), now + reply);
    }
}

enum Identify {
    /// Ask the auth plugin at the next heartbeat slot.
    Pending,
    /// Sent; waiting for the reply.
    Sent { hash: Vec<u8> },
    /// Identified, or never to be identified.
    Finished,
}

#[derive(Debug)]
struct Keeper {
    keeping: bool,
    last_touch: Option<Instant>,
}

#[derive(Debug)]
struct AuthHost {
    host: String,
    state: AuthState,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AuthState {
    Idle,
    InFlight,
    RetryWait,
}

impl Engine {
    /// Builds an engine at `now`. The app starts in background and active (Mars's start
    /// state); nothing connects until a task needs a link (a task that may use the long
    /// link, started in the foreground, asks for it even when it goes short), the network
    /// or the app's foreground state changes (keep-alive links then connect) or
    /// [`connect_link`](Self::connect_link) is called. A driver that wants the main link up
    /// from the start calls `connect_link` once.
    ///
    /// # Errors
    ///
    /// The config's [`ConfigError`], if any.
    pub fn new(config: Config, now: Instant) -> Result<Self, ConfigError> {
        config.validate()?;
        let links: Vec<Link> = config
            .links
            .iter()
            .map(|l| Link {
                name: l.name.clone(),
                state: LinkState::Idle,
                queue: TaskQueue::default(),
                running: 0,
                retry_pause_until: None,
                monitor: Monitor::default(),
                refused: false,
                suspect: false,
                damaged_reconnects: 0,
            })
            .collect();
        let link_by_name: FxHashMap<LinkName, usize> = links
            .iter()
            .enumerate()
            .map(|(i, l)| (l.name.clone(), i))
            .collect();
        let default_link = LinkName::default();
        let default_link = link_by_name
            .get(&default_link)
            .map(|&li| (default_link, li));
        let mut timers = TimerTable::new(now);
        timers.set(TimerKind::Inactivity, now + config.timing.inactive_after);
        // The main link starts down: timing sync runs until it connects (§15.4).
        timers.set(TimerKind::TimingSync, now + config.timing.timing_sync.0);
        let n = links.len();
        let retry_room = RetryRoom::of(&config);
        let caught = PanicLog::default();
        let max_body_len = max_body_len(config.codec.as_ref(), &caught);
        Ok(Engine {
            rng: ChaCha8Rng::seed_from_u64(config.seed),
            has_account: config.has_account,
            cfg: config,
            tasks: TaskTable::default(),
            links,
            link_by_name,
            conns: FxHashMap::default(),
            timers,
            actions: VecDeque::new(),
            events: VecDeque::new(),
            caught,
            next_task: 1,
            ids_wrapped: false,
            next_conn: 1,
            next_order: 0,
            activity: Activity::new(now),
            net: NetKind::Wifi,
            net_label: "default".to_owned(),
            estimator: Estimator::new(),
            freq: FrequencyLimit::new(now),
            flow: FlowLimit::new(now),
            zombies: Zombies::default(),
            last_start: None,
            spare_profiles: Vec::new(),
            keeper: Keeper {
                keeping: false,
                last_touch: None,
            },
            auth_hosts: Vec::new(),
            dirty: vec![false; n],
            scratch: Vec::new(),
            stats: Stats::default(),
            weak_mark: None,
            short: short::ShortLink::default(),
            ranking: Ranking::new("default"),
            srtt: None,
            defer_dispatch: false,
            frame_len_hint: 0,
            task_sent_events: true,
            end_batches: false,
            attempt_memo: timeouts::AttemptMemo::default(),
            retry_room,
            ranked_this_read: false,
            lane: lane::Lane::new(),
            default_link,
            max_body_len,
        })
    }

    // ----- commands from the app --------------------------------------------------------

    /// Admits a task and returns its id. Exactly one [`Event::TaskEnded`] follows for it,
    /// including when the spec is refused at once (a [`TaskError::Param`] or
    /// [`TaskError::Local`] end is then queued before this returns).
    pub fn start_task(&mut self, now: Instant, spec: TaskSpec) -> TaskId {
        self.start_task_tagged(now, spec, 0)
    }

    /// [`start_task`](Self::start_task) with a tag of the caller's choosing, given back on
    /// the task's end ([`TaskEnd::tag`]).
    pub fn start_task_tagged(&mut self, now: Instant, spec: TaskSpec, tag: u64) -> TaskId {
        match self.begin_task(now) {
            Ok(id) => self.admit_with_id(now, id, spec, tag),
            Err(id) => self.end_unsequenced(now, id, tag),
        }
    }

    /// Ends task `id`, which got no sequence number ([`alloc_task_id`](Self::alloc_task_id)),
    /// before anything of it was sent.
    #[cold]
    fn end_unsequenced(&mut self, now: Instant, id: TaskId, tag: u64) -> TaskId {
        let error = TaskError::Codec(CodecFailure::NoSequence);
        self.emit_end(id, tag, Err(error), TaskProfile::new(now), now);
        id
    }

    /// [`start_task_tagged`](Self::start_task_tagged) for task `id`, given by
    /// [`begin_task`](Self::begin_task).
    fn admit_with_id(&mut self, now: Instant, id: TaskId, mut spec: TaskSpec, tag: u64) -> TaskId {
        if self.lane.enabled && spec.extension.is_empty() {
            if let Some(group) = self.fits_waiting(now, &spec, spec.cmd_id, spec.body.len(), id) {
                self.join(group, id, tag, lane::Request::take(&mut spec));
                return self.admitted(now, id);
            }
        }
        let profile = TaskProfile::new(now);
        let link = match self.admit(&spec) {
            Ok(SHORT_TASK) => {
                self.ask_for_long_link(now, &spec);
                self.short_start(now, id, tag, spec, profile);
                return id;
            }
            Ok(link) => link,
            Err(error) => {
                self.emit_end(id, tag, Err(error), profile, now);
                return id;
            }
        };
        if self.lane.enabled && self.opens_group(link, id, &spec) {
            self.open_group(now, link, id, tag, spec);
            return self.admitted(now, id);
        }
        let retries = spec.retry_count.unwrap_or(DEFAULT_RETRIES);
        let order = self.next_order;
        self.next_order += 1;
        let profile = Some(self.profile_box(profile));
        let queued_ns = self.timers.now_ns(now);
        // Built where it is stored and queued in place: the task is not moved again.
        let slot = self.tasks.insert_with(id, |slot| Task {
            id,
            slot,
            tag,
            link,
            order,
            retries_left: retries,
            attempts: 0,
            budget_start: now,
            queued_ns,
            state: TaskState::Queued,
            limits_checked: false,
            auth_cleared: false,
            profile,
            spec,
        });
        self.enqueue(slot, now);
        self.admitted(now, id)
    }

    /// A new task's id and counts, before its admission; `Err` with the id of a task that
    /// must end at once ([`end_unsequenced`](Self::end_unsequenced)).
    #[inline]
    fn begin_task(&mut self, now: Instant) -> Result<TaskId, TaskId> {
        let id = self.alloc_task_id();
        self.tasks_begun(now, 1);
        id
    }

    /// The counts of `n` tasks begun `now` (their ids given): what
    /// [`begin_task`](Self::begin_task) does after the id, for all of them at once.
    #[inline]
    fn tasks_begun(&mut self, now: Instant, n: usize) {
        self.stats.tasks_started += n as u64;
        self.last_start = Some(now);
        if !self.zombies.is_empty() {
            self.schedule_zombie_restart();
        }
    }

    /// Task `id` was admitted: dispatch now unless the caller batches
    /// ([`queue_task`](Self::queue_task)).
    fn admitted(&mut self, now: Instant, id: TaskId) -> TaskId {
        if !self.defer_dispatch {
            self.pump(now);
        }
        id
    }

    /// Cancels a task, returning whether it was known.
    ///
    /// Design: unlike Mars's silent `StopTask`, a canceled task ends with
    /// [`TaskError::Canceled`], so every started task gets exactly one end. A request already
    /// handed to the link cannot be withdrawn; its response is dropped when it arrives.
    pub fn cancel_task(&mut self, now: Instant, id: TaskId) -> bool {
        self.demote_all();
        if self.short_cancel(now, id) {
            return true;
        }
        if let Some(mut task) = self.remove_task(id) {
            let profile = task.take_profile(now);
            self.emit_end(id, task.tag, Err(TaskError::Canceled), profile, now);
            self.pump(now);
            return true;
        }
        if let Some(mut z) = self.zombies.remove(&id) {
            self.timers.cancel(TimerKind::ZombieExpiry(id));
            self.schedule_zombie_restart();
            let profile = z.task.take_profile(now);
            self.emit_end(id, z.task.tag(), Err(TaskError::Canceled), profile, now);
            return true;
        }
        false
    }

    /// The app went to the foreground (`true`) or background (Mars's `OnForeground`).
    pub fn set_foreground(&mut self, now: Instant, foreground: bool) {
        self.demote_all();
        if self.activity.foreground == foreground {
            return;
        }
        self.activity.foreground = foreground;
        self.activity.last_change = now;
        if foreground {
            self.timers.cancel(TimerKind::Inactivity);
            if !self.activity.active {
                self.activity.active = true;
                self.flow.set_active(now, true);
            }
        } else {
            self.weak_mark = None;
            self.timers
                .set(TimerKind::Inactivity, now + self.cfg.timing.inactive_after);
        }
        self.rearm_timing_sync(now);
        self.reevaluate_keep_alive(now);
        self.mark_all_dirty();
        self.pump(now);
    }

    /// The network changed (Mars's `OnNetworkChange`): every link is dropped with
    /// [`LinkError::NetworkChange`], running tasks fail their attempt with
    /// [`LocalError::Interrupted`] (retried without pause if they have retries left), links
    /// that are keep-alive or have tasks reconnect at once, and zombies restart.
    ///
    /// Nothing happens when kind and label are unchanged.
    pub fn set_network(&mut self, now: Instant, kind: NetKind, label: &str) {
        self.demote_all();
        if kind == self.net && label == self.net_label {
            return;
        }
        self.net = kind;
        self.net_label = label.to_owned();
        self.estimator.reset();
        // §11.6: a new network lifts every ban and forgets the connect-time estimate.
        self.ranking.set_network(now, label);
        self.srtt = None;
        for li in 0..self.links.len() {
            self.link_down(li, now, LinkError::NetworkChange, false);
        }
        self.short_interrupt(now, LocalError::Interrupted.into());
        if kind.is_available() {
            for li in 0..self.links.len() {
                let l = &self.links[li];
                if self.cfg.links[li].keep_alive || !l.queue.is_empty() {
                    self.want_connect(li, now, Trigger::NetworkChange);
                }
            }
        }
        self.restart_all_zombies(now);
        self.rearm_timing_sync(now);
        self.pump(now);
    }

    /// Whether the user is logged in (changes the automatic reconnect intervals, §7.9).
    pub fn set_account(&mut self, now: Instant, has_account: bool) {
        self.demote_all();
        self.has_account = has_account;
        self.pump(now);
    }

    /// Connects the link now if it is down, ignoring pacing (Mars's
    /// `MakesureLonglinkConnected`). Also lifts the block left by a rejected identify.
    /// Returns `false` for an unknown link.
    pub fn connect_link(&mut self, now: Instant, link: &str) -> bool {
        self.demote_all();
        let Some(&li) = self.link_by_name.get(link) else {
            return false;
        };
        self.links[li].refused = false;
        if matches!(self.links[li].state, LinkState::Idle) {
            self.start_cycle(li, now, None);
        }
        self.pump(now);
        true
    }

    /// Mars's `RedoTasks`: lift every address and server ban (§11.6; the app calls it after
    /// changing or repairing its servers), drop every link ([`LinkError::Reset`]), fail
    /// running attempts with [`LocalError::Interrupted`] (retried if retries are left),
    /// reconnect links that are keep-alive or have tasks at once (lifting a rejected
    /// identify's block, as [`connect_link`](Self::connect_link) does; the reconnect pacing
    /// is left as it is), and restart zombies.
    pub fn redo_tasks(&mut self, now: Instant) {
        self.demote_all();
        self.ranking.clear_bans();
        self.short_interrupt(now, LocalError::Interrupted.into());
        for li in 0..self.links.len() {
            self.link_down(li, now, LinkError::Reset, false);
            // An explicit app action, as `connect_link`: it lifts a rejected identify's block.
            self.links[li].refused = false;
            if self.cfg.links[li].keep_alive || !self.links[li].queue.is_empty() {
                self.start_cycle(li, now, None);
            }
        }
        self.restart_all_zombies(now);
        self.pump(now);
    }

    /// Sends one heartbeat on the link now if it is connected and no heartbeat is pending
    /// (Mars's `TrigNoop`; works even when periodic heartbeats are disabled). Returns whether
    /// one was sent.
    pub fn trigger_heartbeat(&mut self, now: Instant, link: &str) -> bool {
        self.demote_all();
        let Some(&li) = self.link_by_name.get(link) else {
            return false;
        };
        let sent_before = self.stats.heartbeats_sent;
        self.heartbeat_slot(li, now, None);
        self.pump(now);
        self.stats.heartbeats_sent > sent_before
    }

    /// Mars's `Reset`: every task (queued, running or zombie) ends with
    /// [`LocalError::Reset`], every link is closed with [`LinkError::Reset`] and nothing
    /// reconnects until a task or [`connect_link`](Self::connect_link) asks. The engine stays
    /// usable, and as new: each link's reconnect pacing, rejected-identify block and resend
    /// window start over, as do the frequency and flow limits' records (Mars rebuilds its
    /// core, which owns them). The address ranking is kept (see
    /// [`redo_tasks`](Self::redo_tasks) to lift bans). A driver shutting down calls this and
    /// delivers the resulting ends.
    ///
    /// Design: Mars drops zombies silently here; they end with `Reset` too, so every task
    /// still gets exactly one end.
    pub fn reset(&mut self, now: Instant) {
        self.demote_all();
        self.short_end_all(now, LocalError::Reset.into());
        let mut ids: Vec<TaskId> = self.tasks.keys().copied().collect();
        ids.sort();
        for id in ids {
            if let Some(mut task) = self.remove_task(id) {
                let profile = task.take_profile(now);
                self.emit_end(id, task.tag, Err(LocalError::Reset.into()), profile, now);
            }
        }
        for (id, mut z) in self.zombies.take_all() {
            self.timers.cancel(TimerKind::ZombieExpiry(id));
            let profile = z.task.take_profile(now);
            self.emit_end(
                id,
                z.task.tag(),
                Err(LocalError::Reset.into()),
                profile,
                now,
            );
        }
        self.timers.cancel(TimerKind::ZombieRestart);
        for li in 0..self.links.len() {
            self.link_down(li, now, LinkError::Reset, false);
            for kind in [
                TimerKind::Reconnect(li),
                TimerKind::ReconnectWake(li),
                TimerKind::RetryPause(li),
            ] {
                self.timers.cancel(kind);
            }
            // Mars's Reset rebuilds its core: the link starts as new, without the block of
            // a rejected identify, the pacing of earlier attempts or the doubt of earlier
            // breaks.
            let link = &mut self.links[li];
            link.retry_pause_until = None;
            link.refused = false;
            link.monitor = Monitor::default();
            link.suspect = false;
            link.damaged_reconnects = 0;
        }
        // The limits' records start over too (Mars's anti-avalanche belongs to the rebuilt
        // core).
        self.freq = FrequencyLimit::new(now);
        self.flow.restart(now);
        self.keeper.keeping = false;
        self.timers.cancel(TimerKind::SignalKeep);
        self.pump(now);
    }

    /// Starts (or extends) the signalling keeper: a keep frame on the main link now, then one
    /// per period of quiet, until the keep time has passed since the last call (§7.11, TCP
    /// mode).
    pub fn keep_signalling(&mut self, now: Instant) {
        self.demote_all();
        self.keeper.last_touch = Some(now);
        if !self.keeper.keeping {
            self.keeper.keeping = true;
            self.send_keep_frame(now);
        }
        self.pump(now);
    }

    /// Stops the signalling keeper.
    pub fn stop_signalling(&mut self, now: Instant) {
        self.demote_all();
        self.keeper.keeping = false;
        self.timers.cancel(TimerKind::SignalKeep);
        self.pump(now);
    }

    // ----- IO results ---------------------------------------------------------------------

    /// Source `source` answered about `host` for `link` (answer to [`Action::Resolve`]).
    /// The core moves on along the chain (an error or an empty list: the next source); when
    /// the chain is done it plans and races the addresses, or fails the connect cycle with
    /// [`LinkError::NoAddress`] when there are none. Late answers (the call already timed
    /// out) are ignored.
    pub fn handle_resolved(
        &mut self,
        now: Instant,
        link: &str,
        host: &str,
        source: usize,
        result: Result<Vec<ResolvedAddr>, ResolveError>,
    ) {
        self.demote_all();
        if self.short_resolved(now, link, host, source, result.clone()) {
            return;
        }
        let Some(&li) = self.link_by_name.get(link) else {
            return;
        };
        let LinkState::Resolving { walk, .. } = &mut self.links[li].state else {
            return;
        };
        if !walk.is_current(host, source) {
            return;
        }
        walk.answer(result.unwrap_or_default());
        self.timers.cancel(TimerKind::Resolve(li));
        self.walk_chain(li, now);
        self.pump(now);
    }

    /// The persisted form of the IP ranking (every network's per-address history, each
    /// with its last use), for the driver to save. The core reads no clock: `now_unix` is
    /// the wall-clock time at `now`, in seconds since the Unix epoch; it dates the records
    /// and becomes [`RankingState::saved_at_unix`]. Records unused for a day are left out.
    pub fn ranking_state(&self, now: Instant, now_unix: u64) -> RankingState {
        self.ranking.state(now, now_unix)
    }

    /// Replaces the IP ranking's records with a saved state (typically at start-up; Mars
    /// only loads after the first network change, §18.9), as of the wall-clock time
    /// `now_unix` (seconds since the Unix epoch). Records unused for a day are dropped, and
    /// of the rest at most 16 networks (the current one first, then the most recently
    /// used) and 64 addresses each (the most recently used) are kept. Restored records are
    /// never banned before a new failure.
    pub fn restore_ranking(&mut self, state: &RankingState, now_unix: u64) {
        self.ranking.restore(state, now_unix);
    }

    /// Whether `addr` is banned on the current network at `now` (§11.2).
    pub fn is_banned(&self, now: Instant, addr: IpPort) -> bool {
        self.ranking.is_banned(now, &addr)
    }

    /// The server asked the client to avoid `ip` (Mars's `AddServerBan`): every port of it
    /// leaves the primary address plans for 30 min, or until the network changes.
    pub fn ban_server(&mut self, now: Instant, ip: std::net::IpAddr) {
        self.demote_all();
        self.ranking.ban_server(now, ip);
    }

    /// The transport of connect attempt `attempt` is up and a handshake (TLS) follows; its
    /// [`handle_connected`](Self::handle_connected) or
    /// [`handle_connect_failed`](Self::handle_connect_failed) comes when the handshake ends.
    ///
    /// Optional: a driver whose connections have no handshake need not call it. On the
    /// Phobos profile the handshake then gets its own timeout
    /// ([`Recovery::handshake_timeout`](crate::Recovery)), derived from how long the TCP
    /// connect took; without the call it has what is left of the connect timeout. Short-link
    /// attempts and unknown attempts are ignored (a short-link exchange has its own
    /// first-packet timeout).
    pub fn handle_established(&mut self, now: Instant, attempt: ConnId) {
        self.demote_all();
        let Some(&li) = self.conns.get(&attempt) else {
            return;
        };
        let LinkState::Connecting { dialer, .. } = &mut self.links[li].state else {
            return;
        };
        dialer.established(attempt);
        let Some(rec) = self.cfg.active_recovery() else {
            return;
        };
        let Some(a) = dialer.in_flight(attempt) else {
            return;
        };
        let Some(limit) = rec.handshake_timeout(now.saturating_duration_since(a.started)) else {
            return;
        };
        let at = now + limit;
        // Past the attempt's connect deadline the connect timeout fires first anyway.
        if self
            .timers
            .deadline(TimerKind::ConnectAttempt(attempt))
            .is_none_or(|deadline| at < deadline)
        {
            self.timers.set(TimerKind::Handshake(attempt), at);
        }
    }

    /// A connect attempt succeeded (answer to [`Action::Connect`]).
    pub fn handle_connected(&mut self, now: Instant, attempt: ConnId) {
        self.demote_all();
        if self.short.owns(attempt) {
            return self.short_connected(now, attempt);
        }
        // A driver that woke late may report the connect before the deadline it missed: the
        // deadline came first, and the attempt lost (before, it won or lost by the order in
        // which the driver took its ready events).
        for (kind, handshake) in [
            (TimerKind::ConnectAttempt(attempt), false),
            (TimerKind::Handshake(attempt), true),
        ] {
            if self.timers.deadline(kind).is_some_and(|at| at <= now) {
                self.on_attempt_deadline(attempt, now, handshake);
                if !self.conns.contains_key(&attempt) {
                    return;
                }
            }
        }
        let li = self.conns.get(&attempt).copied();
        let won = li.and_then(|li| match &mut self.links[li].state {
            LinkState::Connecting {
                dialer,
                cycle_start,
            } => dialer.won(now, attempt).map(|w| (li, w, *cycle_start)),
            _ => None,
        });
        let Some((li, winner, cycle_start)) = won else {
            self.conns.remove(&attempt);
            self.actions.push_back(Action::Abort { attempt });
            return;
        };
        self.cancel_attempt_timers(attempt);
        if winner.index > 0 || now.saturating_duration_since(winner.started) > WEAK_CONNECT_RTT {
            self.mark_weak(now);
        }
        self.timers.cancel(TimerKind::RaceStep(li));
        self.timers.cancel(TimerKind::Reconnect(li));
        self.timers.cancel(TimerKind::ReconnectWake(li));
        // Design: attempts that lost the race are aborted but not reported as failures: they
        // were only slower, not broken (Mars reports them failed).
        self.abort_race(li, now);
        let rtt = now.saturating_duration_since(winner.started);
        self.srtt = Some(match self.srtt {
            None => rtt,
            Some(s) => (s * 7 + rtt) / 8,
        });
        self.record_addr(li, now, winner.addr, true, Some(rtt));
        self.report_cycle(li, now, true);
        let name = self.links[li].name.clone();
        let ctx = self.heartbeat_ctx();
        let heartbeat = Policy::build(&*self.cfg.heartbeat, now, &ctx, &self.caught);
        let identify = if self.cfg.auth.is_some() {
            Identify::Pending
        } else {
            Identify::Finished
        };
        // A connection after a drop is not trusted with the whole backlog at once.
        let window = match self.cfg.active_recovery() {
            Some(r) if self.links[li].suspect => Some(r.resend_window),
            _ => None,
        };
        self.links[li].state = LinkState::Connected(Box::new(Session {
            conn: attempt,
            addr: winner.addr,
            addr_index: winner.index,
            connect_start: cycle_start,
            connected_at: now,
            rx: BytesMut::new(),
            last_recv: None,
            heartbeat,
            heartbeat_interval: None,
            heartbeat_off: false,
            heartbeat_sent: None,
            identify,
            window,
            responses: 0,
            rtt,
            probing: None,
            probe_heartbeat: false,
            inspecting: false,
            probes_answered: 0,
            last_probe_reply: None,
            newest_answered: None,
            rtt_measured: false,
            emitted: 0,
            unsent: 0,
            write_progress: None,
            unwritten: VecDeque::new(),
        }));
        self.events.push_back(Event::LinkStatus {
            link: name,
            status: LinkStatus::Connected(winner.addr),
            reason: None,
        });
        // §18.2: the first heartbeat (or the identify frame) goes out right after connect,
        // ahead of any task.
        self.heartbeat_slot(li, now, None);
        if li == self.cfg.main_link() {
            self.timers.cancel(TimerKind::TimingSync);
            self.restart_all_zombies(now);
        }
        self.dirty[li] = true;
        self.pump(now);
    }

    /// A connect attempt failed (answer to [`Action::Connect`]).
    pub fn handle_connect_failed(&mut self, now: Instant, attempt: ConnId, error: DialError) {
        self.demote_all();
        if self.short.owns(attempt) {
            return self.short_connect_failed(now, attempt, Some(error));
        }
        let Some(li) = self.conns.remove(&attempt) else {
            return;
        };
        self.cancel_attempt_timers(attempt);
        let failed = match &mut self.links[li].state {
            LinkState::Connecting { dialer, .. } => dialer.failed(now, attempt, Some(error)),
            _ => None,
        };
        if let Some(a) = failed {
            self.stats.connects_failed += 1;
            self.record_addr(li, now, a.addr, false, None);
            self.advance_dial(li, now);
        }
        self.pump(now);
    }

    /// Bytes arrived on a connection.
    ///
    /// The bytes are copied; a driver that owns its read buffers should prefer
    /// [`handle_data`](Self::handle_data), which keeps response bodies as slices of them.
    pub fn handle_bytes(&mut self, now: Instant, conn: ConnId, data: &[u8]) {
        if !self.conns.contains_key(&conn) || data.is_empty() {
            return;
        }
        self.handle_data(now, conn, Bytes::copy_from_slice(data));
    }

    /// Bytes arrived on a connection, handed over: the same as
    /// [`handle_bytes`](Self::handle_bytes), except that the body of every frame lying wholly
    /// in `data` (and in the bytes kept from earlier reads) is a slice of it
    /// ([`Bytes::slice`]), not a copy.
    ///
    /// Design: zero-copy responses. A response body then keeps its read chunk alive while the
    /// app holds it; a driver reading into exactly sized chunks (as `phobos-stn` does) keeps
    /// that overhead to the chunk's other frames.
    pub fn handle_data(&mut self, now: Instant, conn: ConnId, data: Bytes) {
        let Some(&li) = self.conns.get(&conn) else {
            return;
        };
        let LinkState::Connected(s) = &mut self.links[li].state else {
            return;
        };
        if s.conn != conn || data.is_empty() {
            return;
        }
        s.last_recv = Some(now);
        // Design: bytes arriving while a heartbeat reply is due prove the link alive; the
        // reply may be queued behind a long response, so its deadline moves (Mars would drop
        // a link that is busy delivering a large response).
        let reply = self.cfg.timing.heartbeat_reply_timeout;
        path_moving(s, &mut self.timers, reply, li, now);
        // Any byte answers a stall probe: the link is alive (the reply itself may be queued
        // behind a long response). The next probe waits twice as long.
        if s.probing.take().is_some() {
            s.probes_answered = s.probes_answered.saturating_add(1);
            self.timers.set(TimerKind::StallProbe(li), now);
        }
        self.stats.bytes_received += data.len() as u64;
        // The bytes to decode: `data` itself, or the partial frame kept from the last read
        // followed by `data` (moved into one shared buffer, so its bodies are slices too).
        let kept = !s.rx.is_empty();
        let input = if kept {
            let mut buf = std::mem::take(&mut s.rx);
            buf.extend_from_slice(&data);
            buf.freeze()
        } else {
            data
        };
        let Some(consumed) = self.read_frames(li, conn, &input, now) else {
            self.pump(now);
            return;
        };
        // Design: a frame arriving in many reads is put together in one growing buffer. When
        // a read completes no frame, nothing was sliced out of the kept buffer, so it is taken
        // back as it is (no copy); copying it into a fresh buffer on every read made a 1 MB
        // response arriving in 1 KB reads cost 1.5 GB of allocation (`tests/reassembly.rs`).
        // Only a partial frame left after complete ones is copied, once.
        let input = if kept && consumed == 0 {
            match input.try_into_mut() {
                Ok(buf) => {
                    if buf.len() > plugins::max_frame_len(&*self.cfg.codec, &self.caught) {
                        self.rest_too_large(li, now, buf.len());
                        return;
                    }
                    if let LinkState::Connected(s) = &mut self.links[li].state {
                        s.rx = buf;
                    }
                    self.data_event(now);
                    self.pump(now);
                    return;
                }
                Err(input) => input,
            }
        } else {
            input
        };
        let rest = &input[consumed..];
        // A codec that keeps asking for more past its own frame limit would let the buffer
        // grow without bound; treat that as a malformed stream.
        if rest.len() > plugins::max_frame_len(&*self.cfg.codec, &self.caught) {
            self.rest_too_large(li, now, rest.len());
            return;
        }
        if let LinkState::Connected(s) = &mut self.links[li].state {
            s.rx.extend_from_slice(rest);
        }
        self.data_event(now);
        self.pump(now);
    }

    /// Of the bytes asked for with [`Action::Send`] on connection `conn`, the driver still
    /// holds `unsent`: the socket has not taken them yet.
    ///
    /// A request's first-packet and read/write clocks run from the moment its frame's first
    /// byte is handed to the socket (spec §6.2), not from its dispatch: behind a slow uplink,
    /// the frames pipelined after a large one wait in the driver, and timing them from
    /// dispatch failed them (and, by shared fate, the link) before they had left. A driver
    /// calls this whenever the number changes, except while it stays 0: the usual write, taken
    /// whole at once, needs no call. The instant of the call is when the bytes that left since
    /// the last call left. While the socket keeps taking bytes the peer is acknowledging, so
    /// write progress also counts as a sign of life for the heartbeat reply and the stall
    /// probe, as received bytes do.
    pub fn handle_unsent(&mut self, now: Instant, conn: ConnId, unsent: u64) {
        self.demote_all();
        let Some(&li) = self.conns.get(&conn) else {
            return;
        };
        let LinkState::Connected(s) = &mut self.links[li].state else {
            return;
        };
        if s.conn != conn {
            return;
        }
        let unsent = unsent.min(s.emitted);
        let before = std::mem::replace(&mut s.unsent, unsent);
        let written = s.emitted - unsent;
        if unsent < before {
            s.write_progress = Some(now);
            // Bytes left: a write (see `write`).
            if let Some(iv) = s.heartbeat_interval {
                self.timers.set(TimerKind::Heartbeat(li), now + iv);
            }
            let reply = self.cfg.timing.heartbeat_reply_timeout;
            path_moving(s, &mut self.timers, reply, li, now);
        }
        if unsent > 0 && before == 0 {
            // A backlog begins: the attempts whose first byte is still held stop their
            // clocks. They are the last ones framed; earlier ones have left.
            self.hold_unwritten(li, conn, written);
        }
        self.release_written(li, conn, written, now);
        self.timers.settle();
    }

    /// The running attempts on connection `conn` of link `li` whose frames start at or after
    /// `written` (the driver holds their first byte): their first-packet timers are
    /// disarmed and they wait in the session's `unwritten` list.
    ///
    /// Design: a scan of the task slab, as for the link's other walks over its running tasks
    /// (see [`Link::running`]). It runs when a backlog begins, not while one lasts: once per
    /// burst that fills the socket, and the tasks it finds are handled in the same call. A
    /// per-connection list of the attempts not yet known written would make it proportional
    /// to what it holds, at a push and a pop for every task on the usual path, where no
    /// backlog ever begins.
    fn hold_unwritten(&mut self, li: usize, conn: ConnId, written: u64) {
        let mut held: Vec<(u64, TaskId, u32)> = Vec::new();
        for t in self.tasks.values_mut() {
            if t.link != li {
                continue;
            }
            let TaskState::Running(a) = &mut t.state else {
                continue;
            };
            if a.conn != conn || a.unwritten || a.frame_start < written {
                continue;
            }
            a.unwritten = true;
            held.push((a.frame_start, t.id, t.slot));
        }
        if held.is_empty() {
            return;
        }
        held.sort_unstable();
        for &(_, id, slot) in &held {
            self.timers
                .cancel_task_timer(slot, TimerKind::FirstPacket(id));
        }
        if let LinkState::Connected(s) = &mut self.links[li].state {
            s.unwritten.extend(held);
        }
    }

    /// The attempts held in link `li`'s `unwritten` list whose frames start before `written`
    /// left at `now`: their clocks start.
    fn release_written(&mut self, li: usize, conn: ConnId, written: u64, now: Instant) {
        let now_ns = self.timers.now_ns(now);
        loop {
            let LinkState::Connected(s) = &mut self.links[li].state else {
                return;
            };
            let Some(&(start, id, slot)) = s.unwritten.front() else {
                return;
            };
            if start >= written {
                return;
            }
            s.unwritten.pop_front();
            let Some(task) = self.tasks.at_slot_mut(slot).filter(|t| t.id == id) else {
                continue;
            };
            let TaskState::Running(a) = &mut task.state else {
                continue;
            };
            if a.conn != conn || !a.unwritten || a.frame_start != start {
                continue;
            }
            a.unwritten = false;
            a.sent_at = now;
            a.sent_ns = now_ns;
            // The retry room is kept from the instant the request left, as from its dispatch:
            // applied at dispatch only, a request held for a few seconds had its deadline
            // moved past the room by as much, and its retry never ran.
            if let (Some(room), None) = (self.retry_room, task.spec.long_polling) {
                let total_ns = self.timers.total_deadline_ns(slot, id);
                a.timeouts = retry_room_ns(room, now_ns, total_ns, task.retries_left, a.timeouts);
            }
            let first_packet = a.timeouts.first_packet;
            if let Some(p) = task.profile_mut() {
                p.send_end = Some(now);
            }
            self.timers
                .set_task_after(slot, TimerKind::FirstPacket(id), now, first_packet);
        }
    }

    /// The bytes kept for the next read (`len` of them) exceed the codec's frame limit: the
    /// stream is malformed and the link goes down.
    fn rest_too_large(&mut self, li: usize, now: Instant, len: usize) {
        let error = phobos_plugin_api::DecodeError::TooLarge {
            len: len as u64,
            max: plugins::max_frame_len(&*self.cfg.codec, &self.caught) as u64,
        };
        self.link_down(li, now, LinkError::Decode(error), false);
        self.pump(now);
    }

    /// The transport's facts about the long-link connection `conn`, asked for with
    /// [`Action::InspectTransport`] when its heartbeat reply was overdue; `None` when the
    /// transport cannot tell. Decides whether the silence is loss (the deadline moves) or a
    /// dead link (it is dropped); see [`Recovery`](crate::Recovery).
    pub fn handle_transport(&mut self, now: Instant, conn: ConnId, facts: Option<TransportFacts>) {
        self.demote_all();
        let Some(&li) = self.conns.get(&conn) else {
            return;
        };
        let retry_by = self.owed_retry_by(li);
        let LinkState::Connected(s) = &mut self.links[li].state else {
            return;
        };
        if s.conn != conn || !s.inspecting {
            // Answered meanwhile, or never asked: nothing to judge.
            return;
        }
        let Some(sent) = s.heartbeat_sent else {
            // No heartbeat owed any more: nothing to judge, nothing to wake up for.
            s.inspecting = false;
            self.timers.cancel(TimerKind::HeartbeatReply(li));
            return;
        };
        // The peer acknowledged something after the heartbeat went, and nothing of ours is
        // being retransmitted: the path carries bytes, and the reply is queued, not lost.
        let queued = facts.is_some_and(|f| {
            f.unacked > 0
                && f.backoff == 0
                && f.since_last_ack < now.saturating_duration_since(sent)
        });
        let wait = facts.and_then(|f| {
            // Design: first the time loss alone can explain: the heartbeat (or the server's
            // reply) retransmitted three times, each timeout twice the last, plus the trip.
            // (Checked: the facts come from the app's transport, which may say anything; a
            // wait past what an instant holds is no wait.)
            let loss = f.base_rto().saturating_mul(crate::PATIENCE_RTOS);
            let patience = sent.checked_add(loss.saturating_add(s.rtt))?;
            if now < patience {
                return Some(patience);
            }
            // Then, while our bytes are being retransmitted, a path the peer still
            // acknowledges on, or one that has been losing segments all along, is lossy,
            // not dead: one more retransmission timeout.
            let acked_since = f.since_last_ack < now.saturating_duration_since(sent);
            (f.unacked > 0 && (acked_since || f.lossy_history()))
                .then(|| now.checked_add(f.rto.max(f.base_rto())))
                .flatten()
        });
        // Design: waiting on a lossy connection is a bet that its retransmissions get through
        // before a fresh connection would. It is only worth it while the owed tasks could
        // still be retried should it fail: a connection whose TCP has backed off (a
        // retransmission timeout of several seconds) would otherwise keep them until their
        // total timeouts, with one attempt each, while a new connection starts its timers
        // afresh.
        //
        // A wait past that instant is cut to it when the reply is queued rather than lost
        // (`queued`): it may wait behind a burst's requests and answers (an uplink capped at
        // 12 KiB/s with fifteen 20 KiB uploads in flight had a 6.5 s retransmission timeout,
        // so a 45 s patience, while its ACKs were 92 ms old and nothing was retransmitted;
        // the link was dropped at once and every upload went again). Should the reply still
        // not have come by then, the link is judged again, the tasks' retry still possible.
        // A path retransmitting our bytes is dropped as before: at 30 % loss a fresh
        // connection got through sooner than waiting did (`docs/lab/loss30`).
        let wait = match (wait, retry_by) {
            (Some(until), Some(by)) if until > by => Some(by).filter(|by| queued && *by > now),
            (wait, _) => wait,
        };
        match wait {
            Some(until) => {
                s.inspecting = false;
                self.stats.transport_waits += 1;
                self.timers.set(TimerKind::HeartbeatReply(li), until);
            }
            None => {
                self.timers.cancel(TimerKind::HeartbeatReply(li));
                self.heartbeat_unanswered(li, now);
                self.pump(now);
            }
        }
    }

    /// The last instant at which the tasks running on link `li` (long polls aside) could
    /// still each be retried with at least [`Recovery::min_attempt`] left before their total
    /// timeouts; `None` when none is running.
    fn owed_retry_by(&self, li: usize) -> Option<Instant> {
        let min_attempt = self
            .cfg
            .active_recovery()
            .map_or(Duration::ZERO, |r| r.min_attempt);
        self.owed_on(li)
            .filter_map(|t| {
                self.timers
                    .task_deadline(t.slot, TimerKind::TaskTotal(t.id))
            })
            .min()
            .map(|end| end.checked_sub(min_attempt).unwrap_or(end))
    }

    /// An established connection ended (EOF or an IO error).
    pub fn handle_closed(&mut self, now: Instant, conn: ConnId, cause: CloseCause) {
        self.demote_all();
        if self.short.owns(conn) {
            let error = match cause {
                CloseCause::Io(errno) => DialError::Io(errno),
                CloseCause::Damaged => DialError::Damaged,
                _ => DialError::Refused,
            };
            return self.short_connect_failed(now, conn, Some(error));
        }
        let Some(&li) = self.conns.get(&conn) else {
            return;
        };
        let is_session = matches!(&self.links[li].state, LinkState::Connected(s) if s.conn == conn);
        if is_session {
            let failure = match cause {
                CloseCause::RemoteClosed => SocketFailure::RemoteClosed,
                CloseCause::Io(errno) => SocketFailure::Io { errno },
                CloseCause::Damaged => SocketFailure::Damaged,
            };
            self.link_down(li, now, LinkError::Socket(failure), true);
        } else {
            let error = match cause {
                CloseCause::RemoteClosed => DialError::Refused,
                CloseCause::Io(errno) => DialError::Io(errno),
                CloseCause::Damaged => DialError::Damaged,
            };
            self.handle_connect_failed(now, conn, error);
        }
        self.pump(now);
    }

    /// The driver ran [`AuthCheck::ensure_authed`](phobos_plugin_api::AuthCheck::ensure_authed)
    /// for `host` (answer to [`Action::EnsureAuth`]). Success lets the waiting tasks go;
    /// [`AuthError::Rejected`] ends them; a transient failure asks again after
    /// [`Timing::auth_retry`](crate::Timing::auth_retry).
    pub fn handle_auth(&mut self, now: Instant, host: &str, result: Result<(), AuthError>) {
        self.demote_all();
        self.short_auth(now, host, &result);
        let Some(idx) = self.auth_hosts.iter().position(|h| h.host == host) else {
            return;
        };
        self.timers.cancel(TimerKind::AuthRetry(idx));
        self.timers.cancel(TimerKind::AuthLimit(idx));
        let waiting: Vec<TaskId> = self
            .tasks
            .values()
            .filter(|t| {
                t.spec.needs_auth
                    && !t.auth_cleared
                    && matches!(t.state, TaskState::Queued)
                    && self.auth_host_of(t) == host
            })
            .map(|t| t.id)
            .collect();
        let mut waiting = waiting;
        waiting.sort();
        match result {
            Ok(()) => {
                self.auth_hosts[idx].state = AuthState::Idle;
                for id in waiting {
                    if let Some(t) = self.tasks.get_mut(&id) {
                        t.auth_cleared = true;
                    }
                }
            }
            Err(AuthError::Rejected(reason)) => {
                self.auth_hosts[idx].state = AuthState::Idle;
                for id in waiting {
                    self.finish(id, now, Err(AuthFailure::Rejected(reason.clone()).into()));
                }
            }
            Err(_) => {
                self.auth_hosts[idx].state = AuthState::RetryWait;
                self.timers
                    .set(TimerKind::AuthRetry(idx), now + self.cfg.timing.auth_retry);
            }
        }
        self.mark_all_dirty();
        self.pump(now);
    }

    /// Fires every timer due at `now`. Call it when [`poll_timeout`](Self::poll_timeout)'s
    /// instant has come (calling it early is harmless).
    pub fn handle_timeout(&mut self, now: Instant) {
        // Every member is demoted, which disarms the lane's timer ([`TimerKind::LaneWake`]).
        self.demote_all();
        while let Some((at, kind)) = self.timers.pop_due(now) {
            self.on_timer(kind, at, now);
        }
        self.short_timeouts(now);
        self.pump(now);
    }

    // ----- outputs ------------------------------------------------------------------------

    /// The next thing the driver must do.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The next thing the app should learn.
    #[inline]
    pub fn poll_event(&mut self) -> Option<Event> {
        match self.events.pop_front() {
            Some(event) => Some(event),
            None => self.poll_caught(),
        }
    }

    /// The events of plugin panics caught since the queue last ran empty (`plugins.rs`).
    #[cold]
    #[inline(never)]
    fn poll_caught(&mut self) -> Option<Event> {
        if self.caught.is_empty() {
            return None;
        }
        self.caught.drain_into(&mut self.events);
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must be called next; `None` when no timer
    /// is armed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let long = self.next_timer().map(|(at, _)| at);
        match (long, self.short.next_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    // ----- getters ------------------------------------------------------------------------

    /// The config the engine runs with.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The earliest armed timer of the long-link side and its kind (for logs and tests).
    pub fn next_timer(&self) -> Option<(Instant, TimerKind)> {
        let table = self.timers.next();
        match self.lane_wake() {
            Some(at) if table.is_none_or(|(t, _)| at < t) => Some((at, TimerKind::LaneWake)),
            _ => table,
        }
    }

    /// Whether the named link is connected.
    pub fn is_connected(&self, link: &str) -> bool {
        self.link_by_name
            .get(link)
            .is_some_and(|&li| matches!(self.links[li].state, LinkState::Connected(_)))
    }

    /// The address the named link is connected to.
    pub fn connected_addr(&self, link: &str) -> Option<IpPort> {
        let &li = self.link_by_name.get(link)?;
        match &self.links[li].state {
            LinkState::Connected(s) => Some(s.addr),
            _ => None,
        }
    }

    /// Whether the task is queued, running or a zombie (Mars's `HasTask`).
    pub fn has_task(&self, id: TaskId) -> bool {
        self.tasks.contains_key(&id)
            || self.lane.find(id).is_some()
            || self.zombies.contains_key(&id)
            || self.short.has(id)
    }

    /// Tasks queued or running, short-link tasks included (zombies excluded).
    pub fn task_count(&self) -> usize {
        self.tasks.len() + self.lane.len() + self.short.len()
    }

    /// Tasks kept as zombies.
    pub fn zombie_count(&self) -> usize {
        self.zombies.len()
    }

    /// Counters since the engine was built.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Whether the app counts as active (foreground, or background for less than 10 min).
    pub fn is_active(&self) -> bool {
        self.activity.active
    }

    /// The network quality the estimator has learnt (for tests).
    #[cfg(test)]
    pub(crate) fn net_quality(&self) -> timeouts::NetQuality {
        self.estimator.quality()
    }

    /// Everything the estimator has learnt, down to its ring (for tests).
    #[cfg(test)]
    pub(crate) fn estimator_state(&self) -> String {
        format!("{:?}", self.estimator)
    }

    /// Makes the next allocated task id `id` (tests of the id wrap).
    #[cfg(test)]
    pub(crate) fn set_next_task_id(&mut self, id: u32) {
        self.next_task = id;
        self.ids_wrapped = true;
    }

    // ----- admission ----------------------------------------------------------------------

    /// Validates a spec (§3.2) and picks its link.
    fn admit(&self, spec: &TaskSpec) -> Result<usize, TaskError> {
        self.admit_parts(spec, spec.cmd_id, spec.body.len())
    }

    /// [`admit`](Self::admit) for a task with `spec`'s parameters but command `cmd_id` and a
    /// body of `body_len` bytes (a task of [`queue_tasks_like`](Self::queue_tasks_like)).
    fn admit_parts(
        &self,
        spec: &TaskSpec,
        cmd_id: CmdId,
        body_len: usize,
    ) -> Result<usize, TaskError> {
        if spec.priority > MAX_PRIORITY {
            return Err(ParamError::Priority(spec.priority).into());
        }
        if let Some(r) = spec.retry_count.filter(|r| *r > MAX_RETRIES) {
            return Err(ParamError::RetryCountTooLarge(r).into());
        }
        if let Some(c) = spec.server_cost.filter(|c| *c > MAX_SERVER_COST) {
            return Err(ParamError::ServerCostTooLarge(c).into());
        }
        if let Some(t) = spec
            .total_timeout
            .filter(|t| t.is_zero() || *t > MAX_TOTAL_TIMEOUT)
        {
            return Err(ParamError::TotalTimeoutOutOfRange(t).into());
        }
        if let Some(t) = spec
            .long_polling
            .filter(|t| t.is_zero() || *t > MAX_TOTAL_TIMEOUT)
        {
            return Err(ParamError::LongPollingTimeoutOutOfRange(t).into());
        }
        let long = spec.channel.allows_long() && cmd_id != CmdId(0);
        let short = spec.channel.allows_short() && !spec.path.is_empty();
        if !long {
            if !short {
                return Err(LocalError::NoChannel.into());
            }
            if spec.send_only {
                return Err(ParamError::SendOnlyOnShortLink.into());
            }
            if spec.short_hosts.is_empty() {
                return Err(ParamError::NoShortLinkHost.into());
            }
            if spec.network_sensitive && !self.net.is_available() {
                return Err(LocalError::NoNetwork.into());
            }
            return Ok(SHORT_TASK);
        }
        // Most specs name the default link by its shared name (`TaskSpec::new`): found
        // without hashing the name.
        let default = match &self.default_link {
            Some((name, li)) if name.is_same(&spec.link) => Some(*li),
            _ => None,
        };
        let Some(li) = default.or_else(|| self.link_by_name.get(&spec.link).copied()) else {
            return Err(ParamError::UnknownLink(spec.link.to_string()).into());
        };
        if body_len > self.max_body_len {
            return Err(ParamError::BodyTooLarge {
                len: body_len,
                max: self.max_body_len,
            }
            .into());
        }
        let connected = matches!(self.links[li].state, LinkState::Connected(_));
        if spec.network_sensitive && !self.net.is_available() && !connected {
            return Err(LocalError::NoNetwork.into());
        }
        // §3.2 step 7: a task that may use either goes short when the long link is down.
        if short && !connected && !spec.send_only && !spec.short_hosts.is_empty() {
            return Ok(SHORT_TASK);
        }
        if self.links[li].refused {
            return Err(AuthFailure::IdentifyRejected(spec.link.to_string()).into());
        }
        Ok(li)
    }

    /// The next task id: the one after the last, skipping 0, the ids the codec reserves
    /// and (once ids wrapped) those still in use. `Err` carries an id for a task that gets
    /// no sequence number: the codec reserved every one tried
    /// ([`alloc_task_id_slow`](Self::alloc_task_id_slow)).
    #[inline(always)]
    fn alloc_task_id(&mut self) -> Result<TaskId, TaskId> {
        let id = self.next_task;
        // Before the first wrap no id is in use past the last one given.
        if id != 0
            && id < TASK_ID_WRAP
            && !self.ids_wrapped
            && !plugins::is_reserved_seq(&*self.cfg.codec, Seq(id), &self.caught)
        {
            self.next_task = id + 1;
            return Ok(TaskId(id));
        }
        self.alloc_task_id_slow()
    }

    /// [`alloc_task_id`](Self::alloc_task_id), every case.
    ///
    /// Design: the search is bounded, so that a codec reserving far more than its few
    /// sequence numbers (a range, or by a fault every one) cannot hold the engine in this
    /// loop for billions of calls. A run of [`MAX_RESERVED_RUN`] reserved numbers counts as
    /// the end of the id space: ids start again from 1, as at the wrap. A second such run
    /// before an id is found means the codec leaves none here; the task gets an id no task
    /// uses (never sent, so the codec's reservation does not matter) and ends at once
    /// with [`CodecFailure::NoSequence`].
    #[cold]
    #[inline(never)]
    fn alloc_task_id_slow(&mut self) -> Result<TaskId, TaskId> {
        let start = self.next_task;
        let mut run = 0u32;
        let mut runs = 0u32;
        loop {
            if run == MAX_RESERVED_RUN {
                runs += 1;
                if runs == 2 {
                    self.next_task = start;
                    return Err(self.unused_task_id());
                }
                self.next_task = 1;
                self.ids_wrapped = true;
                run = 0;
            }
            let id = self.next_task;
            if id >= TASK_ID_WRAP {
                self.next_task = 1;
                self.ids_wrapped = true;
                run = 0;
            } else {
                self.next_task = id + 1;
            }
            let tid = TaskId(id);
            if id == 0 || (self.ids_wrapped && self.id_in_use(tid)) {
                continue;
            }
            if plugins::is_reserved_seq(&*self.cfg.codec, Seq(id), &self.caught) {
                run += 1;
                continue;
            }
            return Ok(tid);
        }
    }

    /// Whether task id `id` belongs to a task that has not ended (only possible once ids
    /// wrapped).
    fn id_in_use(&self, id: TaskId) -> bool {
        self.tasks.contains_key(&id)
            || self.lane.find(id).is_some()
            || self.short.has(id)
            || self.zombies.contains_key(&id)
    }

    /// The next id, from where the failed search began, that is not 0 and no task uses,
    /// whatever the codec reserves: the id of a task that ends without being sent. (Each
    /// such task takes the next: their ids do not repeat.)
    fn unused_task_id(&mut self) -> TaskId {
        loop {
            let id = self.next_task;
            self.next_task = if id >= TASK_ID_WRAP { 1 } else { id + 1 };
            if id != 0 && id <= TASK_ID_WRAP && !(self.ids_wrapped && self.id_in_use(TaskId(id))) {
                return TaskId(id);
            }
        }
    }

    /// Puts a (new or restarted) task in its link's queue with a fresh total-timeout timer.
    fn enqueue(&mut self, slot: u32, now: Instant) {
        let Some(task) = self.tasks.at_slot_mut(slot) else {
            return;
        };
        let total = timeouts::task_total(
            task.spec.server_cost,
            task.retries_left,
            task.spec.long_polling,
            task.spec.total_timeout,
        );
        task.budget_start = now;
        task.state = TaskState::Queued;
        let (id, li) = (task.id, task.link);
        let link = &mut self.links[li];
        link.queue
            .insert((task.spec.priority, task.order, id, slot));
        self.dirty[li] = true;
        self.timers
            .set_task_after(slot, TimerKind::TaskTotal(id), now, total);
    }

    // ----- scheduling ---------------------------------------------------------------------

    /// Runs the dispatch pass of every link marked dirty.
    fn pump(&mut self, now: Instant) {
        // A pass can mark other links dirty (auth results); a few rounds always settle.
        for _ in 0..4 {
            let mut any = false;
            for li in 0..self.links.len() {
                if std::mem::take(&mut self.dirty[li]) {
                    any = true;
                    self.dispatch(li, now);
                }
            }
            if !any {
                break;
            }
        }
        // Every input ends here: drop the per-task timers disarmed during it.
        self.timers.settle();
    }

    fn mark_all_dirty(&mut self) {
        self.dirty.iter_mut().for_each(|d| *d = true);
    }

    /// Sends what can be sent on link `li`, asks for auth, or asks for a connection.
    fn dispatch(&mut self, li: usize, now: Instant) {
        if self.dispatch_lane(li, now) {
            return;
        }
        if self.links[li].queue.is_empty() {
            return;
        }
        if self.links[li].refused {
            let ids: Vec<TaskId> = self.links[li].queue.iter().map(|k| k.2).collect();
            let name = self.links[li].name.to_string();
            for id in ids {
                self.finish(
                    id,
                    now,
                    Err(AuthFailure::IdentifyRejected(name.clone()).into()),
                );
            }
            return;
        }
        let paused = match self.links[li].retry_pause_until {
            Some(t) if now < t => true,
            Some(_) => {
                self.links[li].retry_pause_until = None;
                false
            }
            None => false,
        };
        let connected = matches!(self.links[li].state, LinkState::Connected(_));
        // The resend window leaves this many more tasks go (`None`: no limit).
        let room = match &self.links[li].state {
            LinkState::Connected(s) => s.window.map(|w| w.saturating_sub(self.links[li].running)),
            _ => None,
        };
        let mut ready = std::mem::take(&mut self.scratch);
        ready.clear();
        let mut wants_link = false;
        let mut auth_needed: Vec<String> = Vec::new();
        // Design: while the link is down the pass stops at the first task that could go,
        // so a long queue costs O(1) per input, not O(queue).
        for &(_, _, id, slot) in self.links[li].queue.iter() {
            // Every queued task is stored at its slot (`enqueue`, `unlink_at`).
            let Some(t) = self.tasks.at_slot(slot).filter(|t| t.id == id) else {
                continue;
            };
            if paused && t.attempts > 0 {
                continue;
            }
            if t.spec.needs_auth && !t.auth_cleared {
                let host = self.auth_host_of(t);
                if !self.is_authed(host) {
                    if !auth_needed.iter().any(|h| h == host) {
                        auth_needed.push(host.to_owned());
                    }
                    continue;
                }
            }
            if !connected {
                wants_link = true;
                break;
            }
            if room.is_some_and(|r| ready.len() >= r) {
                break;
            }
            ready.push((id, slot));
        }
        for host in auth_needed {
            self.request_auth(now, &host);
        }
        if !connected {
            if wants_link {
                self.want_connect(li, now, Trigger::Task);
            }
            self.scratch = ready;
            return;
        }
        let mut out = self.send_buffer(ready.len());
        let running_before = self.links[li].running;
        for &(id, slot) in &ready {
            self.send_task(li, id, slot, now, &mut out);
        }
        if self.links[li].running > running_before {
            self.arm_stall_probe(li, now);
        }
        self.note_frame_len(out.len(), ready.len());
        self.scratch = ready;
        if !out.is_empty() {
            self.write(li, now, out);
        }
    }

    /// Frames one task onto `out` and marks it running (or ends it: limits, encode error,
    /// send-only).
    ///
    /// `slot` is where the task is stored (read by the pass a moment ago).
    fn send_task(&mut self, li: usize, id: TaskId, slot: u32, now: Instant, out: &mut Vec<u8>) {
        let Some(task) = self.tasks.at_slot_mut(slot).filter(|t| t.id == id) else {
            return;
        };
        // The attempt's request, built now if the task has an encoder (Mars's `Req2Buf`):
        // before the limits, which check the first attempt's body.
        let via = EncodeVia::LongLink(&self.links[li].name);
        if let Err(error) = task.spec.build_request(id, task.attempts + 1, via) {
            self.finish(id, now, Err(error));
            return;
        }
        // Design: limits count a task once, on its first dispatch (Mars may count a task
        // twice when the link was down, §18.11).
        if !task.limits_checked {
            task.limits_checked = true;
            let (freq, flow) = limits_of(&self.cfg, self.net, &task.spec);
            if freq || flow {
                let body = task.spec.body.clone();
                if let Some((kind, param)) = self.check_limits(now, &body, freq, flow) {
                    self.limited(id, kind, param, now);
                    return;
                }
            }
        }
        let Some(task) = self.tasks.at_slot_mut(slot).filter(|t| t.id == id) else {
            return;
        };
        let (cmd, body, ext) = (task.spec.cmd_id, &task.spec.body, &task.spec.extension);
        let start_in_pass = out.len() as u64;
        let sent_len = match frame(&*self.cfg.codec, cmd, id, body, ext, out, &self.caught) {
            Ok(len) => len,
            Err(e) => {
                self.finish(id, now, Err(CodecFailure::Encode(e).into()));
                return;
            }
        };
        self.stats.requests_sent += 1;
        let link = &mut self.links[li];
        let LinkState::Connected(s) = &link.state else {
            return;
        };
        let excellent = self.estimator.quality() == NetQuality::Excellent;
        let t = self.attempt_memo.attempt(
            &self.cfg.timing,
            timeouts::AttemptInputs {
                mobile: self.net.is_mobile(),
                server_cost: task.spec.server_cost,
                long_polling: task.spec.long_polling,
                send_len: task.spec.body.len(),
                queued_ahead: link.running,
                excellent,
            },
        );
        let t = match self.retry_room {
            Some(room) => retry_room(room, &mut self.timers, task, now, t),
            None => t,
        };
        link.queue
            .remove(&(task.spec.priority, task.order, id, slot));
        task.attempts += 1;
        let attempts = task.attempts;
        if let Some(p) = task.profile_mut() {
            p.attempts = attempts;
            p.link = Some(link.name.clone());
            p.addr = Some(s.addr);
            p.connect_start = Some(s.connect_start);
            p.connect_end = Some(s.connected_at);
            p.send_start = Some(now);
            p.send_end = Some(now);
            p.first_byte = None;
            p.last_byte = None;
            p.decoded_at = None;
            p.sent_bytes = sent_len;
            p.received_bytes = 0;
            p.first_packet_timeout = Some(t.first_packet);
        }
        let conn = s.conn;
        let addr_index = s.addr_index;
        // The pass's bytes are handed over after every earlier write of the connection.
        let frame_start = s.emitted + start_in_pass;
        // Behind bytes the driver still holds, the frame's clocks start when its first byte
        // leaves (`handle_unsent`).
        let unwritten = s.unsent > 0;
        if self.task_sent_events {
            self.events.push_back(Event::TaskSent {
                id,
                link: link.name.clone(),
                first_packet_timeout: t.first_packet,
            });
        }
        if task.spec.send_only {
            let cmd_id = task.spec.cmd_id;
            let response = Response {
                cmd_id,
                body: Bytes::new(),
                extension: None,
            };
            self.finish(id, now, Ok(response));
            return;
        }
        task.state = TaskState::Running(Attempt {
            conn,
            sent_at: now,
            sent_ns: self.timers.now_ns(now),
            timeouts: t,
            last_progress: None,
            sent_len,
            addr_index,
            frame_start,
            unwritten,
        });
        link.running += 1;
        // Design: the read/write timer is armed at the first response byte (`on_progress`),
        // at `sent_at + read_write`. It never ends before the first-packet timer (read/write
        // = first packet + the 64 KiB allowance), which until then fires first, or ties and
        // fires first by kind, and fails the attempt; so the timers fire exactly as if both
        // were armed here, and the usual task (answered in one piece) arms one timer less.
        let slot = task.slot;
        if unwritten {
            if let LinkState::Connected(s) = &mut link.state {
                s.unwritten.push_back((frame_start, id, slot));
            }
            return;
        }
        self.timers
            .set_task_after(slot, TimerKind::FirstPacket(id), now, t.first_packet);
    }

    /// Runs the limits a task is subject to (`freq`, `flow`) on its `body`: the limit that
    /// refuses it and the refusal's parameter, if one does.
    fn check_limits(
        &mut self,
        now: Instant,
        body: &[u8],
        freq: bool,
        flow: bool,
    ) -> Option<(LimitKind, u64)> {
        if freq {
            if let Err(since) = self.freq.check(now, body) {
                return Some((LimitKind::Frequency, since));
            }
        }
        if flow && self.flow.check(now, body.len()).is_err() {
            return Some((LimitKind::Flow, body.len() as u64));
        }
        None
    }

    /// Tasks started running on link `li`: its stall probe (if on) is armed unless it
    /// already is.
    ///
    /// Design: called once per dispatch pass, not per task sent: every task of a pass is
    /// sent at the same `now` over the same connection, so the first would arm the probe
    /// and the others would find it armed.
    fn arm_stall_probe(&mut self, li: usize, now: Instant) {
        let Some(r) = self.cfg.active_recovery().filter(|r| r.stall_probe) else {
            return;
        };
        let LinkState::Connected(s) = &self.links[li].state else {
            return;
        };
        let kind = TimerKind::StallProbe(li);
        if !self.timers.is_armed(kind) {
            self.timers.set(kind, now + r.probe_after(s.rtt));
        }
    }

    fn limited(&mut self, id: TaskId, kind: LimitKind, param: u64, now: Instant) {
        self.note_limited(id, kind, param);
        self.finish(id, now, Err(TaskError::Limited(kind)));
    }

    /// Counts and reports task `id` refused by limit `kind` (its end is the caller's).
    fn note_limited(&mut self, id: TaskId, kind: LimitKind, param: u64) {
        self.stats.tasks_limited += 1;
        self.events
            .push_back(Event::TaskLimited { id, kind, param });
    }

    /// Hands bytes to the connection of link `li` and notes the write.
    fn write(&mut self, li: usize, now: Instant, bytes: Vec<u8>) {
        let link = &mut self.links[li];
        let LinkState::Connected(s) = &mut link.state else {
            return;
        };
        self.stats.bytes_sent += bytes.len() as u64;
        s.emitted += bytes.len() as u64;
        self.actions.push_back(Action::Send {
            link: link.name.clone(),
            conn: s.conn,
            bytes: Bytes::from(bytes),
        });
        // Every write restarts the heartbeat interval (§7.4): a write the socket takes.
        // While the driver holds bytes the socket has not taken, handing it more is no
        // write; the interval restarts as they leave (`handle_unsent`). Design: restarted by
        // every hand-off, a link whose socket took nothing more (a path gone, its send
        // buffer full) never sent its heartbeat while the app kept starting tasks, and was
        // never dropped; those tasks, held unsent, each ended with a bare total timeout.
        if let Some(iv) = s.heartbeat_interval.filter(|_| s.unsent == 0) {
            self.timers.set(TimerKind::Heartbeat(li), now + iv);
        }
        self.data_event(now);
    }

    // ----- receiving ----------------------------------------------------------------------

    /// Decodes frames from `input`; returns how many bytes were consumed, or `None` when the
    /// connection went away while reading.
    fn read_frames(
        &mut self,
        li: usize,
        conn: ConnId,
        input: &Bytes,
        now: Instant,
    ) -> Option<usize> {
        let codec = self.cfg.codec.clone();
        let mut pos = 0;
        self.ranked_this_read = false;
        self.lane.run = None;
        while pos < input.len() {
            if self.lane.run.is_some() {
                // The frames a run takes, then the first it does not take, the regular way.
                pos = self.lane_run(li, input, pos, now);
                self.lane.run = None;
                if pos >= input.len() {
                    break;
                }
            }
            let rest = &input[pos..];
            match plugins::decode(&*codec, rest, &self.caught) {
                Ok(Decoded::Frame(frame)) => {
                    if frame.len == 0 || frame.len > rest.len() {
                        self.link_down(li, now, LinkError::Decode(BAD_FRAME_LEN), false);
                        return None;
                    }
                    let len = frame.len;
                    self.on_frame(li, input, pos, frame, now);
                    pos += len;
                    if !self.is_current(li, conn) {
                        return None;
                    }
                }
                Ok(Decoded::Incomplete { head, .. }) => {
                    if let Some(head) = head {
                        if let FrameKind::Response(seq) =
                            plugins::classify(&*codec, &head, &self.caught)
                        {
                            self.on_progress(li, conn, TaskId(seq.0), now);
                        }
                    }
                    break;
                }
                Err(e) => {
                    self.link_down(li, now, LinkError::Decode(e), false);
                    return None;
                }
            }
        }
        Some(pos)
    }

    fn is_current(&self, li: usize, conn: ConnId) -> bool {
        matches!(&self.links[li].state, LinkState::Connected(s) if s.conn == conn)
    }

    /// One decoded frame: `frame`'s ranges are relative to `input[at..]`.
    fn on_frame(&mut self, li: usize, input: &Bytes, at: usize, frame: RawFrame, now: Instant) {
        let buf = &input[at..];
        let Some(body) = buf.get(frame.body.clone()) else {
            self.link_down(li, now, LinkError::Decode(BAD_FRAME_LEN), false);
            return;
        };
        // Checked just above: the body lies within the input.
        let shared = |r: std::ops::Range<usize>| input.slice(at + r.start..at + r.end);
        match plugins::classify(&*self.cfg.codec, &frame.head, &self.caught) {
            FrameKind::Response(seq) => {
                let ext = frame
                    .extension
                    .filter(|r| buf.get(r.clone()).is_some())
                    .map(shared);
                self.on_response(
                    li,
                    TaskId(seq.0),
                    frame.head.cmd_id,
                    shared(frame.body.clone()),
                    ext,
                    frame.len,
                    now,
                );
            }
            FrameKind::Push => {
                self.stats.pushes += 1;
                // Design: copied, not a slice of the input. A push is held as long as its
                // slowest subscriber lags (the driver's push channel keeps 128), and a slice
                // kept the whole read block alive (or, for a frame that arrived in pieces,
                // the frame buffer grown to up to twice its size): 8 MiB held for 128
                // pushes of 64 bytes. A response is its one caller's, so it stays a slice.
                self.events.push_back(Event::Push {
                    link: self.links[li].name.clone(),
                    cmd_id: frame.head.cmd_id,
                    body: Bytes::copy_from_slice(body),
                });
            }
            FrameKind::HeartbeatReply => self.on_heartbeat_reply(li, now),
            FrameKind::IdentifyReply => self.on_identify_reply(li, body, now),
            // A kind this core does not know yet: nothing to do with it.
            _ => {}
        }
    }

    /// Response bytes for task `id` are arriving (header seen).
    fn on_progress(&mut self, li: usize, conn: ConnId, id: TaskId, now: Instant) {
        if let Some((g, i)) = self.lane.find(id) {
            // A response in pieces: the member becomes a regular task, whose timers follow
            // the pieces.
            self.demote_member(g, i);
        }
        let Some(task) = self.tasks.get_mut(&id) else {
            return;
        };
        let TaskState::Running(a) = &mut task.state else {
            return;
        };
        if a.conn != conn || task.link != li {
            return;
        }
        let gap = now.saturating_duration_since(a.last_progress.unwrap_or(a.sent_at));
        a.last_progress = Some(now);
        if let LinkState::Connected(s) = &mut self.links[li].state {
            s.probes_answered = 0;
        }
        let (p2p, slot) = (a.timeouts.packet_to_packet, task.slot);
        let read_write = a.sent_at + a.timeouts.read_write;
        if let Some(p) = task.profile_mut() {
            p.first_byte.get_or_insert(now);
            p.last_byte = Some(now);
        }
        self.timers
            .cancel_task_timer(slot, TimerKind::FirstPacket(id));
        self.timers
            .set_task_after(slot, TimerKind::PacketToPacket(id), now, p2p);
        // Armed at the first progress (see `send_task`); later progress leaves it as is.
        self.timers
            .set_task_at(slot, TimerKind::ReadWrite(id), read_write);
        if gap > WEAK_PACKET_GAP {
            self.mark_weak(now);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_response(
        &mut self,
        li: usize,
        id: TaskId,
        cmd_id: CmdId,
        body: Bytes,
        extension: Option<Bytes>,
        frame_len: usize,
        now: Instant,
    ) {
        // The response check's verdict when a lane member's response is refused: the member
        // is demoted and the regular path goes on with it (the check is asked once).
        let mut verdict = None;
        if let Some((g, i)) = self.lane.find(id) {
            let Some(answered) = self.lane_expects(li, g, i, id) else {
                return;
            };
            match self.check_response(id, cmd_id, &body) {
                ResponseVerdict::Accept => {
                    let response = Response {
                        cmd_id,
                        body,
                        extension,
                    };
                    self.lane_response(li, answered, response, frame_len, now);
                    return self.after_lane_success(li, now);
                }
                refused => {
                    self.demote_member(g, i);
                    verdict = Some(refused);
                }
            }
        }
        let Some(slot) = self.tasks.slot_of(&id) else {
            return;
        };
        let Some(task) = self.tasks.at_slot_mut(slot) else {
            return;
        };
        let TaskState::Running(a) = task.state else {
            return;
        };
        if task.link != li {
            return;
        }
        if let Some(p) = task.profile_mut() {
            p.first_byte.get_or_insert(now);
            p.last_byte = Some(now);
            p.decoded_at = Some(now);
            p.received_bytes = frame_len;
        }
        if let LinkState::Connected(s) = &mut self.links[li].state {
            if s.conn == a.conn && s.newest_answered.is_none_or(|(sent, _)| a.sent_ns >= sent) {
                s.newest_answered = Some((a.sent_ns, now));
            }
        }
        let verdict = match verdict {
            Some(v) => v,
            None => self.check_response(id, cmd_id, &body),
        };
        match verdict {
            ResponseVerdict::Accept => {
                let cost = Duration::from_nanos(self.timers.now_ns(now).saturating_sub(a.sent_ns));
                self.estimator.record(
                    now,
                    self.net.is_mobile(),
                    a.sent_len + frame_len,
                    Some(cost),
                );
                let response = Response {
                    cmd_id,
                    body,
                    extension,
                };
                self.finish_at(slot, now, Ok(response));
                self.after_success(li, now);
            }
            ResponseVerdict::Retry { code } => {
                // §4: Mars's default fail handle on the long link fails every running task
                // of the link (this one included) and drops the connection: a response the
                // app cannot use may come from a connection whose state (a session, a
                // cipher) has gone wrong, and another attempt on it would fail the same way.
                self.link_down(li, now, LinkError::ResponseRefused { code }, false);
            }
            ResponseVerdict::End { code } => {
                self.finish(id, now, Err(TaskError::Server { code }));
            }
        }
    }

    /// The response check's verdict on a response to task `id` (accepted without a check).
    fn check_response(&self, id: TaskId, cmd_id: CmdId, body: &[u8]) -> ResponseVerdict {
        match &self.cfg.response_check {
            Some(check) => check.check(id, cmd_id, body),
            None => ResponseVerdict::Accept,
        }
    }

    /// A task on link `li` ended with its response: what that says about the link.
    fn after_success(&mut self, li: usize, now: Instant) {
        // §11.5: a task success is a success of the link's address (rate-limited in the
        // ranking, so a busy link costs one lookup per task).
        if let LinkState::Connected(s) = &self.links[li].state {
            if !self.ranked_this_read && self.net.is_available() {
                self.ranking.record(now, s.addr, true, None);
                self.ranked_this_read = true;
            }
        }
        self.on_link_progress(li);
        // Any network success restarts zombies (§14).
        if !self.zombies.is_empty() {
            self.restart_all_zombies(now);
        }
    }

    /// [`after_success`](Self::after_success) for a lane member's response, with the usual
    /// case of a busy read first: the address's success already counted in this read, tasks
    /// still running, no resend window and no zombies leave only the link's counts to move.
    #[inline]
    fn after_lane_success(&mut self, li: usize, now: Instant) {
        let link = &mut self.links[li];
        // As a regular task's end does (`unlink_at`): tasks queued behind the link (held for
        // auth, or by a resend window) get a dispatch pass.
        if !link.queue.is_empty() {
            self.dirty[li] = true;
        }
        if let LinkState::Connected(s) = &mut link.state {
            if self.ranked_this_read
                && link.running > 0
                && s.window.is_none()
                && self.zombies.is_empty()
            {
                s.responses = s.responses.saturating_add(1);
                s.probes_answered = 0;
                return;
            }
        }
        self.after_success(li, now);
    }

    /// A task response arrived on link `li`: the resend window grows by one (slow start)
    /// and is lifted once it reaches the proven size.
    fn on_link_progress(&mut self, li: usize) {
        let proven = self
            .cfg
            .active_recovery()
            .map_or(usize::MAX, |r| r.proven_window);
        if self.links[li].running == 0 {
            // Nothing owed any more: no wake-up for the stall probe.
            self.timers.cancel(TimerKind::StallProbe(li));
        }
        let link = &mut self.links[li];
        let LinkState::Connected(s) = &mut link.state else {
            return;
        };
        s.responses = s.responses.saturating_add(1);
        s.probes_answered = 0;
        if let Some(w) = s.window {
            let grown = w.saturating_add(1);
            if grown >= proven {
                s.window = None;
                link.suspect = false;
            } else {
                s.window = Some(grown);
            }
            self.dirty[li] = true;
        }
    }

    // ----- heartbeat and identify ---------------------------------------------------------

    /// A heartbeat slot: send the identify frame (while pending) or a heartbeat, arm the
    /// reply timeout and ask the policy for the next interval. `late` is how far past its
    /// nominal deadline the slot fired.
    fn heartbeat_slot(&mut self, li: usize, now: Instant, late: Option<Duration>) {
        let timing = &self.cfg.timing;
        let name = self.links[li].name.clone();
        let ctx = self.heartbeat_ctx();
        let LinkState::Connected(s) = &mut self.links[li].state else {
            return;
        };
        if s.heartbeat_sent.is_some() {
            // The previous heartbeat is still unanswered; its own timeout decides.
            if let Some(iv) = s.heartbeat_interval {
                self.timers.set(TimerKind::Heartbeat(li), now + iv);
            }
            return;
        }
        // Every firing of the interval timer reports its lateness (zero when on time): doze
        // detection in the smart heartbeat counts on-time firings as evidence too. The slot
        // right after connect and a triggered one are no firings (§12).
        if let Some(late) = late {
            s.heartbeat.hook("on_fired_late", &self.caught, |p| {
                p.on_fired_late(now, late)
            });
        }
        let fired_late = late.is_some_and(|l| l >= timing.late_heartbeat_threshold);
        let mut frame = Vec::new();
        let codec = &self.cfg.codec;
        if matches!(s.identify, Identify::Pending) {
            let request = match &self.cfg.auth {
                Some(auth) => plugins::identify_request(&**auth, &name, &self.caught),
                None => IdentifyRequest::Never,
            };
            match request {
                IdentifyRequest::Now { cmd_id, body, hash } => {
                    let log = &self.caught;
                    if plugins::encode_identify(&**codec, cmd_id, &body, &mut frame, log).is_ok() {
                        s.identify = Identify::Sent { hash };
                    } else {
                        frame.clear();
                    }
                }
                IdentifyRequest::Never => s.identify = Identify::Finished,
                _ => {}
            }
        }
        if frame.is_empty()
            && plugins::encode_heartbeat(&**codec, &mut frame, &self.caught).is_err()
        {
            frame.clear();
        }
        s.heartbeat_interval =
            next_heartbeat_interval(&**codec, &mut s.heartbeat, now, &ctx, &self.caught);
        s.heartbeat_off = s.heartbeat_interval.is_none();
        if s.heartbeat_off {
            self.timers
                .set(TimerKind::Heartbeat(li), now + HEARTBEAT_RECHECK);
        }
        if frame.is_empty() {
            // Nothing could be framed: keep the schedule, expect no reply.
            if let Some(iv) = s.heartbeat_interval {
                self.timers.set(TimerKind::Heartbeat(li), now + iv);
            }
            return;
        }
        s.heartbeat_sent = Some(now);
        self.stats.heartbeats_sent += 1;
        let reply = if fired_late {
            timing.late_heartbeat_reply_timeout
        } else {
            timing.heartbeat_reply_timeout
        };
        self.timers.set(TimerKind::HeartbeatReply(li), now + reply);
        self.write(li, now, frame);
    }

    /// When the policy turned periodic heartbeats off, the heartbeat timer asks it again:
    /// still off, the check comes back after [`HEARTBEAT_RECHECK`]; on again (an app that
    /// changed its settings), the next heartbeat is due one interval from now. Returns
    /// whether the firing was such a check (no heartbeat is sent by it).
    ///
    /// Design: asked once and never again, a policy that answered "off" left a live link
    /// without heartbeats for good, though its settings allowed them again.
    fn heartbeat_recheck(&mut self, li: usize, now: Instant) -> bool {
        let ctx = self.heartbeat_ctx();
        let LinkState::Connected(s) = &mut self.links[li].state else {
            return false;
        };
        if !s.heartbeat_off {
            return false;
        }
        let interval =
            next_heartbeat_interval(&*self.cfg.codec, &mut s.heartbeat, now, &ctx, &self.caught);
        let at = match interval {
            Some(iv) => {
                s.heartbeat_off = false;
                s.heartbeat_interval = Some(iv);
                now + iv
            }
            None => now + HEARTBEAT_RECHECK,
        };
        self.timers.set(TimerKind::Heartbeat(li), at);
        true
    }

    fn on_heartbeat_reply(&mut self, li: usize, now: Instant) {
        let LinkState::Connected(s) = &mut self.links[li].state else {
            return;
        };
        let Some(sent) = s.heartbeat_sent.take() else {
            return;
        };
        let rtt = now.saturating_duration_since(sent);
        // Design: the first reply replaces the connect time (as RFC 6298 takes the first
        // sample whole). A connect time includes the handshakes and any lost SYN's 1 s
        // resend: averaged in at 1/8 it kept the stall probe's timings several times the
        // path's round trip for dozens of replies (the lab, at 30 % loss and 300 ms: a
        // 1.3 s connect gave probes 4 s of quiet and a 7 s reply timeout, later than the
        // tasks' own first-packet timeouts).
        s.rtt = if std::mem::replace(&mut s.rtt_measured, true) {
            (s.rtt * 7 + rtt) / 8
        } else {
            rtt
        };
        s.probing = None;
        s.inspecting = false;
        // A stall probe is not one of the policy's heartbeats.
        if std::mem::take(&mut s.probe_heartbeat) {
            s.last_probe_reply = Some(now);
        } else {
            s.heartbeat
                .hook("on_ack", &self.caught, |p| p.on_ack(now, rtt));
        }
        self.timers.cancel(TimerKind::HeartbeatReply(li));
        self.events.push_back(Event::HeartbeatAcked {
            link: self.links[li].name.clone(),
            rtt,
        });
    }

    fn on_identify_reply(&mut self, li: usize, body: &[u8], now: Instant) {
        let name = self.links[li].name.clone();
        let LinkState::Connected(s) = &mut self.links[li].state else {
            return;
        };
        // §7.7: a frame is an identify reply only while an identify is outstanding; any other
        // is dropped, and the link's identify state stays as it is.
        let Identify::Sent { hash } = &mut s.identify else {
            return;
        };
        let hash = std::mem::take(hash);
        s.identify = Identify::Pending;
        let addr = s.addr;
        let verdict = match &self.cfg.auth {
            Some(auth) => plugins::on_identify_response(&**auth, &name, body, &hash, &self.caught),
            None => IdentifyVerdict::Accepted,
        };
        self.on_heartbeat_reply(li, now);
        match verdict {
            IdentifyVerdict::Accepted => {
                self.links[li].refused = false;
                if let LinkState::Connected(s) = &mut self.links[li].state {
                    s.identify = Identify::Finished;
                }
                self.events.push_back(Event::AddrOutcome {
                    link: name,
                    addr,
                    success: true,
                });
            }
            IdentifyVerdict::Rejected => {
                self.links[li].refused = true;
                self.link_down(li, now, LinkError::IdentifyRejected, false);
            }
            // Retry (and verdicts this core does not know): ask again at the next slot.
            _ => {}
        }
    }

    /// The stall probe of link `li` (Phobos, see [`Recovery`](crate::Recovery)): when a task
    /// is owed a response and the link has been quiet for the probe time, a heartbeat goes
    /// out with the probe's short reply timeout (or the one in flight gets that deadline);
    /// otherwise the check is re-armed for when it could be due.
    fn stall_probe(&mut self, li: usize, now: Instant) {
        let Some(rec) = self.cfg.active_recovery().filter(|r| r.stall_probe) else {
            return;
        };
        let link = &self.links[li];
        let LinkState::Connected(s) = &link.state else {
            return;
        };
        // Since when the link owes a byte: the oldest running task's last progress, or its
        // send time plus its declared server cost. Long polls owe nothing. With it, when a
        // task without progress may still be leaving: its request at the minimum rate.
        let rate = if self.net.is_mobile() {
            self.cfg.timing.min_rate.1
        } else {
            self.cfg.timing.min_rate.0
        }
        .max(1);
        let owed = self
            .owed_on(li)
            .filter_map(|t| {
                let TaskState::Running(a) = &t.state else {
                    return None;
                };
                Some(match a.last_progress {
                    Some(p) => (p, TimeoutLevel::PacketToPacket, p),
                    None => (
                        a.sent_at + t.spec.server_cost.unwrap_or_default(),
                        TimeoutLevel::FirstPacket,
                        a.sent_at + Duration::from_millis(a.sent_len as u64 * 1000 / rate),
                    ),
                })
            })
            .min();
        let Some((owed, level, sent_by)) = owed else {
            // Nothing owed: the next send arms the check again.
            return;
        };
        // Bytes received, or bytes the socket took after holding them (the peer acknowledges
        // them), show the path alive.
        let alive_at = s.last_recv.max(s.write_progress);
        let quiet_since = alive_at.map_or(owed, |r| r.max(owed));
        let after = rec.probe_after(s.rtt) * (1u32 << s.probes_answered.min(4));
        // Design: a probe queues behind what was written before it, so while a large
        // request may still be leaving (at the minimum rate the first-packet timeout allows
        // for, `1000 × len / rate`), its reply cannot come in time: a 900 KB request on a
        // 160 KB/s uplink had the link dropped as stalled every 4–5 s and never got through.
        // No probe goes before the owed request should have left; the first-packet timeout
        // still bounds a link that stalls meanwhile. (Counted per request, not for all that
        // was written: at the minimum rate a busy link's total would run hours ahead.)
        let due = (quiet_since + after).max(sent_by);
        if now < due {
            self.timers.set(TimerKind::StallProbe(li), due);
            return;
        }
        let reply_due = now + rec.probe_timeout(s.rtt);
        if s.heartbeat_sent.is_some() {
            // A heartbeat (or identify) is already unanswered: it is the probe.
            if let LinkState::Connected(s) = &mut self.links[li].state {
                s.probing = Some(level);
            }
            self.timers
                .set_earliest(TimerKind::HeartbeatReply(li), reply_due);
            return;
        }
        let mut frame = Vec::new();
        if plugins::encode_heartbeat(&*self.cfg.codec, &mut frame, &self.caught).is_err()
            || frame.is_empty()
        {
            return;
        }
        if let LinkState::Connected(s) = &mut self.links[li].state {
            s.heartbeat_sent = Some(now);
            s.probing = Some(level);
            s.probe_heartbeat = true;
        }
        self.stats.heartbeats_sent += 1;
        self.stats.stall_probes += 1;
        self.timers.set(TimerKind::HeartbeatReply(li), reply_due);
        self.write(li, now, frame);
    }

    fn heartbeat_ctx(&self) -> HeartbeatContext {
        HeartbeatContext {
            net: self.net,
            net_label: self.net_label.clone(),
            app_active: self.activity.active,
        }
    }

    // ----- signalling keeper --------------------------------------------------------------

    fn send_keep_frame(&mut self, now: Instant) {
        let li = self.cfg.main_link();
        let mut frame = Vec::new();
        let head = FrameHead::new(
            phobos_plugin_api::codec::SIGNAL_KEEP_CMD,
            phobos_plugin_api::codec::SIGNAL_KEEP_SEQ,
        );
        let connected = matches!(self.links[li].state, LinkState::Connected(_));
        if connected
            && plugins::encode(&*self.cfg.codec, head, &[], &[], &mut frame, &self.caught).is_ok()
        {
            self.write(li, now, frame);
        } else {
            self.data_event(now);
        }
    }

    /// Any read or write: the keeper postpones its next frame or stops (§7.11).
    fn data_event(&mut self, now: Instant) {
        if !self.keeper.keeping {
            return;
        }
        let touched = self
            .keeper
            .last_touch
            .is_some_and(|t| now.saturating_duration_since(t) <= self.cfg.timing.signal_keep_time);
        if touched {
            self.timers.set(
                TimerKind::SignalKeep,
                now + self.cfg.timing.signal_keep_period,
            );
        } else {
            self.keeper.keeping = false;
            self.timers.cancel(TimerKind::SignalKeep);
        }
    }

    // ----- auth ---------------------------------------------------------------------------

    fn auth_host_of<'a>(&'a self, task: &'a Task) -> &'a str {
        self.auth_host_for(&task.spec, task.link)
    }

    /// The host a task of `spec` on link `li` authenticates with: its own, or the link's
    /// first.
    fn auth_host_for<'a>(&'a self, spec: &'a TaskSpec, li: usize) -> &'a str {
        match &spec.auth_host {
            Some(h) => h,
            None => self.cfg.links[li].hosts.first().map_or("", String::as_str),
        }
    }

    fn is_authed(&self, host: &str) -> bool {
        let log = &self.caught;
        self.cfg
            .auth
            .as_ref()
            .is_none_or(|a| plugins::is_authed(&**a, host, log))
    }

    fn request_auth(&mut self, now: Instant, host: &str) {
        let idx = match self.auth_hosts.iter().position(|h| h.host == host) {
            Some(i) => i,
            None => {
                self.auth_hosts.push(AuthHost {
                    host: host.to_owned(),
                    state: AuthState::Idle,
                });
                self.auth_hosts.len() - 1
            }
        };
        if self.auth_hosts[idx].state == AuthState::Idle {
            self.auth_hosts[idx].state = AuthState::InFlight;
            self.timers
                .set(TimerKind::AuthLimit(idx), now + self.cfg.timing.auth_limit);
            self.actions.push_back(Action::EnsureAuth {
                host: host.to_owned(),
            });
        }
    }

    // ----- connecting ---------------------------------------------------------------------

    /// Something wants link `li` up: connect now or arm the paced reconnect (§7.9).
    ///
    /// Design: with no network nothing is attempted (the attempt could only fail and would
    /// cost waiting tasks an attempt); tasks wait for [`Engine::set_network`] to report a
    /// network, which connects at once, or for their own total timeout. Only
    /// [`Engine::connect_link`] still tries.
    fn want_connect(&mut self, li: usize, now: Instant, trigger: Trigger) {
        let link = &self.links[li];
        if !matches!(link.state, LinkState::Idle) || link.refused || !self.net.is_available() {
            return;
        }
        let env = PacingEnv {
            bucket: self.activity.bucket(now),
            has_account: self.has_account,
            has_network: self.net.is_available(),
        };
        let wait = link.monitor.wait(now, trigger, env, &mut self.rng);
        if wait.is_zero() {
            self.start_cycle(li, now, Some(trigger));
        } else {
            self.timers
                .set_earliest(TimerKind::Reconnect(li), now + wait);
        }
    }

    /// Keep-alive links that are down re-evaluate the automatic reconnect (§7.9: on every
    /// foreground or activity change). A link never tried connects at once, as in Mars
    /// (its previous attempt counts as long ago).
    fn reevaluate_keep_alive(&mut self, now: Instant) {
        for li in 0..self.links.len() {
            let idle = matches!(self.links[li].state, LinkState::Idle);
            if idle && self.cfg.links[li].keep_alive {
                self.want_connect(li, now, Trigger::Automatic);
            }
        }
    }

    /// §3.2 step 6: a task that may use the long link, started in the foreground within
    /// [`TASK_CONNECT_WINDOW`] of the last foreground change while its link is down, asks
    /// for the link (the task row of §7.9), though it goes short itself.
    fn ask_for_long_link(&mut self, now: Instant, spec: &TaskSpec) {
        if !spec.channel.allows_long()
            || spec.cmd_id == CmdId(0)
            || !self.activity.foreground
            || now.saturating_duration_since(self.activity.last_change) > TASK_CONNECT_WINDOW
        {
            return;
        }
        if let Some(&li) = self.link_by_name.get(&spec.link) {
            self.want_connect(li, now, Trigger::Task);
        }
    }

    /// Starts a connect cycle: resolve (unless the link has fixed addresses), then race.
    ///
    /// `cause` is the pacing decision's trigger; `None` when the app forced the cycle.
    fn start_cycle(&mut self, li: usize, now: Instant, cause: Option<Trigger>) {
        self.timers.cancel(TimerKind::Reconnect(li));
        self.timers.cancel(TimerKind::ReconnectWake(li));
        let inactive = !self.activity.active;
        let link = &mut self.links[li];
        link.monitor.on_cycle_start(now, inactive, cause);
        self.events.push_back(Event::LinkStatus {
            link: link.name.clone(),
            status: LinkStatus::Connecting,
            reason: None,
        });
        let lc = &self.cfg.links[li];
        if !lc.addrs.is_empty() {
            // A fixed list is a debug list: used alone, in the order given (§10.2), each
            // address once (a repeat took a place of `max_addrs` and a stagger, and was
            // dialled again in the same cycle).
            let mut seen: Vec<IpPort> = Vec::with_capacity(lc.addrs.len().min(lc.max_addrs));
            let candidates = lc
                .addrs
                .iter()
                .filter(|addr| {
                    let new = !seen.contains(addr);
                    if new {
                        seen.push(**addr);
                    }
                    new
                })
                .take(lc.max_addrs)
                .map(|&addr| Candidate {
                    addr,
                    source: AddrSource::Debug,
                })
                .collect();
            self.begin_dial(li, now, candidates);
            return;
        }
        link.state = LinkState::Resolving {
            walk: ChainWalk::new(lc.hosts.clone()),
        };
        self.walk_chain(li, now);
    }

    /// The chain's sources: the configured ones, or one implicit primary source.
    fn sources(&self) -> Vec<SourceSpec> {
        if self.cfg.ip_sources.is_empty() {
            vec![SourceSpec::primary(self.cfg.timing.resolve_timeout)]
        } else {
            self.cfg.ip_sources.clone()
        }
    }

    /// Asks the next source of the chain, or, when the walk is over, plans the addresses
    /// and starts the race.
    fn walk_chain(&mut self, li: usize, now: Instant) {
        let sources = self.sources();
        let LinkState::Resolving { walk, .. } = &mut self.links[li].state else {
            return;
        };
        if let Some((host, source)) = walk.next_call(&sources) {
            self.actions.push_back(Action::Resolve {
                link: self.links[li].name.clone(),
                host,
                source,
                purpose: LinkPurpose::LongLink,
            });
            self.timers
                .set(TimerKind::Resolve(li), now + sources[source].limit);
            return;
        }
        let lc = &self.cfg.links[li];
        let rules = PlanRules {
            profile: self.cfg.connect_profile,
            ports: &lc.ports,
            room: lc.max_addrs,
            active: self.activity.active,
        };
        let candidates = self.ranking.plan(walk.answers(), rules, now, &mut self.rng);
        self.begin_dial(li, now, candidates);
    }

    fn begin_dial(&mut self, li: usize, now: Instant, candidates: Vec<Candidate>) {
        let dialer = Dialer::new(candidates, DialRules::for_config(&self.cfg));
        if dialer.is_empty() {
            self.links[li].state = LinkState::Idle;
            self.cycle_failed(li, now, LinkError::NoAddress);
            return;
        }
        let cycle_start = self.links[li].monitor.last_attempt.unwrap_or(now);
        self.links[li].state = LinkState::Connecting {
            dialer,
            cycle_start,
        };
        self.advance_dial(li, now);
    }

    /// Aborts every attempt of link `li`'s race still in flight (another one won, or the
    /// cycle is interrupted).
    fn abort_race(&mut self, li: usize, now: Instant) {
        let LinkState::Connecting { dialer, .. } = &mut self.links[li].state else {
            return;
        };
        self.timers.cancel(TimerKind::RaceStep(li));
        for a in dialer.abort_all(now) {
            self.conns.remove(&a.conn);
            self.cancel_attempt_timers(a.conn);
            self.actions.push_back(Action::Abort { attempt: a.conn });
        }
    }

    /// Emits the [`Event::ConnectCycle`] of link `li`'s race (state still `Connecting`).
    fn report_cycle(&mut self, li: usize, now: Instant, connected: bool) {
        let LinkState::Connecting {
            dialer,
            cycle_start,
        } = &self.links[li].state
        else {
            return;
        };
        let start = *cycle_start;
        let since = |t: Instant| t.saturating_duration_since(start);
        let attempts = dialer
            .attempts()
            .iter()
            .map(|l| {
                let (ended, outcome) = l.ended.unwrap_or((now, crate::io::AttemptOutcome::Aborted));
                AttemptReport {
                    addr: l.candidate.addr,
                    source: l.candidate.source,
                    started_after: since(l.started),
                    ended_after: since(ended),
                    outcome,
                }
            })
            .collect();
        self.events.push_back(Event::ConnectCycle(ConnectReport {
            link: self.links[li].name.clone(),
            profile: self.cfg.connect_profile,
            attempts,
            planned: dialer.planned(),
            connected_after: connected.then(|| since(now)),
            elapsed: since(now),
        }));
    }

    /// Starts whatever attempts the race allows now and arms the next step.
    fn advance_dial(&mut self, li: usize, now: Instant) {
        let timing = &self.cfg.timing;
        loop {
            let LinkState::Connecting { dialer, .. } = &mut self.links[li].state else {
                return;
            };
            match dialer.step(now) {
                DialStep::Start(addr) => {
                    let conn = ConnId(self.next_conn);
                    self.next_conn += 1;
                    let delay = stagger(&self.cfg, self.ranking.rtt(&addr), self.srtt);
                    let origin = dialer.started(now, conn, delay);
                    self.stats.connects_started += 1;
                    self.conns.insert(conn, li);
                    self.timers.set(
                        TimerKind::ConnectAttempt(conn),
                        origin + timing.connect_timeout,
                    );
                    self.actions.push_back(Action::Connect {
                        link: self.links[li].name.clone(),
                        attempt: conn,
                        addr,
                    });
                }
                DialStep::WaitUntil(at) => {
                    self.timers.set(TimerKind::RaceStep(li), at);
                    return;
                }
                DialStep::Idle => {
                    self.timers.cancel(TimerKind::RaceStep(li));
                    return;
                }
                DialStep::Exhausted => {
                    let error = match dialer.last_error() {
                        None => LinkError::ConnectTimeout,
                        Some(e) => LinkError::Dial(dial_failure(e)),
                    };
                    self.report_cycle(li, now, false);
                    self.links[li].state = LinkState::Idle;
                    self.cycle_failed(li, now, error);
                    return;
                }
            }
        }
    }

    /// A deadline of connect attempt `conn` passed: its connect timeout, or (`handshake`)
    /// the handshake timeout armed by [`handle_established`](Self::handle_established). The
    /// attempt fails as a timeout; after a handshake timeout its address may be dialed again
    /// at once ([`Dialer::handshake_timed_out`]).
    fn on_attempt_deadline(&mut self, conn: ConnId, now: Instant, handshake: bool) {
        self.cancel_attempt_timers(conn);
        let Some(&li) = self.conns.get(&conn) else {
            return;
        };
        let failed = match &mut self.links[li].state {
            LinkState::Connecting { dialer, .. } if handshake => {
                dialer.handshake_timed_out(now, conn)
            }
            LinkState::Connecting { dialer, .. } => dialer.failed(now, conn, None),
            _ => None,
        };
        // A handshake deadline outlived by its attempt (which connected meanwhile) is
        // nothing; a connect deadline always ends the attempt.
        if handshake && failed.is_none() {
            return;
        }
        self.conns.remove(&conn);
        self.actions.push_back(Action::Abort { attempt: conn });
        if let Some(a) = failed {
            self.stats.connects_failed += 1;
            // A hedge times out with the attempt it repeats: one failure, not several.
            if !a.hedge {
                self.record_addr(li, now, a.addr, false, None);
            }
            self.advance_dial(li, now);
        }
    }

    /// Disarms both deadlines of connect attempt `conn` (connect and handshake).
    fn cancel_attempt_timers(&mut self, conn: ConnId) {
        self.timers.cancel(TimerKind::ConnectAttempt(conn));
        self.timers.cancel(TimerKind::Handshake(conn));
    }

    /// A connect cycle failed: tasks waiting for the link lose an attempt.
    ///
    /// Design: Mars lets queued tasks wait through failed cycles until their total timeout.
    /// Here each failed cycle counts as a failed attempt of every task that was waiting for
    /// it (not those still waiting for auth), so a dead server ends tasks with a dial or
    /// connect-timeout error after their retries instead of a bare total timeout.
    fn cycle_failed(&mut self, li: usize, now: Instant, error: LinkError) {
        self.relieve_weak(now);
        self.timers.cancel(TimerKind::Resolve(li));
        self.timers.cancel(TimerKind::RaceStep(li));
        self.events.push_back(Event::LinkStatus {
            link: self.links[li].name.clone(),
            status: LinkStatus::ConnectFailed,
            reason: Some(error.clone()),
        });
        let task_error = match &error {
            LinkError::ConnectTimeout => TaskError::Timeout(TimeoutLevel::Connect),
            LinkError::Dial(d) => TaskError::Dial(*d),
            _ => TaskError::Dial(DialFailure::NoAddress),
        };
        let waiting: Vec<TaskId> = self.links[li]
            .queue
            .iter()
            .map(|k| k.2)
            .filter(|id| {
                self.tasks.get(id).is_some_and(|t| {
                    !(t.spec.needs_auth && !t.auth_cleared && !self.is_authed(self.auth_host_of(t)))
                })
            })
            .collect();
        for id in waiting {
            self.fail_attempt(id, now, task_error.clone());
        }
        self.pause_retries(li, now);
        if self.cfg.links[li].keep_alive {
            self.timers.set(
                TimerKind::ReconnectWake(li),
                now + self.cfg.timing.reconnect_wake,
            );
        }
        self.dirty[li] = true;
    }

    /// An outcome of `addr` (§11.5): into the ranking (ignored without a network, like
    /// Mars) and out as [`Event::AddrOutcome`].
    fn record_addr(
        &mut self,
        li: usize,
        now: Instant,
        addr: IpPort,
        success: bool,
        rtt: Option<Duration>,
    ) {
        if self.net.is_available() {
            self.ranking.record(now, addr, success, rtt);
        }
        self.report_addr(li, addr, success);
    }

    fn report_addr(&mut self, li: usize, addr: IpPort, success: bool) {
        self.events.push_back(Event::AddrOutcome {
            link: self.links[li].name.clone(),
            addr,
            success,
        });
    }

    /// Takes link `li` down for `error`. `by_driver`: the driver reported the close, so no
    /// [`Action::Close`] is needed.
    fn link_down(&mut self, li: usize, now: Instant, error: LinkError, by_driver: bool) {
        self.demote_all();
        let old = std::mem::replace(&mut self.links[li].state, LinkState::Idle);
        let name = self.links[li].name.clone();
        let local = matches!(error, LinkError::NetworkChange | LinkError::Reset);
        match old {
            LinkState::Idle => return,
            LinkState::Resolving { walk, .. } => {
                self.timers.cancel(TimerKind::Resolve(li));
                if let Some((host, source)) = walk.in_flight() {
                    self.actions.push_back(Action::CancelResolve {
                        link: name.clone(),
                        host,
                        source,
                    });
                }
                self.events.push_back(Event::LinkStatus {
                    link: name.clone(),
                    status: LinkStatus::ConnectFailed,
                    reason: Some(error.clone()),
                });
            }
            old @ LinkState::Connecting { .. } => {
                self.links[li].state = old;
                self.abort_race(li, now);
                self.report_cycle(li, now, false);
                self.links[li].state = LinkState::Idle;
                self.events.push_back(Event::LinkStatus {
                    link: name.clone(),
                    status: LinkStatus::ConnectFailed,
                    reason: Some(error.clone()),
                });
            }
            LinkState::Connected(mut s) => {
                self.stats.links_dropped += 1;
                self.conns.remove(&s.conn);
                self.timers.cancel(TimerKind::Heartbeat(li));
                self.timers.cancel(TimerKind::HeartbeatReply(li));
                self.timers.cancel(TimerKind::StallProbe(li));
                // An unanswered stall probe says nothing about the policy's interval.
                let hb_timeout =
                    matches!(error, LinkError::Socket(SocketFailure::HeartbeatTimeout));
                if hb_timeout && !s.probe_heartbeat && s.probing.is_none() {
                    s.heartbeat
                        .hook("on_timeout", &self.caught, |p| p.on_timeout(now));
                } else {
                    s.heartbeat
                        .hook("on_disconnect", &self.caught, |p| p.on_disconnect(now));
                }
                if let Some(r) = self.cfg.active_recovery() {
                    if !local {
                        let link = &mut self.links[li];
                        link.suspect = true;
                        // Design: damaged bytes (a malformed frame, a TLS record that failed
                        // its check) show a path that carries bytes, only not intact ones: a
                        // new connection is worth trying at once, a few times without a
                        // response in between, then the table paces again (a server that
                        // speaks another protocol must not cause a connect storm).
                        let damaged = matches!(
                            error,
                            LinkError::Decode(_) | LinkError::Socket(SocketFailure::Damaged)
                        );
                        if s.responses > 0 {
                            link.damaged_reconnects = 0;
                        }
                        let unpaid = s.responses == 0
                            && damaged
                            && link.damaged_reconnects < r.damaged_reconnects;
                        if unpaid {
                            link.damaged_reconnects += 1;
                        }
                        link.monitor.fast_reconnect =
                            r.reconnect_after_progress && (s.responses > 0 || unpaid);
                    }
                }
                if !by_driver {
                    self.actions.push_back(Action::Close {
                        link: name.clone(),
                        conn: s.conn,
                        reason: error.clone(),
                    });
                }
                // Design: local disconnects (network change, app reset) are not the server's
                // fault and are not reported as address failures (Mars does, §18.8); nor is
                // a refused identify (an account problem: every address would refuse it) or
                // a response the app refused (the app's verdict, not the address's).
                if !local
                    && !matches!(
                        error,
                        LinkError::IdentifyRejected | LinkError::ResponseRefused { .. }
                    )
                {
                    self.record_addr(li, now, s.addr, false, None);
                }
                self.events.push_back(Event::LinkStatus {
                    link: name.clone(),
                    status: LinkStatus::Disconnected,
                    reason: Some(error.clone()),
                });
                if li == self.cfg.main_link() {
                    let at = now + self.timing_sync_interval();
                    self.timers.set(TimerKind::TimingSync, at);
                }
            }
        }
        let task_error = match &error {
            LinkError::Socket(f) => TaskError::Socket(*f),
            LinkError::Decode(e) => CodecFailure::Decode(*e).into(),
            LinkError::Stalled(level) => TaskError::Timeout(*level),
            LinkError::IdentifyRejected => AuthFailure::IdentifyRejected(name.to_string()).into(),
            LinkError::ResponseRefused { code } => CodecFailure::Response { code: *code }.into(),
            _ => LocalError::Interrupted.into(),
        };
        let mut running = self.running_on(li);
        running.sort_unstable();
        for id in running {
            self.fail_attempt(id, now, task_error.clone());
        }
        if !local {
            // Design (Phobos): after a connection that delivered responses, the retried tasks
            // go out on the next connection without the retry pause: the reconnect is the
            // pause, and the resend window paces them on it.
            if !self.links[li].monitor.fast_reconnect {
                self.pause_retries(li, now);
            }
            if self.cfg.links[li].keep_alive && !self.links[li].refused {
                self.timers.set(
                    TimerKind::ReconnectWake(li),
                    now + self.cfg.timing.reconnect_wake,
                );
            }
            // Design (Phobos): tasks this drop saved as zombies wait for the main link to
            // connect (§14 restarts them then), so they want it back as queued tasks do: the
            // task row of the reconnect table (at once after a connection that delivered
            // responses), not the automatic row, whose 15 s outlast most task budgets.
            let zombies_wait = self.zombies.values().any(|z| z.task.link() == Some(li));
            if zombies_wait && li == self.cfg.main_link() && self.cfg.active_recovery().is_some() {
                self.want_connect(li, now, Trigger::Task);
            }
        }
        self.dirty[li] = true;
    }

    /// Retried tasks of link `li` wait for the retry pause (§3.3).
    fn pause_retries(&mut self, li: usize, now: Instant) {
        let until = now + self.cfg.timing.retry_pause;
        self.links[li].retry_pause_until = Some(until);
        self.timers.set(TimerKind::RetryPause(li), until);
    }

    // ----- timers -------------------------------------------------------------------------

    fn on_timer(&mut self, kind: TimerKind, at: Instant, now: Instant) {
        match kind {
            TimerKind::TaskTotal(id) => {
                // Design: a total timeout ends only its own task; it never tears down the link
                // or fails the link's other tasks (Mars does, §18.7).
                self.finish(id, now, Err(TaskError::Timeout(TimeoutLevel::Total)));
            }
            TimerKind::FirstPacket(id) => {
                self.on_attempt_timeout(id, TimeoutLevel::FirstPacket, now)
            }
            TimerKind::PacketToPacket(id) => {
                self.on_attempt_timeout(id, TimeoutLevel::PacketToPacket, now)
            }
            TimerKind::ReadWrite(id) => self.on_attempt_timeout(id, TimeoutLevel::ReadWrite, now),
            TimerKind::ZombieExpiry(id) => {
                if let Some(mut z) = self.zombies.remove(&id) {
                    self.schedule_zombie_restart();
                    let profile = z.task.take_profile(now);
                    self.emit_end(
                        id,
                        z.task.tag(),
                        Err(TaskError::Timeout(TimeoutLevel::Total)),
                        profile,
                        now,
                    );
                }
            }
            TimerKind::ZombieRestart => self.restart_due_zombies(now),
            TimerKind::RetryPause(li) => {
                self.links[li].retry_pause_until = None;
                self.dirty[li] = true;
            }
            TimerKind::Resolve(li) => {
                // The source in flight took too long: it counts as an empty answer and the
                // walk moves on to the next source.
                let link = &mut self.links[li];
                if let LinkState::Resolving { walk, .. } = &mut link.state {
                    if let Some((host, source)) = walk.in_flight() {
                        self.actions.push_back(Action::CancelResolve {
                            link: link.name.clone(),
                            host,
                            source,
                        });
                    }
                    walk.answer(Vec::new());
                    self.walk_chain(li, now);
                }
            }
            TimerKind::ConnectAttempt(conn) => self.on_attempt_deadline(conn, now, false),
            TimerKind::Handshake(conn) => self.on_attempt_deadline(conn, now, true),
            TimerKind::RaceStep(li) => self.advance_dial(li, now),
            TimerKind::Heartbeat(li) => {
                let late = now.saturating_duration_since(at);
                if !self.heartbeat_recheck(li, now) {
                    self.heartbeat_slot(li, now, Some(late));
                }
            }
            TimerKind::HeartbeatReply(li) => {
                // Silence may be loss: ask the transport first (Phobos's transport patience;
                // the answer comes back through `handle_transport`).
                let patience = self
                    .cfg
                    .active_recovery()
                    .is_some_and(|r| r.transport_patience);
                let link = &mut self.links[li];
                if let LinkState::Connected(s) = &mut link.state {
                    if patience && !s.inspecting {
                        s.inspecting = true;
                        self.timers
                            .set(TimerKind::HeartbeatReply(li), now + crate::INSPECT_GRACE);
                        self.actions.push_back(Action::InspectTransport {
                            link: link.name.clone(),
                            conn: s.conn,
                        });
                        return;
                    }
                }
                self.heartbeat_unanswered(li, now);
            }
            TimerKind::StallProbe(li) => self.stall_probe(li, now),
            TimerKind::ReconnectWake(li) => self.want_connect(li, now, Trigger::Automatic),
            TimerKind::Reconnect(li) => self.want_connect(li, now, Trigger::Rebuild),
            TimerKind::Inactivity => {
                if !self.activity.foreground && self.activity.active {
                    self.activity.active = false;
                    self.flow.set_active(now, false);
                    self.rearm_timing_sync(now);
                }
            }
            TimerKind::SignalKeep => {
                if self.keeper.keeping {
                    self.send_keep_frame(now);
                }
            }
            // Kept by the lane, not in the table (`lane::Lane::wake`), and its work is done
            // on the way in: `handle_timeout` demotes every lane member.
            TimerKind::LaneWake => {}
            TimerKind::TimingSync => {
                if self.net.is_available() {
                    self.events.push_back(Event::RequestSync);
                }
                let at = now + self.timing_sync_interval();
                self.timers.set(TimerKind::TimingSync, at);
            }
            TimerKind::AuthRetry(idx) => {
                if let Some(h) = self.auth_hosts.get_mut(idx) {
                    h.state = AuthState::Idle;
                }
                self.mark_all_dirty();
            }
            TimerKind::AuthLimit(idx) => {
                // Design: a login that never answers would hold its host's tasks until their
                // own timeouts, and no new login would start. It counts as a transient
                // failure: asked again after `auth_retry`. Its late answer, if one comes, is
                // still the plugin's verdict and is taken as any answer is.
                let host = match self.auth_hosts.get(idx) {
                    Some(h) if h.state == AuthState::InFlight => h.host.clone(),
                    _ => return,
                };
                let limit = self.cfg.timing.auth_limit;
                self.handle_auth(
                    now,
                    &host,
                    Err(AuthError::Transient(format!(
                        "no answer within {} ms",
                        limit.as_millis()
                    ))),
                );
            }
        }
    }

    /// The heartbeat reply of link `li` is overdue, and the transport (if asked) did not
    /// explain the silence: the link is dropped.
    fn heartbeat_unanswered(&mut self, li: usize, now: Instant) {
        // Design: an unanswered stall probe is the owed task's timeout, found early: the link
        // is dropped as stalled, as the task's own timeout would have done. (A heartbeat of
        // the policy that the probe only hurried stays a heartbeat timeout.)
        if let LinkState::Connected(s) = &self.links[li].state {
            if let (Some(level), true) = (s.probing, s.probe_heartbeat) {
                self.link_down(li, now, LinkError::Stalled(level), false);
                return;
            }
        }
        // §18.1: an unanswered heartbeat drops the link.
        self.stats.heartbeat_timeouts += 1;
        self.link_down(
            li,
            now,
            LinkError::Socket(SocketFailure::HeartbeatTimeout),
            false,
        );
    }

    /// A per-attempt timeout of a running task.
    ///
    /// Design (shared fate, §6.2/§7.10): Mars fails every running task of the link and
    /// drops it whenever one task times out. Here the link is judged by its traffic: if it
    /// answered a task *sent after this one* since this task's last progress, within the
    /// last packet-to-packet interval, the server has read past this request and the link
    /// is alive: only this task's attempt fails (it is retried after the retry pause, the
    /// link and its other tasks are spared). Answers to earlier requests do not count: a
    /// connection stuck behind a retransmission delivers those, in order, while everything
    /// behind the lost segment waits (the lab's 30 % loss runs over TLS showed it: a retry
    /// on the same connection waited behind the same segment). For a read/write timeout any
    /// recent byte counts, the task's own included, since that timeout measures the task,
    /// not the link. Otherwise the link is stalled: every running task fails with this
    /// timeout and the link is dropped and reconnected.
    fn on_attempt_timeout(&mut self, id: TaskId, level: TimeoutLevel, now: Instant) {
        let Some(task) = self.tasks.get(&id) else {
            return;
        };
        let TaskState::Running(a) = task.state else {
            return;
        };
        let li = task.link;
        let LinkState::Connected(s) = &self.links[li].state else {
            return;
        };
        let own = a.last_progress.unwrap_or(a.sent_at);
        let window = a.timeouts.packet_to_packet;
        let recent = |t: Instant| now.saturating_duration_since(t) < window;
        let alive = if level == TimeoutLevel::ReadWrite {
            // The task's own bytes count too, but not a stall probe's reply: the server may
            // answer heartbeats on a connection whose requests it no longer serves.
            s.last_recv
                .is_some_and(|t| recent(t) && s.last_probe_reply != Some(t))
        } else {
            // Only the answer to a task sent *after* this one shows the connection moving past
            // it: answers to earlier requests are what a connection stuck behind a
            // retransmission still delivers, in order, while this task's answer waits behind
            // the lost segment (or its request never got through).
            s.newest_answered
                .is_some_and(|(sent, at)| sent > a.sent_ns && at > own && recent(at))
        };
        // §6.3: the long link reports only successes to the estimator; its timeouts do not
        // move it (short-link timeouts and failed connects do).
        if alive {
            self.fail_attempt(id, now, TaskError::Timeout(level));
            self.pause_retries(li, now);
        } else {
            self.link_down(li, now, LinkError::Stalled(level), false);
        }
    }

    // ----- weak-network detector (§15.2, reporting only) ----------------------------------

    fn mark_weak(&mut self, now: Instant) {
        if self.activity.foreground {
            self.weak_mark = Some(now);
        }
    }

    /// A sign of a good network ends a weak period early, if the last mark is old enough.
    fn relieve_weak(&mut self, now: Instant) {
        if self
            .weak_mark
            .is_some_and(|t| now.saturating_duration_since(t) >= WEAK_RELIEF_AFTER)
        {
            self.weak_mark = None;
        }
    }

    fn is_weak(&self, now: Instant) -> bool {
        self.activity.foreground
            && self
                .weak_mark
                .is_some_and(|t| now.saturating_duration_since(t) < WEAK_LAPSE)
    }

    // ----- timing sync --------------------------------------------------------------------

    /// The timing-sync period for the current state (§15.4).
    fn timing_sync_interval(&self) -> Duration {
        let (with_account, without, inactive) = self.cfg.timing.timing_sync;
        let base = if !self.activity.active {
            inactive
        } else if self.has_account {
            with_account
        } else {
            without
        };
        if self.net.is_available() {
            base
        } else {
            base * 3
        }
    }

    /// Activity or network changed: a pending timing sync restarts with the new period.
    fn rearm_timing_sync(&mut self, now: Instant) {
        if self.timers.is_armed(TimerKind::TimingSync) {
            let at = now + self.timing_sync_interval();
            self.timers.set(TimerKind::TimingSync, at);
        }
    }

    // ----- ending and retrying ------------------------------------------------------------

    /// Removes a task from the engine (queue, running set, timers) and returns it.
    fn remove_task(&mut self, id: TaskId) -> Option<Task> {
        self.unlink(id);
        self.tasks.remove(&id)
    }

    /// Takes a stored task out of its link's queue and running set and disarms its timers.
    fn unlink(&mut self, id: TaskId) {
        if let Some(slot) = self.tasks.slot_of(&id) {
            self.unlink_at(slot);
        }
    }

    /// The tasks running on link `li` (a scan of every stored task: for rare events).
    /// The tasks link `li` owes a response: its running tasks, long polls aside (a long poll
    /// owes nothing before its own timeout). The stall probe watches them, and transport
    /// patience keeps time for their retry.
    fn owed_on(&self, li: usize) -> impl Iterator<Item = &Task> + '_ {
        self.tasks.values().filter(move |t| {
            t.link == li
                && matches!(&t.state, TaskState::Running(a) if !a.unwritten)
                && t.spec.long_polling.is_none()
        })
    }

    fn running_on(&self, li: usize) -> Vec<TaskId> {
        self.tasks
            .values()
            .filter(|t| t.link == li && matches!(t.state, TaskState::Running(_)))
            .map(|t| t.id)
            .collect()
    }

    /// [`unlink`](Self::unlink) for the task stored at `slot`.
    fn unlink_at(&mut self, slot: u32) {
        let Some(task) = self.tasks.at_slot(slot) else {
            return;
        };
        let id = task.id;
        let (li, key) = (task.link, (task.spec.priority, task.order, id, slot));
        let link = &mut self.links[li];
        // A queued task is in the queue, a running one in the running count (`send_task`,
        // `fail_attempt`).
        match task.state {
            TaskState::Queued => link.queue.remove(&key),
            TaskState::Running(_) => {
                link.ended_running();
                // Room in a resend window may let queued tasks go: a task ending by its
                // total timeout, a cancel or a verdict frees it as a response does.
                self.dirty[li] = true;
                true
            }
        };
        self.timers.cancel_task(slot);
    }

    /// Ends a task (or keeps it as a zombie, §14).
    fn finish(&mut self, id: TaskId, now: Instant, outcome: TaskOutcome) {
        if let Some(slot) = self.tasks.slot_of(&id) {
            self.finish_at(slot, now, outcome);
        }
    }

    /// [`finish`](Self::finish) for the task stored at `slot`.
    fn finish_at(&mut self, slot: u32, now: Instant, outcome: TaskOutcome) {
        let Some(task) = self.tasks.at_slot(slot) else {
            return;
        };
        let id = task.id;
        let took = Duration::from_nanos(self.timers.now_ns(now).saturating_sub(task.queued_ns));
        let weak = weak_verdict(task, &outcome, took);
        let zombie = match &outcome {
            Err(error) => zombie_budget(&task.spec, task.budget_start, error, now),
            Ok(_) => None,
        };
        match weak {
            Some(Weak::Mark) => self.mark_weak(now),
            Some(Weak::Relieve) => self.relieve_weak(now),
            None => {}
        }
        if let Some(remaining) = zombie {
            let Some(mut task) = self.remove_task(id) else {
                return;
            };
            task.state = TaskState::Queued;
            if let Some(p) = task.profile_mut() {
                p.zombie_rounds += 1;
            }
            self.save_zombie(id, ZombieTask::Long(Box::new(task)), remaining, now);
            return;
        }
        // The usual end: the task is dropped where it is stored; only its profile leaves.
        self.unlink_at(slot);
        if let Some((tag, profile)) = self
            .tasks
            .remove_with(&id, |t| (t.tag, t.take_profile(now)))
        {
            self.emit_end_after(id, tag, outcome, profile, now, took);
        }
    }

    /// One attempt failed: retry if the task may, else end it.
    fn fail_attempt(&mut self, id: TaskId, now: Instant, error: TaskError) {
        let Some(task) = self.tasks.get_mut(&id) else {
            return;
        };
        let retryable = !matches!(
            error,
            TaskError::Timeout(TimeoutLevel::Total)
                | TaskError::Server { .. }
                | TaskError::Limited(_)
                | TaskError::Param(_)
                | TaskError::Auth(_)
                | TaskError::Canceled
                // A refused certificate is refused again until the server or the trust
                // settings change: another attempt only delays the error.
                | TaskError::Dial(DialFailure::Certificate)
        );
        if !retryable || task.retries_left == 0 {
            if task.attempts == 0 {
                // Failed while waiting for the link: still one attempt for the profile.
                task.attempts = 1;
                if let Some(p) = task.profile_mut() {
                    p.attempts = 1;
                }
            }
            self.finish(id, now, Err(error));
            return;
        }
        task.retries_left -= 1;
        self.stats.retries += 1;
        let was_running = matches!(task.state, TaskState::Running(_));
        if !was_running {
            // Failed while waiting for a connection: this counts as an attempt.
            task.attempts += 1;
            let attempts = task.attempts;
            if let Some(p) = task.profile_mut() {
                p.attempts = attempts;
            }
        }
        task.state = TaskState::Queued;
        // §4: the auth check runs for every attempt not yet sent (Mars's `MakesureAuthed`):
        // the session may be what failed this one.
        task.auth_cleared = false;
        let link = &mut self.links[task.link];
        if was_running {
            link.ended_running();
        }
        link.queue
            .insert((task.spec.priority, task.order, id, task.slot));
        for kind in [
            TimerKind::FirstPacket(id),
            TimerKind::PacketToPacket(id),
            TimerKind::ReadWrite(id),
        ] {
            self.timers.cancel_task_timer(task.slot, kind);
        }
        self.dirty[task.link] = true;
        self.events.push_back(Event::TaskRetrying {
            id,
            attempt: task.attempts,
            error,
        });
    }

    fn emit_end(
        &mut self,
        id: TaskId,
        tag: u64,
        outcome: TaskOutcome,
        profile: impl Into<Box<TaskProfile>>,
        now: Instant,
    ) {
        let profile = profile.into();
        let elapsed = now.saturating_duration_since(profile.queued_at);
        self.emit_end_after(id, tag, outcome, profile, now, elapsed);
    }

    /// [`emit_end`](Self::emit_end) of a task admitted `elapsed` ago (known on the timer
    /// table's nanosecond scale: no timespec arithmetic).
    fn emit_end_after(
        &mut self,
        id: TaskId,
        tag: u64,
        outcome: TaskOutcome,
        mut profile: Box<TaskProfile>,
        now: Instant,
        elapsed: Duration,
    ) {
        profile.ended_at = now;
        profile.weak_network = self.is_weak(now);
        match &outcome {
            Ok(_) => self.stats.tasks_succeeded += 1,
            Err(TaskError::Canceled) => self.stats.tasks_canceled += 1,
            Err(_) => self.stats.tasks_failed += 1,
        }
        self.events.push_back(Event::TaskEnded(TaskEnd {
            id,
            tag,
            outcome,
            profile,
            elapsed,
        }));
    }

    // ----- zombies ------------------------------------------------------------------------

    /// Keeps `task` (task `id`, failed) as a zombie with `remaining` of its budget (§14).
    fn save_zombie(&mut self, id: TaskId, task: ZombieTask, remaining: Duration, now: Instant) {
        self.stats.zombies_saved += 1;
        self.events.push_back(Event::TaskZombie { id, remaining });
        self.timers
            .set(TimerKind::ZombieExpiry(id), now + remaining);
        self.zombies.insert(
            id,
            Zombie {
                task,
                saved_at: now,
                remaining,
            },
        );
        self.schedule_zombie_restart();
    }

    fn schedule_zombie_restart(&mut self) {
        let min_age = self.cfg.timing.zombie_min_age;
        let Some(oldest) = self.zombies.oldest() else {
            self.timers.cancel(TimerKind::ZombieRestart);
            return;
        };
        let mut at = oldest + min_age;
        if let Some(t) = self.last_start {
            at = at.max(t + min_age);
        }
        self.timers.set(TimerKind::ZombieRestart, at);
    }

    fn restart_due_zombies(&mut self, now: Instant) {
        let min_age = self.cfg.timing.zombie_min_age;
        let quiet = self
            .last_start
            .is_none_or(|t| now.saturating_duration_since(t) >= min_age);
        if quiet {
            for id in self.zombies.aged(now, min_age) {
                self.restart_zombie(id, now);
            }
        }
        self.schedule_zombie_restart();
    }

    fn restart_all_zombies(&mut self, now: Instant) {
        for id in self.zombies.ids() {
            self.restart_zombie(id, now);
        }
        self.schedule_zombie_restart();
    }

    /// A zombie becomes a normal task again: no retries, the rest of its budget.
    fn restart_zombie(&mut self, id: TaskId, now: Instant) {
        let Some(mut z) = self.zombies.remove(&id) else {
            return;
        };
        self.timers.cancel(TimerKind::ZombieExpiry(id));
        let waited = now.saturating_duration_since(z.saved_at);
        let Some(left) = z.remaining.checked_sub(waited).filter(|d| !d.is_zero()) else {
            let profile = z.task.take_profile(now);
            self.emit_end(
                id,
                z.task.tag(),
                Err(TaskError::Timeout(TimeoutLevel::Total)),
                profile,
                now,
            );
            return;
        };
        let mut task = match z.task {
            ZombieTask::Long(task) => *task,
            ZombieTask::Short(task) => {
                self.short_restart(id, *task, left, now);
                return;
            }
        };
        task.auth_cleared = false;
        task.retries_left = 0;
        task.spec.retry_count = Some(0);
        task.spec.total_timeout = Some(left);
        let slot = self.tasks.insert(task);
        self.enqueue(slot, now);
    }
}

/// What is left of the total timeout of a task of `spec`, whose budget started at
/// `budget_start`, if its failure with `error` keeps it as a zombie (§14, long link and
/// short): a total timeout set, not network sensitive, budget left, and a failure of the
/// network or of the response (a response refused with the default fail handle,
/// `ResponseVerdict::Retry`, included). Not the app's parameters, a cancel, a limit, a
/// server's TaskEnd verdict, or a refused certificate (refused again until something
/// changes).
fn zombie_budget(
    spec: &TaskSpec,
    budget_start: Instant,
    error: &TaskError,
    now: Instant,
) -> Option<Duration> {
    let total = spec.total_timeout?;
    if spec.network_sensitive {
        return None;
    }
    let eligible = matches!(
        error,
        TaskError::Dial(_)
            | TaskError::Socket(_)
            | TaskError::Timeout(_)
            | TaskError::Http(_)
            | TaskError::Codec(CodecFailure::Decode(_) | CodecFailure::Response { .. })
            | TaskError::Local(LocalError::Interrupted)
    ) && !matches!(error, TaskError::Dial(DialFailure::Certificate));
    if !eligible {
        return None;
    }
    let remaining = total.checked_sub(now.saturating_duration_since(budget_start))?;
    (!remaining.is_zero()).then_some(remaining)
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("tasks", &self.tasks.len())
            .field("lane", &self.lane.len())
            .field("zombies", &self.zombies.len())
            .field("links", &self.links.len())
            .field("timers", &self.timers.len())
            .field("net", &self.net)
            .field("foreground", &self.activity.foreground)
            .field("active", &self.activity.active)
            .finish_non_exhaustive()
    }
}

/// What a task's end says about the network (§15.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Weak {
    /// A sign of a weak network.
    Mark,
    /// A sign that the network is fine again.
    Relieve,
}

/// `t` with the first-packet timeout shortened so that a retry of `task`, sent at `now`,
/// still fits before its total timeout (Phobos's long-link retry room, see
/// [`Recovery`](crate::Recovery)); `room` is the engine's [`RetryRoom`].
///
/// Design: compared on the timer table's nanosecond scale, so the usual task, whose
/// budget leaves room, costs a lookup and two integer comparisons here.
#[inline]
fn retry_room(
    room: RetryRoom,
    timers: &mut TimerTable,
    task: &Task,
    now: Instant,
    t: AttemptTimeouts,
) -> AttemptTimeouts {
    if task.spec.long_polling.is_some() {
        return t;
    }
    let total_ns = timers.total_deadline_ns(task.slot, task.id);
    retry_room_ns(room, timers.now_ns(now), total_ns, task.retries_left, t)
}

/// [`retry_room`] of an attempt sent at `now_ns` by a task (not a long poll) with
/// `retries_left` and the total deadline `total_ns`, both on the timer table's scale.
#[inline]
fn retry_room_ns(
    room: RetryRoom,
    now_ns: u64,
    total_ns: Option<u64>,
    retries_left: u32,
    mut t: AttemptTimeouts,
) -> AttemptTimeouts {
    let Some(total_ns) = total_ns.filter(|_| retries_left > 0) else {
        return t;
    };
    let latest = total_ns.saturating_sub(room.reserve_ns);
    if now_ns.saturating_add(nanos(t.first_packet)) <= latest {
        return t;
    }
    // A budget too small for two attempts of `min_attempt` keeps the formula's timeout: the
    // task has one attempt in effect, as in Mars.
    let capped = latest.saturating_sub(now_ns);
    if capped >= room.min_attempt_ns {
        t.first_packet = Duration::from_nanos(capped);
    }
    t
}

/// What the long-link retry room keeps, in nanoseconds (from the configuration, once).
#[derive(Clone, Copy, Debug)]
struct RetryRoom {
    /// `min_attempt` plus the retry pause: what a retry needs before the total timeout.
    reserve_ns: u64,
    /// `min_attempt`: the least first-packet timeout the room may leave an attempt.
    min_attempt_ns: u64,
}

impl RetryRoom {
    /// The room of `cfg`, `None` when the profile or the configuration turns it off.
    fn of(cfg: &Config) -> Option<Self> {
        let rec = cfg.active_recovery().filter(|r| r.long_retry_room)?;
        Some(RetryRoom {
            reserve_ns: nanos(rec.min_attempt).saturating_add(nanos(cfg.timing.retry_pause)),
            min_attempt_ns: nanos(rec.min_attempt),
        })
    }
}

/// Which limits a task of `spec` is subject to on its first dispatch, under `cfg` on network
/// `net`: (frequency, flow).
fn limits_of(cfg: &Config, net: NetKind, spec: &TaskSpec) -> (bool, bool) {
    let freq = spec.limit_frequency && cfg.limits.frequency;
    let flow = spec.limit_flow && cfg.limits.flow && net.is_mobile();
    (freq, flow)
}

/// Frames a request for task `id` onto `out` with `codec`; returns the frame's length, or
/// the codec's error with `out` as it was.
fn frame(
    codec: &dyn PacketCodec,
    cmd_id: CmdId,
    id: TaskId,
    body: &[u8],
    extension: &[u8],
    out: &mut Vec<u8>,
    log: &PanicLog,
) -> Result<usize, EncodeError> {
    let before = out.len();
    let head = FrameHead::new(cmd_id, Seq::from(id));
    match plugins::encode(codec, head, body, extension, out, log) {
        Ok(()) => Ok(out.len() - before),
        Err(e) => {
            out.truncate(before);
            Err(e)
        }
    }
}

/// `d` in nanoseconds, saturating (a `Duration` past 584 years does not occur here).
#[inline]
/// The longest body `codec` can put in one frame: its frame limit less the head it adds to
/// an empty body (the whole limit when it cannot frame one).
///
/// Design: a body that passed a check against the frame limit alone but not the head with
/// it failed only when its turn to be sent came (an encode error, after waiting for a
/// connection). The plugin API states the limit for whole frames, so the head is measured
/// once here rather than asked of every codec; a codec whose head grows with the body (or
/// with an extension) still refuses what does not fit when encoding.
fn max_body_len(codec: &dyn PacketCodec, log: &PanicLog) -> usize {
    let mut probe = Vec::new();
    let head = FrameHead::new(CmdId(1), Seq(1));
    let overhead = match plugins::encode(codec, head, &[], &[], &mut probe, log) {
        Ok(()) => probe.len(),
        Err(_) => 0,
    };
    plugins::max_frame_len(codec, log).saturating_sub(overhead)
}

fn nanos(d: Duration) -> u64 {
    d.as_secs()
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::from(d.subsec_nanos()))
}

/// What the end of `task` with `outcome` tells the weak-network detector (§15.2); `took` is
/// the time since its admission.
fn weak_verdict(task: &Task, outcome: &TaskOutcome, took: Duration) -> Option<Weak> {
    if task.attempts == 0 {
        return None;
    }
    match outcome {
        Ok(_) if took >= WEAK_SLOW_TASK => Some(Weak::Mark),
        Ok(_) if took < WEAK_FAST_TASK => Some(Weak::Relieve),
        Ok(_) | Err(TaskError::Codec(_)) | Err(TaskError::Canceled) => None,
        Err(_) => {
            let other_addr = matches!(task.state, TaskState::Running(a) if a.addr_index > 0);
            other_addr.then_some(Weak::Mark)
        }
    }
}

fn dial_failure(e: DialError) -> DialFailure {
    match e {
        DialError::Refused => DialFailure::Refused,
        DialError::Unreachable => DialFailure::Unreachable,
        DialError::Handshake | DialError::Damaged => DialFailure::Handshake,
        DialError::Certificate => DialFailure::Certificate,
        DialError::Io(errno) => DialFailure::Io { errno },
    }
}

/// Weak-network detector thresholds (§15.2).
/// The interval to a link's next heartbeat, `None` for none: the codec's when it sets one,
/// else the policy's.
///
/// A plugin's "never" (`Duration::MAX`) would overflow the deadline: cut to a year. A
/// nanosecond would send heartbeats as fast as the loop turns: raised to a second. The codec's
/// interval counts only when it is more than zero (Mars's encoder hook): a zero, its "not
/// defined", leaves the schedule to the policy.
fn next_heartbeat_interval(
    codec: &dyn PacketCodec,
    policy: &mut plugins::Policy,
    now: Instant,
    ctx: &HeartbeatContext,
    caught: &PanicLog,
) -> Option<Duration> {
    let imposed = plugins::heartbeat_interval(codec, caught).filter(|iv| !iv.is_zero());
    match imposed {
        Some(iv) => Some(iv),
        None => policy.next_interval(now, ctx, caught),
    }
    .filter(|iv| !iv.is_zero())
    .map(|iv| iv.clamp(MIN_HEARTBEAT_INTERVAL, MAX_DURATION_SETTING))
}

/// How often a heartbeat policy that turned periodic heartbeats off is asked again: Mars's
/// default interval.
const HEARTBEAT_RECHECK: Duration = Duration::from_secs(210);
const WEAK_CONNECT_RTT: Duration = Duration::from_millis(2_000);
const WEAK_PACKET_GAP: Duration = Duration::from_millis(2_000);
const WEAK_SLOW_TASK: Duration = Duration::from_millis(5_000);
const WEAK_FAST_TASK: Duration = Duration::from_millis(600);
const WEAK_RELIEF_AFTER: Duration = Duration::from_millis(8_000);
const WEAK_LAPSE: Duration = Duration::from_millis(60_000);

/// Mars's default retry count.
const DEFAULT_RETRIES: u32 = 1;
/// What [`Engine::admit`] returns for a task that goes to the short link.
const SHORT_TASK: usize = usize::MAX;

/// How long after the app came to the foreground a task that goes short asks for its long
/// link (§3.2 step 6).
const TASK_CONNECT_WINDOW: Duration = Duration::from_secs(15 * 60);
/// Admission limits (§3.2 step 1).
const MAX_RETRIES: u32 = 30;
const MAX_SERVER_COST: Duration = Duration::from_millis(120_000);
const MAX_TOTAL_TIMEOUT: Duration = Duration::from_millis(600_000);
/// Task ids wrap back to 1 here (Mars's app-side generator).
pub(crate) const TASK_ID_WRAP: u32 = 0xFFFF_FFF0;
/// The most sequence numbers in a row the codec may reserve before the id search counts
/// them as the end of the id space ([`Engine::alloc_task_id_slow`]).
pub(crate) const MAX_RESERVED_RUN: u32 = 1 << 16;
/// Reported when a codec returns a frame whose ranges do not fit the buffer.
const BAD_FRAME_LEN: phobos_plugin_api::DecodeError = phobos_plugin_api::DecodeError::Other(0);
