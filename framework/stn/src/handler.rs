//! End handlers: app code the driver calls with its tasks' ends, which starts the next
//! tasks there ([`EndHandler`], [`Client::run_on_driver`](crate::Client::run_on_driver)).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use phobos_plugin_api::panics::catch;
use phobos_plugin_api::CmdId;
use phobos_stn_proto::TaskSpec;
use tokio::sync::{mpsc, oneshot};

use crate::batch::{BatchTasks, Delivery, EndGroup, TaskKeys};
use crate::client::TaskKey;
use crate::driver::Command;

/// App code the driver calls with the ends of the tasks it starts, and which starts the
/// next tasks there ([`Client::run_on_driver`](crate::Client::run_on_driver)).
///
/// Mars calls the app back on its network thread (`OnTaskEnd`, `Buf2Resp`): the app's code
/// that answers an end with the next request runs where the end was read, and the request
/// leaves in the same pass. A [`TaskBatch`](crate::TaskBatch) hands its ends to another
/// task over a channel, and that task's next start comes back over another; for work that
/// answers each end with a new task (message sync page by page, acks for pushes, a stream
/// of uploads), every round then costs two channel hops, two wake-ups and a second driver
/// iteration. A handler costs none of them: its ends are read, handed to it and its new
/// tasks framed and written in one driver iteration.
///
/// Each task a handler starts is exactly a [`TaskBatch`](crate::TaskBatch) task: the same
/// admission, limits, timeouts, retries and cancellation, and exactly one end, given to the
/// handler's [`on_ends`](EndHandler::on_ends) or, when the driver stops or the app aborts
/// the handler first, listed in [`HandlerError::Stopped`] or [`HandlerError::Aborted`].
///
/// What a handler must not do is block (no blocking IO, no waiting on a lock another
/// thread holds long): it runs inside the driver's loop, so while it runs no socket of the
/// client is read or written and no timer fires. The watchdog reports a handler call that
/// blocks the loop longer than its threshold as a blocked `"driver loop (in an end
/// handler)"` (see [`Watchdog`](crate::Watchdog)). Long work goes to another task; a
/// handler that panics is stopped ([`HandlerError::Panicked`]) and the driver carries on.
///
/// How a handler ends: after any call that leaves it with no task outstanding (it started
/// none, and every one it started has ended), it is finished and handed back through its
/// [`HandlerHandle`]. The app can stop it earlier with [`HandlerHandle::abort`].
///
/// ```no_run
/// # async fn demo(client: phobos_stn::Client) {
/// use bytes::Bytes;
/// use phobos_plugin_api::CmdId;
/// use phobos_stn::{EndGroup, EndHandler, Starter, TaskSpec};
///
/// /// Fetches pages 0..10 of a message history, one request per page, each page asked
/// /// for as soon as the last one came.
/// struct History {
///     params: TaskSpec,
///     next_page: u32,
///     bytes: usize,
/// }
///
/// impl History {
///     fn ask(&mut self, tasks: &mut Starter<'_>) {
///         if self.next_page < 10 {
///             let page = Bytes::from(self.next_page.to_be_bytes().to_vec());
///             tasks.start_like(&self.params, [(CmdId(21), page)]);
///             self.next_page += 1;
///         }
///     }
/// }
///
/// impl EndHandler for History {
///     fn start(&mut self, tasks: &mut Starter<'_>) {
///         self.ask(tasks);
///     }
///
///     fn on_ends(&mut self, ends: EndGroup, tasks: &mut Starter<'_>) {
///         for end in &ends {
///             if let Ok(page) = end.outcome() {
///                 self.bytes += page.body.len();
///             }
///         }
///         self.ask(tasks);
///     }
/// }
///
/// let params = TaskSpec::new(CmdId(0), Bytes::new()).with_retry_count(2);
/// let history = History { params, next_page: 0, bytes: 0 };
/// let done = client.run_on_driver(history).await;
/// match done {
///     Ok(history) => println!("{} bytes of history", history.bytes),
///     Err(e) => println!("history not fetched: {e}"),
/// }
/// # }
/// ```
pub trait EndHandler: Send + 'static {
    /// Called once, on the driver, when the handler is installed: start the first tasks.
    /// A handler that starts none here is finished at once.
    fn start(&mut self, tasks: &mut Starter<'_>);

    /// Called on the driver with ends of the handler's tasks: every end of them that came
    /// in one driver iteration, in one group or a few (in the order the tasks ended). Start
    /// the next tasks through `tasks`: they are framed and written in the same iteration.
    fn on_ends(&mut self, ends: EndGroup, tasks: &mut Starter<'_>);
}

/// Starts tasks for an [`EndHandler`], from inside one of its calls.
///
/// The tasks are admitted when the call returns, in the order started, and leave in the
/// same write as the other frames of the driver's iteration.
pub struct Starter<'a> {
    next_key: &'a AtomicU64,
    starts: &'a mut Vec<(u64, BatchTasks)>,
    cancels: &'a mut Vec<TaskKey>,
    like_params: &'a mut Option<Arc<TaskSpec>>,
    started: usize,
}

