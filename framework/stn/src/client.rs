//! The public async handle: [`Client`], [`TaskHandle`], push and link-status streams.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use phobos_plugin_api::{CmdId, NetKind};
use phobos_stn_proto::{
    ConfigError, ConnectReport, Engine, LinkError, LinkName, LinkStatus, LocalError, Response,
    TaskEnd, TaskError, TaskSpec,
};
use tokio::sync::{broadcast, mpsc, oneshot};
use tracing::Instrument;

use crate::batch::TaskBatch;
use crate::config::ClientConfig;
use crate::driver::{self, Command};
use crate::fanout::{fanout, Fanout};
use crate::handler::{EndHandler, HandlerHandle, HandlerId};

/// A cheap, clonable handle to one running STN engine.
///
/// One tokio task (the driver) owns the engine; every method here sends it a command over a
/// channel and never blocks. [`Client::start`] must be called inside a tokio runtime. When
/// the last clone is dropped (or [`shutdown`](Self::shutdown) is called) the driver ends every
/// unfinished task with [`LocalError::Reset`] and closes its connections.
///
/// ```no_run
/// # use std::sync::Arc;
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use phobos_plugin_api::CmdId;
/// use phobos_stn::{Client, ClientConfig, TaskSpec};
///
/// let codec = Arc::new(phobos_codec_mars::MarsCodec::default());
/// let config = ClientConfig::builder(codec)
///     .link_addrs("default-longlink", ["127.0.0.1:8080".parse::<std::net::SocketAddr>()?.into()])
///     .build()?;
/// let client = Client::start(config)?;
/// let response = client.start_task(TaskSpec::new(CmdId(7), &b"hello"[..])).await?;
/// println!("{} bytes back", response.body.len());
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    commands: mpsc::UnboundedSender<Command>,
    next_key: Arc<AtomicU64>,
    // The streams close when the driver (the only publisher) stops.
    pushes: Fanout<Push>,
    links: Fanout<LinkEvent>,
    statuses: Statuses,
    /// Becomes true once the driver has stopped and its final state files are written (or it
    /// gave up waiting for them); closed if the driver's task was dropped first.
    stopped: tokio::sync::watch::Receiver<bool>,
}

/// A started task. Await it for the task's one end: the response, or a [`TaskError`] whose
/// [`kind`](TaskError::kind) says which level failed. A handle does not keep the driver
/// running: once the last [`Client`] clone is gone, an unfinished task ends with
/// [`LocalError::Reset`].
#[derive(Debug)]
#[must_use = "a task handle does nothing unless awaited; drop it to ignore the result"]
pub struct TaskHandle {
    key: TaskKey,
    end: oneshot::Receiver<TaskEnd>,
    /// For [`cancel`](Self::cancel) only.
    ///
    /// Design: weak, so a handle does not keep the driver alive: with a strong sender, a
    /// handle kept after its task ended (in a collection, unawaited) kept the driver, its
    /// connections and their heartbeats running after the last [`Client`] was dropped (still
    /// open after 30 min in a probe), and a pending handle's task ran on, retries and all,
    /// instead of ending with `LocalError::Reset` as the `Client` docs promise.
    commands: mpsc::WeakUnboundedSender<Command>,
}

/// Names a task started through a [`Client`], for [`Client::cancel`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskKey(pub(crate) u64);

impl TaskKey {
    /// The key as a number: one client numbers its tasks 1, 2, 3, … in the order they are
    /// started (a [`TaskBatch::start`](crate::TaskBatch::start) call takes consecutive
    /// numbers).
    pub fn get(self) -> u64 {
        self.0
    }
}

/// A frame the server pushed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Push {
    /// The link it came on.
    pub link: LinkName,
    /// Its command id.
    pub cmd_id: CmdId,
    /// Its body.
    pub body: Bytes,
}

