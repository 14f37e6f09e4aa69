//! Many tasks at once: [`TaskBatch`], for apps that start tasks in bulk (message sync, bulk
//! acks).
//!
//! A batch sends all its task specs to the driver in one command, and the driver hands the
//! ends back in one message per driver iteration (every task of the batch that ended in
//! that iteration; a few when the core ended some of them together, see [`Delivery`]), so a
//! batch costs one channel hop and one wake-up of the caller per round, not per task. Each
//! task is otherwise exactly a [`Client::start_task`] task: the same admission, limits,
//! timeouts, retries and cancellation, and exactly one end.
//!
//! How "exactly one end" holds when the driver goes away: while the driver holds a batch
//! task it names the task's batch in its [`BatchOut`], and when the driver stops — by its
//! teardown or by being dropped with its runtime — every task it still holds gets a
//! [`LocalError::Reset`] end (the way a dropped `oneshot` resolves a [`TaskHandle`]); a
//! batch command the driver never took ends all its tasks the same way when it is dropped.
//!
//! [`TaskHandle`]: crate::TaskHandle

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use phobos_plugin_api::CmdId;
use phobos_stn_proto::{
    BatchedEnd, LikeTask, LocalError, Response, TaskError, TaskOutcome, TaskProfile, TaskSpec,
};
use tokio::sync::mpsc;

use crate::client::{Client, TaskKey};
use crate::driver::Command;
use crate::handler::HandlerId;
use crate::held::BATCH_TAG;

/// The end of one task of a [`TaskBatch`].
pub struct BatchEnd {
    /// The task (one of the keys [`TaskBatch::start`] returned).
    pub key: TaskKey,
    /// The response, or the error whose [`kind`](TaskError::kind) says which level failed.
    pub outcome: TaskOutcome,
    /// What [`profile`](Self::profile) is built from.
    profile: EndProfile,
}

/// A batch task's profile as its end carries it.
///
/// Design: the tasks of a batch that the core ends together
/// ([`Event::TasksEnded`](phobos_stn_proto::Event::TasksEnded)) share every field of
/// their profiles but three, so their ends share one profile and carry those three each:
/// handing an end over then writes a few words, not a 200-byte profile per task, and the
/// profile is built only if the app asks for it.
///
/// A task that ended on its own has its profile copied into its message's table of
/// profiles ([`BatchOut::push_own`]), and the engine's box goes back to the engine for a
/// later task: boxes that the app freed by the hundred cost more than any other step of a
/// batch task (the allocator's per-thread cache holds a few per size).
#[derive(Debug)]
pub(crate) enum EndProfile {
    /// The driver stopped before the task ended.
    None,
    /// Entry `index` of the table of the message the end is in (set when the message is
    /// sent: [`BatchOut::flush`]).
    Table {
        table: Arc<Vec<TaskProfile>>,
        index: usize,
    },
    /// Entry `index` of the table of the message being gathered (not sent yet).
    Pending(usize),
    /// A task that ended with others: their shared profile and its own fields.
    Shared {
        common: Arc<TaskProfile>,
        sent_bytes: usize,
        received_bytes: usize,
        first_packet_timeout: Duration,
    },
}

impl BatchEnd {
    /// When things happened; `None` when the driver stopped before the task ended (the
    /// outcome is then [`LocalError::Reset`]).
    ///
    /// Built when asked for: tasks that ended together share one profile but for their
    /// byte counts and first-packet timeouts, and their ends carry only a pointer to it
    /// and those three.
    pub fn profile(&self) -> Option<TaskProfile> {
        match &self.profile {
            EndProfile::None | EndProfile::Pending(_) => None,
            EndProfile::Table { table, index } => table.get(*index).cloned(),
            EndProfile::Shared {
                common,
                sent_bytes,
                received_bytes,
                first_packet_timeout,
            } => Some(common.with_own(*sent_bytes, *received_bytes, *first_packet_timeout)),
        }
    }
}

impl std::fmt::Debug for BatchEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchEnd")
            .field("key", &self.key)
            .field("outcome", &self.outcome)
            .field("profile", &self.profile())
            .finish()
    }
}

/// The keys of the tasks one [`TaskBatch::start`] call started, in the order of its specs:
/// consecutive, so a task's position in the call is `key - first`
/// ([`position`](Self::position)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TaskKeys {
    start: u64,
    end: u64,
}

impl TaskKeys {
    /// The `n` keys from `first` on.
    pub(crate) fn new(first: u64, n: usize) -> Self {
        TaskKeys {
            start: first,
            end: first + n as u64,
        }
    }

    /// How many tasks the call started.
    pub fn len(&self) -> usize {
        (self.end - self.start) as usize
    }

    /// Whether the call started no task.
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// The key of the call's first spec (`None` for an empty call).
    pub fn first(&self) -> Option<TaskKey> {
        (!self.is_empty()).then_some(TaskKey(self.start))
    }

    /// The position of `key`'s spec in the call, or `None` when another call started it.
    pub fn position(&self, key: TaskKey) -> Option<usize> {
        (self.start..self.end)
            .contains(&key.0)
            .then(|| (key.0 - self.start) as usize)
    }
}

impl Iterator for TaskKeys {
    type Item = TaskKey;

