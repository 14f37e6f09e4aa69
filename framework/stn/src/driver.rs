//! The driver: one tokio task that owns the engine and carries out what it asks.
//!
//! The loop is: wait for the first of (an IO result, a command from a [`Client`], the
//! engine's next deadline) → `handle_*` it → drain `poll_action` and `poll_event` → carry the
//! actions out. The driver makes no protocol decision: which address, when to retry, which
//! timeout — all of that is the engine's. What the driver does is IO:
//!
//! - one task per connect attempt (through the [`Connector`](crate::Connector)), reporting
//!   the stream or the failure back;
//! - no task per open connection: the driver polls every socket's reads from its select and
//!   writes the frames of each iteration itself, in one write, resuming from the select
//!   when the socket was full (so a response reaches its caller with no task hop between
//!   the socket and the engine);
//! - one task per `Resolve` (the [`IpSource`] chain) and per `EnsureAuth`
//!   ([`AuthCheck::ensure_authed`]), watched by the [`Watchdog`]; a call into a plugin that
//!   blocks its thread ([`IpSource::is_blocking`], [`AuthCheck::is_blocking`]: every loaded
//!   plugin) runs on tokio's blocking pool instead, never on the driver's thread or a runtime
//!   worker;
//! - the IP ranking's and the heartbeat state's files written on the blocking pool
//!   (`state_writer.rs`), never in the loop.
//!
//! Connects, resolutions and logins report back over one channel; socket IO happens in the
//! driver task. Either way the engine sees every input in a single order. Time is `tokio::time`, converted to `std::time::Instant` at the edge, so paused
//! tokio time gives the whole stack virtual time.
//!
//! [`Client`]: crate::Client

use std::collections::VecDeque;
use std::io::IoSlice;
use std::mem::MaybeUninit;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use phobos_plugin_api::panics::{auth_panicked, catch, drop_caught, resolve_panicked};
use phobos_plugin_api::{
    AuthCheck, AuthError, CmdId, HeartbeatPolicyFactory, IpSource, LinkPurpose, NetKind,
    ResolveError, ResolvedAddr,
};
use phobos_stn_proto::{
    Action, CloseCause, ConnId, ConnectReport, DialError, EndBatch, Engine, Event, LikeTask,
    LinkName, LinkStatus, PluginKind, PluginPanic, RankingState, TaskEnd, TaskId, TaskProfile,
    TaskSpec,
};
use rustc_hash::FxHashMap;
use slab::Slab;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;
use tracing::{debug, error, info, trace, warn, Instrument, Span};

use crate::batch::{
    shared_end, BatchIndex, BatchOut, BatchSink, BatchStart, BatchTasks, EndGroup, Sink,
};
use crate::client::{DriverStats, LinkEvent, Push, TaskKey};
use crate::config::ClientConfig;
use crate::connector::{close_cause, dial_error, Connector, Established, LinkStream};
use crate::fanout::Publisher;
use crate::guard;
use crate::handler::{Called, ErasedHandler, HandlerId, Handlers};
use crate::held::{HeldBatches, BATCH_TAG};
use crate::metrics as m;
use crate::short::runner::{ShortEvent, ShortIo};
use crate::state_file;
use crate::state_writer::{self, HeartbeatState, RankingWriter, StateWriter};
use crate::watchdog::Watchdog;

/// A command from a [`Client`](crate::Client).
#[derive(Debug)]
pub(crate) enum Command {
    Start {
        key: TaskKey,
        spec: Box<TaskSpec>,
        reply: oneshot::Sender<TaskEnd>,
    },
    /// Several tasks whose ends go back together ([`TaskBatch`](crate::TaskBatch)).
    StartBatch(BatchStart),
    /// A handler to run on the driver ([`Client::run_on_driver`](crate::Client::run_on_driver)).
    RunHandler {
        id: HandlerId,
        handler: Box<dyn ErasedHandler>,
    },
    /// Stop a handler ([`HandlerHandle::abort`](crate::HandlerHandle::abort)).
    AbortHandler(HandlerId),
    Cancel {
        key: TaskKey,
    },
    /// Cancel task `key` if it is one of the batch's whose ends go to `sink`
    /// ([`TaskBatch::cancel`](crate::TaskBatch::cancel)).
    CancelInBatch {
        key: TaskKey,
        sink: BatchSink,
    },
    SetForeground(bool),
    SetNetwork {
        kind: NetKind,
        label: String,
    },
    MakeSureConnected {
        link: LinkName,
    },
    SetAccount(bool),
    RedoTasks,
    KeepSignalling,
    StopSignalling,
    Stats(oneshot::Sender<DriverStats>),
    Shutdown(oneshot::Sender<()>),
}

/// Where the driver publishes what the app may observe.
#[derive(Debug)]
pub(crate) struct Outputs {
    /// The clients' task-key counter (handlers' tasks take their keys from it too).
    pub(crate) next_key: Arc<AtomicU64>,
    pub(crate) pushes: Publisher<Push>,
    pub(crate) links: Publisher<LinkEvent>,
    pub(crate) statuses: crate::client::Statuses,
}

/// Runs the driver until every client is gone or one asks for shutdown.
///
/// The engine and the config arrive boxed and are taken apart in a plain fn: an `async fn`
/// keeps its arguments in the task next to every local built from them (and the `Driver`
/// holds the engine again), which cost an idle client about 7 KB of task memory.
pub(crate) async fn run(
    setup: Box<(Engine, ClientConfig)>,
    commands: mpsc::UnboundedReceiver<Command>,
    outputs: Outputs,
    stopped: tokio::sync::watch::Sender<bool>,
) {
    let (mut driver, io_rx, watch_task) = start(setup, outputs);
    // Stops the watchdog however this ends, a panic unwinding through here included (it
    // went on watching a driver that was gone).
    let watch_task = AbortOnDrop(watch_task);
    let done = driver.run(Commands(commands), io_rx).await;
    let final_saves = driver.teardown();
    // The engine and the plugins go with the driver: a plugin panicking in its `Drop` is
    // contained (what it failed to release is leaked).
    let _ = drop_caught(driver);
    drop(watch_task);
    // Shutdown completes once the final states are on disk (written off the runtime's
    // worker threads like every save), or after `FINAL_SAVE_WAIT`.
    if !state_writer::wait_final_saves(final_saves, state_writer::FINAL_SAVE_WAIT).await {
        warn!(
            wait = ?state_writer::FINAL_SAVE_WAIT,
            "the final states were not written in time; shutdown goes on, their writes continue"
        );
    }
    if let Some(done) = done {
        let _ = done.send(());
    }
    stopped.send_replace(true);
}