/// A long link changed status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkEvent {
    /// The link.
    pub link: LinkName,
    /// The new status.
    pub status: LinkStatus,
    /// Why it went down or failed.
    pub reason: Option<LinkError>,
    /// On [`LinkStatus::Connected`] and [`LinkStatus::ConnectFailed`]: the connect cycle
    /// that led here (addresses attempted, each outcome, time from cycle start to
    /// connected). `None` for other statuses, and for a cycle that never raced (no address).
    pub cycle: Option<ConnectReport>,
}

/// Receives pushes (from [`Client::subscribe_pushes`]).
#[derive(Debug)]
pub struct PushStream {
    rx: broadcast::Receiver<Push>,
}

/// Receives link status changes (from [`Client::link_events`]).
#[derive(Debug)]
pub struct LinkEvents {
    rx: broadcast::Receiver<LinkEvent>,
    /// Every link's last status (as [`Client::link_status`] reads it).
    statuses: Statuses,
}

/// Every link's last status, kept by the driver.
pub(crate) type Statuses = Arc<Mutex<HashMap<LinkName, LinkStatus>>>;

/// Why a stream gave no item.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// The receiver fell behind and this many items were dropped; the next call continues.
    #[error("fell behind, {0} items dropped")]
    Lagged(u64),
    /// The client shut down.
    #[error("client shut down")]
    Closed,
}

/// Counters from the driver (for tests and diagnostics).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DriverStats {
    /// Tasks started and not yet ended.
    pub tasks_in_flight: usize,
    /// Open connections (connected sockets the driver holds).
    pub open_connections: usize,
    /// Connect attempts in progress.
    pub pending_connects: usize,
    /// Watchdog reports so far.
    pub watchdog_stalls: u64,
    /// Connect attempts started so far.
    pub connect_attempts: u64,
    /// How often frames had to wait for a full socket to become writable (each wait once,
    /// however long it lasts).
    pub write_waits: u64,
    /// Long-link socket writes that took bytes, so far: against the tasks started, how well
    /// frames are gathered into writes.
    pub writes: u64,
    /// Short-link connects and exchanges in progress.
    pub short_link_in_flight: usize,
    /// Idle keep-alive short-link connections cached (spec §8.5).
    pub short_link_pooled: usize,
    /// IP source and auth calls not made, so far, because the same call (same link, host
    /// and source; same login host) was still running past its limit: a plugin that hangs
    /// holds one thread, not one more per attempt.
    pub plugin_calls_refused: u64,
    /// Panics caught in calls into in-process plugins so far (each also logged as a
    /// `tracing` error naming the plugin, with the panic's message). The calls were answered
    /// with their documented fallbacks (`phobos_plugin_api::panics`). A plugin loaded from a
    /// library catches its own panics in its adapter, which the driver does not see.
    pub plugin_panics: u64,
    /// End handlers running on the driver ([`Client::run_on_driver`]).
    pub handlers_running: usize,
    /// End handler calls that panicked (each handler stopped with
    /// [`HandlerError::Panicked`](crate::HandlerError::Panicked)).
    pub handler_panics: u64,
    /// Panics caught in the app's own transport so far: a [`Connector`](crate::Connector)'s connect, or a
    /// [`LinkStream`](crate::LinkStream)'s read, write, flush or shutdown (each also logged
    /// as a `tracing` error with the panic's message). Each failed its connect or ended its
    /// connection like a socket error, and the tasks on it were retried by the usual rules.
    pub transport_panics: u64,
}

