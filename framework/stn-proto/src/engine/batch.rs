//! Admitting a batch of tasks with one dispatch pass.
//!
//! A driver that takes several commands per wake-up (all stamped with the same `now`) can
//! admit each task with [`Engine::queue_task`] and run one dispatch pass at the end with
//! [`Engine::send_queued`]: the batch's frames then leave in one [`Action::Send`] per link
//! instead of one per task.
//!
//! [`Action::Send`]: crate::Action::Send

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use phobos_plugin_api::{CmdId, TaskId};

use super::Engine;
use crate::task::{TaskProfile, TaskSpec};

/// One task of [`Engine::queue_tasks_like`]: what differs from the batch's parameters, and
/// (once admitted) its id.
#[derive(Clone, Debug)]
pub struct LikeTask {
    /// The long-link command id.
    pub cmd_id: CmdId,
    /// The request body (taken by the engine).
    pub body: Bytes,
    /// The tag given back on the task's end ([`TaskEnd::tag`](crate::TaskEnd::tag)).
    pub tag: u64,
    /// The task's id, written by the engine (`TaskId(0)` until then).
    pub id: TaskId,
}

impl LikeTask {
    /// A task with this command, body and tag.
    pub fn new(cmd_id: CmdId, body: impl Into<Bytes>, tag: u64) -> Self {
        LikeTask {
            cmd_id,
            body: body.into(),
            tag,
            id: TaskId(0),
        }
    }
}

impl Engine {
    /// Admits a task like [`start_task`](Self::start_task) but leaves its dispatch to the
    /// next [`send_queued`](Self::send_queued) (or to the next input, which dispatches every
    /// link with new work anyway). Call `send_queued` with the same `now` after the last
    /// task of the batch, before draining [`poll_action`](Self::poll_action).
    ///
    /// Design: with every task of a batch stamped with the same `now`, one dispatch pass
    /// after the batch decides exactly what a pass after each task would (same limits, same
    /// timeouts, same send instant), except that the batch's tasks go out in priority order
    /// rather than arrival order — which is Mars's order within one loop run (§7.4).
    pub fn queue_task(&mut self, now: Instant, spec: TaskSpec) -> TaskId {
        self.queue_task_tagged(now, spec, 0)
    }

    /// [`queue_task`](Self::queue_task) with a tag, as
    /// [`start_task_tagged`](Self::start_task_tagged).
    pub fn queue_task_tagged(&mut self, now: Instant, spec: TaskSpec, tag: u64) -> TaskId {
        self.defer_dispatch = true;
        let id = self.start_task_tagged(now, spec, tag);
        self.defer_dispatch = false;
        id
    }

    /// Admits one task per entry of `tasks`, each with `params`' parameters (its body and
    /// extension aside) and the entry's command id, body and tag, and writes each task's id
    /// into its entry. The same as [`queue_task_tagged`](Self::queue_task_tagged) with a
    /// copy of `params` per task, in order, but cheaper: the parameters are looked at once,
    /// not once per task. Call [`send_queued`](Self::send_queued) after the last call of
    /// the batch, as after `queue_task`.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Instant;
    /// use phobos_plugin_api::{CmdId, PacketCodec, TaskId};
    /// use phobos_stn_proto::{Config, Engine, LikeTask, LinkConfig, TaskSpec};
    ///
    /// fn acks(codec: Arc<dyn PacketCodec>, now: Instant) {
    ///     let addr = "10.0.0.1:8080".parse::<std::net::SocketAddr>().unwrap().into();
    ///     let config = Config::builder(codec)
    ///         .link(LinkConfig::new("default-longlink").addrs([addr]))
    ///         .build()
    ///         .unwrap();
    ///     let mut engine = Engine::new(config, now).unwrap();
    ///     let params = Arc::new(TaskSpec::new(CmdId(0), Vec::new()).with_retry_count(0));
    ///     let mut tasks: Vec<LikeTask> = (0..3u8)
    ///         .map(|i| LikeTask::new(CmdId(9), vec![i], u64::from(i)))
    ///         .collect();
    ///     engine.queue_tasks_like(now, &params, &mut tasks);
    ///     engine.send_queued(now);
    ///     assert!(tasks.iter().all(|t| t.id != TaskId(0) && engine.has_task(t.id)));
    /// }
    /// ```
    pub fn queue_tasks_like(
        &mut self,
        now: Instant,
        params: &Arc<TaskSpec>,
        tasks: &mut [LikeTask],
    ) {
        self.defer_dispatch = true;
        // The group the first task opened (or joined), which the others may join as they
        // are: same parameters, same input.
        let mut group = None;
        let mut i = 0;
        while i < tasks.len() {
            if let Some(g) = group.filter(|g| self.lane_waits(*g)) {
                let joined = self.join_many(now, g, &mut tasks[i..]);
                if joined > 0 {
                    i += joined;
                    continue;
                }
            }
            // Joined or opened the waiting group: the tasks after it may join as they are.
            // (With a group waiting, a task goes this way only for a body too large, which
            // ends it at admission; the group still waits.)
            if let Some(joined) = self.admit_like(now, params, &mut tasks[i]) {
                group = Some(joined);
            }
            i += 1;
        }
        self.defer_dispatch = false;
    }

