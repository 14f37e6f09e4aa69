//! The engine's tasks by id: a [`Slab`] plus an index from id to slot.

use phobos_plugin_api::TaskId;
use rustc_hash::FxHashMap;

use super::Task;
use crate::slab::Slab;

/// The tasks the engine holds (queued or running), by id.
///
/// Design: the tasks live unboxed in a [`Slab`] (no allocation per task) and each knows its
/// slot ([`Task::slot`]), which the per-task timers are keyed by; an [`IdIndex`] maps the id
/// the wire carries to the slot.
#[derive(Debug, Default)]
pub(super) struct TaskTable {
    slab: Slab<Task>,
    slots: IdIndex,
}

/// Task id → slot.
///
/// Design: the engine hands out ids in sequence, so the ids stored at one time are nearly
/// consecutive: each is looked up first in a direct-mapped ring (position `id mod
/// capacity`, one load and one compare), and only an id whose position a live older id
/// still holds goes to an overflow hash map. The ring doubles once it is half full, so a
/// burst of tasks does not push most of them into the map; a long-lived task (a long poll
/// among thousands of short tasks) costs the one task behind it a map entry, not the
/// other way round. Compared with a hash map alone this saves the hashing and probing of an
/// insert, a removal and a lookup or two on every task.
#[derive(Debug, Default)]
struct IdIndex {
    /// `(id, slot)` at position `id & (len - 1)`; id 0 (never a task's) marks a free place.
    ring: Vec<(TaskId, u32)>,
    overflow: FxHashMap<TaskId, u32>,
    len: usize,
}

/// The ring's first capacity (a power of two, like every later one).
const RING_START: usize = 64;

impl IdIndex {
    #[inline(always)]
    fn pos(&self, id: TaskId) -> usize {
        id.0 as usize & (self.ring.len() - 1)
    }

    /// Stores `id → slot`; returns the slot `id` had, if any.
    #[inline]
    fn insert(&mut self, id: TaskId, slot: u32) -> Option<u32> {
        if 2 * (self.len + 1) > self.ring.len() {
            self.grow();
        }
        let i = self.pos(id);
        let place = &mut self.ring[i];
        if place.0 == id {
            return Some(std::mem::replace(&mut place.1, slot));
        }
        let old = if self.overflow.is_empty() {
            None
        } else {
            self.overflow.remove(&id)
        };
        if place.0 == TaskId(0) {
            *place = (id, slot);
        } else {
            self.overflow.insert(id, slot);
        }
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    #[inline]
    fn get(&self, id: &TaskId) -> Option<u32> {
        if self.ring.is_empty() {
            return None;
        }
        let (held, slot) = self.ring[self.pos(*id)];
        if held == *id && held != TaskId(0) {
            return Some(slot);
        }
        if self.overflow.is_empty() {
            return None;
        }
        self.overflow.get(id).copied()
    }

    #[inline]
    fn remove(&mut self, id: &TaskId) -> Option<u32> {
        if self.ring.is_empty() || *id == TaskId(0) {
            return None;
        }
        let i = self.pos(*id);
        let slot = if self.ring[i].0 == *id {
            let slot = self.ring[i].1;
            self.ring[i] = (TaskId(0), 0);
            slot
        } else if self.overflow.is_empty() {
            return None;
        } else {
            self.overflow.remove(id)?
        };
        self.len -= 1;
        Some(slot)
    }

    /// Doubles the ring and places every id again (overflowed ids move into the ring where
    /// their new position is free).
    #[cold]
    #[inline(never)]
    fn grow(&mut self) {
        let cap = (self.ring.len() * 2).max(RING_START);
        let old = std::mem::replace(&mut self.ring, vec![(TaskId(0), 0); cap]);
        let overflow = std::mem::take(&mut self.overflow);
        let live = old.into_iter().filter(|(id, _)| *id != TaskId(0));
        for (id, slot) in live.chain(overflow) {
            let i = self.pos(id);
            if self.ring[i].0 == TaskId(0) {
                self.ring[i] = (id, slot);
            } else {
                self.overflow.insert(id, slot);
            }
        }
    }

    fn ids(&self) -> impl Iterator<Item = &TaskId> {
        let ring = self.ring.iter().map(|(id, _)| id);
        ring.filter(|id| **id != TaskId(0))
            .chain(self.overflow.keys())
    }
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
        self.map_id(id, slot);
        slot
    }

