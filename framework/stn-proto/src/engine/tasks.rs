//! The engine's tasks by id: a [`Slab`] plus an index from id to slot.

use phobos_plugin_api::TaskId;
use rustc_hash::FxHashMap;

use super::Task;
use crate::slab::Slab;

/// The tasks the engine holds (queued or running), by id.
///
/// Design: the tasks live unboxed in a [`Slab`] (no allocation per task) and each knows its
/// slot ([`Task::slot`]), which the per-task timers are keyed by; the one hash map left maps
/// the id the wire carries to the slot.
#[derive(Debug, Default)]
pub(super) struct TaskTable {
    slab: Slab<Task>,
    slots: FxHashMap<TaskId, u32>,
}

impl TaskTable {
    /// Stores `task` (whose id must not be here) and returns its slot, also written to
    /// [`Task::slot`].
    #[inline(always)]
    pub(super) fn insert(&mut self, mut task: Task) -> u32 {
        self.insert_with(task.id, |slot| {
            task.slot = slot;
            task
        })
    }

    /// Stores the task `make` builds from its slot (its id is `id`, which must not be here)
    /// and returns the slot (see [`Slab::insert_with`]).
    #[inline(always)]
    pub(super) fn insert_with(&mut self, id: TaskId, make: impl FnOnce(u32) -> Task) -> u32 {
        let slot = self.slab.insert_with(make);
        if let Some(old) = self.slots.insert(id, slot) {
            // Ids are unique among stored tasks (`alloc_task_id`); should one repeat, the
            // older task goes rather than stay unreachable.
            self.slab.remove(old);
        }
        slot
    }

    pub(super) fn get(&self, id: &TaskId) -> Option<&Task> {
        self.slab.get(*self.slots.get(id)?)
    }

    pub(super) fn get_mut(&mut self, id: &TaskId) -> Option<&mut Task> {
        self.slab.get_mut(*self.slots.get(id)?)
    }

    pub(super) fn contains_key(&self, id: &TaskId) -> bool {
        self.slots.contains_key(id)
    }

    /// Where the task `id` is stored.
    pub(super) fn slot_of(&self, id: &TaskId) -> Option<u32> {
        self.slots.get(id).copied()
    }

    /// The task stored at `slot`.
    pub(super) fn at_slot(&self, slot: u32) -> Option<&Task> {
        self.slab.get(slot)
    }

    /// The task stored at `slot`.
    pub(super) fn at_slot_mut(&mut self, slot: u32) -> Option<&mut Task> {
        self.slab.get_mut(slot)
    }

    /// Runs `f` on the task `id`, then drops the task where it is stored (no move of the
    /// whole task, unlike [`remove`](Self::remove)).
    pub(super) fn remove_with<R>(
        &mut self,
        id: &TaskId,
        f: impl FnOnce(&mut Task) -> R,
    ) -> Option<R> {
        let slot = self.slots.remove(id)?;
        self.slab.remove_with(slot, f)
    }

    pub(super) fn remove(&mut self, id: &TaskId) -> Option<Task> {
        let slot = self.slots.remove(id)?;
        self.slab.remove(slot)
    }

    pub(super) fn len(&self) -> usize {
        self.slab.len()
    }

    /// The ids, in no particular order.
    pub(super) fn keys(&self) -> impl Iterator<Item = &TaskId> {
        self.slots.keys()
    }

    /// The tasks, in no particular order.
    pub(super) fn values(&self) -> impl Iterator<Item = &Task> {
        self.slab.values()
    }
}

impl std::ops::Index<&TaskId> for TaskTable {
    type Output = Task;

    /// The task `id`; panics when there is none (callers index only ids they just read
    /// from a queue or running set, which hold only stored tasks).
    fn index(&self, id: &TaskId) -> &Task {
        match self.get(id) {
            Some(t) => t,
            None => panic!("task {id} is not stored"),
        }
    }
}