/// Aborts a task when dropped.
struct AbortOnDrop(AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The driver's end of the command channel.
///
/// Design: dropping a receiver drops the commands already in the channel (each ends its
/// tasks with a reset: a start's reply is dropped, a batch's `BatchStart` sends the
/// resets), but one a client was pushing at that moment stayed there until every client
/// was gone, and a `TaskBatch`, which holds a client, waited for its own tasks for ever.
/// This one closes the channel and drops what still comes: after `close`, `recv` is pending
/// only while such a push is under way (a few instructions on the client's thread), and
/// then ends. It polls outside tokio's task budget: within it, a driver whose last round
/// spent the budget saw `recv` pending at once, stopped waiting, and a push under way
/// stayed in the channel with its task unended (`tests/shutdown_race.rs` failed 2 runs
/// of 8 that way).
///
/// (Done here, where the receiver was dropped before. Handing the receiver on from the
/// loop, awaiting after it, or spawning a task for it changed how the loop's future was
/// compiled, at a cost of some 110 instructions a round; with the loop polling the channel
/// the way this does, about 60.)
struct Commands(mpsc::UnboundedReceiver<Command>);

impl Drop for Commands {
    #[inline(never)]
    fn drop(&mut self) {
        use std::future::Future;
        use std::task::{Context, Poll, Waker};
        self.0.close();
        let mut cx = Context::from_waker(Waker::noop());
        loop {
            // Unconstrained: within the task's budget, `poll_recv` is pending once the
            // budget is spent (as it often is after the loop's last round), which ended
            // this wait early and left a push under way in the channel.
            let next = std::pin::pin!(tokio::task::coop::unconstrained(std::future::poll_fn(
                |cx| self.0.poll_recv(cx)
            )))
            .poll(&mut cx);
            match next {
                Poll::Ready(Some(late)) => drop(late),
                Poll::Ready(None) => break,
                // A push under way: it ends within a few instructions of its thread.
                Poll::Pending => std::thread::yield_now(),
            }
        }
    }
}

/// Everything [`run`] does before its loop (nothing here is kept in the task, the box of
/// `setup` included).
fn start(
    setup: Box<(Engine, ClientConfig)>,
    outputs: Outputs,
) -> (Driver, mpsc::UnboundedReceiver<IoEvent>, AbortHandle) {
    let (engine, config) = *setup;
    let watchdog = Watchdog::new(config.watchdog_threshold());
    let watch_task = tokio::spawn(watchdog.clone().run().in_current_span());
    let heartbeat = config.core().heartbeat.clone();
    let heartbeat_state = config.heartbeat_state_file().map(|path| {
        load_heartbeat_state(heartbeat.as_ref(), path);
        StateWriter::new(path.to_owned())
    });
    let mut engine = engine;
    // The driver only traces `TaskSent`: without a subscriber for that, the core need not
    // build the event for every attempt (checked once, at start).
    engine.set_task_sent_events(tracing::enabled!(tracing::Level::TRACE));
    // Tasks that end together come as one event (see `tasks_ended`).
    engine.set_end_batches(true);
    let ranking_state = config.ranking_state_file().map(|path| {
        if let Some(state) = load_ranking_state(path) {
            engine.restore_ranking(&state, unix_now());
        }
        RankingWriter::new(path.to_owned())
    });
    let (io_tx, io_rx) = mpsc::unbounded_channel();
    let short_tx = io_tx.clone();
    let transport_panics = Arc::<AtomicU64>::default();
    let short = ShortIo::new(
        config.short_settings(),
        &config.core().short_link,
        Arc::new(move |ev| {
            let _ = short_tx.send(IoEvent::Short(Box::new(ev)));
        }),
        transport_panics.clone(),
    );
    // The channel's senders that stay: the driver's own and the short link's sink's.
    let io_senders = io_tx.strong_count();
    let handlers = Handlers::new(outputs.next_key.clone());
    let driver = Driver {
        engine,
        handlers,
        handlers_behind: false,
        handler_panics: 0,
        ip_sources: config.ip_sources().to_vec().into(),
        ip_source_names: config
            .ip_sources()
            .iter()
            .map(|s| guard::name_of(|| s.name().to_owned()))
            .collect(),
        auth_name: (config.core().auth.as_ref())
            .map(|a| guard::name_of(|| a.name().to_owned()))
            .unwrap_or_default(),
        auth: config.core().auth.clone(),
        connector: config.connector().clone(),
        resolving: FxHashMap::default(),
        auth_calls: FxHashMap::default(),
        plugin_calls: FxHashMap::default(),
        plugin_calls_refused: 0,
        plugin_panics: Arc::default(),
        transport_panics,
        task_spans: FxHashMap::default(),
        next_call: 0,
        io_tx,
        io_senders,
        conns: FxHashMap::default(),
        unflushed: Vec::new(),
        attempts: FxHashMap::default(),
        waiters: Slab::new(),
        held: HeldBatches::default(),
        cancel_index: CancelIndex::default(),
        batch_out: BatchOut::default(),
        common_spare: None,
        reads: Vec::new(),
        end_metrics: EndMetrics::default(),
        outputs,
        watchdog,
        connect_attempts: 0,
        connected: 0,
        write_waits: 0,
        writes: 0,
        heartbeat,
        heartbeat_state,
        heartbeat_saved: None,
        ranking_state,
        pending_cycle: None,
        short,
    };
    (driver, io_rx, watch_task.abort_handle())
}

/// Something an IO task reports. The large events are boxed: the channel allocates its slots
/// 32 at a time at the size of the largest event, the first 32 when the driver starts.
enum IoEvent {
    /// A short-link connect or exchange reported.
    Short(Box<ShortEvent>),
    /// A connect attempt's transport is up; its handshake follows.
    Established(ConnId),
    Connected {
        attempt: ConnId,
        stream: Box<dyn LinkStream>,
    },
    ConnectFailed {
        attempt: ConnId,
        error: DialError,
    },
    Bytes {
        conn: ConnId,
        bytes: Bytes,
    },
    Closed {
        conn: ConnId,
        cause: CloseCause,
    },
    Resolved(Box<Resolved>),
    Authed(Box<Authed>),
}

/// An IP source call's answer.
struct Resolved {
    /// Which call (see `Driver::resolving`).
    call: u64,
    link: LinkName,
    host: String,
    source: usize,
    result: Result<Vec<ResolvedAddr>, ResolveError>,
}

/// An auth check's answer.
struct Authed {
    host: String,
    result: Result<(), AuthError>,
}

struct Driver {
    engine: Engine,
    /// The handlers running on the driver ([`crate::handler`]).
    handlers: Handlers,
    /// Ends for handlers are left over from the last iteration (it made its
    /// [`HANDLER_PASSES`], or they came after): the next one starts at once, after other
    /// tasks had a turn. Set at the end of every iteration.
    handlers_behind: bool,
    /// Handler calls that panicked ([`DriverStats::handler_panics`]).
    handler_panics: u64,
    ip_sources: Arc<[Arc<dyn IpSource>]>,
    /// The sources' names, read once (under guard) for labels and log lines.
    ip_source_names: Vec<String>,
    auth: Option<Arc<dyn AuthCheck>>,
    /// The auth plugin's name, read once (under guard); empty without one.
    auth_name: String,
    connector: Arc<dyn Connector>,
    /// IP source calls running, by (link, host, source): the call number and its task. The
    /// core times every call and cancels it ([`Action::CancelResolve`]); an answer whose
    /// call number is no longer here was given up and is dropped.
    resolving: FxHashMap<(LinkName, String, usize), (u64, AbortHandle)>,
    /// The auth plugin's login calls, by host (one at a time each): left running by the
    /// driver, stopped when it stops.
    auth_calls: FxHashMap<String, AbortHandle>,
    /// Plugin calls that may still be running, each watched through a token the call holds
    /// until it ends (see [`Driver::begin_plugin_call`]).
    plugin_calls: FxHashMap<PluginCall, Weak<()>>,
    /// Plugin calls not made because the same call was still running
    /// ([`DriverStats::plugin_calls_refused`]).
    plugin_calls_refused: u64,
    /// Plugin panics caught, by the engine or by the guards of the driver's own calls
    /// ([`DriverStats::plugin_panics`]; shared with the tasks running resolves and logins).
    plugin_panics: Arc<AtomicU64>,
    /// Panics caught in the app's connector and streams ([`DriverStats::transport_panics`];
    /// shared with the connect tasks, the streams and the short link).
    transport_panics: Arc<AtomicU64>,
    /// The spans of tasks in flight ([`task_span`]) by tag, when a subscriber wants them
    /// (kept apart from the waiters, which then stay as small as without spans).
    task_spans: FxHashMap<u64, Span>,
    next_call: u64,
    io_tx: mpsc::UnboundedSender<IoEvent>,
    /// The senders of `io_tx`'s channel held for the driver's whole life (`io_tx` itself and
    /// the short link's sink's); any more belong to tasks that may still report.
    io_senders: usize,
    conns: FxHashMap<ConnId, Conn>,
    unflushed: Vec<ConnId>,
    attempts: FxHashMap<ConnId, (LinkName, AbortHandle)>,
    /// Who waits for each [`Client::start_task`](crate::Client::start_task) task's end, at
    /// the index the task carries as its tag ([`TaskEnd::tag`]): an end finds its caller
    /// without a lookup by task id.
    waiters: Slab<Waiter>,
    /// Finds a waiter by its task key, for cancels.
    cancel_index: CancelIndex,
    /// The batch tasks held ([`TaskBatch`](crate::TaskBatch)), whose tags are their keys
    /// with [`BATCH_TAG`] set.
    held: HeldBatches,
    /// Ends of batch tasks, sent once per iteration.
    batch_out: BatchOut,
    /// The shared profile of the last batch of ends ([`tasks_ended`](Self::tasks_ended)),
    /// filled again in place for the next batch once no end points at it any more.
    ///
    /// Design: a batch's profile comes from the engine in a box, and its ends share it
    /// behind an `Arc`; making that `Arc` afresh cost an allocation, a copy and a free a
    /// batch (at 100 in flight, a batch a round), while the app has usually let go of the
    /// last batch's ends when the next one arrives.
    common_spare: Option<Arc<TaskProfile>>,
    /// The reads of one poll of the connections (`poll_io`), its list kept between polls.
    reads: Vec<(ConnId, ConnRead)>,
    /// The task-end metrics of this iteration.
    end_metrics: EndMetrics,
    outputs: Outputs,
    watchdog: Watchdog,
    connect_attempts: u64,
    connected: usize,
    write_waits: u64,
    /// Long-link socket writes so far ([`DriverStats::writes`]).
    writes: u64,
    /// The heartbeat factory, whose state is persisted.
    heartbeat: Arc<dyn HeartbeatPolicyFactory>,
    /// Writes that state to its file, if one is configured.
    heartbeat_state: Option<StateWriter<HeartbeatState>>,
    /// The heartbeat state last handed to that writer.
    heartbeat_saved: Option<String>,
    /// Writes the IP ranking to its file, if one is configured.
    ranking_state: Option<RankingWriter>,
    /// The last connect cycle's report, until the link status event it belongs to.
    pending_cycle: Option<ConnectReport>,
    /// Short-link connects and exchanges (`short/runner.rs`).
    short: ShortIo,
}

/// An open connection, read and written by the driver itself (no task per socket): reads
/// are polled from the loop's select, writes go out at the end of each iteration and resume
/// from the select when the socket was full. Dropping it closes the socket.
struct Conn {
    link: LinkName,
    stream: Box<dyn LinkStream>,
    /// Bytes the engine asked to send and the socket has not taken yet, as the engine
    /// handed them over (no copy; written with one vectored write where the stream takes
    /// one).
    out: VecDeque<Bytes>,
    /// The bytes in `out`.
    unsent: u64,
    /// `unsent` as last reported to the engine ([`Engine::handle_unsent`]).
    reported: u64,
    /// Bytes are held waiting for the socket to become writable (counted once per wait in
    /// [`DriverStats::write_waits`](crate::DriverStats::write_waits)).
    waiting: bool,
    /// Read buffer: none until a read fills [`READ_MIN`] bytes (an idle link should cost
    /// little), then room for `read_size` bytes a read, which doubles up to [`READ_MAX`]
    /// while reads fill it, in blocks of room for up to [`READ_BLOCK_READS`] reads (at most
    /// [`READ_MAX`]). What a read fills is split off and handed to the engine as it is.
    rbuf: BytesMut,
    /// How much room each read gets once `rbuf` is in use; 0 until then.
    read_size: usize,
    /// Bytes were written since the stream was last flushed.
    ///
    /// Design: a TLS stream (tokio-rustls) takes plaintext into its own buffer and reports
    /// it written even when the socket took none of the encrypted records; they leave on the
    /// next write or a flush. With the last frames of a burst written that way and no later
    /// write, they stayed unsent and their tasks timed out on a healthy link (3 runs of 12
    /// in a probe behind a slow reader). So a connection's output is done only once its
    /// stream is flushed too (a no-op for plain TCP).
    unflushed: bool,
}

/// What one poll of a connection's read side gave.
enum ConnRead {
    Data(Bytes),
    Closed(CloseCause),
}

struct Waiter {
    id: TaskId,
    key: TaskKey,
    reply: oneshot::Sender<TaskEnd>,
}

/// Finds the waiter of a task key ([`Command::Cancel`]).
///
/// Design: no map is kept while no cancel comes, since it would cost an insert and a
/// removal on every task; a cancel used to scan the waiters instead, which made canceling
/// all of 100,000 tasks in flight block the driver for 11.5 s (each scan O(tasks)). Now the
/// first cancel builds the map in one scan, the map is kept up to date while cancels keep
/// coming, and it is dropped after a driver iteration without one: a burst of k cancels
/// costs one scan plus O(k), and tasks pay for the map only while it exists.
#[derive(Default)]
struct CancelIndex {
    /// Task key → waiter tag. An entry whose waiter ended can linger (until the map is
    /// dropped) only if its removal was missed; a lookup checks the key anyway.
    map: Option<FxHashMap<TaskKey, usize>>,
    /// Whether a cancel came in the current driver iteration.
    used: bool,
}

impl CancelIndex {
    /// The waiter of task `key`, if it is still waited for.
    fn waiter<'w>(&mut self, waiters: &'w Slab<Waiter>, key: TaskKey) -> Option<&'w Waiter> {
        self.used = true;
        let map = self
            .map
            .get_or_insert_with(|| waiters.iter().map(|(tag, w)| (w.key, tag)).collect());
        let tag = *map.get(&key)?;
        waiters.get(tag).filter(|w| w.key == key)
    }

    /// A task was started, waited for at `tag`.
    fn started(&mut self, key: TaskKey, tag: usize) {
        if let Some(map) = &mut self.map {
            map.insert(key, tag);
        }
    }

    /// Task `key`'s waiter is gone.
    fn ended(&mut self, key: TaskKey) {
        if let Some(map) = &mut self.map {
            map.remove(&key);
        }
    }

    /// The end of a driver iteration: the map goes unless a cancel used it.
    fn iteration_done(&mut self) {
        if !std::mem::take(&mut self.used) {
            self.map = None;
        }
    }
}

/// Who gets a task's end, once taken from the waiters or the held batch tasks.
enum Reply {
    /// A [`TaskHandle`](crate::TaskHandle).
    One(oneshot::Sender<TaskEnd>),
    /// A [`TaskBatch`](crate::TaskBatch), by its entry in [`Driver::batch_out`].
    Batch(BatchIndex),
}