    /// Maps `id` to `slot` (what [`insert_with`](Self::insert_with) does once the task is
    /// stored).
    #[inline]
    fn map_id(&mut self, id: TaskId, slot: u32) {
        if let Some(old) = self.slots.insert(id, slot) {
            // Ids are unique among stored tasks (`alloc_task_id`); should one repeat, the
            // older task goes rather than stay unreachable.
            self.slab.remove(old);
        }
    }

    pub(super) fn get(&self, id: &TaskId) -> Option<&Task> {
        self.slab.get(self.slots.get(id)?)
    }

    pub(super) fn get_mut(&mut self, id: &TaskId) -> Option<&mut Task> {
        self.slab.get_mut(self.slots.get(id)?)
    }

    pub(super) fn contains_key(&self, id: &TaskId) -> bool {
        self.slots.get(id).is_some()
    }

    /// Where the task `id` is stored.
    pub(super) fn slot_of(&self, id: &TaskId) -> Option<u32> {
        self.slots.get(id)
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
        self.slots.ids()
    }

    /// The tasks, in no particular order.
    pub(super) fn values(&self) -> impl Iterator<Item = &Task> {
        self.slab.values()
    }

    /// The tasks, mutably, in no particular order.
    pub(super) fn values_mut(&mut self) -> impl Iterator<Item = &mut Task> {
        self.slab.values_mut()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// The index answers like a map under the engine's pattern (ids handed out in sequence,
    /// most ending soon, some living long and so sharing their ring position with later
    /// ids) and under ids far apart, and its ring stays within four times the most ids held.
    #[test]
    fn the_id_index_behaves_like_a_map() {
        let mut index = IdIndex::default();
        let mut model: BTreeMap<TaskId, u32> = BTreeMap::new();
        let mut rng =
            <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0x1d_1de7_0000_0002);
        let mut rand = |n: u64| rand::Rng::gen_range(&mut rng, 0..n);
        let mut next = 1u32;
        let mut most = 0;
        let mut overflowed = 0;
        for step in 0..60_000u32 {
            match rand(8) {
                0..=2 => {
                    // The next id in sequence; now and then one from far away.
                    let id = if rand(50) == 0 {
                        TaskId(1 + rand(u64::from(u32::MAX - 1)) as u32)
                    } else {
                        next += 1;
                        TaskId(next)
                    };
                    assert_eq!(index.insert(id, step), model.insert(id, step));
                }
                3 | 4 => {
                    // Mostly the oldest ids end (a pipelined link); some random ones.
                    let id = match rand(4) {
                        0 => TaskId(1 + rand(u64::from(next) + 8) as u32),
                        _ => model
                            .keys()
                            .nth(rand(4).min(model.len() as u64) as usize)
                            .copied()
                            .unwrap_or(TaskId(1)),
                    };
                    assert_eq!(index.remove(&id), model.remove(&id), "remove {id}");
                }
                5 => {
                    // Re-inserting a held id replaces its slot.
                    if let Some(&id) = model.keys().next_back() {
                        assert_eq!(index.insert(id, step), model.insert(id, step));
                    }
                }
                _ => {
                    let id = TaskId(rand(u64::from(next) + 8) as u32);
                    assert_eq!(index.get(&id), model.get(&id).copied(), "get {id}");
                }
            }
            assert_eq!(index.len, model.len());
            most = most.max(model.len());
            overflowed = overflowed.max(index.overflow.len());
            assert!(
                index.ring.len() <= 4 * most.max(RING_START / 4),
                "ring {} for {most}",
                index.ring.len()
            );
        }
        let mut ids: Vec<TaskId> = index.ids().copied().collect();
        ids.sort();
        assert_eq!(ids, model.keys().copied().collect::<Vec<_>>());
        assert!(
            overflowed > 0,
            "the test never made two held ids share a place"
        );
        assert_eq!(index.get(&TaskId(0)), None);
        assert_eq!(index.remove(&TaskId(0)), None);
    }
}