    fn next(&mut self) -> Option<TaskKey> {
        (self.start < self.end).then(|| {
            self.start += 1;
            TaskKey(self.start - 1)
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.len(), Some(self.len()))
    }
}

impl ExactSizeIterator for TaskKeys {}

/// A group of tasks sharing one channel for their ends (from [`Client::task_batch`] or
/// [`Client::start_tasks`]).
///
/// Start tasks with [`start`](Self::start) (as often as you like: a caller keeping `N`
/// tasks outstanding starts replacements for the ends it just received) and collect the
/// ends with [`recv_many`](Self::recv_many) or [`recv`](Self::recv). Every task started
/// gets exactly one [`BatchEnd`]; ends come in the order tasks finish. Dropping the batch
/// does not cancel its tasks (cancel them with [`cancel`](Self::cancel) first); their ends
/// are then discarded.
///
/// A batch can start tasks, so it counts as a [`Client`] clone: the driver and its links
/// stay up while a batch lives, even after every `Client` is dropped. (A
/// [`TaskHandle`](crate::TaskHandle), which cannot start tasks, does not keep them up.)
///
/// ```no_run
/// # async fn demo(client: phobos_stn::Client) {
/// use phobos_plugin_api::CmdId;
/// use phobos_stn::TaskSpec;
///
/// let acks = (0..100u32).map(|i| TaskSpec::new(CmdId(9), i.to_be_bytes().to_vec()));
/// let mut batch = client.start_tasks(acks);
/// let mut ends = Vec::new();
/// while batch.recv_many(&mut ends).await > 0 {
///     for end in ends.drain(..) {
///         println!("{:?}: {}", end.key, end.outcome.is_ok());
///     }
/// }
/// # }
/// ```
#[derive(Debug)]
#[must_use = "a batch's ends arrive only through it"]
pub struct TaskBatch {
    client: Client,
    tx: BatchSink,
    rx: mpsc::UnboundedReceiver<Delivery>,
    /// Ends received but not handed out yet (by [`recv`](Self::recv)).
    ready: std::collections::VecDeque<BatchEnd>,
    outstanding: usize,
    /// The parameters of the last [`start_like`](Self::start_like) call.
    like_params: Option<Arc<TaskSpec>>,
}

/// Where the driver sends a batch's ends: one [`Delivery`] per driver iteration, or a few.
pub(crate) type BatchSink = mpsc::UnboundedSender<Delivery>;

/// Ends of a batch's tasks, as the driver sends them.
#[derive(Debug)]
pub(crate) enum Delivery {
    /// Ends ready to hand out.
    Ends(Vec<BatchEnd>),
    /// Tasks of the batch that the core ended together, as it ended them: `common` is their
    /// shared profile ([`EndBatch`](phobos_stn_proto::EndBatch)), and each becomes its
    /// [`BatchEnd`] when the app receives it.
    ///
    /// Design: the driver only checks that each end is owed ([`HeldBatches`]) and passes the
    /// core's list on as it is; the app's thread, which moves every end once anyway, turns
    /// them into `BatchEnd`s as it moves them. Converting them in the driver moved each end
    /// twice and looked its batch's message up per end.
    ///
    /// [`HeldBatches`]: crate::held::HeldBatches
    Together {
        common: Arc<TaskProfile>,
        ends: Vec<BatchedEnd>,
    },
}

impl Delivery {
    /// How many ends.
    pub(crate) fn len(&self) -> usize {
        match self {
            Delivery::Ends(ends) => ends.len(),
            Delivery::Together { ends, .. } => ends.len(),
        }
    }

    /// Appends the ends to `out` (moving a whole `Vec` into an empty `out`).
    fn append_to(self, out: &mut Vec<BatchEnd>) {
        match self {
            Delivery::Ends(mut ends) => {
                if out.is_empty() {
                    std::mem::swap(out, &mut ends);
                } else {
                    out.append(&mut ends);
                }
            }
            Delivery::Together { common, ends } => {
                out.reserve(ends.len());
                out.extend(ends.into_iter().map(|end| shared_end(&common, end)));
            }
        }
    }
}

/// The [`BatchEnd`] of `end`, a task ended with others whose shared profile is `common`.
#[inline]
pub(crate) fn shared_end(common: &Arc<TaskProfile>, end: BatchedEnd) -> BatchEnd {
    BatchEnd {
        key: TaskKey(end.tag & !BATCH_TAG),
        outcome: Ok(end.response),
        profile: EndProfile::Shared {
            common: common.clone(),
            sent_bytes: end.sent_bytes,
            received_bytes: end.received_bytes,
            first_packet_timeout: end.first_packet_timeout,
        },
    }
}

impl TaskBatch {
    pub(crate) fn new(client: Client) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        TaskBatch {
            client,
            tx,
            rx,
            ready: std::collections::VecDeque::new(),
            outstanding: 0,
            like_params: None,
        }
    }

    /// Starts every task of `specs` with one command to the driver, which admits them all
    /// in one pass (their frames leave in one write per link). Each task is admitted,
    /// limited, timed and retried exactly like [`Client::start_task`]; a task refused at
    /// admission ends at once with its [`ParamError`](phobos_stn_proto::ParamError).
    pub fn start(&mut self, specs: impl IntoIterator<Item = TaskSpec>) -> TaskKeys {
        let specs: Vec<TaskSpec> = specs.into_iter().collect();
        self.send(BatchTasks::Specs(specs))
    }