impl fmt::Debug for Starter<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Starter")
            .field("started", &self.started)
            .field("cancels", &self.cancels.len())
            .finish()
    }
}

impl Starter<'_> {
    /// Starts one task per spec, as [`TaskBatch::start`](crate::TaskBatch::start) does.
    pub fn start(&mut self, specs: impl IntoIterator<Item = TaskSpec>) -> TaskKeys {
        let specs: Vec<TaskSpec> = specs.into_iter().collect();
        self.push(BatchTasks::Specs(specs))
    }

    /// Starts one task per request, all with the parameters of `params`, as
    /// [`TaskBatch::start_like`](crate::TaskBatch::start_like) does (the parameters are
    /// shared with the core while they stay the same from call to call).
    pub fn start_like(
        &mut self,
        params: &TaskSpec,
        requests: impl IntoIterator<Item = (CmdId, Bytes)>,
    ) -> TaskKeys {
        let tasks = BatchTasks::like(self.like_params, params, requests);
        self.push(tasks)
    }

    /// Cancels one of the handler's tasks: it ends with
    /// [`TaskError::Canceled`](phobos_stn_proto::TaskError::Canceled) unless it already
    /// ended (its end comes to [`on_ends`](EndHandler::on_ends) like any other). A key the
    /// handler did not start is ignored (cancel those with
    /// [`Client::cancel`](crate::Client::cancel)).
    pub fn cancel(&mut self, key: TaskKey) {
        self.cancels.push(key);
    }

    /// Tasks started through this starter so far.
    pub fn started(&self) -> usize {
        self.started
    }

    fn push(&mut self, tasks: BatchTasks) -> TaskKeys {
        let n = tasks.len();
        if n == 0 {
            return TaskKeys::new(self.next_key.load(Ordering::Relaxed), 0);
        }
        let first = self.next_key.fetch_add(n as u64, Ordering::Relaxed);
        self.started += n;
        self.starts.push((first, tasks));
        TaskKeys::new(first, n)
    }
}

/// Why a handler did not finish ([`HandlerHandle`]).
pub enum HandlerError<H> {
    /// The handler panicked in one of its calls (the message is the panic's). It was
    /// dropped, and its tasks still running were canceled; their ends are discarded.
    Panicked {
        /// The panic's message.
        message: String,
    },
    /// The app aborted the handler ([`HandlerHandle::abort`]): it is not called again, and
    /// its tasks still running were canceled.
    Aborted {
        /// The handler, as its last call left it.
        handler: H,
        /// The keys of its tasks whose ends it was never given: those still running
        /// (canceled), and any whose ends were waiting for its next call. With the ends it
        /// was given, every task it started is accounted for once.
        undelivered: Vec<TaskKey>,
    },
    /// The driver stopped (the client shut down, or its runtime went away) before the
    /// handler finished: it was not called again, and its tasks still running ended with
    /// [`LocalError::Reset`](phobos_stn_proto::LocalError::Reset).
    Stopped {
        /// The handler, as its last call left it.
        handler: H,
        /// The keys of its tasks whose ends it was never given (those reset, and any whose
        /// ends were waiting for its next call). With the ends it was given, every task it
        /// started is accounted for once.
        undelivered: Vec<TaskKey>,
    },
}

