//! A link's queue of waiting tasks, by (priority, admission order).

use std::collections::VecDeque;

use phobos_plugin_api::TaskId;

use crate::task::MAX_PRIORITY;

/// A queued task: (priority, admission order, id).
/// (priority, admission order, task, the task's slot in the engine's task table).
///
/// Design: the slot rides along so the dispatch pass reaches each queued task without a
/// lookup by id.
pub(super) type QueueKey = (u8, u64, TaskId, u32);

/// The queued tasks of one link, iterated by priority, then admission order.
///
/// Design: one deque per priority, each sorted by admission order. New tasks have the
/// highest order so far and go to the back, and tasks usually leave from the front, so the
/// two operations every task makes are O(1) (a `BTreeSet` spent a few hundred instructions
/// on each). A task leaving from elsewhere (a cancel, a task that may skip ahead) is only
/// marked gone, and the marks are swept once they outnumber the tasks, so canceling every
/// task of a long queue in any order costs O(1) each, not a shift of the deque each
/// (canceling 100,000 queued tasks in random order took 1.2 s that way). A retried task
/// goes back to its place by binary search. Same contents and iteration order as a
/// `BTreeSet<QueueKey>`, duplicates included (ignored).
#[derive(Debug, Default)]
pub(super) struct TaskQueue {
    levels: [Level; MAX_PRIORITY as usize + 1],
    len: usize,
}

/// The deque of one priority: entries by admission order, some of them marked gone.
#[derive(Debug, Default)]
struct Level {
    entries: VecDeque<Entry>,
    /// How many entries are marked gone; never the first one.
    gone: usize,
    /// How many times the marks were swept.
    #[cfg(test)]
    sweeps: usize,
}

#[derive(Debug)]
struct Entry {
    key: QueueKey,
    gone: bool,
}

/// Marks are swept when there are more of them than this and than queued tasks.
const SWEEP_AFTER: usize = 64;

impl TaskQueue {
    /// Adds `key`; false when it was already there.
    pub(super) fn insert(&mut self, key: QueueKey) -> bool {
        let level = &mut self.levels[level_of(key.0)];
        match level.entries.back() {
            Some(last) if last.key.1 >= key.1 => {
                match level.entries.binary_search_by_key(&key.1, |e| e.key.1) {
                    Ok(at) if !level.entries[at].gone => return false,
                    // Its place is still marked: taken again.
                    Ok(at) => {
                        level.entries[at] = Entry { key, gone: false };
                        level.gone -= 1;
                    }
                    Err(at) => level.entries.insert(at, Entry { key, gone: false }),
                }
            }
            _ => level.entries.push_back(Entry { key, gone: false }),
        }
        self.len += 1;
        true
    }

    /// Removes `key`; false when it was not there.
    pub(super) fn remove(&mut self, key: &QueueKey) -> bool {
        let level = &mut self.levels[level_of(key.0)];
        match level.entries.front() {
            // The usual case: the task leaves from the front.
            Some(first) if first.key == *key => {
                level.entries.pop_front();
                level.drop_gone_front();
            }
            _ => match level.entries.binary_search_by_key(&key.1, |e| e.key.1) {
                Ok(at) if !level.entries[at].gone && level.entries[at].key == *key => {
                    level.entries[at].gone = true;
                    level.gone += 1;
                    level.sweep_if_due();
                }
                _ => return false,
            },
        }
        self.len -= 1;
        true
    }

    /// Whether no task waits.
    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The keys by priority, then admission order.
    pub(super) fn iter(&self) -> impl Iterator<Item = &QueueKey> + '_ {
        self.levels
            .iter()
            .flat_map(|l| l.entries.iter().filter(|e| !e.gone).map(|e| &e.key))
    }
}

impl Level {
    /// Pops the marked entries that reached the front.
    fn drop_gone_front(&mut self) {
        while self.entries.front().is_some_and(|e| e.gone) {
            self.entries.pop_front();
            self.gone -= 1;
        }
    }