impl Client {
    /// Starts the driver for `config` on the current tokio runtime and returns its handle.
    ///
    /// The driver, and every task it spawns, logs inside the `tracing` span current at this
    /// call: an app running several clients starts each in a span naming it.
    ///
    /// # Errors
    ///
    /// The core's [`ConfigError`] when the engine refuses the config, or the IP sources do
    /// not fit it ([`ConfigError::NoIpSource`], [`ConfigError::IpSourceCount`]: checked here
    /// too for a config made by [`ClientConfig::from_core`]).
    ///
    /// # Panics
    ///
    /// When called outside a tokio runtime (it spawns the driver task).
    pub fn start(config: ClientConfig) -> Result<Client, ConfigError> {
        crate::config::check_sources(config.core(), config.ip_sources())?;
        let engine = Engine::new(
            config.core().clone(),
            tokio::time::Instant::now().into_std(),
        )?;
        let (commands, rx) = mpsc::unbounded_channel();
        let (push_streams, pushes) = fanout(PUSH_BUFFER);
        // A network change or a reset moves every link at once, a few events each.
        let events = LINK_EVENT_BUFFER.max(LINK_EVENTS_PER_LINK * config.core().links.len());
        let (link_streams, links) = fanout(events);
        let statuses = Arc::new(Mutex::new(HashMap::new()));
        if config.watches_network_changes() {
            crate::netwatch::spawn_client_watcher(commands.downgrade(), link_streams.subscribe());
        }
        let next_key = Arc::new(AtomicU64::new(1));
        let outputs = driver::Outputs {
            next_key: next_key.clone(),
            pushes,
            links,
            statuses: statuses.clone(),
        };
        let (stopped_tx, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(
            driver::run(Box::new((engine, config)), rx, outputs, stopped_tx).in_current_span(),
        );
        Ok(Client {
            inner: Arc::new(Inner {
                commands,
                next_key,
                pushes: push_streams,
                links: link_streams,
                statuses,
                stopped,
            }),
        })
    }

    /// Starts a task. The handle resolves exactly once: with the response or the error that
    /// ended the task (a task refused at admission ends at once with its
    /// [`ParamError`](phobos_stn_proto::ParamError)).
    pub fn start_task(&self, spec: TaskSpec) -> TaskHandle {
        let key = TaskKey(self.inner.next_key.fetch_add(1, Ordering::Relaxed));
        let (tx, end) = oneshot::channel();
        // A send error means the driver is gone; the dropped `tx` then resolves the handle
        // with `LocalError::Reset`.
        let _ = self.inner.commands.send(Command::Start {
            key,
            spec: Box::new(spec),
            reply: tx,
        });
        TaskHandle {
            key,
            end,
            commands: self.inner.commands.downgrade(),
        }
    }

    /// A new, empty [`TaskBatch`]: many tasks started with one command each round and their
    /// ends delivered together (see the [`TaskBatch`] docs).
    pub fn task_batch(&self) -> TaskBatch {
        TaskBatch::new(self.clone())
    }

    /// Runs `handler` on the driver: its [`start`](EndHandler::start) is called there, then
    /// its [`on_ends`](EndHandler::on_ends) with the ends of the tasks it starts, which
    /// leave in the same driver iteration (see [`crate::EndHandler`]). The handle resolves
    /// with the handler once it has no task outstanding after a call, or with why it
    /// stopped.
    ///
    /// The handler does not keep the driver up: once every [`Client`] (and
    /// [`TaskBatch`]) is gone, the driver stops and the handle resolves with
    /// [`HandlerError::Stopped`](crate::HandlerError::Stopped).
    pub fn run_on_driver<H: EndHandler>(&self, handler: H) -> HandlerHandle<H> {
        let id = HandlerId(self.next_keys(1));
        let (slot, handle) = crate::handler::slot(handler, id, self.inner.commands.downgrade());
        // A send error means the driver is gone: the command comes back and dropping it
        // hands the handler back as stopped.
        let _ = self.send(Command::RunHandler { id, handler: slot });
        handle
    }

    /// Starts every task of `specs` in one command to the driver and returns the batch that
    /// receives their ends (see [`TaskBatch::start`]); start more through it.
    pub fn start_tasks(&self, specs: impl IntoIterator<Item = TaskSpec>) -> TaskBatch {
        let mut batch = self.task_batch();
        let _ = batch.start(specs);
        batch
    }

    /// Cancels a task: it ends with [`TaskError::Canceled`] unless it already ended.
    pub fn cancel(&self, key: TaskKey) {
        let _ = self.inner.commands.send(Command::Cancel { key });
    }

    /// A stream of server pushes from now on.
    pub fn subscribe_pushes(&self) -> PushStream {
        PushStream {
            rx: self.inner.pushes.subscribe(),
        }
    }

    /// A stream of link status changes from now on: changes before the call are not in it
    /// ([`link_status`](Self::link_status) has the last one).
    pub fn link_events(&self) -> LinkEvents {
        LinkEvents {
            rx: self.inner.links.subscribe(),
            statuses: self.inner.statuses.clone(),
        }
    }

    /// The last known status of a link (`None` before its first change).
    pub fn link_status(&self, link: &str) -> Option<LinkStatus> {
        let st = self
            .inner
            .statuses
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        st.get(&LinkName::new(link)).copied()
    }

    /// Tells the engine whether the app is in the foreground (Mars's `OnForeground`).
    ///
    /// A change connects every keep-alive link that is down, as the reconnect table allows
    /// (spec §7.9): one never tried connects at once. Subscribe to
    /// [`link_events`](Self::link_events) first to see that connect.
    pub fn set_foreground(&self, foreground: bool) {
        let _ = self.inner.commands.send(Command::SetForeground(foreground));
    }

    /// Tells the engine the network changed (Mars's `OnNetworkChange`): its kind and label
    /// (`wifi_<ssid>`, `mobile_<isp>`, `default`).
    pub fn set_network(&self, kind: NetKind, label: impl Into<String>) {
        let _ = self.inner.commands.send(Command::SetNetwork {
            kind,
            label: label.into(),
        });
    }

    /// Connects `link` now if it is down, ignoring the reconnect pacing (Mars's
    /// `MakesureLonglinkConnected`).
    pub fn make_sure_connected(&self, link: impl Into<LinkName>) {
        let _ = self
            .inner
            .commands
            .send(Command::MakeSureConnected { link: link.into() });
    }

    /// Tells the engine whether the user is logged in (changes the automatic reconnect
    /// intervals, Mars's account info).
    pub fn set_account(&self, has_account: bool) {
        let _ = self.inner.commands.send(Command::SetAccount(has_account));
    }

    /// Mars's `RedoTasks` (after the app changed server addresses): lifts every address and
    /// server ban, drops every link, retries running attempts, reconnects at once.
    pub fn redo_tasks(&self) {
        let _ = self.inner.commands.send(Command::RedoTasks);
    }

    /// Starts (or extends) the signalling keeper on the main link (Mars's `KeepSignalling`).
    pub fn keep_signalling(&self) {
        let _ = self.inner.commands.send(Command::KeepSignalling);
    }

    /// Stops the signalling keeper (Mars's `StopSignalling`).
    pub fn stop_signalling(&self) {
        let _ = self.inner.commands.send(Command::StopSignalling);
    }

    /// The driver's counters.
    ///
    /// # Errors
    ///
    /// [`StreamError::Closed`] when the driver has stopped.
    pub async fn stats(&self) -> Result<DriverStats, StreamError> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .commands
            .send(Command::Stats(tx))
            .map_err(|_| StreamError::Closed)?;
        rx.await.map_err(|_| StreamError::Closed)
    }