    /// Starts one task per request, all with the parameters of `params` (its command id,
    /// body and extension aside) and each with the request's command id and body, with one
    /// command to the driver: for bulk work whose tasks differ only in what they carry
    /// (acks, message sync). Each task is exactly the task [`start`](Self::start) would
    /// start from a copy of `params` with that command id and body (and no extension), in
    /// the order of `requests`.
    ///
    /// Design: the driver and the core look at the parameters once per call, not once per
    /// task, and no spec is built, moved or dropped per task; in the benchmark at 100 tasks
    /// in flight that is about 320 of a batch task's 2,800 instructions
    /// (`docs/lab/throughput.md`). The batch keeps the last call's parameters (without
    /// body and extension) and shares them with the core's group of the call's tasks
    /// when the next call's are the same, so a caller that starts calls with one set of
    /// parameters has them copied once, not per call.
    ///
    /// ```no_run
    /// # async fn demo(client: phobos_stn::Client) {
    /// use bytes::Bytes;
    /// use phobos_plugin_api::CmdId;
    /// use phobos_stn::TaskSpec;
    ///
    /// let params = TaskSpec::new(CmdId(0), Bytes::new()).with_retry_count(2);
    /// let mut batch = client.task_batch();
    /// let acks = (0..100u32).map(|i| (CmdId(9), Bytes::from(i.to_be_bytes().to_vec())));
    /// let keys = batch.start_like(&params, acks);
    /// assert_eq!(keys.len(), 100);
    /// # }
    /// ```
    pub fn start_like(
        &mut self,
        params: &TaskSpec,
        requests: impl IntoIterator<Item = (CmdId, Bytes)>,
    ) -> TaskKeys {
        let tasks = BatchTasks::like(&mut self.like_params, params, requests);
        self.send(tasks)
    }

    /// Sends one `StartBatch` command for `tasks`; returns their keys.
    fn send(&mut self, tasks: BatchTasks) -> TaskKeys {
        let n = tasks.len() as u64;
        let start = self.client.next_keys(n);
        let keys = TaskKeys {
            start,
            end: start + n,
        };
        if n == 0 {
            return keys;
        }
        self.outstanding += tasks.len();
        // A send error means the driver is gone: the command comes back and dropping it
        // ends every task with `LocalError::Reset`.
        let _ = self.client.send(Command::StartBatch(BatchStart {
            first: start,
            tasks,
            sink: self.tx.clone(),
        }));
        keys
    }

    /// Cancels one task of the batch: it ends with [`TaskError::Canceled`] unless it already
    /// ended. A key that is not one of this batch's tasks is ignored (as an
    /// [`EndHandler`](crate::EndHandler)'s cancel is): [`Client::cancel`] cancels any task.
    pub fn cancel(&self, key: TaskKey) {
        // A send error means the driver is gone: every task ends anyway.
        let _ = self.client.send(Command::CancelInBatch {
            key,
            sink: self.tx.clone(),
        });
    }

    /// Tasks started and not yet received.
    pub fn outstanding(&self) -> usize {
        self.outstanding
    }

    /// Waits until at least one task has ended, then appends every end available now to
    /// `out` and returns how many. Returns 0 at once when no task is outstanding.
    pub async fn recv_many(&mut self, out: &mut Vec<BatchEnd>) -> usize {
        if self.ready.is_empty() && self.outstanding > 0 {
            // The batch holds a sender itself, so the channel never closes.
            if let Some(first) = self.rx.recv().await {
                return self.take_ready(out, Some(first));
            }
        }
        self.take_ready(out, None)
    }

    /// Like [`recv_many`](Self::recv_many), blocking the thread (outside async code; see
    /// [`BlockingClient`](crate::BlockingClient)).
    ///
    /// # Panics
    ///
    /// When called from inside an async context.
    pub fn blocking_recv_many(&mut self, out: &mut Vec<BatchEnd>) -> usize {
        if self.ready.is_empty() && self.outstanding > 0 {
            if let Some(first) = self.rx.blocking_recv() {
                return self.take_ready(out, Some(first));
            }
        }
        self.take_ready(out, None)
    }

    /// The next end; `None` when no task is outstanding.
    pub async fn recv(&mut self) -> Option<BatchEnd> {
        if self.ready.is_empty() && self.outstanding > 0 {
            if let Some(first) = self.rx.recv().await {
                let mut ends = Vec::with_capacity(first.len());
                first.append_to(&mut ends);
                self.ready.extend(ends);
            }
        }
        let end = self.ready.pop_front()?;
        self.outstanding -= 1;
        Some(end)
    }

    /// Waits until at least one task has ended, then returns the ends of one delivery of
    /// the driver's as they came, without making a [`BatchEnd`] of each; `None` when no task
    /// is outstanding. Read them in place with [`EndGroup::iter`], or take them as
    /// `BatchEnd`s with [`EndGroup::into_ends`]. A caller may mix this with
    /// [`recv_many`](Self::recv_many) and [`recv`](Self::recv): every end comes once,
    /// through one of them.
    ///
    /// Design: the tasks of a batch that the core ends together share their profile but for
    /// three fields ([`Event::TasksEnded`](phobos_stn_proto::Event::TasksEnded)), and the
    /// driver passes their ends on as the core made them. `recv_many` moves each into a
    /// `BatchEnd` with its own pointer to the shared profile; a caller that reads its ends
    /// and drops them (acks, message sync) is spared that second copy here (in the
    /// benchmark at 100 tasks in flight, 980 instructions a task became 915;
    /// `docs/lab/throughput.md`).
    ///
    /// ```no_run
    /// # async fn demo(client: phobos_stn::Client) {
    /// use bytes::Bytes;
    /// use phobos_plugin_api::CmdId;
    /// use phobos_stn::TaskSpec;
    ///
    /// let params = TaskSpec::new(CmdId(0), Bytes::new());
    /// let mut batch = client.task_batch();
    /// batch.start_like(&params, (0..100u32).map(|i| (CmdId(9), Bytes::from(i.to_be_bytes().to_vec()))));
    /// while let Some(group) = batch.recv_group().await {
    ///     for end in group.iter() {
    ///         println!("{:?}: {}", end.key(), end.outcome().is_ok());
    ///     }
    /// }
    /// # }
    /// ```
    pub async fn recv_group(&mut self) -> Option<EndGroup> {
        if let Some(group) = self.take_left_over() {
            return Some(group);
        }
        while self.outstanding > 0 {
            // The batch holds a sender itself, so the channel never closes.
            let delivery = self.rx.recv().await?;
            if let Some(group) = self.group_of(delivery) {
                return Some(group);
            }
        }
        None
    }