impl Conn {
    /// Reads what the socket has now.
    ///
    /// Design: once the link is busy, reads go straight into `rbuf`'s spare room and the
    /// filled part is split off and frozen, so the engine (and the response bodies it slices
    /// out) share the read's memory: no copy per read. The room is reclaimed in place when
    /// every piece of it has been dropped, else the next read gets a fresh block.
    fn poll_read_chunk(&mut self, cx: &mut Context<'_>) -> Poll<ConnRead> {
        if self.read_size == 0 {
            return self.poll_read_small(cx);
        }
        // Design: every read gets room for `read_size` bytes, and a fresh block holds room
        // for up to four such reads (at most `READ_MAX`), so a block serves several reads.
        // Reserving only `read_size` took a new block for nearly every read: what the last
        // read filled is split off and held by its responses, so the block cannot be
        // reused, and a busy link allocated (and wrote into fresh memory) a block a read.
        if self.rbuf.capacity() - self.rbuf.len() < self.read_size {
            self.rbuf
                .reserve((READ_BLOCK_READS * self.read_size).clamp(self.read_size, READ_MAX));
        }
        match tokio_util::io::poll_read_buf(Pin::new(&mut self.stream), cx, &mut self.rbuf) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(ConnRead::Closed(close_cause(&e))),
            Poll::Ready(Ok(0)) => Poll::Ready(ConnRead::Closed(CloseCause::RemoteClosed)),
            Poll::Ready(Ok(n)) => {
                if n >= self.read_size && self.read_size < READ_MAX {
                    self.read_size = (self.read_size * 2).min(READ_MAX);
                }
                Poll::Ready(ConnRead::Data(self.rbuf.split().freeze()))
            }
        }
    }

    /// [`poll_read_chunk`](Self::poll_read_chunk) while the link is quiet: until a read fills
    /// [`READ_MIN`] bytes the buffer is on the stack and what is read is copied out, so an
    /// idle link keeps no read buffer.
    fn poll_read_small(&mut self, cx: &mut Context<'_>) -> Poll<ConnRead> {
        let mut first = [MaybeUninit::<u8>::uninit(); READ_MIN];
        let mut rb = ReadBuf::uninit(&mut first);
        match Pin::new(&mut self.stream).poll_read(cx, &mut rb) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(ConnRead::Closed(close_cause(&e))),
            Poll::Ready(Ok(())) => {
                let filled = rb.filled();
                let n = filled.len();
                if n == 0 {
                    return Poll::Ready(ConnRead::Closed(CloseCause::RemoteClosed));
                }
                if n == READ_MIN {
                    // Busy: from now on reads go to `rbuf` (allocated by the next read).
                    self.read_size = 2 * READ_MIN;
                }
                Poll::Ready(ConnRead::Data(Bytes::copy_from_slice(filled)))
            }
        }
    }

    /// Writes as much of `out` as the socket takes now, then flushes the stream. `Ready(Ok)`
    /// once `out` is empty and the stream flushed, `Pending` (with `cx` registered) while the
    /// socket is full.
    /// `writes` counts the socket writes that took bytes.
    fn poll_write_out(
        &mut self,
        cx: &mut Context<'_>,
        writes: &mut u64,
    ) -> Poll<std::io::Result<()>> {
        while let Some(front) = self.out.front() {
            let stream = Pin::new(&mut self.stream);
            let written = if self.out.len() > 1 && stream.is_write_vectored() {
                let mut slices = [IoSlice::new(&[]); MAX_WRITE_SLICES];
                for (slice, piece) in slices.iter_mut().zip(self.out.iter()) {
                    *slice = IoSlice::new(piece);
                }
                let n = self.out.len().min(MAX_WRITE_SLICES);
                stream.poll_write_vectored(cx, &slices[..n])
            } else {
                stream.poll_write(cx, front)
            };
            match written {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
                }
                Poll::Ready(Ok(n)) => {
                    *writes += 1;
                    self.unflushed = true;
                    consume(&mut self.out, n);
                    self.unsent = self.unsent.saturating_sub(n as u64);
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        if self.unflushed {
            match Pin::new(&mut self.stream).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.unflushed = false,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Whether output waits: frames the socket has not taken, or a flush still due.
    fn has_output(&self) -> bool {
        !self.out.is_empty() || self.unflushed
    }
}

impl Driver {
    /// The loop. Returns the shutdown acknowledgement when one was asked for.
    async fn run(
        &mut self,
        mut commands: Commands,
        mut io_rx: mpsc::UnboundedReceiver<IoEvent>,
    ) -> Option<oneshot::Sender<()>> {
        // The engine's next deadline as a timer, kept across iterations.
        //
        // Design: re-armed only for a deadline earlier than the one it is armed for (or once
        // it fired). Deadlines mostly move later as traffic flows (a write pushes the
        // heartbeat back, a pass the stall probe); waking at one that moved costs one look
        // at the engine's timers, while re-arming on every iteration cost a timer-wheel
        // update and removal each time.
        let timer = tokio::time::sleep_until(tokio::time::Instant::now());
        tokio::pin!(timer);
        let mut armed: Option<Instant> = None;
        loop {
            if let Some(d) = self.engine.poll_timeout() {
                if armed.is_none_or(|a| d < a) {
                    timer.as_mut().reset(tokio::time::Instant::from_std(d));
                    armed = Some(d);
                }
            }
            // One clock read per wake-up: every input of this batch is stamped with it.
            // Not biased: a socket that always has data must not starve commands, nor the
            // other way round.
            let io_may_come = self.io_may_come(&io_rx);
            let t = tokio::select! {
                Some(ev) = io_rx.recv(), if io_may_come => {
                    let t = now();
                    self.watchdog.enter(t);
                    self.handle_io(t, ev);
                    // Take whatever else is ready before draining, so frames coalesce.
                    for _ in 0..BATCH {
                        match io_rx.try_recv() {
                            Ok(ev) => self.handle_io(t, ev),
                            Err(_) => break,
                        }
                    }
                    t
                }
                cmd = std::future::poll_fn(|cx| commands.0.poll_recv(cx)) => {
                    let cmd = cmd?;
                    // Design: callers of `start_task` woken by the last iteration's ends run
                    // one after another, and each one's command wakes the driver into the
                    // worker's next slot (tokio's LIFO slot), ahead of the other callers: the
                    // driver then took one task per wake-up and wrote one frame per system
                    // call. Letting the other runnable tasks go first, once, when other tasks
                    // are in flight (so their callers may be about to start more), gathers
                    // their commands into one iteration and one write.
                    if matches!(cmd, Command::Start { .. })
                        && self.waiters.len() + self.held.len() > 1
                    {
                        tokio::task::yield_now().await;
                    }
                    let t = now();
                    self.watchdog.enter(t);
                    if let Some(done) = self.handle_command(t, cmd) {
                        return Some(done);
                    }
                    for _ in 0..BATCH {
                        match commands.0.try_recv() {
                            Ok(cmd) => {
                                if let Some(done) = self.handle_command(t, cmd) {
                                    return Some(done);
                                }
                            }
                            Err(_) => break,
                        }
                    }
                    // The batch's tasks were only admitted: one dispatch pass frames them
                    // all, so they leave in one write.
                    self.engine.send_queued(t);
                    t
                }
                () = std::future::poll_fn(|cx| self.poll_io(cx)), if !self.conns.is_empty() => {
                    let t = now();
                    self.watchdog.enter(t);
                    let mut got = std::mem::take(&mut self.reads);
                    for (conn, r) in got.drain(..) {
                        let ev = match r {
                            ConnRead::Data(bytes) => IoEvent::Bytes { conn, bytes },
                            ConnRead::Closed(cause) => IoEvent::Closed { conn, cause },
                        };
                        self.handle_io(t, ev);
                    }
                    self.reads = got;
                    t
                }
                () = &mut timer, if armed.is_some() => {
                    armed = None;
                    let t = now();
                    self.watchdog.enter(t);
                    t
                }
                () = tokio::task::yield_now(), if self.handlers_behind => {
                    let t = now();
                    self.watchdog.enter(t);
                    t
                }
            };
            // Timers are checked after every input, so a busy socket cannot starve them.
            if self.engine.poll_timeout().is_some_and(|d| d <= t) {
                self.engine.handle_timeout(t);
            }
            self.drain();
            if !self.handlers.is_empty() || !self.batch_out.for_handlers.is_empty() {
                self.run_handlers(t);
            }
            self.flush(t);
            // After the writes: the batches' callers wake once per iteration.
            self.batch_out.flush();
            // Ends for handlers that came after their pass (a write failed and the core
            // ended tasks), or that the passes left: handed over in an iteration that comes
            // at once. Set afresh: an abort this iteration may have taken the last of them,
            // and a flag left set made the driver yield to itself for ever.
            self.handlers_behind = !self.batch_out.for_handlers.is_empty();
            self.end_metrics.flush();
            self.cancel_index.iteration_done();
            self.watchdog.leave(now());
        }
    }

    /// Whether an IO event may be in the channel now or come into it before the driver
    /// looks again ([`may_receive`]): one is queued, or something that may send one is alive
    /// (a connect, resolve or login task, or a short-link task or connection).
    #[inline]
    fn io_may_come(&self, io_rx: &mpsc::UnboundedReceiver<IoEvent>) -> bool {
        may_receive(&self.io_tx, self.io_senders, self.short.may_report(), io_rx)
    }

    fn handle_io(&mut self, t: Instant, ev: IoEvent) {
        match ev {
            IoEvent::Bytes { conn, bytes } => {
                if !self.conns.contains_key(&conn) {
                    return;
                }
                m::count(&m::BYTES_RECEIVED_KEY, bytes.len() as u64);
                self.engine.handle_data(t, conn, bytes);
            }
            IoEvent::Established(attempt) => {
                if let Some((link, _)) = self.attempts.get(&attempt) {
                    debug!(link = %link, conn = %attempt, "transport up, handshaking");
                    self.engine.handle_established(t, attempt);
                }
            }
            IoEvent::Connected { attempt, stream } => {
                let Some((link, _)) = self.attempts.remove(&attempt) else {
                    return; // aborted meanwhile: dropping the stream closes it
                };
                debug!(link = %link, conn = %attempt, "connected");
                self.spawn_conn(attempt, link, stream);
                self.engine.handle_connected(t, attempt);
            }
            IoEvent::ConnectFailed { attempt, error } => {
                let Some((link, _)) = self.attempts.remove(&attempt) else {
                    return;
                };
                debug!(link = %link, conn = %attempt, ?error, "connect attempt failed");
                self.engine.handle_connect_failed(t, attempt, error);
            }
            IoEvent::Closed { conn, cause } => {
                let Some(c) = self.conns.remove(&conn) else {
                    return;
                };
                info!(link = %c.link, conn = %conn, ?cause, "connection closed");
                self.engine.handle_closed(t, conn, cause);
            }
            IoEvent::Resolved(resolved) => {
                let Resolved {
                    call,
                    link,
                    host,
                    source,
                    result,
                } = *resolved;
                let key = (link, host, source);
                match self.resolving.get(&key) {
                    Some((c, _)) if *c == call => {
                        self.resolving.remove(&key);
                    }
                    // Canceled by the core, or replaced by a newer call: not its answer.
                    _ => return,
                }
                let (link, host, source) = key;
                match &result {
                    Ok(addrs) => {
                        debug!(link = %link, host = %host, source, count = addrs.len(), "resolved");
                        let unusable: Vec<String> = addrs
                            .iter()
                            .filter(|a| !phobos_stn_proto::is_dialable(a))
                            .map(|a| format!("{}:{}", a.ip, a.port.unwrap_or(0)))
                            .collect();
                        if !unusable.is_empty() {
                            warn!(
                                link = %link,
                                host = %host,
                                source,
                                dropped = ?unusable,
                                "the IP source answered addresses nothing can connect to; dropped"
                            );
                        }
                    }
                    Err(e) => {
                        info!(link = %link, host = %host, source, error = %e, "resolution failed")
                    }
                }
                self.engine.handle_resolved(t, &link, &host, source, result);
            }
            IoEvent::Authed(authed) => {
                let Authed { host, result } = *authed;
                debug!(host = %host, ok = result.is_ok(), "auth finished");
                self.engine.handle_auth(t, &host, result);
            }
            IoEvent::Short(ev) => self.short.on_event(&mut self.engine, t, *ev),
        }
    }

    /// Handles one command; returns the acknowledgement of a shutdown request.
    fn handle_command(&mut self, t: Instant, cmd: Command) -> Option<oneshot::Sender<()>> {
        match cmd {
            Command::Start { key, spec, reply } => {
                m::count(&m::TASKS_STARTED_KEY, 1);
                self.start(t, *spec, key, reply);
            }
            Command::StartBatch(mut batch) => {
                let (first, tasks, sink) = batch.take();
                self.admit_batch(t, first, tasks, &Sink::Channel(sink));
            }
            Command::RunHandler { id, handler } => {
                self.watchdog.in_handler();
                let called = self.handlers.install(id, handler);
                self.after_handler_call(t, id, called);
            }
            Command::AbortHandler(id) if self.handlers.runs(id) => {
                let running = self.handler_tasks(id);
                // Its tasks still running, and those whose ends wait for its next call (an
                // iteration that made its passes left them): it will not get them.
                let mut keys: Vec<TaskKey> = running.iter().map(|&(key, _)| key).collect();
                let waiting = std::mem::take(&mut self.batch_out.for_handlers);
                for (to, delivery) in waiting {
                    match to == id {
                        true => keys.extend(EndGroup::of(delivery).iter().map(|e| e.key())),
                        false => self.batch_out.for_handlers.push((to, delivery)),
                    }
                }
                debug!(tasks = running.len(), "end handler aborted");
                self.handlers.abort(id, keys);
                for (_, task) in running {
                    self.engine.cancel_task(t, task);
                }
            }
            Command::AbortHandler(_) => {}
            Command::Cancel { key } => {
                let id = match self.held.id_of(key) {
                    Some(id) => Some(id),
                    None => self.cancel_index.waiter(&self.waiters, key).map(|w| w.id),
                };
                if let Some(id) = id {
                    debug!(task = %id, "cancel");
                    self.engine.cancel_task(t, id);
                }
            }
            Command::CancelInBatch { key, sink } => {
                self.cancel_own(t, &Sink::Channel(sink), [key]);
            }
            Command::SetForeground(fg) => {
                info!(foreground = fg, "app state");
                self.engine.set_foreground(t, fg);
            }
            Command::SetNetwork { kind, label } => {
                info!(?kind, label = %label, "network changed");
                for (source, name) in self.ip_sources.iter().zip(&self.ip_source_names) {
                    let _guard = self
                        .watchdog
                        .call(format!("ipsource {name} network_changed"), now());
                    if let Err(message) = catch(|| source.network_changed()) {
                        let panic = PluginPanic::new(
                            PluginKind::IpSource,
                            name.clone(),
                            "network_changed",
                            message,
                        );
                        guard::report(&self.plugin_panics, &panic);
                    }
                }
                self.engine.set_network(t, kind, &label);
                self.save_ranking_state();
            }
            Command::MakeSureConnected { link } => {
                debug!(link = %link, "make sure connected");
                if !self.engine.connect_link(t, &link) {
                    warn!(link = %link, "make_sure_connected: unknown link");
                }
            }
            Command::SetAccount(has_account) => {
                info!(has_account, "account changed");
                self.engine.set_account(t, has_account);
            }
            Command::RedoTasks => {
                info!("redo tasks");
                self.engine.redo_tasks(t);
            }
            Command::KeepSignalling => {
                debug!("keep signalling");
                self.engine.keep_signalling(t);
            }
            Command::StopSignalling => {
                debug!("stop signalling");
                self.engine.stop_signalling(t);
            }
            Command::Stats(reply) => {
                let _ = reply.send(DriverStats {
                    tasks_in_flight: self.waiters.len() + self.held.len(),
                    open_connections: self.conns.len(),
                    pending_connects: self.attempts.len(),
                    watchdog_stalls: self.watchdog.reported(),
                    connect_attempts: self.connect_attempts,
                    write_waits: self.write_waits,
                    writes: self.writes,
                    short_link_in_flight: self.short.in_flight(),
                    short_link_pooled: self.short.pooled(),
                    plugin_calls_refused: self.plugin_calls_refused,
                    plugin_panics: self.plugin_panics.load(Ordering::Relaxed),
                    transport_panics: self.transport_panics.load(Ordering::Relaxed),
                    handlers_running: self.handlers.len(),
                    handler_panics: self.handler_panics,
                });
            }
            Command::Shutdown(done) => return Some(done),
        }
        None
    }

    /// Admits the tasks of one batch call (keys from `first` on), whose ends go to `sink`,
    /// to be dispatched at the end of the command batch.
    fn admit_batch(&mut self, t: Instant, first: u64, tasks: BatchTasks, sink: &Sink) {
        m::count(&m::TASKS_STARTED_KEY, tasks.len() as u64);
        let index = self.batch_out.hold(sink, tasks.len());
        self.held.hold(first, tasks.len(), index);
        match tasks {
            BatchTasks::Specs(specs) => {
                for (i, spec) in specs.into_iter().enumerate() {
                    self.start_batch_task(t, spec, first + i as u64);
                }
            }
            BatchTasks::Like { params, requests } => {
                self.start_like(t, &params, requests, first);
            }
        }
    }

    /// Hands the ends of this iteration that belong to handlers to them, admits what they
    /// start and dispatches it, and again for the ends that brings (a task refused at
    /// admission ends at once), up to [`HANDLER_PASSES`] times; what is left waits for the
    /// next iteration, which then comes at once ([`handlers_behind`](Self::handlers_behind)).
    fn run_handlers(&mut self, t: Instant) {
        let mut inbox = std::mem::take(&mut self.handlers.inbox);
        for pass in 0..=HANDLER_PASSES {
            self.batch_out.take_for_handlers(&mut inbox);
            if inbox.is_empty() {
                break;
            }
            if pass == HANDLER_PASSES {
                // Handed over first in the next iteration (`handlers_behind`).
                self.batch_out.for_handlers.append(&mut inbox);
                break;
            }
            self.watchdog.in_handler();
            for (id, delivery) in inbox.drain(..) {
                let called = self.handlers.call(id, Some(delivery));
                self.after_handler_call(t, id, called);
            }
            self.engine.send_queued(t);
            self.drain();
        }
        self.handlers.inbox = inbox;
    }

    /// Carries out what handler `id`'s call left: its starts and cancels, or after a panic
    /// the cancel of its tasks still running.
    fn after_handler_call(&mut self, t: Instant, id: HandlerId, called: Called) {
        match called {
            Called::Running | Called::Finished => {
                let mut starts = std::mem::take(&mut self.handlers.starts);
                for (first, tasks) in starts.drain(..) {
                    self.admit_batch(t, first, tasks, &Sink::Handler(id));
                }
                self.handlers.starts = starts;
                let mut cancels = std::mem::take(&mut self.handlers.cancels);
                if !cancels.is_empty() {
                    self.cancel_own(t, &Sink::Handler(id), cancels.drain(..));
                }
                self.handlers.cancels = cancels;
            }
            Called::Panicked(message) => {
                self.handler_panics += 1;
                error!(message = %message, "an end handler panicked; it is dropped and its tasks canceled");
                for (_, task) in self.handler_tasks(id) {
                    self.engine.cancel_task(t, task);
                }
            }
            Called::Gone => {}
        }
    }

    /// Cancels the tasks of `keys` that belong to the batch whose ends go to `sink` (a
    /// `TaskBatch`'s or an end handler's); other keys are ignored.
    fn cancel_own(&mut self, t: Instant, sink: &Sink, keys: impl IntoIterator<Item = TaskKey>) {
        let Some(own) = self.batch_out.index_of(sink) else {
            return;
        };
        for key in keys {
            if let Some(task) = self.held.id_in(key, own) {
                debug!(task = %task, "cancel (of its batch)");
                self.engine.cancel_task(t, task);
            }
        }
    }

    /// Handler `id`'s tasks still owed an end (rare: a scan of the held tasks).
    fn handler_tasks(&self, id: HandlerId) -> Vec<(TaskKey, TaskId)> {
        match self.batch_out.index_of(&Sink::Handler(id)) {
            Some(index) => self.held.owed_of_batch(index),
            None => Vec::new(),
        }
    }

    /// Admits a task, to be dispatched at the end of the command batch
    /// ([`Engine::send_queued`]), and notes who waits for its end.
    fn start(&mut self, t: Instant, spec: TaskSpec, key: TaskKey, reply: oneshot::Sender<TaskEnd>) {
        let entry = self.waiters.vacant_entry();
        let tag = entry.key() as u64;
        let link = tracing::enabled!(tracing::Level::TRACE).then(|| spec.link.clone());
        let cmd = spec.cmd_id;
        let id = self.engine.queue_task_tagged(t, spec, tag);
        entry.insert(Waiter { id, key, reply });
        self.cancel_index.started(key, tag as usize);
        self.note_started(id, tag, cmd, link.as_ref());
    }

    /// [`start`](Self::start) for the task of key `key` of a batch command (held in
    /// [`held`](Self::held) already).
    fn start_batch_task(&mut self, t: Instant, spec: TaskSpec, key: u64) {
        let tag = key | BATCH_TAG;
        let link = tracing::enabled!(tracing::Level::TRACE).then(|| spec.link.clone());
        let cmd = spec.cmd_id;
        let id = self.engine.queue_task_tagged(t, spec, tag);
        self.held.set_id(key, id);
        self.note_started(id, tag, cmd, link.as_ref());
    }

    /// Task `id` (tag `tag`) was admitted: its `tracing` line (with its link, when tracing)
    /// and its span (when a subscriber wants spans).
    fn note_started(&mut self, id: TaskId, tag: u64, cmd: CmdId, link: Option<&LinkName>) {
        if let Some(link) = link {
            trace!(task = %id, link = %link, "task started");
        }
        let span = task_span(id, cmd);
        if !span.is_disabled() {
            self.task_spans.insert(tag, span);
        }
    }

    /// Admits the tasks of a [`TaskBatch::start_like`](crate::TaskBatch::start_like) call
    /// (keys from `first` on, held in [`held`](Self::held) already), to be dispatched at the
    /// end of the command batch: [`start_batch_task`](Self::start_batch_task) for each, with
    /// the parameters looked at once ([`Engine::queue_tasks_like`]).
    fn start_like(
        &mut self,
        t: Instant,
        params: &Arc<TaskSpec>,
        mut tasks: Vec<LikeTask>,
        first: u64,
    ) {
        for (task, key) in tasks.iter_mut().zip(first..) {
            task.tag = key | BATCH_TAG;
        }
        self.engine.queue_tasks_like(t, params, &mut tasks);
        self.held.set_ids(first, tasks.iter().map(|task| task.id));
        let link = tracing::enabled!(tracing::Level::TRACE).then_some(&params.link);
        // Below DEBUG no task span can be enabled (`task_span`'s own first check), so the
        // tasks need no per-task check.
        if link.is_some() || tracing::level_enabled!(tracing::Level::DEBUG) {
            for task in &tasks {
                self.note_started(task.id, task.tag, task.cmd_id, link);
            }
        }
    }

    /// Drains the engine's outputs: actions first, then events, until both are empty.
    fn drain(&mut self) {
        loop {
            let mut progressed = false;
            while let Some(action) = self.engine.poll_action() {
                self.execute(action);
                progressed = true;
            }
            while let Some(event) = self.engine.poll_event() {
                self.dispatch(event);
                progressed = true;
            }
            if !progressed {
                return;
            }
        }
    }

    /// Writes each connection's frames of this iteration, as far as the socket takes them
    /// without waiting; the rest waits for writability in the loop's select. A write error
    /// closes the connection (reported to the engine, whose outputs are drained again).
    fn flush(&mut self, t: Instant) {
        loop {
            let mut failed = Vec::new();
            let mut reported = false;
            let mut cx = Context::from_waker(Waker::noop());
            for conn in self.unflushed.drain(..) {
                let Some(c) = self.conns.get_mut(&conn) else {
                    continue;
                };
                if let Poll::Ready(Err(e)) = c.poll_write_out(&mut cx, &mut self.writes) {
                    failed.push((conn, close_cause(&e)));
                    continue;
                }
                // Design: every connection whose held bytes changed is here: one written to
                // in this iteration, or one that had bytes left after the last (put back
                // below, and kept here until they are all gone). So the usual write, taken
                // whole, costs one comparison.
                if c.unsent != c.reported {
                    c.reported = c.unsent;
                    self.engine.handle_unsent(t, conn, c.unsent);
                    reported = true;
                }
            }
            // Whatever is left waits for writability: a wait counted as it begins, not once
            // per iteration it lasts (which counted the driver's other work).
            for (id, c) in self.conns.iter_mut() {
                if c.has_output() {
                    self.unflushed.push(*id);
                    if !std::mem::replace(&mut c.waiting, true) {
                        self.write_waits += 1;
                    }
                } else {
                    c.waiting = false;
                }
            }
            if failed.is_empty() && !reported {
                return;
            }
            for (conn, cause) in failed {
                self.handle_io(t, IoEvent::Closed { conn, cause });
            }
            self.drain();
        }
    }

    /// Polls every connection: continues pending writes, then reads what is there (a few
    /// reads per connection). Ready with the reads in `reads` (empty when only writes
    /// progressed); pending with `reads` left empty.
    fn poll_io(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let got = &mut self.reads;
        debug_assert!(got.is_empty(), "the last poll's reads were handled");
        let mut wrote = false;
        for (&id, c) in self.conns.iter_mut() {
            if c.has_output() {
                // Any write shortens the front piece or drops pieces: no need to sum them.
                let mark = |out: &VecDeque<Bytes>| (out.len(), out.front().map_or(0, Bytes::len));
                let before = mark(&c.out);
                match c.poll_write_out(cx, &mut self.writes) {
                    Poll::Ready(Err(e)) => {
                        got.push((id, ConnRead::Closed(close_cause(&e))));
                        continue;
                    }
                    _ => wrote |= mark(&c.out) != before,
                }
            }
            for _ in 0..READS_PER_POLL {
                match c.poll_read_chunk(cx) {
                    Poll::Pending => break,
                    Poll::Ready(r) => {
                        let closed = matches!(r, ConnRead::Closed(_));
                        got.push((id, r));
                        if closed {
                            break;
                        }
                    }
                }
            }
        }
        if got.is_empty() && !wrote {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    }

    fn execute(&mut self, action: Action) {
        match action {
            Action::Send { conn, bytes, .. } => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    m::count(&m::BYTES_SENT_KEY, bytes.len() as u64);
                    if !c.has_output() {
                        self.unflushed.push(conn);
                    }
                    if !bytes.is_empty() {
                        c.unsent += bytes.len() as u64;
                        c.out.push_back(bytes);
                    }
                }
            }
            Action::Connect {
                link,
                attempt,
                addr,
            } => {
                self.connect_attempts += 1;
                metrics::counter!(m::CONNECT_ATTEMPTS, "link" => link.to_string()).increment(1);
                debug!(link = %link, conn = %attempt, %addr, "connecting");
                let connector = self.connector.clone();
                let panics = self.transport_panics.clone();
                let io = self.io_tx.clone();
                let up = self.io_tx.clone();
                let established = Established::new(move || {
                    let _ = up.send(IoEvent::Established(attempt));
                });
                let task = tokio::spawn(
                    async move {
                        let connect = || connector.connect_reporting(addr, established);
                        let ev = match guard::connect(&panics, connect).await {
                            Ok(stream) => IoEvent::Connected { attempt, stream },
                            Err(e) => IoEvent::ConnectFailed {
                                attempt,
                                error: dial_error(&e),
                            },
                        };
                        let _ = io.send(ev);
                    }
                    .in_current_span(),
                );
                self.attempts.insert(attempt, (link, task.abort_handle()));
            }
            Action::Abort { attempt } => {
                if self.short.abort(attempt) {
                    debug!(conn = %attempt, "short-link connection aborted");
                }
                if let Some((link, task)) = self.attempts.remove(&attempt) {
                    debug!(link = %link, conn = %attempt, "connect attempt aborted");
                    task.abort();
                }
                if let Some(c) = self.conns.remove(&attempt) {
                    debug!(link = %c.link, conn = %attempt, "connection aborted");
                }
            }
            Action::Close { link, conn, reason } => {
                if self.conns.remove(&conn).is_some() {
                    info!(link = %link, conn = %conn, reason = %reason, "closing connection");
                }
            }
            Action::Resolve {
                link,
                host,
                source,
                purpose,
            } => self.spawn_resolve(link, host, source, purpose),
            Action::CancelResolve { link, host, source } => {
                if let Some((_, task)) = self.resolving.remove(&(link, host, source)) {
                    task.abort();
                }
            }
            Action::EnsureAuth { host } => self.spawn_auth(host),
            Action::ShortConnect {
                attempt,
                addr,
                host,
                proxy,
                ..
            } => {
                self.connect_attempts += 1;
                self.short.connect(attempt, addr, &host, proxy);
            }
            Action::HttpExchange { conn, request, .. } => {
                metrics::counter!(m::BYTES_SENT).increment(request.body.len() as u64);
                self.short.exchange(conn, request);
            }
            Action::InspectTransport { link, conn } => {
                let facts = self
                    .conns
                    .get(&conn)
                    .and_then(|c| c.stream.transport_facts());
                debug!(link = %link, conn = %conn, ?facts, "heartbeat reply overdue: transport facts");
                self.engine.handle_transport(now(), conn, facts);
            }
            other => warn!(?other, "action not supported by this driver"),
        }
    }

    #[inline]
    fn dispatch(&mut self, event: Event) {
        match event {
            Event::TaskEnded(end) => match lone_batch(end, self.task_spans.is_empty()) {
                Ok(batch) => self.tasks_ended(batch),
                Err(end) => self.task_ended(end),
            },
            Event::TasksEnded(batch) => self.tasks_ended(batch),
            Event::Push { link, cmd_id, body } => {
                metrics::counter!(m::PUSHES, "link" => link.to_string()).increment(1);
                trace!(link = %link, %cmd_id, len = body.len(), "push");
                self.outputs.pushes.send(Push { link, cmd_id, body });
            }
            Event::LinkStatus {
                link,
                status,
                reason,
            } => self.link_status(link, status, reason),
            Event::TaskRetrying { id, attempt, error } => {
                metrics::counter!(m::TASKS_RETRIED).increment(1);
                info!(task = %id, attempt, error = %error, "task attempt failed, retrying");
            }
            Event::TaskSent {
                id,
                link,
                first_packet_timeout,
            } => {
                trace!(task = %id, link = %link, ?first_packet_timeout, "task sent");
            }
            Event::ConnectCycle(report) => self.connect_cycle(report),
            Event::HeartbeatAcked { link, rtt } => {
                metrics::counter!(m::HEARTBEAT_ACKS, "link" => link.to_string()).increment(1);
                debug!(link = %link, ?rtt, "heartbeat answered");
                self.save_heartbeat_state();
            }
            Event::PluginPanicked(panic) => guard::report(&self.plugin_panics, &panic),
            other => debug!(event = ?other, "engine event"),
        }
    }

    /// A connect cycle ended: one `tracing` event (target `phobos_stn::connect`) with the
    /// addresses attempted and their outcomes, and the report rides on the link's next
    /// status event ([`LinkEvent::cycle`]).
    fn connect_cycle(&mut self, report: ConnectReport) {
        let attempts = report
            .attempts
            .iter()
            .map(|a| format!("{}@{}ms:{}", a.addr, a.started_after.as_millis(), a.outcome))
            .collect::<Vec<_>>()
            .join(", ");
        let connected_ms = report.connected_after.map(|d| d.as_millis() as u64);
        info!(
            target: "phobos_stn::connect",
            link = %report.link,
            profile = ?report.profile,
            planned = report.planned,
            tried = report.attempts.len(),
            connected_ms,
            elapsed_ms = report.elapsed.as_millis() as u64,
            attempts = %attempts,
            "connect cycle"
        );
        self.pending_cycle = Some(report);
    }

    fn task_ended(&mut self, end: TaskEnd) {
        let tag = end.tag;
        let Some((key, reply)) = self.take_waiter(tag, end.id) else {
            return;
        };
        let outcome = outcome_label(&end.outcome);
        let p = &end.profile;
        let elapsed = end.elapsed;
        match OUTCOME_KEYS.iter().position(|k| k.0 == outcome) {
            Some(kind) => self.end_metrics.record(kind, elapsed.as_secs_f64()),
            None => {
                metrics::counter!(m::TASKS_ENDED, "outcome" => outcome).increment(1);
                metrics::histogram!(m::TASK_SECONDS, "outcome" => outcome)
                    .record(elapsed.as_secs_f64());
            }
        }
        let in_span = match self.task_spans.is_empty() {
            true => None,
            false => self.enter_task_span(tag, outcome, p, elapsed),
        };
        match &end.outcome {
            Ok(r) => ended_ok(end.id, p, p.sent_bytes, p.received_bytes, r, elapsed),
            Err(e) => info!(
                task = %end.id, link = ?p.link, attempts = p.attempts,
                elapsed_us = elapsed.as_micros() as u64, error = %e, kind = %outcome,
                "task ended: failed"
            ),
        }
        drop(in_span);
        match reply {
            Reply::One(tx) => {
                let _ = tx.send(end);
            }
            Reply::Batch(batch) => {
                let mut profile = end.profile;
                self.batch_out
                    .push_own(batch, key, end.outcome, &mut profile);
                self.engine.recycle_profile(profile);
            }
        }
    }

    /// `profile` behind an `Arc` for the ends of one batch to share: the last batch's `Arc`
    /// filled again when no end points at it any more (the box goes back to the engine),
    /// else a new one.
    fn common_profile(&mut self, profile: Box<TaskProfile>) -> Arc<TaskProfile> {
        let common = match self.common_spare.take() {
            Some(mut spare) => match Arc::get_mut(&mut spare) {
                Some(place) => {
                    // The box takes the old profile back to the engine, which writes every
                    // field of a box it reuses.
                    let mut profile = profile;
                    std::mem::swap(place, &mut profile);
                    self.engine.recycle_profile(profile);
                    spare
                }
                None => Arc::from(profile),
            },
            None => Arc::from(profile),
        };
        self.common_spare = Some(common.clone());
        common
    }

    /// The ends of tasks that ended together ([`Event::TasksEnded`]): each as
    /// [`task_ended`](Self::task_ended) would end it, a batch task's end pointing at the
    /// tasks' one shared profile (a waiting caller gets the task's own profile built).
    fn tasks_ended(&mut self, mut batch: EndBatch) {
        if !self.task_spans.is_empty() {
            // Spans get the ends one by one (their profiles are recorded into the spans).
            for end in batch.into_ends() {
                self.task_ended(end);
            }
            return;
        }
        let elapsed = batch.elapsed;
        let seconds = elapsed.as_secs_f64();
        let mut ends = std::mem::take(&mut batch.ends);
        let common = self.common_profile(batch.profile);
        // Below DEBUG no end's log line can be enabled (the line's own first check).
        let log = tracing::level_enabled!(tracing::Level::DEBUG);
        // Usually every end is owed to one batch: those go on as the core made them
        // (`Delivery::Together`), each taken from the held tasks here and made a `BatchEnd`
        // when the app receives it. The first end that is not goes the way below, with all
        // after it.
        let (together, to) = self.held.take_together(&ends);
        let rest = match together {
            0 => std::mem::take(&mut ends),
            n => ends.split_off(n),
        };
        let mut ended = together as u64;
        if let Some(b) = to {
            if log {
                for end in &ends {
                    let (sent, received) = (end.sent_bytes, end.received_bytes);
                    ended_ok(end.id, &common, sent, received, &end.response, elapsed);
                }
            }
            self.batch_out.push_together(b, common.clone(), ends);
        }
        for end in rest {
            let Some((_, reply)) = self.take_waiter(end.tag, end.id) else {
                continue;
            };
            ended += 1;
            let (sent, received) = (end.sent_bytes, end.received_bytes);
            if log {
                ended_ok(end.id, &common, sent, received, &end.response, elapsed);
            }
            match reply {
                Reply::One(tx) => {
                    let fpt = end.first_packet_timeout;
                    let profile = common.with_own(sent, received, fpt);
                    let _ = tx.send(TaskEnd {
                        id: end.id,
                        tag: end.tag,
                        outcome: Ok(end.response),
                        profile: Box::new(profile),
                        elapsed,
                    });
                }
                // Its key is its tag's (`HeldBatches::take`), which `shared_end` reads.
                Reply::Batch(b) => self.batch_out.push_end(b, shared_end(&common, end)),
            }
        }
        self.end_metrics.record_many(OK_OUTCOME, seconds, ended);
    }

    /// Who waits for the end of task `id` (tag `tag`), taken out: a batch's held task or a
    /// waiter. `None` when nobody does (an end the task already had).
    #[inline(always)]
    fn take_waiter(&mut self, tag: u64, id: TaskId) -> Option<(TaskKey, Reply)> {
        if tag & BATCH_TAG != 0 {
            let (key, batch) = self.held.take(tag, id)?;
            return Some((key, Reply::Batch(batch)));
        }
        let tag = tag as usize;
        if self.waiters.get(tag).is_none_or(|w| w.id != id) {
            return None;
        }
        let w = self.waiters.remove(tag);
        self.cancel_index.ended(w.key);
        Some((w.key, Reply::One(w.reply)))
    }

    /// The span of the task of tag `tag`, if it has one, with the task's end recorded into
    /// it, entered for the end's own log line.
    #[cold]
    #[inline(never)]
    fn enter_task_span(
        &mut self,
        tag: u64,
        outcome: &str,
        profile: &TaskProfile,
        elapsed: std::time::Duration,
    ) -> Option<tracing::span::EnteredSpan> {
        let span = self.task_spans.remove(&tag)?;
        record_profile(&span, outcome, profile, elapsed);
        Some(span.entered())
    }

    fn link_status(
        &mut self,
        link: LinkName,
        status: LinkStatus,
        reason: Option<phobos_stn_proto::LinkError>,
    ) {
        if matches!(status, LinkStatus::Disconnected) {
            self.save_heartbeat_state();
            self.save_ranking_state();
        }
        let label = match status {
            LinkStatus::Connecting => "connecting",
            LinkStatus::Connected(_) => "connected",
            LinkStatus::Disconnected => "disconnected",
            LinkStatus::ConnectFailed => "connect_failed",
            _ => "other",
        };
        metrics::counter!(m::LINK_STATUS, "link" => link.to_string(), "status" => label)
            .increment(1);
        let prev = {
            let mut st = self
                .outputs
                .statuses
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            st.insert(link.clone(), status)
        };
        let was_up = matches!(prev, Some(LinkStatus::Connected(_)));
        let is_up = matches!(status, LinkStatus::Connected(_));
        if was_up != is_up {
            // Design: moved by this driver's own changes, not set to its count: the gauge
            // is one for the process, and with several clients the last to set it won.
            if is_up {
                self.connected += 1;
                metrics::gauge!(m::LINKS_CONNECTED).increment(1.0);
            } else if self.connected > 0 {
                self.connected -= 1;
                metrics::gauge!(m::LINKS_CONNECTED).decrement(1.0);
            }
        }
        match &reason {
            Some(r) => {
                info!(link = %link, status = label, reason = %r, mars_code = r.mars_code(), "link status")
            }
            None => match status {
                LinkStatus::Connected(addr) => {
                    info!(link = %link, status = label, addr = %addr, "link status")
                }
                _ => info!(link = %link, status = label, "link status"),
            },
        }
        let cycle = match status {
            LinkStatus::Connected(_) | LinkStatus::ConnectFailed => {
                self.pending_cycle.take_if(|c| c.link == link)
            }
            _ => None,
        };
        self.outputs.links.send(LinkEvent {
            link,
            status,
            reason,
            cycle,
        });
    }

    fn spawn_conn(&mut self, conn: ConnId, link: LinkName, stream: Box<dyn LinkStream>) {
        self.conns.insert(
            conn,
            Conn {
                link,
                stream,
                out: VecDeque::new(),
                unsent: 0,
                reported: 0,
                waiting: false,
                rbuf: BytesMut::new(),
                read_size: 0,
                unflushed: false,
            },
        );
    }

    /// Runs ONE source of the chain on one host and reports back; the core walks the chain
    /// and times each call (its own deadline); the timeout here only bounds the task.
    fn spawn_resolve(&mut self, link: LinkName, host: String, source: usize, purpose: LinkPurpose) {
        let io = self.io_tx.clone();
        let call = self.next_call;
        self.next_call += 1;
        let key = (link.clone(), host.clone(), source);
        let Some(src) = self.ip_sources.get(source).cloned() else {
            warn!(link = %link, source, "no such ip source");
            let failed = Resolved {
                call,
                link,
                host,
                source,
                result: Err(ResolveError::Failed(format!("no ip source #{source}"))),
            };
            self.resolve_failed(key, failed);
            return;
        };
        let blocking = src.is_blocking();
        // A blocking call cannot be stopped: while one the core gave up on still runs, the
        // same call is not made again (see `begin_plugin_call`). A task is stopped by
        // `CancelResolve`, so it needs no such guard.
        let token = if blocking {
            let running = PluginCall::Resolve {
                link: link.clone(),
                host: host.clone(),
                source,
            };
            match self.begin_plugin_call(running) {
                Some(token) => Some(token),
                None => {
                    // The watchdog reports the blocked call itself; this repeats each cycle.
                    debug!(
                        link = %link, host = %host, source = %self.ip_source_names[source],
                        "ip source still blocked in the call given up before: not asked again"
                    );
                    let error = "the source's previous call for this host is still running";
                    let failed = Resolved {
                        call,
                        link,
                        host,
                        source,
                        result: Err(ResolveError::Failed(error.into())),
                    };
                    self.resolve_failed(key, failed);
                    return;
                }
            }
        } else {
            None
        };
        let name = self.ip_source_names[source].clone();
        // Only a call that holds a thread is watched: an async source waiting 1.5 s on its
        // network (within its 2 s limit) blocked nothing, yet was reported as a stall,
        // which hid the real ones among them.
        let guard = blocking.then(|| self.watchdog.call(format!("ipsource {name}"), now()));
        // No timeout here: the core times the call (the source's limit) and sends
        // `CancelResolve`, which stops this task (or, for a blocking call already running,
        // leaves it to finish with an answer nobody waits for).
        let panics = self.plugin_panics.clone();
        let task = spawn_plugin_call(blocking, async move {
            let _guard = guard;
            let result = guard::call_or_fallback(
                &panics,
                (PluginKind::IpSource, "resolve"),
                || name.clone(),
                || src.resolve(&host, purpose),
                resolve_panicked,
            )
            .await;
            if let Err(e) = &result {
                warn!(source = %name, host = %host, error = %e, "ip source failed");
            }
            // Ended before its answer is seen, so the core may ask again at once.
            drop(token);
            let _ = io.send(IoEvent::Resolved(Box::new(Resolved {
                call,
                link,
                host,
                source,
                result,
            })));
        });
        self.track_resolve(key, call, task);
    }

    /// Answers the resolve call `failed.call` for `key` with its failure, from a task (as a
    /// source's answer would come), tracked like a running call.
    fn resolve_failed(&mut self, key: (LinkName, String, usize), failed: Resolved) {
        let io = self.io_tx.clone();
        let call = failed.call;
        let task = tokio::spawn(
            async move {
                let _ = io.send(IoEvent::Resolved(Box::new(failed)));
            }
            .in_current_span(),
        );
        self.track_resolve(key, call, task.abort_handle());
    }

    /// Remembers the running call `call` for `key`; an older call for the same key is
    /// stale (the core asks again only after giving the old one up) and is stopped.
    fn track_resolve(&mut self, key: (LinkName, String, usize), call: u64, task: AbortHandle) {
        if let Some((_, old)) = self.resolving.insert(key, (call, task)) {
            old.abort();
        }
    }

    fn spawn_auth(&mut self, host: String) {
        let io = self.io_tx.clone();
        let Some(auth) = self.auth.clone() else {
            // No auth plugin: every host counts as authenticated.
            let _ = io.send(IoEvent::Authed(Box::new(Authed {
                host,
                result: Ok(()),
            })));
            return;
        };
        // Not stopped by the driver while it runs (only at its teardown): the core has one
        // call per host in flight and waiting tasks keep their own timeouts. The core asks again after a call ran past its limit
        // (`Timing::auth_limit`); while that call still runs, it is not made a second time.
        let Some(token) = self.begin_plugin_call(PluginCall::Auth { host: host.clone() }) else {
            // The watchdog reports the hung call itself; this repeats at every retry.
            debug!(
                host = %host, auth = %self.auth_name,
                "login still running past its limit: not started again"
            );
            let result = Err(AuthError::Transient(
                "the previous login for this host is still running".into(),
            ));
            let _ = io.send(IoEvent::Authed(Box::new(Authed { host, result })));
            return;
        };
        let name = self.auth_name.clone();
        let blocking = auth.is_blocking();
        // As for IP sources: only a login that holds a thread is watched.
        let guard = blocking.then(|| self.watchdog.call(format!("auth {name}"), now()));
        let panics = self.plugin_panics.clone();
        let key = host.clone();
        let call = spawn_plugin_call(blocking, async move {
            let _guard = guard;
            let result = guard::call_or_fallback(
                &panics,
                (PluginKind::Auth, "ensure_authed"),
                || name,
                || auth.ensure_authed(&host),
                auth_panicked,
            )
            .await;
            // Ended before its answer is seen, so the core may ask again at once.
            drop(token);
            let _ = io.send(IoEvent::Authed(Box::new(Authed { host, result })));
        });
        // The host's last call (an earlier one has answered, or was given up on and is left
        // to its plugin): stopped at teardown, with the other calls the driver made.
        self.auth_calls.insert(key, call);
    }

    /// A token for the plugin call `call`, which the call holds until it ends (answers, or
    /// is dropped); `None` (and one more refusal counted) while the same call still runs.
    ///
    /// Design: a call into a blocking plugin cannot be stopped, and an auth call is never
    /// stopped. When one hangs, the core gives up at its limit and later asks again; made
    /// each time, every such call would hold another thread (or task) for as long as the
    /// plugin hangs, until tokio's blocking pool (512 threads) is used up, and with it the
    /// pool the state files are written on. So at most one call per key runs: a repeat
    /// while it runs is answered at once as a failure (the core then moves on, or retries
    /// later, as for any failure), and the hung call's answer, if it ever comes, is taken
    /// as any late answer is.
    fn begin_plugin_call(&mut self, call: PluginCall) -> Option<Arc<()>> {
        if self
            .plugin_calls
            .get(&call)
            .is_some_and(|running| running.strong_count() > 0)
        {
            self.plugin_calls_refused += 1;
            return None;
        }
        // Finished calls are forgotten as the table grows: each short-link task resolves
        // under a name of its own, so the table kept an entry per task for the driver's
        // life. Swept at each power of two past 64 entries (amortised: a sweep that frees
        // nothing, every call still hanging, comes again only at twice the size).
        let len = self.plugin_calls.len();
        if len >= 64 && len.is_power_of_two() {
            self.plugin_calls
                .retain(|_, running| running.strong_count() > 0);
        }
        let token = Arc::new(());
        self.plugin_calls.insert(call, Arc::downgrade(&token));
        Some(token)
    }

    /// Hands the heartbeat policy's state to its writer, if a file is configured and the
    /// state changed since the last save: written off the loop, atomically (a temporary file
    /// renamed over the old one, so a crash never leaves half a file).
    ///
    /// Design: saved after every answered heartbeat, not only when a link goes down and at
    /// shutdown: a mobile app is usually killed by the OS, not shut down, and everything
    /// learnt since the last drop was lost with it (Mars saves after each heartbeat result
    /// too). Unchanged states are not written again.
    fn save_heartbeat_state(&mut self) {
        if self.heartbeat_state.is_none() {
            return;
        }
        let Some(state) = self.export_heartbeat_state() else {
            return;
        };
        if self.heartbeat_saved.as_ref() == Some(&state) {
            return;
        }
        let Some(writer) = &mut self.heartbeat_state else {
            return;
        };
        writer.save(HeartbeatState(state.clone()));
        self.heartbeat_saved = Some(state);
    }

    /// Hands a snapshot of the IP ranking to its writer, if a file is configured: written
    /// off the loop (atomically, like the heartbeat state), the newest snapshot winning.
    fn save_ranking_state(&mut self) {
        let Some(writer) = &mut self.ranking_state else {
            return;
        };
        writer.save(self.engine.ranking_state(now(), unix_now()));
    }

    /// The heartbeat factory's state to save; `None` (nothing saved) when it panicked.
    fn export_heartbeat_state(&self) -> Option<String> {
        match catch(|| self.heartbeat.export_state()) {
            Ok(state) => state,
            Err(message) => {
                let name = guard::name_of(|| self.heartbeat.name().to_owned());
                let panic = PluginPanic::new(PluginKind::Heartbeat, name, "export_state", message);
                guard::report(&self.plugin_panics, &panic);
                None
            }
        }
    }

    /// Ends every task still held with `LocalError::Reset`: dropping a handle's reply
    /// sender resolves it so; each batch task gets a reset end.
    fn end_held_tasks(&mut self) {
        // They end with a reset (a local error): counted as any end is, so that started
        // minus ended stays what is in flight across shutdowns (before, these were counted
        // as started and never as ended).
        let n = self.waiters.len() + self.held.len();
        if n > 0 {
            metrics::counter!(m::TASKS_ENDED, "outcome" => "local").increment(n as u64);
        }
        self.batch_out.reset(self.held.drain());
        // Handlers get no more calls: their tasks' last ends are listed in their outcome.
        for (id, delivery) in std::mem::take(&mut self.batch_out.for_handlers) {
            let keys: Vec<TaskKey> = EndGroup::of(delivery).iter().map(|e| e.key()).collect();
            self.handlers.stopped(id, keys);
        }
        self.handlers.stop_all();
        self.waiters.clear();
        self.cancel_index = CancelIndex::default();
        self.end_metrics.flush();
    }

    /// Ends the driver: every waiting task resolves with a reset, every socket closes.
    /// Returns the writes of the final states (IP ranking, heartbeat), to be waited for.
    fn teardown(&mut self) -> Vec<state_writer::FinalSave> {
        let mut final_saves = Vec::new();
        let heartbeat = self.export_heartbeat_state();
        if let (Some(writer), Some(state)) = (&mut self.heartbeat_state, heartbeat) {
            final_saves.push(writer.finish(HeartbeatState(state)));
        }
        if let Some(writer) = &mut self.ranking_state {
            final_saves.push(writer.finish(self.engine.ranking_state(now(), unix_now())));
        }
        let n = self.waiters.len() + self.held.len();
        self.end_held_tasks();
        self.conns.clear();
        for (_, (_, task)) in self.attempts.drain() {
            task.abort();
        }
        for (_, (_, task)) in self.resolving.drain() {
            task.abort();
        }
        // Design: a login that never answers kept running on the app's runtime after the
        // client stopped, holding the plugin: an app making clients anew gathered them.
        for (_, task) in self.auth_calls.drain() {
            task.abort();
        }
        self.short.shutdown();
        self.links_down();
        info!(unfinished_tasks = n, "driver stopped");
        final_saves
    }

    /// The links go down with the driver, though no status change says so: the process's
    /// gauge and the clients' `link_status` must not keep them connected. Called by the
    /// teardown and again by `Drop` (a driver whose runtime was dropped has no teardown).
    fn links_down(&mut self) {
        if self.connected > 0 {
            metrics::gauge!(m::LINKS_CONNECTED).decrement(self.connected as f64);
            self.connected = 0;
        }
        for status in self
            .outputs
            .statuses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values_mut()
        {
            if matches!(status, LinkStatus::Connected(_) | LinkStatus::Connecting) {
                *status = LinkStatus::Disconnected;
            }
        }
    }
}

impl Drop for Driver {
    /// A driver dropped without its teardown (its runtime shut down) still gives every task
    /// it holds exactly one end.
    fn drop(&mut self) {
        self.end_held_tasks();
        self.links_down();
    }
}

/// Most times one driver iteration hands ends to handlers (each time for the ends their
/// last starts brought at once); the rest waits for the next iteration.
const HANDLER_PASSES: usize = 8;

/// A static label for a task's outcome (no allocation per task).
fn outcome_label(
    outcome: &Result<phobos_stn_proto::Response, phobos_stn_proto::TaskError>,
) -> &'static str {
    use phobos_stn_proto::{ErrorKind as K, TimeoutLevel as L};
    let Err(e) = outcome else {
        return "ok";
    };
    match e.kind() {
        K::Param => "param",
        K::Local => "local",
        K::Dial => "dial",
        K::Socket => "socket",
        K::Timeout(L::Connect) => "timeout_connect",
        K::Timeout(L::FirstPacket) => "timeout_first_packet",
        K::Timeout(L::PacketToPacket) => "timeout_packet_to_packet",
        K::Timeout(L::ReadWrite) => "timeout_read_write",
        K::Timeout(L::LongPolling) => "timeout_long_polling",
        K::Timeout(L::Total) => "timeout_total",
        K::Timeout(_) => "timeout",
        K::Codec => "codec",
        K::Server => "server",
        K::Auth => "auth",
        K::Canceled => "canceled",
        K::Limited(_) => "limited",
        K::Http => "http",
        _ => "other",
    }
}

/// The `tracing` line of task `id`'s successful end (`profile`'s link and attempts, its own
/// byte counts).
fn ended_ok(
    id: TaskId,
    profile: &TaskProfile,
    sent: usize,
    received: usize,
    response: &phobos_stn_proto::Response,
    elapsed: std::time::Duration,
) {
    debug!(
        task = %id, link = ?profile.link, attempts = profile.attempts,
        elapsed_us = elapsed.as_micros() as u64, sent, received,
        len = response.body.len(), "task ended: ok"
    );
}

/// The entry of "ok" in [`OUTCOME_KEYS`].
const OK_OUTCOME: usize = 0;

/// The task-end metrics of one driver iteration, by entry of [`OUTCOME_KEYS`].
///
/// Design: an outcome's counter and histogram are registered with the recorder at its first
/// end in the iteration (not at every end), and its count is added once when the iteration
/// ends; each end still records its own duration.
#[derive(Default)]
struct EndMetrics {
    open: Vec<Option<(metrics::Counter, metrics::Histogram, u64)>>,
}

impl EndMetrics {
    fn record(&mut self, kind: usize, seconds: f64) {
        self.record_many(kind, seconds, 1);
    }

    /// [`record`](Self::record) for `n` ends that took the same time (the ends of one
    /// [`EndBatch`]): one histogram call.
    fn record_many(&mut self, kind: usize, seconds: f64, n: u64) {
        if n == 0 {
            return;
        }
        if self.open.len() <= kind {
            self.open.resize_with(kind + 1, || None);
        }
        let (_, histogram, count) = self.open[kind].get_or_insert_with(|| {
            let (_, ended, secs) = &OUTCOME_KEYS[kind];
            metrics::with_recorder(|r| {
                (
                    r.register_counter(ended, &METRICS_META),
                    r.register_histogram(secs, &METRICS_META),
                    0,
                )
            })
        });
        match n {
            1 => histogram.record(seconds),
            n => histogram.record_many(seconds, n as usize),
        }
        *count += n;
    }

    fn flush(&mut self) {
        for (counter, _, count) in self.open.iter_mut().filter_map(Option::take) {
            counter.increment(count);
        }
    }
}

/// Metadata of the per-task metrics, as `metrics::counter!` would give them.
static METRICS_META: metrics::Metadata<'static> =
    metrics::Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

/// The [`m::TASKS_ENDED`] and [`m::TASK_SECONDS`] keys for each [`outcome_label`].
///
/// Design: static keys, so recording a task's end builds and hashes no key and allocates
/// nothing (`counter!(name, "outcome" => label)` does both on every call, recorder or not).
macro_rules! outcome_keys_table {
    ($($label:literal),* $(,)?) => {
        &[$({
            const LABELS: &[metrics::Label] = &[metrics::Label::from_static_parts("outcome", $label)];
            (
                $label,
                metrics::Key::from_static_parts(m::TASKS_ENDED, LABELS),
                metrics::Key::from_static_parts(m::TASK_SECONDS, LABELS),
            )
        }),*]
    };
}

static OUTCOME_KEYS: &[(&str, metrics::Key, metrics::Key)] = outcome_keys_table!(
    "ok",
    "param",
    "local",
    "dial",
    "socket",
    "timeout_connect",
    "timeout_first_packet",
    "timeout_packet_to_packet",
    "timeout_read_write",
    "timeout_total",
    "timeout",
    "codec",
    "server",
    "auth",
    "canceled",
    "limited",
    "http",
    "other",
);

/// The `tracing` span of task `id`, opened when it is admitted and closed when it ends:
/// target `phobos_stn::task`, level DEBUG, name `task`, with the task id and command id,
/// and the task's profile recorded into it at its end ([`record_profile`]).
///
/// Design: a span per task lets a subscriber time the task from admission to end and nest
/// the task's own log lines (its end, its retries) under it; its parent is the client's
/// span, which the driver runs in. The phases come as fields in microseconds rather than
/// as child spans: the engine learns when each phase began only as the task ends, and a
/// span's start is the moment it is made. With no subscriber for the target, the span is
/// disabled and costs a level check per task.
fn task_span(id: TaskId, cmd: CmdId) -> Span {
    use tracing::field::Empty;
    tracing::debug_span!(
        target: "phobos_stn::task",
        "task",
        task = %id,
        cmd = cmd.0,
        outcome = Empty,
        link = Empty,
        addr = Empty,
        attempts = Empty,
        queued_us = Empty,
        connect_us = Empty,
        send_us = Empty,
        first_byte_us = Empty,
        last_byte_us = Empty,
        decode_us = Empty,
        elapsed_us = Empty,
        sent_bytes = Empty,
        received_bytes = Empty,
        zombie_rounds = Empty,
        weak_network = Empty,
    )
}

/// Records a task's end into its span ([`task_span`]): the outcome (the metrics' label),
/// where it ran, and each phase of its last attempt in microseconds, where both of the
/// phase's stamps exist: `queued_us` admission to send start, `connect_us` the connection's
/// connect, `send_us` send start to end, `first_byte_us` send end to the first response
/// byte, `last_byte_us` first to last byte, `decode_us` last byte to decoded,
/// `elapsed_us` admission to end.
fn record_profile(span: &Span, outcome: &str, p: &TaskProfile, elapsed: std::time::Duration) {
    let us = |from: Option<Instant>, to: Option<Instant>| match (from, to) {
        (Some(from), Some(to)) => Some(to.saturating_duration_since(from).as_micros() as u64),
        _ => None,
    };
    span.record("outcome", outcome);
    if let Some(link) = &p.link {
        span.record("link", link.as_str());
    }
    if let Some(addr) = &p.addr {
        span.record("addr", tracing::field::display(addr));
    }
    span.record("attempts", p.attempts);
    let phases = [
        ("queued_us", us(Some(p.queued_at), p.send_start)),
        ("connect_us", us(p.connect_start, p.connect_end)),
        ("send_us", us(p.send_start, p.send_end)),
        ("first_byte_us", us(p.send_end, p.first_byte)),
        ("last_byte_us", us(p.first_byte, p.last_byte)),
        ("decode_us", us(p.last_byte, p.decoded_at)),
    ];
    for (field, value) in phases {
        if let Some(value) = value {
            span.record(field, value);
        }
    }
    span.record("elapsed_us", elapsed.as_micros() as u64);
    span.record("sent_bytes", p.sent_bytes as u64);
    span.record("received_bytes", p.received_bytes as u64);
    span.record("zombie_rounds", p.zombie_rounds);
    span.record("weak_network", p.weak_network);
}

/// What a plugin call is for: at most one of each runs at a time
/// ([`Driver::begin_plugin_call`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum PluginCall {
    /// An IP source asked for a host on behalf of a link.
    Resolve {
        link: LinkName,
        host: String,
        source: usize,
    },
    /// A login for a host.
    Auth { host: String },
}

