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
/// on each). A retried task goes back to its place by binary search. Same contents and
/// iteration order as a `BTreeSet<QueueKey>`, duplicates included (ignored).
#[derive(Debug, Default)]
pub(super) struct TaskQueue {
    levels: [VecDeque<QueueKey>; MAX_PRIORITY as usize + 1],
    len: usize,
}

impl TaskQueue {
    /// Adds `key`; false when it was already there.
    pub(super) fn insert(&mut self, key: QueueKey) -> bool {
        let level = &mut self.levels[level_of(key.0)];
        match level.back() {
            Some(last) if last.1 >= key.1 => match level.binary_search_by_key(&key.1, |k| k.1) {
                Ok(_) => return false,
                Err(at) => level.insert(at, key),
            },
            _ => level.push_back(key),
        }
        self.len += 1;
        true
    }

    /// Removes `key`; false when it was not there.
    pub(super) fn remove(&mut self, key: &QueueKey) -> bool {
        let level = &mut self.levels[level_of(key.0)];
        match level.front() {
            // The usual case: the task leaves from the front.
            Some(first) if first == key => {
                level.pop_front();
            }
            _ => match level.binary_search_by_key(&key.1, |k| k.1) {
                Ok(at) if level[at] == *key => {
                    level.remove(at);
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
    pub(super) fn iter(&self) -> Iter<'_> {
        self.levels.iter().flatten()
    }
}

/// Iterator over a [`TaskQueue`].
pub(super) type Iter<'a> = std::iter::Flatten<std::slice::Iter<'a, VecDeque<QueueKey>>>;

impl<'a> IntoIterator for &'a TaskQueue {
    type Item = &'a QueueKey;
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
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
        for _ in 0..20_000 {
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
            assert_eq!(q.is_empty(), model.is_empty());
            assert!(q.iter().eq(model.iter()));
        }
    }
}