    /// Like [`recv_group`](Self::recv_group), blocking the thread (outside async code; see
    /// [`BlockingClient`](crate::BlockingClient)).
    ///
    /// # Panics
    ///
    /// When called from inside an async context.
    pub fn blocking_recv_group(&mut self) -> Option<EndGroup> {
        if let Some(group) = self.take_left_over() {
            return Some(group);
        }
        while self.outstanding > 0 {
            let delivery = self.rx.blocking_recv()?;
            if let Some(group) = self.group_of(delivery) {
                return Some(group);
            }
        }
        None
    }

    /// The ends [`recv`](Self::recv) received but did not hand out yet, as a group.
    fn take_left_over(&mut self) -> Option<EndGroup> {
        if self.ready.is_empty() {
            return None;
        }
        let ends: Vec<BatchEnd> = self.ready.drain(..).collect();
        self.outstanding -= ends.len();
        Some(EndGroup {
            delivery: Delivery::Ends(ends),
        })
    }

    /// `delivery`, just received, as a group (`None` when it holds no end).
    fn group_of(&mut self, delivery: Delivery) -> Option<EndGroup> {
        let n = delivery.len();
        if n == 0 {
            return None;
        }
        self.outstanding -= n;
        Some(EndGroup { delivery })
    }

    /// Moves `first` (just received), whatever [`recv`](Self::recv) left over and whatever
    /// else the driver already sent into `out`.
    ///
    /// Design: a received `Vec` of ends is moved into an empty `out` whole, not copied end
    /// by end.
    fn take_ready(&mut self, out: &mut Vec<BatchEnd>, first: Option<Delivery>) -> usize {
        let before = out.len();
        out.extend(self.ready.drain(..));
        if let Some(first) = first {
            first.append_to(out);
        }
        while let Ok(more) = self.rx.try_recv() {
            more.append_to(out);
        }
        let n = out.len() - before;
        self.outstanding -= n;
        n
    }
}

/// The ends of one delivery of a batch's tasks, as [`TaskBatch::recv_group`] received them.
#[derive(Debug)]
pub struct EndGroup {
    delivery: Delivery,
}

impl EndGroup {
    /// The ends of `delivery`.
    pub(crate) fn of(delivery: Delivery) -> Self {
        EndGroup { delivery }
    }

    /// How many ends.
    pub fn len(&self) -> usize {
        self.delivery.len()
    }

    /// Whether the group holds no end (a received group always holds one or more).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The ends, in the order the tasks ended, read in place.
    pub fn iter(&self) -> EndGroupIter<'_> {
        EndGroupIter {
            inner: match &self.delivery {
                Delivery::Ends(ends) => IterInner::Own(ends.iter()),
                Delivery::Together { common, ends } => IterInner::Shared(common, ends.iter()),
            },
        }
    }

    /// The ends as [`BatchEnd`]s (what [`TaskBatch::recv_many`] would have given), appended
    /// to `out`.
    pub fn append_to(self, out: &mut Vec<BatchEnd>) {
        self.delivery.append_to(out);
    }

    /// The ends as [`BatchEnd`]s.
    pub fn into_ends(self) -> Vec<BatchEnd> {
        let mut out = Vec::with_capacity(self.len());
        self.append_to(&mut out);
        out
    }
}

impl<'a> IntoIterator for &'a EndGroup {
    type Item = GroupEnd<'a>;
    type IntoIter = EndGroupIter<'a>;

    fn into_iter(self) -> EndGroupIter<'a> {
        self.iter()
    }
}

/// The ends of an [`EndGroup`], in order ([`EndGroup::iter`]).
#[derive(Clone, Debug)]
pub struct EndGroupIter<'a> {
    inner: IterInner<'a>,
}

#[derive(Clone, Debug)]
enum IterInner<'a> {
    Own(std::slice::Iter<'a, BatchEnd>),
    Shared(&'a Arc<TaskProfile>, std::slice::Iter<'a, BatchedEnd>),
}

impl<'a> Iterator for EndGroupIter<'a> {
    type Item = GroupEnd<'a>;

    #[inline]
    fn next(&mut self) -> Option<GroupEnd<'a>> {
        match &mut self.inner {
            IterInner::Own(ends) => ends.next().map(|end| GroupEnd(EndRef::Own(end))),
            IterInner::Shared(common, ends) => {
                ends.next().map(|end| GroupEnd(EndRef::Shared(common, end)))
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = match &self.inner {
            IterInner::Own(ends) => ends.len(),
            IterInner::Shared(_, ends) => ends.len(),
        };
        (n, Some(n))
    }
}

impl ExactSizeIterator for EndGroupIter<'_> {}

/// One end of an [`EndGroup`], read in place: what a [`BatchEnd`] holds, by reference.
#[derive(Clone, Copy, Debug)]
pub struct GroupEnd<'a>(EndRef<'a>);

#[derive(Clone, Copy, Debug)]
enum EndRef<'a> {
    /// An end the driver made a [`BatchEnd`] of.
    Own(&'a BatchEnd),
    /// An end the core made together with others, and their shared profile.
    Shared(&'a Arc<TaskProfile>, &'a BatchedEnd),
}

impl<'a> GroupEnd<'a> {
    /// The task (one of the keys its start call returned).
    #[inline]
    pub fn key(&self) -> TaskKey {
        match self.0 {
            EndRef::Own(end) => end.key,
            EndRef::Shared(_, end) => TaskKey(end.tag & !BATCH_TAG),
        }
    }