/// A batch task's lone success as a batch of one end ([`Driver::tasks_ended`]), when no task
/// span waits for it (`no_spans`) and its profile holds its attempt's first-packet timeout:
/// it then reaches the app as the ends of a batch do, sharing the driver's reused profile
/// instead of getting a list, a profile table and its `Arc` of its own (three allocations
/// a lone end; at one task in flight, every end is one). Anything else is given back.
fn lone_batch(end: TaskEnd, no_spans: bool) -> Result<EndBatch, TaskEnd> {
    if !no_spans || end.tag & BATCH_TAG == 0 || end.profile.first_packet_timeout.is_none() {
        return Err(end);
    }
    // A failure comes back as it went.
    EndBatch::of_one(end, 1)
}

/// Whether a message may be in `rx`'s channel or come into it: one is queued, or a sender
/// is alive beyond the `resting` ones of `tx`'s channel (those its owner holds for good), or
/// `other_senders` says something else that sends through one of them is.
///
/// Design: on a busy long link every wake-up of the driver's loop polled the IO channel,
/// which is then empty, twice a round (an empty `recv` registers the waker again: about 180
/// instructions), and the select now leaves the channel's branch out when this is false.
/// Only the driver makes new senders (it spawns every task that holds one), so with none
/// alive but its own nothing can arrive until it spawns one, which it does within an
/// iteration, before the next select reads this again. A select that began with a sender
/// alive keeps its branch to its end. The queue is looked at too: an event can be sent while
/// the driver runs an iteration, or lose to another branch ready in the same poll, and its
/// task be gone when the next select starts. A task sends before it drops its sender, so a
/// count seen back at rest (read with acquire ordering; the fence covers a count read
/// relaxed, such as an `Arc`'s) comes with the task's last event visible to `is_empty`.
fn may_receive<T>(
    tx: &mpsc::UnboundedSender<T>,
    resting: usize,
    other_senders: bool,
    rx: &mpsc::UnboundedReceiver<T>,
) -> bool {
    if other_senders || tx.strong_count() > resting {
        return true;
    }
    std::sync::atomic::fence(Ordering::Acquire);
    !rx.is_empty()
}

