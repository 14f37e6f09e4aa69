//! Admitting a batch of tasks with one dispatch pass.
//!
//! A driver that takes several commands per wake-up (all stamped with the same `now`) can
//! admit each task with [`Engine::queue_task`] and run one dispatch pass at the end with
//! [`Engine::send_queued`]: the batch's frames then leave in one [`Action::Send`] per link
//! instead of one per task.
//!
//! [`Action::Send`]: crate::Action::Send

use std::time::Instant;

use phobos_plugin_api::TaskId;

use super::Engine;
use crate::task::TaskSpec;

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
        self.defer_dispatch = true;
        let id = self.start_task(now, spec);
        self.defer_dispatch = false;
        id
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

    /// The (empty) buffer a dispatch pass encodes its frames into.
    ///
    /// Design: one buffer kept across passes, and each write copies it into an exactly
    /// sized `Vec` (whose `Bytes` then needs no second allocation): a fresh `Vec` per pass
    /// grew by reallocation and ended with spare capacity, which costs `Bytes::from` an
    /// extra allocation.
    pub(super) fn take_send_buf(&mut self) -> Vec<u8> {
        let mut buf = std::mem::take(&mut self.send_buf);
        buf.clear();
        buf
    }

    /// Keeps `buf` for the next pass, unless a burst made it large (an idle engine should
    /// not hold on to it).
    pub(super) fn return_send_buf(&mut self, buf: Vec<u8>) {
        if buf.capacity() <= MAX_KEPT_SEND_BUF {
            self.send_buf = buf;
        }
    }
}

/// Largest encode buffer kept between dispatch passes.
const MAX_KEPT_SEND_BUF: usize = 64 * 1024;