    /// Sweeps the marks once they outnumber [`SWEEP_AFTER`] and the queued tasks.
    fn sweep_if_due(&mut self) {
        if self.gone > SWEEP_AFTER && self.gone > self.entries.len() - self.gone {
            self.entries.retain(|e| !e.gone);
            self.gone = 0;
            #[cfg(test)]
            {
                self.sweeps += 1;
            }
        }
    }
}

/// The deque for a priority. Admission refuses priorities above [`MAX_PRIORITY`]; should
/// one get here anyway it queues with the lowest priority rather than panic.
fn level_of(priority: u8) -> usize {
    usize::from(priority.min(MAX_PRIORITY))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Same contents and order as a `BTreeSet` under a random mix of inserts (new and
    /// retried), duplicates and removals.
    #[test]
    fn behaves_like_a_btreeset() {
        let mut q = TaskQueue::default();
        let mut model: BTreeSet<QueueKey> = BTreeSet::new();
        let mut known: Vec<QueueKey> = Vec::new();
        let mut next_order = 0u64;
        let mut rng =
            <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0x9e37_79b9_7f4a_7c15);
        let mut rand = |n: u64| rand::Rng::gen_range(&mut rng, 0..n);
        for step in 0..20_000 {
            match rand(6) {
                0 | 1 => {
                    let key = (
                        rand(6) as u8,
                        next_order,
                        TaskId(next_order as u32),
                        rand(1000) as u32,
                    );
                    next_order += 1;
                    known.push(key);
                    assert_eq!(q.insert(key), model.insert(key));
                }
                2 if !known.is_empty() => {
                    // A retry (or a duplicate) goes back to its place.
                    let key = known[rand(known.len() as u64) as usize];
                    assert_eq!(q.insert(key), model.insert(key));
                }
                3 | 4 if !known.is_empty() => {
                    let key = known[rand(known.len() as u64) as usize];
                    assert_eq!(q.remove(&key), model.remove(&key));
                }
                _ => {
                    if let Some(&first) = model.iter().next() {
                        assert!(q.remove(&first));
                        model.remove(&first);
                    }
                }
            }
            check(&q, &model, step);
        }
    }

    /// The same, with a long queue emptied mostly from the middle in random order (cancels),
    /// some tasks going back to their places meanwhile (retries): the marks are swept.
    #[test]
    fn removals_from_the_middle_are_swept_and_keep_the_order() {
        let mut q = TaskQueue::default();
        let mut model: BTreeSet<QueueKey> = BTreeSet::new();
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(7);
        let mut rand = |n: u64| rand::Rng::gen_range(&mut rng, 0..n);
        let keys: Vec<QueueKey> = (0..3_000u64)
            .map(|i| (rand(3) as u8, i, TaskId(i as u32), i as u32))
            .collect();
        for &key in &keys {
            assert_eq!(q.insert(key), model.insert(key));
        }
        for step in 0..12_000 {
            let key = keys[rand(keys.len() as u64) as usize];
            if rand(8) == 0 {
                assert_eq!(q.insert(key), model.insert(key));
            } else {
                assert_eq!(q.remove(&key), model.remove(&key));
            }
            check(&q, &model, step);
        }
        assert!(
            q.levels[..3].iter().all(|l| l.sweeps > 0),
            "the marks were never swept"
        );
    }

    /// `q` holds what `model` holds, in its order, and its marks are in bounds: never more
    /// than the queued tasks (or [`SWEEP_AFTER`]), so each operation is O(1) amortized and a
    /// long-lived queue does not grow with its history; and never at the front of a level.
    fn check(q: &TaskQueue, model: &BTreeSet<QueueKey>, step: usize) {
        assert_eq!(q.is_empty(), model.is_empty());
        assert!(q.iter().eq(model.iter()));
        for level in &q.levels {
            let live = level.entries.len() - level.gone;
            if step % 64 == 0 {
                assert_eq!(level.gone, level.entries.iter().filter(|e| e.gone).count());
            }
            assert!(
                level.gone <= SWEEP_AFTER.max(live) + 1,
                "{} marks",
                level.gone
            );
            assert!(level.entries.front().is_none_or(|e| !e.gone));
        }
    }
}