impl<H> fmt::Debug for HandlerError<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandlerError::Panicked { message } => f
                .debug_struct("Panicked")
                .field("message", message)
                .finish(),
            HandlerError::Aborted { undelivered, .. } => f
                .debug_struct("Aborted")
                .field("undelivered", undelivered)
                .finish_non_exhaustive(),
            HandlerError::Stopped { undelivered, .. } => f
                .debug_struct("Stopped")
                .field("undelivered", undelivered)
                .finish_non_exhaustive(),
        }
    }
}

impl<H> fmt::Display for HandlerError<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandlerError::Panicked { message } => write!(f, "the end handler panicked: {message}"),
            HandlerError::Aborted { undelivered, .. } => write!(
                f,
                "the end handler was aborted ({} ends not given to it)",
                undelivered.len()
            ),
            HandlerError::Stopped { undelivered, .. } => write!(
                f,
                "the driver stopped before the end handler finished ({} ends not given to it)",
                undelivered.len()
            ),
        }
    }
}

impl<H> std::error::Error for HandlerError<H> {}

impl fmt::Debug for dyn ErasedHandler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EndHandler")
    }
}

/// The outcome of a handler: resolves with the handler once it finished (no task left),
/// or with why it did not. Dropping the handle leaves the handler running;
/// [`abort`](Self::abort) stops it.
#[must_use = "the handler's outcome comes only through its handle"]
pub struct HandlerHandle<H> {
    rx: oneshot::Receiver<Result<H, HandlerError<H>>>,
    id: HandlerId,
    /// Weak, as a [`TaskHandle`](crate::TaskHandle)'s: the handle does not keep the driver
    /// up.
    commands: mpsc::WeakUnboundedSender<Command>,
}

impl<H> fmt::Debug for HandlerHandle<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerHandle").finish_non_exhaustive()
    }
}

impl<H> HandlerHandle<H> {
    /// Stops the handler: it is not called again, its tasks still running are canceled
    /// (their ends discarded), and the handle resolves with [`HandlerError::Aborted`]. No
    /// effect once it finished or the driver stopped (the handle resolves as it would
    /// have).
    pub fn abort(&self) {
        if let Some(commands) = self.commands.upgrade() {
            let _ = commands.send(Command::AbortHandler(self.id));
        }
    }

    /// Blocks the thread until the handler's outcome (outside async code; see
    /// [`BlockingClient`](crate::BlockingClient)).
    ///
    /// # Panics
    ///
    /// When called from inside an async context.
    pub fn wait(self) -> Result<H, HandlerError<H>> {
        self.rx.blocking_recv().unwrap_or_else(|_| Err(dropped()))
    }
}

/// The outcome of a handle whose slot went without sending one.
fn dropped<H>() -> HandlerError<H> {
    // The slot always sends before it goes (its `Drop`); a handler whose `Drop` panicked
    // while the slot sent it back is the one way to get here.
    HandlerError::Panicked {
        message: "the handler was dropped without an outcome".to_owned(),
    }
}