    /// The response, or the error whose [`kind`](TaskError::kind) says which level failed.
    #[inline]
    pub fn outcome(&self) -> Result<&'a Response, &'a TaskError> {
        match self.0 {
            EndRef::Own(end) => end.outcome.as_ref(),
            EndRef::Shared(_, end) => Ok(&end.response),
        }
    }

    /// When things happened, as [`BatchEnd::profile`].
    pub fn profile(&self) -> Option<TaskProfile> {
        match self.0 {
            EndRef::Own(end) => end.profile(),
            EndRef::Shared(common, end) => {
                Some(common.with_own(end.sent_bytes, end.received_bytes, end.first_packet_timeout))
            }
        }
    }
}

/// The `StartBatch` command: tasks for the driver to admit.
#[derive(Debug)]
pub(crate) struct BatchStart {
    /// The key of the first task; the others follow.
    pub(crate) first: u64,
    pub(crate) tasks: BatchTasks,
    pub(crate) sink: BatchSink,
}

/// The tasks of a `StartBatch` command.
#[derive(Debug)]
pub(crate) enum BatchTasks {
    /// One spec per task ([`TaskBatch::start`]).
    Specs(Vec<TaskSpec>),
    /// One request per task, all with the parameters of `params` ([`TaskBatch::start_like`];
    /// its command id, body and extension are not used).
    Like {
        params: Arc<TaskSpec>,
        requests: Vec<LikeTask>,
    },
}

impl BatchTasks {
    /// The tasks of a `start_like` call ([`TaskBatch::start_like`],
    /// [`Starter::start_like`](crate::Starter::start_like)): the requests collected as the
    /// core takes them (the driver adds each task's tag in place), with the parameters as
    /// shared with the driver: the last call's (`last`) when they are the same, else a copy
    /// of `params` (without body and extension), kept in `last` for the next call. No task
    /// for no request.
    pub(crate) fn like(
        last: &mut Option<Arc<TaskSpec>>,
        params: &TaskSpec,
        requests: impl IntoIterator<Item = (CmdId, Bytes)>,
    ) -> Self {
        let requests: Vec<LikeTask> = requests
            .into_iter()
            .map(|(cmd, body)| LikeTask::new(cmd, body, 0))
            .collect();
        if requests.is_empty() {
            return BatchTasks::Specs(Vec::new());
        }
        let params = match last {
            Some(last) if last.same_params(params) => last.clone(),
            _ => {
                let fresh = Arc::new(params.clone_params());
                *last = Some(fresh.clone());
                fresh
            }
        };
        BatchTasks::Like { params, requests }
    }

    /// How many tasks.
    pub(crate) fn len(&self) -> usize {
        match self {
            BatchTasks::Specs(specs) => specs.len(),
            BatchTasks::Like { requests, .. } => requests.len(),
        }
    }
}

impl BatchStart {
    /// Takes the tasks out (the driver admits them); what stays is not ended on drop.
    pub(crate) fn take(&mut self) -> (u64, BatchTasks, BatchSink) {
        let tasks = std::mem::replace(&mut self.tasks, BatchTasks::Specs(Vec::new()));
        (self.first, tasks, self.sink.clone())
    }
}

impl Drop for BatchStart {
    /// A command the driver never took (it stopped first): each of its tasks ends with a
    /// reset.
    fn drop(&mut self) {
        let n = self.tasks.len() as u64;
        if n == 0 {
            return;
        }
        let ends = (0..n).map(|i| reset(TaskKey(self.first + i))).collect();
        let _ = self.sink.send(Delivery::Ends(ends));
    }
}

/// The batches whose tasks the driver holds, and the ends of batch tasks that ended during
/// one driver iteration, sent at the end of the iteration (one message and one wake-up per
/// batch).
///
/// Design: a running batch task names its batch by index here ([`BatchIndex`]), not by a
/// clone of the batch's channel sender (two atomic increments per task, and two decrements
/// at its end, on a cache line the caller's thread also writes). "Exactly one end" when the
/// driver goes away holds the way it did with a sender per task: [`reset`](Self::reset)
/// (which the driver calls when it stops, and on drop) sends a reset end for every task
/// still held.
#[derive(Debug, Default)]
pub(crate) struct BatchOut {
    batches: Vec<Batch>,
    /// Ends queued this iteration, by batch index.
    pending: Vec<Message>,
    /// Deliveries for handlers that [`flush`](Self::flush) set aside.
    pub(crate) for_handlers: Vec<(HandlerId, Delivery)>,
}

/// What one batch is sent at the end of a driver iteration, in the order its ends came: a
/// batch may have several messages in one iteration.
///
/// A message either gathers ends one by one (`together` is `None`: sent as a
/// [`Delivery::Ends`]) or passes on the ends of one core's batch as they are (`together`,
/// sent as a [`Delivery::Together`], with `ends` and `profiles` empty). Ends of the batch
/// queued after a `together` message go into a new message.
#[derive(Debug)]
struct Message {
    batch: BatchIndex,
    /// Ends gathered one by one.
    ends: Vec<BatchEnd>,
    /// The profiles of the gathered ends that ended on their own ([`EndProfile::Pending`]
    /// indexes; made with room for as many profiles as `ends` has for ends, at the first one).
    profiles: Vec<TaskProfile>,
    /// The ends of one core's batch and their shared profile.
    together: Option<(Arc<TaskProfile>, Vec<BatchedEnd>)>,
}