    /// Gives back the profile box of an end whose profile the driver has copied out, for a
    /// later task to reuse (at most [`MAX_SPARE_PROFILES`] are kept).
    ///
    /// Design: a batch of tasks allocates its profiles in a row and frees them in a row,
    /// which defeats the allocator's per-thread cache (a few entries per size): that cost
    /// more than any other single step of a task. A driver that hands ends over without the
    /// box (`phobos-stn` does for its `TaskBatch`) returns the boxes here instead.
    pub fn recycle_profile(&mut self, profile: Box<TaskProfile>) {
        if self.spare_profiles.len() < MAX_SPARE_PROFILES {
            self.spare_profiles.push(profile);
        }
    }

    /// A box holding `profile`: a spare one when there is one.
    pub(crate) fn profile_box(&mut self, profile: TaskProfile) -> Box<TaskProfile> {
        match self.spare_profiles.pop() {
            Some(mut spare) => {
                *spare = profile;
                spare
            }
            None => Box::new(profile),
        }
    }

    /// Runs the dispatch pass for tasks admitted with [`queue_task`](Self::queue_task).
    pub fn send_queued(&mut self, now: Instant) {
        self.pump(now);
    }

    /// Whether a task's [`Event::TaskSent`](crate::Event::TaskSent) is emitted (default
    /// true). A driver that does nothing with the event turns it off, which spares an event
    /// per attempt; nothing else changes (task ends, profiles and timeouts are the same).
    pub fn set_task_sent_events(&mut self, emit: bool) {
        self.task_sent_events = emit;
    }

    /// Whether tasks that end together may come as one [`Event::TasksEnded`] (default
    /// false: every task ends with its own [`Event::TaskEnded`]). A driver that turns this
    /// on must handle both; nothing else changes (an [`EndBatch`](crate::EndBatch) gives
    /// back the very ends it stands for, in order).
    ///
    /// Which ends come together: those of lane members (the usual tasks of a batch, see
    /// [`set_batch_lane`](Self::set_batch_lane)) of one admission, sent in one pass,
    /// answered one after another in the same input.
    ///
    /// [`Event::TasksEnded`]: crate::Event::TasksEnded
    /// [`Event::TaskEnded`]: crate::Event::TaskEnded
    pub fn set_end_batches(&mut self, on: bool) {
        self.end_batches = on;
    }

    /// An empty buffer for a dispatch pass of `frames` frames to encode into.
    ///
    /// Design: the pass's buffer becomes the [`Action::Send`](crate::Action::Send) bytes as
    /// it is (no copy), so it is sized from the last pass's average frame up front, which
    /// usually spares it a reallocation while growing.
    pub(super) fn send_buffer(&self, frames: usize) -> Vec<u8> {
        let guess = frames.saturating_mul(self.frame_len_hint);
        Vec::with_capacity(guess.min(MAX_SEND_BUFFER_GUESS))
    }

    /// Remembers the average frame of a pass that encoded `frames` frames into `len` bytes.
    pub(super) fn note_frame_len(&mut self, len: usize, frames: usize) {
        if frames > 0 && len > 0 {
            self.frame_len_hint = len.div_ceil(frames);
        }
    }
}

/// Largest buffer reserved up front for one dispatch pass (a larger pass grows its buffer).
const MAX_SEND_BUFFER_GUESS: usize = 1024 * 1024;

/// Most profile boxes [`Engine::recycle_profile`] keeps (about 230 KB): more than the tasks
/// one driver iteration usually ends.
pub const MAX_SPARE_PROFILES: usize = 1024;