    /// Stops the driver: unfinished tasks end with [`LocalError::Reset`], connections close.
    /// Returns when the driver has stopped and the final state files (IP ranking, heartbeat
    /// state) are written, or after 5 s of waiting for the disk (the writes then go on in
    /// the background). Other clones then see every call fail quietly.
    pub async fn shutdown(&self) {
        let (tx, _rx) = oneshot::channel();
        let _ = self.inner.commands.send(Command::Shutdown(tx));
        // Design: every caller waits for the driver's end, not only the one whose command
        // stopped it: a second, concurrent shutdown (a `BlockingClient` dropped while the app
        // shuts down) returned as soon as the first one's command was taken, before the final
        // state files were written, and a process exiting then lost them. A driver already
        // stopped (or stopping) is waited for the same way.
        let mut stopped = self.inner.stopped.clone();
        let _ = stopped.wait_for(|stopped| *stopped).await;
    }

    /// Reserves `n` consecutive task keys; returns the first.
    pub(crate) fn next_keys(&self, n: u64) -> u64 {
        self.inner.next_key.fetch_add(n, Ordering::Relaxed)
    }

    pub(crate) fn send(&self, cmd: Command) -> bool {
        self.inner.commands.send(cmd).is_ok()
    }
}

impl TaskHandle {
    /// The key to cancel this task with.
    pub fn key(&self) -> TaskKey {
        self.key
    }