impl Message {
    /// The message as the batch receives it.
    fn into_delivery(self) -> Delivery {
        let Message {
            batch: _,
            mut ends,
            profiles,
            together,
        } = self;
        if let Some((common, ends)) = together {
            return Delivery::Together { common, ends };
        }
        if !profiles.is_empty() {
            let table = Arc::new(profiles);
            for end in &mut ends {
                if let EndProfile::Pending(index) = end.profile {
                    end.profile = EndProfile::Table {
                        table: table.clone(),
                        index,
                    };
                }
            }
        }
        // The room reserved for every end the batch held (`MAX_ENDS_RESERVED` at most) goes
        // to the app with the list, which `recv_many` hands over whole: one end among a
        // thousand held tasks kept about 120 KB. A list using under half its room is cut
        // to size (a full round's list, the usual case, is not copied).
        if ends.capacity() > 2 * ends.len() + 4 {
            ends.shrink_to_fit();
        }
        Delivery::Ends(ends)
    }
}

/// Which [`BatchOut`] entry a task's end goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BatchIndex(u32);

impl BatchIndex {
    /// An index for unit tests of the modules that carry one.
    #[cfg(test)]
    pub(crate) fn for_test(i: u32) -> Self {
        BatchIndex(i)
    }
}

#[derive(Debug)]
struct Batch {
    /// `None` while the entry is free.
    sink: Option<Sink>,
    /// Tasks of the batch the driver holds.
    held: usize,
}

/// Where a batch's ends go.
#[derive(Debug, Clone)]
pub(crate) enum Sink {
    /// A [`TaskBatch`]'s channel.
    Channel(BatchSink),
    /// A handler the driver runs ([`crate::handler`]): its ends are taken out of the
    /// iteration's messages by [`BatchOut::take_for_handlers`].
    Handler(HandlerId),
}

impl Sink {
    fn same(&self, other: &Sink) -> bool {
        match (self, other) {
            (Sink::Channel(a), Sink::Channel(b)) => a.same_channel(b),
            (Sink::Handler(a), Sink::Handler(b)) => a == b,
            _ => false,
        }
    }
}

impl BatchOut {
    /// Registers `n` more tasks of the batch whose ends go to `sink`; they end through the
    /// index returned.
    pub(crate) fn hold(&mut self, sink: &Sink, n: usize) -> BatchIndex {
        let found = self
            .batches
            .iter()
            .position(|b| b.sink.as_ref().is_some_and(|s| s.same(sink)));
        let i = match found {
            Some(i) => i,
            None => match self.batches.iter().position(|b| b.sink.is_none()) {
                Some(i) => {
                    self.batches[i].sink = Some(sink.clone());
                    i
                }
                None => {
                    self.batches.push(Batch {
                        sink: Some(sink.clone()),
                        held: 0,
                    });
                    self.batches.len() - 1
                }
            },
        };
        self.batches[i].held += n;
        // As many batches as the app runs at once: far below `u32::MAX`.
        BatchIndex(i as u32)
    }

    /// The index of the batch whose ends go to `sink`, if the driver holds tasks of it.
    pub(crate) fn index_of(&self, sink: &Sink) -> Option<BatchIndex> {
        let i = self
            .batches
            .iter()
            .position(|b| b.sink.as_ref().is_some_and(|s| s.same(sink)))?;
        Some(BatchIndex(i as u32))
    }

    /// Queues the end of task `key` of batch `batch`.
    #[inline]
    pub(crate) fn push(
        &mut self,
        batch: BatchIndex,
        key: TaskKey,
        outcome: TaskOutcome,
        profile: EndProfile,
    ) {
        self.push_end(
            batch,
            BatchEnd {
                key,
                outcome,
                profile,
            },
        );
    }

    /// Queues `end`, made already, for batch `batch`.
    pub(crate) fn push_end(&mut self, batch: BatchIndex, end: BatchEnd) {
        self.gathered(batch).0.push(end);
    }

    /// [`push`](Self::push) for a task that ended on its own, with a copy of `profile`,
    /// whose link name is taken (the rest is left as it was, for the engine to overwrite
    /// when it reuses the box).
    pub(crate) fn push_own(
        &mut self,
        batch: BatchIndex,
        key: TaskKey,
        outcome: TaskOutcome,
        profile: &mut TaskProfile,
    ) {
        let link = profile.link.take();
        // Design: the table grows as ends come, not to the room reserved for the message's
        // ends (up to `MAX_ENDS_RESERVED`, every end the batch has held): every end of the
        // message keeps the whole table alive, so an app keeping the one end that failed
        // among a thousand outstanding tasks kept a thousand profiles (about 230 KB). Grown,
        // the table holds at most about twice the profiles of its message.
        let (ends, profiles) = self.gathered(batch);
        profiles.push(TaskProfile { link, ..*profile });
        let index = profiles.len() - 1;
        ends.push(BatchEnd {
            key,
            outcome,
            profile: EndProfile::Pending(index),
        });
    }

    /// Queues `ends`, tasks of batch `batch` that the core ended together (their shared
    /// profile is `common`), to be passed on as they are ([`Delivery::Together`]).
    pub(crate) fn push_together(
        &mut self,
        batch: BatchIndex,
        common: Arc<TaskProfile>,
        ends: Vec<BatchedEnd>,
    ) {
        if let Some(b) = self.batches.get_mut(batch.0 as usize) {
            b.held = b.held.saturating_sub(ends.len());
        }
        self.pending.push(Message {
            batch,
            ends: Vec::new(),
            profiles: Vec::new(),
            together: Some((common, ends)),
        });
    }