/// The engine's clock: tokio's (virtual under paused time), as a std `Instant`.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Runs an IO plugin call (`call` awaits the plugin and reports back) off the driver's loop,
/// in the current span. A well-behaved future runs as a task on the runtime. A call that
/// blocks its thread (`blocking`: the plugin's `is_blocking`, which every loaded plugin's
/// adapter answers `true`) runs on tokio's blocking pool instead: as a plain task it would
/// hold a runtime thread, which on a current-thread runtime (the [`BlockingClient`]'s) is the
/// driver's own, so every link and every timer would wait for the plugin.
///
/// Design: the returned handle stops a task, or a blocking call not started yet; a blocking
/// call already running cannot be stopped and runs to its end, and the driver drops its late
/// answer (see `Driver::resolving`). It holds nothing the driver needs, only its watchdog
/// guard, so the watchdog keeps reporting it while it is blocked. Under paused tokio time a
/// blocking call holds virtual time still while it runs (tokio does not auto-advance past a
/// running blocking task), as the same call made inline did.
///
/// [`BlockingClient`]: crate::BlockingClient
fn spawn_plugin_call<F>(blocking: bool, call: F) -> AbortHandle
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let call = call.in_current_span();
    if !blocking {
        return tokio::spawn(call).abort_handle();
    }
    let runtime = tokio::runtime::Handle::current();
    // The plugin's future holds the blocking-pool thread until it is done (a loaded plugin's
    // completes in its first poll); `Handle::block_on` gives it the runtime's context, as a
    // task would have.
    tokio::task::spawn_blocking(move || runtime.block_on(call)).abort_handle()
}