    /// Cancels the task (see [`Client::cancel`]); the handle still resolves, usually with
    /// [`TaskError::Canceled`].
    pub fn cancel(&self) {
        // No sender left means the driver stopped (or is stopping): the task ends anyway.
        if let Some(commands) = self.commands.upgrade() {
            let _ = commands.send(Command::Cancel { key: self.key });
        }
    }

    /// Waits for the task's end with its id and profile. `None` when the driver stopped
    /// before the task ended (awaiting the handle itself then gives [`LocalError::Reset`]).
    pub async fn end(self) -> Option<TaskEnd> {
        self.end.await.ok()
    }

    /// Blocks the current thread until the task ends. For threads outside any tokio runtime
    /// (see [`BlockingClient`](crate::BlockingClient)).
    ///
    /// # Panics
    ///
    /// When called from inside an async context.
    pub fn wait(self) -> Result<Response, TaskError> {
        match self.end.blocking_recv() {
            Ok(end) => end.outcome,
            Err(_) => Err(TaskError::Local(LocalError::Reset)),
        }
    }
}

impl Future for TaskHandle {
    type Output = Result<Response, TaskError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match Pin::new(&mut self.end).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(end)) => Poll::Ready(end.outcome),
            Poll::Ready(Err(_)) => Poll::Ready(Err(TaskError::Local(LocalError::Reset))),
        }
    }
}

impl PushStream {
    /// The next push.
    ///
    /// # Errors
    ///
    /// [`StreamError::Lagged`] when pushes were dropped because this receiver fell behind;
    /// [`StreamError::Closed`] after shutdown.
    pub async fn recv(&mut self) -> Result<Push, StreamError> {
        self.rx.recv().await.map_err(stream_error)
    }

    /// The next push, blocking the thread (outside async code).
    ///
    /// # Errors
    ///
    /// As [`recv`](Self::recv).
    pub fn blocking_recv(&mut self) -> Result<Push, StreamError> {
        self.rx.blocking_recv().map_err(stream_error)
    }

    /// The next push if one is waiting, `Ok(None)` if none is (never waits: for a host
    /// thread that must not block until the next push).
    ///
    /// # Errors
    ///
    /// As [`recv`](Self::recv).
    pub fn try_recv(&mut self) -> Result<Option<Push>, StreamError> {
        try_stream(self.rx.try_recv())
    }
}

impl LinkEvents {
    /// The next status change.
    ///
    /// # Errors
    ///
    /// As [`PushStream::recv`].
    pub async fn recv(&mut self) -> Result<LinkEvent, StreamError> {
        self.rx.recv().await.map_err(stream_error)
    }

    /// The next status change, blocking the thread (outside async code: the blocking
    /// facade's streams need no runtime).
    ///
    /// # Errors
    ///
    /// As [`recv`](Self::recv).
    pub fn blocking_recv(&mut self) -> Result<LinkEvent, StreamError> {
        self.rx.blocking_recv().map_err(stream_error)
    }

    /// The next status change if one is waiting, `Ok(None)` if none is (never waits).
    ///
    /// # Errors
    ///
    /// As [`recv`](Self::recv).
    pub fn try_recv(&mut self) -> Result<Option<LinkEvent>, StreamError> {
        try_stream(self.rx.try_recv())
    }