    /// The ends and profiles gathered this iteration for `batch`, in its last message if
    /// that gathers ends one by one, else in a new one (one end is about to be added).
    #[inline]
    fn gathered(&mut self, batch: BatchIndex) -> (&mut Vec<BatchEnd>, &mut Vec<TaskProfile>) {
        let mut held = 0;
        if let Some(b) = self.batches.get_mut(batch.0 as usize) {
            held = b.held;
            b.held = b.held.saturating_sub(1);
        }
        // Usually every end of an iteration belongs to the same batch or a few.
        let last = self.pending.iter().rposition(|m| m.batch == batch);
        let i = match last.filter(|&i| self.pending[i].together.is_none()) {
            Some(i) => i,
            None => {
                self.pending.push(Message {
                    batch,
                    // Room for every end of the batch this iteration might bring.
                    ends: Vec::with_capacity(held.clamp(1, MAX_ENDS_RESERVED)),
                    profiles: Vec::new(),
                    together: None,
                });
                self.pending.len() - 1
            }
        };
        let m = &mut self.pending[i];
        (&mut m.ends, &mut m.profiles)
    }

    /// Sends what was queued, and frees the entries of batches with no task held. Ends of
    /// handlers' batches are left in [`for_handlers`](Self::for_handlers) (the driver hands
    /// them over: [`take_for_handlers`](Self::take_for_handlers) takes them during an
    /// iteration, this only when the driver stops).
    pub(crate) fn flush(&mut self) {
        for message in self.pending.drain(..) {
            let batch = message.batch;
            let Some(sink) = self
                .batches
                .get(batch.0 as usize)
                .and_then(|b| b.sink.as_ref())
            else {
                continue;
            };
            let delivery = message.into_delivery();
            match sink {
                Sink::Channel(tx) => {
                    let _ = tx.send(delivery);
                }
                Sink::Handler(id) => self.for_handlers.push((*id, delivery)),
            }
        }
        for b in &mut self.batches {
            if b.held == 0 {
                b.sink = None;
            }
        }
    }

    /// Moves the ends of handlers' batches queued so far to `out`, as deliveries (in the
    /// order they came), leaving the channels' for [`flush`](Self::flush). Ends of batches
    /// no handler runs any more are dropped.
    pub(crate) fn take_for_handlers(&mut self, out: &mut Vec<(HandlerId, Delivery)>) {
        out.append(&mut self.for_handlers);
        let mut i = 0;
        while i < self.pending.len() {
            let batch = self.pending[i].batch;
            let sink = self
                .batches
                .get(batch.0 as usize)
                .and_then(|b| b.sink.as_ref());
            match sink {
                Some(Sink::Handler(id)) => {
                    let id = *id;
                    let message = self.pending.remove(i);
                    out.push((id, message.into_delivery()));
                }
                _ => i += 1,
            }
        }
    }

    /// The driver stops: each of `tasks` (the batch tasks it still holds) ends with a reset,
    /// and everything queued is sent.
    pub(crate) fn reset(&mut self, tasks: impl IntoIterator<Item = (BatchIndex, TaskKey)>) {
        for (batch, key) in tasks {
            let end = reset(key);
            self.push(batch, end.key, end.outcome, EndProfile::None);
        }
        self.flush();
    }
}

impl Drop for BatchOut {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Most ends reserved up front for one batch's message of one iteration.
const MAX_ENDS_RESERVED: usize = 1024;

/// The end of a task the driver could not finish.
fn reset(key: TaskKey) -> BatchEnd {
    BatchEnd {
        key,
        outcome: Err(TaskError::Local(LocalError::Reset)),
        profile: EndProfile::None,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use phobos_stn_proto::LinkName;

    use super::*;

    fn profile(sent: usize) -> TaskProfile {
        TaskProfile {
            sent_bytes: sent,
            link: Some(LinkName::new("l")),
            ..TaskProfile::new(Instant::now())
        }
    }

    /// What the app receives of `delivery`.
    fn ends_of(delivery: Delivery) -> Vec<BatchEnd> {
        let mut ends = Vec::new();
        delivery.append_to(&mut ends);
        ends
    }

    fn batched(key: u64, sent: usize) -> BatchedEnd {
        BatchedEnd {
            id: phobos_stn_proto::TaskId(key as u32 + 100),
            tag: key | BATCH_TAG,
            response: phobos_stn_proto::Response {
                cmd_id: CmdId(7),
                body: Bytes::from(vec![key as u8]),
                extension: None,
            },
            sent_bytes: sent,
            received_bytes: 2 * sent,
            first_packet_timeout: Duration::from_secs(3),
        }
    }

    /// Queues the ends of tasks 1 to 4 of batch `a`, each way an end comes: 1 made by the
    /// driver (no profile), 2 and 3 as the core ended them together (sent 20 and 30 bytes),
    /// 4 on its own with its profile (sent 40).
    fn queue_each_way(out: &mut BatchOut, a: BatchIndex) {
        out.push(a, TaskKey(1), Err(TaskError::Canceled), EndProfile::None);
        out.push_together(
            a,
            Arc::new(profile(0)),
            vec![batched(2, 20), batched(3, 30)],
        );
        out.push_own(a, TaskKey(4), Err(TaskError::Canceled), &mut profile(40));
    }

    /// Ends passed on as the core made them, between ends queued one by one in the same
    /// iteration: the app gets them all in the order they came, each with its key (from its
    /// tag), its response and its profile (the shared one with its own fields).
    #[test]
    fn ends_passed_on_together_keep_their_place_and_their_own_fields() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut out = BatchOut::default();
        let a = out.hold(&Sink::Channel(tx.clone()), 5);
        queue_each_way(&mut out, a);
        out.push(a, TaskKey(5), Err(TaskError::Canceled), EndProfile::None);
        out.flush();
        let mut got = Vec::new();
        while let Ok(delivery) = rx.try_recv() {
            delivery.append_to(&mut got);
        }
        let keys: Vec<u64> = got.iter().map(|e| e.key.get()).collect();
        assert_eq!(keys, [1, 2, 3, 4, 5]);
        let body = |e: &BatchEnd| e.outcome.as_ref().ok().map(|r| r.body.clone());
        assert_eq!(body(&got[1]), Some(Bytes::from(vec![2u8])));
        assert_eq!(body(&got[2]), Some(Bytes::from(vec![3u8])));
        let p = got[2].profile().unwrap();
        assert_eq!((p.sent_bytes, p.received_bytes), (30, 60));
        assert_eq!(p.first_packet_timeout, Some(Duration::from_secs(3)));
        assert_eq!(p.link, Some(LinkName::new("l")));
        assert_eq!(got[3].profile().map(|p| p.sent_bytes), Some(40));
        // Every end held was sent: the batch's entry is free again.
        assert!(out.batches.iter().all(|b| b.sink.is_none()));
    }

    /// A group read in place gives each end the key, outcome and profile the `BatchEnd`
    /// made of it gives, whichever way the driver passed it on.
    #[test]
    fn a_group_read_in_place_is_what_its_batch_ends_hold() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut out = BatchOut::default();
        let a = out.hold(&Sink::Channel(tx.clone()), 5);
        queue_each_way(&mut out, a);
        out.flush();
        let mut seen = Vec::new();
        while let Ok(delivery) = rx.try_recv() {
            let group = EndGroup { delivery };
            let read: Vec<_> = group
                .iter()
                .map(|e| {
                    let outcome = e.outcome().map(|r| r.body.clone()).map_err(|e| e.kind());
                    (e.key(), outcome, e.profile().map(|p| p.sent_bytes))
                })
                .collect();
            assert_eq!(group.iter().len(), group.len());
            let owned: Vec<_> = group
                .into_ends()
                .into_iter()
                .map(|e| {
                    let sent = e.profile().map(|p| p.sent_bytes);
                    let outcome = e.outcome.map(|r| r.body).map_err(|e| e.kind());
                    (e.key, outcome, sent)
                })
                .collect();
            assert_eq!(read, owned);
            seen.extend(read);
        }
        let keys: Vec<u64> = seen.iter().map(|e| e.0.get()).collect();
        assert_eq!(keys, [1, 2, 3, 4]);
        assert_eq!(seen[2].1, Ok(Bytes::from(vec![3u8])));
        assert_eq!(seen[2].2, Some(30));
        assert_eq!(seen[3].2, Some(40));
        assert_eq!(seen[0].2, None);
    }