/// Drops the first `n` bytes of `out` (the socket took them).
fn consume(out: &mut VecDeque<Bytes>, mut n: usize) {
    while n > 0 {
        let Some(front) = out.front_mut() else {
            return;
        };
        if front.len() > n {
            front.advance(n);
            return;
        }
        n -= front.len();
        out.pop_front();
    }
}

/// Most pieces of a connection's output written by one vectored write.
const MAX_WRITE_SLICES: usize = 16;
/// Inputs handled per wake-up before the engine's outputs are drained.
const BATCH: usize = 256;
/// Reads per connection per poll before the engine sees them.
const READS_PER_POLL: usize = 4;
/// First read buffer size of a connection.
const READ_MIN: usize = 4 * 1024;
/// Largest read buffer (Mars reads up to 64 KiB per readiness).
const READ_MAX: usize = 64 * 1024;

/// Reads of `read_size` one fresh read block holds room for (up to [`READ_MAX`]).
const READ_BLOCK_READS: usize = 4;

/// Reads the IP ranking from `path`. A missing file is a fresh start; a corrupt,
/// other-version or expired one is ignored with a warning naming the file and the reason.
fn load_ranking_state(path: &Path) -> Option<RankingState> {
    let text = match state_file::read(path) {
        Ok(Some(text)) => text,
        Ok(None) => return None,
        Err(e) => {
            warn!(path = %path.display(), error = %e, "ip ranking state ignored: unreadable");
            return None;
        }
    };
    match RankingState::from_json(&text) {
        Ok(state) if state.is_expired(unix_now()) => {
            warn!(path = %path.display(), saved_at = ?state.saved_at_unix, "ip ranking state ignored: older than a day");
            None
        }
        Ok(state) => Some(state),
        Err(e) => {
            warn!(path = %path.display(), error = %e, "ip ranking state ignored");
            None
        }
    }
}