    /// Waits for the next change of `link` to a status for which `pred` holds.
    ///
    /// When this receiver fell behind and events were lost, the change waited for may have
    /// been among them: the link's current status then stands in for them, as an event
    /// without `reason` or `cycle`, and is returned if `pred` holds for it.
    ///
    /// # Errors
    ///
    /// [`StreamError::Closed`] after shutdown.
    pub async fn wait_for(
        &mut self,
        link: &str,
        mut pred: impl FnMut(&LinkEvent) -> bool,
    ) -> Result<LinkEvent, StreamError> {
        loop {
            match self.recv().await {
                Ok(ev) if &*ev.link == link && pred(&ev) => return Ok(ev),
                Ok(_) => {}
                Err(StreamError::Lagged(_)) => {
                    let name = LinkName::new(link);
                    let status = self
                        .statuses
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get(&name)
                        .copied();
                    if let Some(status) = status {
                        let now = LinkEvent {
                            link: name,
                            status,
                            reason: None,
                            cycle: None,
                        };
                        if pred(&now) {
                            return Ok(now);
                        }
                    }
                }
                Err(StreamError::Closed) => return Err(StreamError::Closed),
            }
        }
    }
}

/// A stream's `try_recv` answer: `Ok(None)` when nothing waits.
fn try_stream<T>(r: Result<T, broadcast::error::TryRecvError>) -> Result<Option<T>, StreamError> {
    match r {
        Ok(item) => Ok(Some(item)),
        Err(broadcast::error::TryRecvError::Empty) => Ok(None),
        Err(broadcast::error::TryRecvError::Lagged(n)) => Err(StreamError::Lagged(n)),
        Err(broadcast::error::TryRecvError::Closed) => Err(StreamError::Closed),
    }
}

fn stream_error(e: broadcast::error::RecvError) -> StreamError {
    match e {
        broadcast::error::RecvError::Closed => StreamError::Closed,
        broadcast::error::RecvError::Lagged(n) => StreamError::Lagged(n),
    }
}

/// How many pushes a slow subscriber may fall behind before it loses some. Every slot is
/// allocated at the first subscription, so this is kept small (it dominated an idle link's
/// memory at 1024).
const PUSH_BUFFER: usize = 128;
/// How many link events a slow subscriber may fall behind before it loses some: at least
/// this many, and [`LINK_EVENTS_PER_LINK`] per configured link (with 100 links, one network
/// change published about 300 events at once, and a buffer of 32 lost most of them).
const LINK_EVENT_BUFFER: usize = 32;
/// Link events kept per configured link.
const LINK_EVENTS_PER_LINK: usize = 8;

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use phobos_stn_proto::IpPort;

    use super::*;

    fn event(link: &str, status: LinkStatus) -> LinkEvent {
        LinkEvent {
            link: LinkName::new(link),
            status,
            reason: None,
            cycle: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn wait_for_sees_a_change_lost_to_lag_in_the_current_status() {
        let (tx, rx) = broadcast::channel(2);
        let statuses: Statuses = Arc::default();
        let mut events = LinkEvents {
            rx,
            statuses: statuses.clone(),
        };
        // "a" connected, then more events of other links than the receiver holds.
        statuses
            .lock()
            .unwrap()
            .insert(LinkName::new("a"), LinkStatus::Connecting);
        tx.send(event("a", LinkStatus::Connecting)).unwrap();
        let addr: IpPort = "10.0.0.1:80"
            .parse::<std::net::SocketAddr>()
            .unwrap()
            .into();
        statuses
            .lock()
            .unwrap()
            .insert(LinkName::new("a"), LinkStatus::Connected(addr));
        tx.send(event("a", LinkStatus::Connected(addr))).unwrap();
        for _ in 0..3 {
            tx.send(event("b", LinkStatus::Connecting)).unwrap();
        }
        let connected = |e: &LinkEvent| matches!(e.status, LinkStatus::Connected(_));
        let got = tokio::time::timeout(Duration::from_secs(60), events.wait_for("a", connected))
            .await
            .expect("no event is coming: the current status must answer")
            .unwrap();
        assert_eq!(got.status, LinkStatus::Connected(addr));
        assert!(got.reason.is_none() && got.cycle.is_none());
    }
}