    /// One end on its own while a batch holds a thousand tasks: the table of profiles its
    /// end keeps alive holds about its message's profiles, not room for the thousand.
    #[test]
    fn a_lone_ends_table_of_profiles_is_not_sized_for_every_task_held() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut out = BatchOut::default();
        let a = out.hold(&Sink::Channel(tx.clone()), 1000);
        out.push_own(a, TaskKey(1), Err(TaskError::Canceled), &mut profile(11));
        out.flush();
        let ends = ends_of(rx.try_recv().unwrap());
        assert_eq!(ends.len(), 1);
        let EndProfile::Table { table, index } = &ends[0].profile else {
            panic!("an end on its own points into its message's table");
        };
        assert_eq!((table.len(), *index), (1, 0));
        assert!(
            table.capacity() <= 4,
            "a table with room for {} profiles kept alive by one end",
            table.capacity()
        );
        assert_eq!(ends[0].profile().unwrap().sent_bytes, 11);
    }

    /// Ends of two batches in one iteration, each with its own table of profiles, plus a
    /// shared-profile end and a reset: every end gets back its own profile.
    #[test]
    fn each_end_gets_its_own_profile_whichever_way_it_came() {
        let (tx_a, mut rx_a) = mpsc::unbounded_channel();
        let (tx_b, mut rx_b) = mpsc::unbounded_channel();
        let mut out = BatchOut::default();
        let a = out.hold(&Sink::Channel(tx_a.clone()), 3);
        let b = out.hold(&Sink::Channel(tx_b.clone()), 2);
        let ok = || Err(TaskError::Canceled);
        out.push_own(a, TaskKey(1), ok(), &mut profile(11));
        out.push_own(b, TaskKey(2), ok(), &mut profile(22));
        let common = Arc::new(profile(0));
        let shared = EndProfile::Shared {
            common,
            sent_bytes: 33,
            received_bytes: 44,
            first_packet_timeout: Duration::from_secs(5),
        };
        out.push(a, TaskKey(3), ok(), shared);
        out.push_own(a, TaskKey(4), ok(), &mut profile(55));
        out.push(b, TaskKey(5), ok(), EndProfile::None);
        out.flush();
        let sent = |end: &BatchEnd| end.profile().map(|p| p.sent_bytes);
        let ends_a = ends_of(rx_a.try_recv().unwrap());
        let got: Vec<_> = ends_a.iter().map(|e| (e.key, sent(e))).collect();
        assert_eq!(
            got,
            [
                (TaskKey(1), Some(11)),
                (TaskKey(3), Some(33)),
                (TaskKey(4), Some(55))
            ]
        );
        let p = ends_a[1].profile().unwrap();
        assert_eq!(p.received_bytes, 44);
        assert_eq!(p.first_packet_timeout, Some(Duration::from_secs(5)));
        assert_eq!(ends_a[0].profile().unwrap().link, Some(LinkName::new("l")));
        let ends_b = ends_of(rx_b.try_recv().unwrap());
        let got: Vec<_> = ends_b.iter().map(|e| (e.key, sent(e))).collect();
        assert_eq!(got, [(TaskKey(2), Some(22)), (TaskKey(5), None)]);
    }
}