impl<H> Future for HandlerHandle<H> {
    type Output = Result<H, HandlerError<H>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match Pin::new(&mut self.rx).poll(cx) {
            Poll::Ready(Ok(outcome)) => Poll::Ready(outcome),
            Poll::Ready(Err(_)) => Poll::Ready(Err(dropped())),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// A handler as the driver holds it: its type erased, its outcome's sender beside it.
pub(crate) trait ErasedHandler: Send {
    /// Calls [`EndHandler::start`] under guard.
    fn call_start(&mut self, tasks: &mut Starter<'_>) -> Result<(), String>;
    /// Calls [`EndHandler::on_ends`] under guard.
    fn call_on_ends(&mut self, ends: EndGroup, tasks: &mut Starter<'_>) -> Result<(), String>;
    /// Sends the outcome.
    fn finish(self: Box<Self>, how: Finish);
}

/// How a handler ended.
pub(crate) enum Finish {
    Done,
    Panicked(String),
    Aborted(Vec<TaskKey>),
    Stopped(Vec<TaskKey>),
}

/// [`ErasedHandler`] for a handler of type `H`.
struct Slot<H: EndHandler> {
    handler: Option<H>,
    done: Option<oneshot::Sender<Result<H, HandlerError<H>>>>,
}

impl<H: EndHandler> ErasedHandler for Slot<H> {
    fn call_start(&mut self, tasks: &mut Starter<'_>) -> Result<(), String> {
        let Some(h) = self.handler.as_mut() else {
            return Ok(());
        };
        catch(|| h.start(tasks))
    }

    fn call_on_ends(&mut self, ends: EndGroup, tasks: &mut Starter<'_>) -> Result<(), String> {
        let Some(h) = self.handler.as_mut() else {
            return Ok(());
        };
        catch(|| h.on_ends(ends, tasks))
    }

    fn finish(mut self: Box<Self>, how: Finish) {
        self.send(how);
    }
}

impl<H: EndHandler> Slot<H> {
    fn send(&mut self, how: Finish) {
        let (Some(done), handler) = (self.done.take(), self.handler.take()) else {
            return;
        };
        let outcome = match (how, handler) {
            (Finish::Done, Some(h)) => Ok(h),
            (Finish::Stopped(undelivered), Some(handler)) => Err(HandlerError::Stopped {
                handler,
                undelivered,
            }),
            (Finish::Aborted(undelivered), Some(handler)) => Err(HandlerError::Aborted {
                handler,
                undelivered,
            }),
            (Finish::Panicked(message), handler) => {
                // A handler whose call panicked may be half-updated: it is dropped, under
                // guard (its `Drop` may panic as well).
                let _ = phobos_plugin_api::panics::drop_caught(handler);
                Err(HandlerError::Panicked { message })
            }
            (_, None) => return,
        };
        // Nobody waits for it (the handle was dropped): the handler is dropped here, on the
        // driver, under guard like any app code the driver runs.
        if let Err(unsent) = done.send(outcome) {
            let _ = phobos_plugin_api::panics::drop_caught(unsent);
        }
    }
}

impl<H: EndHandler> Drop for Slot<H> {
    /// A handler the driver never ran or never finished (its command dropped, or the
    /// driver dropped first) is handed back as stopped.
    fn drop(&mut self) {
        self.send(Finish::Stopped(Vec::new()));
    }
}

/// The `RunHandler` command's payload (a handler and its outcome's sender), and its handle,
/// for the handler of id `id` of the driver behind `commands`.
pub(crate) fn slot<H: EndHandler>(
    handler: H,
    id: HandlerId,
    commands: mpsc::WeakUnboundedSender<Command>,
) -> (Box<dyn ErasedHandler>, HandlerHandle<H>) {
    let (tx, rx) = oneshot::channel();
    let slot = Slot {
        handler: Some(handler),
        done: Some(tx),
    };
    (Box::new(slot), HandlerHandle { rx, id, commands })
}

/// Which running handler a batch's ends go to: never reused (the client numbers handlers
/// from its task-key counter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HandlerId(pub(crate) u64);

/// A handler the driver runs.
struct Running {
    id: HandlerId,
    handler: Box<dyn ErasedHandler>,
    /// Tasks started and not yet handed to it.
    outstanding: usize,
    like_params: Option<Arc<TaskSpec>>,
    /// The driver stops: its tasks whose ends it was never given.
    undelivered: Vec<TaskKey>,
}

/// The handlers the driver runs, and the scratch lists of their calls.
pub(crate) struct Handlers {
    next_key: Arc<AtomicU64>,
    running: Vec<Running>,
    /// The starts of the last call, for the driver to admit.
    pub(crate) starts: Vec<(u64, BatchTasks)>,
    /// The cancels of the last call.
    pub(crate) cancels: Vec<TaskKey>,
    /// Ends for the handlers, taken from the batch output.
    pub(crate) inbox: Vec<(HandlerId, Delivery)>,
}

/// What a handler call left to do.
pub(crate) enum Called {
    /// The handler runs on; admit `starts` and `cancels`.
    Running,
    /// The handler finished (no task outstanding); admit `starts` and `cancels` (none).
    Finished,
    /// The handler panicked (the panic's message): cancel its tasks still running.
    Panicked(String),
    /// No such handler (it finished or panicked before): the ends are dropped.
    Gone,
}

impl Handlers {
    pub(crate) fn new(next_key: Arc<AtomicU64>) -> Self {
        Handlers {
            next_key,
            running: Vec::new(),
            starts: Vec::new(),
            cancels: Vec::new(),
            inbox: Vec::new(),
        }
    }

    /// Handlers running.
    pub(crate) fn len(&self) -> usize {
        self.running.len()
    }

    /// Whether no handler runs.
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.running.is_empty()
    }

    /// Installs `handler` as handler `id` and calls its `start`.
    pub(crate) fn install(&mut self, id: HandlerId, handler: Box<dyn ErasedHandler>) -> Called {
        self.running.push(Running {
            id,
            handler,
            outstanding: 0,
            like_params: None,
            undelivered: Vec::new(),
        });
        self.call(id, None)
    }

    /// Stops handler `id` at the app's request: handed back as aborted, with `undelivered`
    /// (its tasks still running, which the driver cancels, and those whose ends wait for
    /// it). Nothing if it does not run.
    pub(crate) fn abort(&mut self, id: HandlerId, undelivered: Vec<TaskKey>) {
        if let Some(i) = self.running.iter().position(|r| r.id == id) {
            let r = self.running.swap_remove(i);
            r.handler.finish(Finish::Aborted(undelivered));
        }
    }

    /// Hands `ends` to handler `id` (or calls its `start` for `None`).
    pub(crate) fn call(&mut self, id: HandlerId, ends: Option<Delivery>) -> Called {
        let Some(i) = self.running.iter().position(|r| r.id == id) else {
            return Called::Gone;
        };
        let r = &mut self.running[i];
        let mut tasks = Starter {
            next_key: &self.next_key,
            starts: &mut self.starts,
            cancels: &mut self.cancels,
            like_params: &mut r.like_params,
            started: 0,
        };
        let result = match ends {
            Some(ends) => {
                r.outstanding = r.outstanding.saturating_sub(ends.len());
                r.handler.call_on_ends(EndGroup::of(ends), &mut tasks)
            }
            None => r.handler.call_start(&mut tasks),
        };
        let started = tasks.started;
        r.outstanding += started;
        match result {
            Err(message) => {
                self.starts.clear();
                self.cancels.clear();
                let r = self.running.swap_remove(i);
                r.handler.finish(Finish::Panicked(message.clone()));
                Called::Panicked(message)
            }
            Ok(()) if r.outstanding == 0 => {
                let r = self.running.swap_remove(i);
                r.handler.finish(Finish::Done);
                Called::Finished
            }
            Ok(()) => Called::Running,
        }
    }

    /// The driver stops: handler `id` was never given the ends of tasks `keys`.
    pub(crate) fn stopped(&mut self, id: HandlerId, keys: impl IntoIterator<Item = TaskKey>) {
        if let Some(r) = self.running.iter_mut().find(|r| r.id == id) {
            r.undelivered.extend(keys);
        }
    }

    /// Whether handler `id` runs.
    pub(crate) fn runs(&self, id: HandlerId) -> bool {
        self.running.iter().any(|r| r.id == id)
    }

    /// The driver stops: every handler still running is handed back as stopped.
    pub(crate) fn stop_all(&mut self) {
        for r in self.running.drain(..) {
            r.handler.finish(Finish::Stopped(r.undelivered));
        }
    }
}