/// Wall-clock seconds since the Unix epoch (only for the ranking records' ages).
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Restores the heartbeat policy's state from `path`. A missing file is a fresh start; an
/// unreadable or rejected one is ignored with a warning, never an error.
fn load_heartbeat_state(factory: &dyn HeartbeatPolicyFactory, path: &Path) {
    match state_file::read(path) {
        Ok(Some(text)) => {
            // A panic counts as unreadable state (`phobos_plugin_api::panics`).
            let imported = catch(|| factory.import_state(&text));
            if let Err(message) = &imported {
                error!(
                    path = %path.display(), plugin = %guard::name_of(|| factory.name().to_owned()),
                    message = %message, "heartbeat plugin panicked in import_state; state ignored"
                );
            }
            if !imported.unwrap_or(false) {
                warn!(path = %path.display(), "heartbeat state ignored: the policy could not read it");
            }
        }
        Ok(None) => {}
        Err(e) => warn!(path = %path.display(), error = %e, "heartbeat state ignored"),
    }
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;
    use std::sync::{Arc, Mutex};

    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event, Metadata, Subscriber};

    use super::*;

    /// A stream that, like a TLS stream, takes what is written into its own buffer and puts
    /// it on the wire only when flushed; it reads the chunks in `reads`, one per read, then
    /// waits.
    #[derive(Default)]
    struct Buffering {
        held: Vec<u8>,
        wire: Arc<Mutex<Vec<u8>>>,
        reads: VecDeque<Vec<u8>>,
    }

    impl tokio::io::AsyncRead for Buffering {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            let Some(chunk) = self.reads.pop_front() else {
                return Poll::Pending;
            };
            assert!(
                chunk.len() <= buf.remaining(),
                "a read got less room than asked"
            );
            buf.put_slice(&chunk);
            Poll::Ready(Ok(()))
        }
    }

    impl tokio::io::AsyncWrite for Buffering {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            self.held.extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            let held = std::mem::take(&mut self.held);
            self.wire.lock().unwrap().extend_from_slice(&held);
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    impl LinkStream for Buffering {}

    #[test]
    fn written_frames_are_flushed_out_of_a_buffering_stream() {
        let wire = Arc::new(Mutex::new(Vec::new()));
        let mut conn = Conn {
            link: LinkName::default(),
            stream: Box::new(Buffering {
                wire: wire.clone(),
                ..Buffering::default()
            }),
            out: VecDeque::from([
                Bytes::from_static(b"frame one"),
                Bytes::from_static(b"+two"),
            ]),
            unsent: 13,
            reported: 0,
            waiting: false,
            rbuf: BytesMut::new(),
            read_size: 0,
            unflushed: false,
        };
        let mut writes = 0;
        let mut cx = Context::from_waker(Waker::noop());
        assert!(matches!(
            conn.poll_write_out(&mut cx, &mut writes),
            Poll::Ready(Ok(()))
        ));
        assert!(!conn.has_output());
        assert_eq!(conn.unsent, 0, "every byte handed over is counted out");
        assert_eq!(&wire.lock().unwrap()[..], b"frame one+two");
    }

    /// A busy link's reads share a block, each read with room for `read_size` bytes: the
    /// bytes of consecutive reads lie one after another until the block is used up, while
    /// every read before keeps its bytes (they are slices the responses hold).
    #[test]
    fn a_busy_links_reads_share_a_block_and_keep_their_bytes() {
        let chunk = |i: u8, n: usize| vec![i; n];
        // The first read fills `READ_MIN` (the link turns busy); then reads of 5 KiB, each
        // with 8 KiB of room; a block holds room for four.
        let mut chunks = VecDeque::from([chunk(0, READ_MIN)]);
        chunks.extend((1..=7).map(|i| chunk(i, 5 * 1024)));
        let mut conn = Conn {
            link: LinkName::default(),
            stream: Box::new(Buffering {
                reads: chunks,
                ..Buffering::default()
            }),
            out: VecDeque::new(),
            unsent: 0,
            reported: 0,
            waiting: false,
            rbuf: BytesMut::new(),
            read_size: 0,
            unflushed: false,
        };
        let mut cx = Context::from_waker(Waker::noop());
        let mut reads = Vec::new();
        while let Poll::Ready(ConnRead::Data(bytes)) = conn.poll_read_chunk(&mut cx) {
            reads.push(bytes);
        }
        assert_eq!(reads.len(), 8);
        for (i, bytes) in reads.iter().enumerate() {
            assert!(
                bytes.iter().all(|&b| b == i as u8),
                "read {i} kept its bytes"
            );
        }
        let follows = |a: &Bytes, b: &Bytes| a.as_ptr().wrapping_add(a.len()) == b.as_ptr();
        // A block of 32 KiB: 5 KiB reads go into it while 8 KiB are left (five of them),
        // then a fresh block.
        for i in 1..5 {
            assert!(
                follows(&reads[i], &reads[i + 1]),
                "read {} in the block",
                i + 1
            );
        }
        assert!(
            !follows(&reads[5], &reads[6]),
            "a fresh block once room ran short"
        );
        assert!(follows(&reads[6], &reads[7]));
    }

    /// Collects the warnings emitted while it is the default subscriber, as text.
    #[derive(Clone, Default)]
    struct Warnings(Arc<Mutex<Vec<String>>>);

    struct Text(String);

    impl Visit for Text {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            let _ = write!(self.0, "{}={:?} ", field.name(), value);
        }
    }

    impl Subscriber for Warnings {
        fn enabled(&self, m: &Metadata<'_>) -> bool {
            *m.level() == tracing::Level::WARN
        }
        fn new_span(&self, _: &Attributes<'_>) -> Id {
            Id::from_u64(1)
        }
        fn record(&self, _: &Id, _: &Record<'_>) {}
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, e: &Event<'_>) {
            let mut t = Text(String::new());
            e.record(&mut t);
            self.0.lock().unwrap().push(t.0);
        }
        fn enter(&self, _: &Id) {}
        fn exit(&self, _: &Id) {}
    }

    /// A waiter for task `key` (its reply goes nowhere).
    fn waiter(key: u64) -> Waiter {
        Waiter {
            id: TaskId(key as u32),
            key: TaskKey(key),
            reply: oneshot::channel().0,
        }
    }

    #[test]
    fn the_ok_entry_of_the_outcome_keys_is_the_label_of_a_response() {
        let ok = Ok(phobos_stn_proto::Response {
            cmd_id: CmdId(1),
            body: Bytes::new(),
            extension: None,
        });
        assert_eq!(OUTCOME_KEYS[OK_OUTCOME].0, outcome_label(&ok));
    }

    #[test]
    fn the_cancel_index_finds_waiters_while_cancels_come_and_is_dropped_after() {
        let mut waiters = Slab::new();
        let mut index = CancelIndex::default();
        for key in 0..100 {
            let tag = waiters.insert(waiter(key));
            index.started(TaskKey(key), tag);
        }
        // No map is kept until a cancel comes.
        assert!(index.map.is_none());
        index.iteration_done();
        let found = |index: &mut CancelIndex, waiters: &Slab<Waiter>, key| {
            index.waiter(waiters, TaskKey(key)).map(|w| w.key)
        };
        assert_eq!(found(&mut index, &waiters, 42), Some(TaskKey(42)));
        assert_eq!(found(&mut index, &waiters, 1000), None);
        // Kept up to date while it exists: a task started after it was built, one ended.
        let tag = waiters.insert(waiter(100));
        index.started(TaskKey(100), tag);
        let ended = waiters.remove(7);
        index.ended(ended.key);
        // A slot reused by another task does not answer for the task that ended there.
        let reused = waiters.insert(waiter(101));
        assert_eq!(reused, 7);
        index.map.as_mut().unwrap().insert(TaskKey(7), 7);
        assert_eq!(found(&mut index, &waiters, 7), None);
        index.started(TaskKey(101), reused);
        assert_eq!(found(&mut index, &waiters, 100), Some(TaskKey(100)));
        assert_eq!(found(&mut index, &waiters, 101), Some(TaskKey(101)));
        // An iteration with cancels keeps it; the next one without drops it.
        index.iteration_done();
        assert!(index.map.is_some());
        index.iteration_done();
        assert!(index.map.is_none());
        // Built again from the waiters by the next cancel.
        assert_eq!(found(&mut index, &waiters, 101), Some(TaskKey(101)));
        assert_eq!(found(&mut index, &waiters, 7), None);
    }

    #[test]
    fn the_io_branch_is_left_out_only_with_no_sender_alive_and_nothing_queued() {
        let (tx, mut rx) = mpsc::unbounded_channel::<u32>();
        let resting = tx.strong_count();
        assert!(!may_receive(&tx, resting, false, &rx));
        // A short-link task or connection holding the sink.
        assert!(may_receive(&tx, resting, true, &rx));
        let task = tx.clone();
        assert!(may_receive(&tx, resting, false, &rx));
        task.send(7).unwrap();
        drop(task);
        // The task is gone, its event is still queued.
        assert!(may_receive(&tx, resting, false, &rx));
        assert_eq!(rx.try_recv().ok(), Some(7));
        assert!(!may_receive(&tx, resting, false, &rx));
    }

    #[test]
    fn consuming_written_bytes_walks_across_pieces() {
        let mut out: VecDeque<Bytes> = ["abc", "de", "fghij"]
            .into_iter()
            .map(|s| Bytes::copy_from_slice(s.as_bytes()))
            .collect();
        consume(&mut out, 4);
        assert_eq!(out, [&b"e"[..], b"fghij"]);
        consume(&mut out, 0);
        assert_eq!(out.len(), 2);
        consume(&mut out, 3);
        assert_eq!(out, [&b"hij"[..]]);
        consume(&mut out, 10);
        assert!(out.is_empty());
    }

    #[test]
    fn a_corrupt_or_other_version_ranking_file_is_ignored_with_a_warning_naming_it() {
        let dir = std::env::temp_dir().join(format!("phobos-ranking-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.json");
        let corrupt = dir.join("corrupt.json");
        let other = dir.join("other.json");
        let good = dir.join("good.json");
        std::fs::write(&corrupt, "{ nope").unwrap();
        std::fs::write(
            &other,
            RankingState::default()
                .to_json()
                .replace("\"version\": 1", "\"version\": 7"),
        )
        .unwrap();
        std::fs::write(&good, RankingState::default().to_json()).unwrap();
        let warnings = Warnings::default();
        tracing::subscriber::with_default(warnings.clone(), || {
            assert_eq!(load_ranking_state(&missing), None);
            assert_eq!(load_ranking_state(&corrupt), None);
            assert_eq!(load_ranking_state(&other), None);
            assert_eq!(load_ranking_state(&good), Some(RankingState::default()));
        });
        let got = warnings.0.lock().unwrap().clone();
        assert_eq!(got.len(), 2, "no warning for a missing file: {got:?}");
        assert!(
            got[0].contains("corrupt.json") && got[0].contains("malformed"),
            "{got:?}"
        );
        assert!(
            got[1].contains("other.json") && got[1].contains("version 7"),
            "{got:?}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Each short-link task resolves under a name of its own (`short#<id>`); before, the
    /// table of running plugin calls kept an entry per task for the driver's life.
    #[tokio::test]
    async fn finished_plugin_calls_are_forgotten_as_short_link_resolves_come_and_go() {
        #[derive(Debug)]
        struct Blocking;
        #[async_trait::async_trait]
        impl IpSource for Blocking {
            fn name(&self) -> &str {
                "blocking"
            }
            async fn resolve(
                &self,
                _: &str,
                _: LinkPurpose,
            ) -> Result<Vec<ResolvedAddr>, ResolveError> {
                Ok(Vec::new())
            }
            fn is_blocking(&self) -> bool {
                true
            }
        }
        let codec = Arc::new(phobos_codec_mars::MarsCodec::default());
        let addr: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
        let config = ClientConfig::builder(codec)
            .link_addrs("default-longlink", [addr.into()])
            .ip_source(Arc::new(Blocking))
            .build()
            .unwrap();
        let engine = Engine::new(config.core().clone(), now()).unwrap();
        let (_p, pushes) = crate::fanout::fanout(4);
        let (_l, links) = crate::fanout::fanout(4);
        let outputs = Outputs {
            next_key: Arc::default(),
            pushes,
            links,
            statuses: Arc::default(),
        };
        let (mut driver, mut io_rx, watch) = start(Box::new((engine, config)), outputs);
        for i in 0..1000u32 {
            let link = LinkName::from(format!("short#{i}"));
            driver.spawn_resolve(link, "api.example.com".into(), 0, LinkPurpose::ShortLink);
            match io_rx.recv().await {
                Some(IoEvent::Resolved(r)) => {
                    assert!(r.result.is_ok());
                    driver.resolving.remove(&(r.link, r.host, r.source));
                }
                _ => panic!("no answer"),
            }
        }
        watch.abort();
        assert!(
            driver.plugin_calls.len() <= 64,
            "{} entries kept for 1000 finished calls",
            driver.plugin_calls.len()
        );
    }
}
