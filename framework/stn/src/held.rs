//! The batch tasks the driver holds: one record per `StartBatch` command, not one waiter
//! per task.
//!
//! Design: the tasks of one command have consecutive keys and end into one batch, so the
//! driver keeps, per command, the batch's index and each task's engine id while its end is
//! owed (`TaskId(0)`, which no task has, once it ended). A task's tag (what its end carries
//! back, [`TaskEnd::tag`](phobos_stn_proto::TaskEnd::tag)) is its key with [`BATCH_TAG`]
//! set, so an end finds its record by key: usually the record the previous end hit, else by
//! a binary search over the records (sorted by first key). Starting a task costs a store of
//! its id, ending it a compare and a store, where a waiter per task cost a slab insert and
//! removal.
//!
//! "Exactly one end" stays checked here as it was with waiters: an end whose task is not
//! held (a second end, or a task the driver never started) finds another id in its place
//! and is dropped.

use phobos_stn_proto::{BatchedEnd, TaskId};

use crate::batch::BatchIndex;
use crate::client::TaskKey;

/// Set in the tag of every batch task (its key in the other bits); the tags of the other
/// tasks, waiter indexes, never have it.
pub(crate) const BATCH_TAG: u64 = 1 << 63;

/// No task's id: the place of a task whose end is not owed.
const ENDED: TaskId = TaskId(0);

/// No task's id either (the engine's ids are at most `0xFFFF_FFF0`): the place of a task
/// held but not yet given its id. Its end is owed.
///
/// Design: a place starts as this, not as [`ENDED`], so that a driver dropped while it
/// admits a command (a plugin or request encoder panicked) still owes, and gives, an end
/// to the command's tasks that have no id yet ([`drain`](HeldBatches::drain)).
const UNSET: TaskId = TaskId(u32::MAX);

/// The longest id list kept for reuse (16 KiB): a rare huge command's list is freed.
const MAX_SPARE_IDS: usize = 4096;

/// The batch tasks held, by command.
#[derive(Debug, Default)]
pub(crate) struct HeldBatches {
    /// Sorted by first key. A record whose tasks all ended is emptied where it is (it then
    /// covers no key) and counted in `emptied`; the emptied ones are dropped together once
    /// they are more than half, so ending a task costs O(1) amortized however many commands
    /// are in flight (removing each record from the middle would move all the later ones).
    records: Vec<Record>,
    /// Emptied records still in `records`.
    emptied: usize,
    /// The record the last lookup found (ends come mostly in start order).
    last: usize,
    /// Tasks held, over all records.
    len: usize,
    /// The id list of the record emptied last, kept for the next record.
    ///
    /// Design: at 100 tasks in flight a command's record is made and emptied every round;
    /// reusing its list saves an allocation and a free a command.
    spare: Vec<TaskId>,
}

/// The tasks of one `StartBatch` command.
#[derive(Debug)]
struct Record {
    /// The key of the first task; task `i` has key `first + i`.
    first: u64,
    batch: BatchIndex,
    /// Task `i`'s engine id while its end is owed, else [`ENDED`].
    ids: Vec<TaskId>,
    /// Tasks of the record still owed an end.
    live: usize,
}

impl Record {
    /// The position of task `key` if the record covers it.
    #[inline(always)]
    fn position(&self, key: u64) -> Option<usize> {
        let i = key.wrapping_sub(self.first);
        (i < self.ids.len() as u64).then_some(i as usize)
    }
}

impl HeldBatches {
    /// Tasks held.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Holds `n` tasks (keys `first..first + n`) ending into `batch`; their ids are set
    /// with [`set_id`](Self::set_id) or [`set_ids`](Self::set_ids) as the engine gives them,
    /// before any of their ends is taken.
    pub(crate) fn hold(&mut self, first: u64, n: usize, batch: BatchIndex) {
        if n == 0 {
            return;
        }
        let mut ids = std::mem::take(&mut self.spare);
        ids.clear();
        ids.resize(n, UNSET);
        let record = Record {
            first,
            batch,
            ids,
            live: n,
        };
        // Commands come in key order unless two threads started batches at once.
        let at = self.records.partition_point(|r| r.first < first);
        self.records.insert(at, record);
        self.len += n;
    }

    /// Task `key` (held) has engine id `id`.
    pub(crate) fn set_id(&mut self, key: u64, id: TaskId) {
        if let Some((r, i)) = self.find(key) {
            self.records[r].ids[i] = id;
        }
    }

    /// Sets the ids of the tasks from key `first` on (one command's, all held).
    pub(crate) fn set_ids(&mut self, first: u64, ids: impl Iterator<Item = TaskId>) {
        if let Some((r, 0)) = self.find(first) {
            for (slot, id) in self.records[r].ids.iter_mut().zip(ids) {
                *slot = id;
            }
        }
    }

    /// The record and position of task `key`, if a record covers it.
    #[inline(always)]
    fn find(&mut self, key: u64) -> Option<(usize, usize)> {
        if let Some(i) = self.records.get(self.last).and_then(|r| r.position(key)) {
            return Some((self.last, i));
        }
        self.find_other(key)
    }

    /// [`find`](Self::find) when the last record found does not cover `key`.
    #[inline(never)]
    fn find_other(&mut self, key: u64) -> Option<(usize, usize)> {
        let r = self
            .records
            .partition_point(|r| r.first <= key)
            .checked_sub(1)?;
        let i = self.records[r].position(key)?;
        self.last = r;
        Some((r, i))
    }

    /// Takes the end of the task of tag `tag` ([`BATCH_TAG`] set) if task `id` is owed one
    /// there: its key and batch. Changes nothing otherwise.
    #[inline(always)]
    pub(crate) fn take(&mut self, tag: u64, id: TaskId) -> Option<(TaskKey, BatchIndex)> {
        let (r, i) = self.find(tag & !BATCH_TAG)?;
        let record = &mut self.records[r];
        if record.ids[i] != id || id == ENDED || id == UNSET {
            return None;
        }
        record.ids[i] = ENDED;
        let batch = record.batch;
        self.ended(r, 1);
        Some((TaskKey(tag & !BATCH_TAG), batch))
    }

    /// Takes the ends of the leading tasks of `ends` that are owed one into a single batch
    /// (the first one's), as [`take`](Self::take) would one by one: how many, and
    /// that batch. Changes nothing for the first end it does not take.
    ///
    /// Design: ends that came together are usually a command's tasks in key order, so the
    /// record of the first is looked up and the ends that follow it in key order are
    /// checked against the record's ids in a row; another record is looked up only where
    /// that row breaks.
    pub(crate) fn take_together(&mut self, ends: &[BatchedEnd]) -> (usize, Option<BatchIndex>) {
        let mut batch = None;
        let mut n = 0;
        // A record at a time: the ends of its tasks in key order that follow the first.
        while let Some(first) = ends.get(n) {
            if first.tag & BATCH_TAG == 0 {
                break;
            }
            let Some((r, i)) = self.find(first.tag & !BATCH_TAG) else {
                break;
            };
            let record = &mut self.records[r];
            if batch.is_some_and(|b| b != record.batch) {
                break;
            }
            let mut tag = first.tag;
            let mut taken = 0;
            for (slot, end) in record.ids[i..].iter_mut().zip(&ends[n..]) {
                if end.tag != tag || *slot != end.id || end.id == ENDED || end.id == UNSET {
                    break;
                }
                *slot = ENDED;
                taken += 1;
                tag = tag.wrapping_add(1);
            }
            if taken == 0 {
                break;
            }
            batch = Some(record.batch);
            n += taken;
            self.ended(r, taken);
        }
        (n, batch)
    }

    /// `n` tasks of record `r` ended (their places set to [`ENDED`]): the counts, and the
    /// record emptied with its last.
    #[inline]
    fn ended(&mut self, r: usize, n: usize) {
        let record = &mut self.records[r];
        record.live -= n;
        self.len -= n;
        if record.live == 0 {
            self.empty(r);
        }
    }

    /// Record `r`'s tasks all ended: it is emptied, and the emptied records are swept once
    /// they are more than half.
    #[inline(never)]
    fn empty(&mut self, r: usize) {
        let ids = std::mem::take(&mut self.records[r].ids);
        if ids.capacity() <= MAX_SPARE_IDS {
            self.spare = ids;
        }
        self.emptied += 1;
        if self.emptied > MIN_SWEEP && 2 * self.emptied > self.records.len() {
            self.records.retain(|r| r.live > 0);
            self.emptied = 0;
        }
    }

    /// The engine id of task `key` if it is held (for a cancel).
    pub(crate) fn id_of(&mut self, key: TaskKey) -> Option<TaskId> {
        let (r, i) = self.find(key.0)?;
        Some(self.records[r].ids[i]).filter(|id| *id != ENDED && *id != UNSET)
    }

    /// [`id_of`](Self::id_of), for a task of batch `batch` only.
    pub(crate) fn id_in(&mut self, key: TaskKey, batch: BatchIndex) -> Option<TaskId> {
        let (r, i) = self.find(key.0)?;
        let record = &self.records[r];
        Some(record.ids[i]).filter(|id| record.batch == batch && *id != ENDED && *id != UNSET)
    }

    /// The keys and ids of the tasks of batch `batch` whose ends are owed (rare: a scan of
    /// every record).
    pub(crate) fn owed_of_batch(&self, batch: BatchIndex) -> Vec<(TaskKey, TaskId)> {
        self.records
            .iter()
            .filter(|r| r.batch == batch)
            .flat_map(|r| (r.first..).zip(r.ids.iter().copied()))
            .filter(|(_, id)| *id != ENDED && *id != UNSET)
            .map(|(key, id)| (TaskKey(key), id))
            .collect()
    }

    /// Every task held (given its id or not yet), as (batch, key), forgetting them all.
    pub(crate) fn drain(&mut self) -> Vec<(BatchIndex, TaskKey)> {
        let mut held = Vec::with_capacity(self.len);
        for record in self.records.drain(..) {
            let owed = record.ids.iter().zip(record.first..);
            held.extend(
                owed.filter(|(id, _)| **id != ENDED)
                    .map(|(_, key)| (record.batch, TaskKey(key))),
            );
        }
        self.len = 0;
        self.emptied = 0;
        held
    }
}

/// Fewest emptied records dropped at once.
const MIN_SWEEP: usize = 16;

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(i: u32) -> BatchIndex {
        BatchIndex::for_test(i)
    }

    /// An empty response's end for batch task `key` (engine id `id`).
    fn end(key: u64, id: u32) -> BatchedEnd {
        BatchedEnd {
            id: TaskId(id),
            tag: key | BATCH_TAG,
            response: phobos_stn_proto::Response {
                cmd_id: phobos_stn_proto::CmdId(1),
                body: bytes::Bytes::new(),
                extension: None,
            },
            sent_bytes: 0,
            received_bytes: 0,
            first_packet_timeout: std::time::Duration::ZERO,
        }
    }

    /// Tasks held but not yet given their ids (the driver was dropped while it admitted
    /// their command) are owed their ends as much as the others: the drain gives them.
    #[test]
    fn tasks_without_their_ids_yet_are_drained_with_the_others() {
        let mut held = HeldBatches::default();
        held.hold(0, 2, batch(0));
        held.set_ids(0, [TaskId(5), TaskId(6)].into_iter());
        assert!(held.take(BATCH_TAG, TaskId(5)).is_some());
        held.hold(2, 3, batch(1));
        held.set_id(2, TaskId(7));
        assert_eq!(held.id_of(TaskKey(3)), None, "no id yet");
        assert_eq!(held.take(3 | BATCH_TAG, UNSET), None);
        let keys: Vec<u64> = held.drain().iter().map(|(_, key)| key.0).collect();
        assert_eq!(keys, [1, 2, 3, 4]);
        assert_eq!(held.len(), 0);
    }

    /// A record made after another was emptied reuses its list, but none of its ids: its
    /// tasks have none until the engine gives them theirs, and an end naming an old id is
    /// refused.
    #[test]
    fn a_record_reusing_an_emptied_ones_list_starts_with_no_ids() {
        let mut held = HeldBatches::default();
        let tag = |key: u64| key | BATCH_TAG;
        held.hold(0, 4, batch(0));
        held.set_ids(0, (0..4).map(|i| TaskId(700 + i)));
        let ends: Vec<BatchedEnd> = (0..4).map(|i| end(u64::from(i), 700 + i)).collect();
        assert_eq!(held.take_together(&ends), (4, Some(batch(0))));
        assert_eq!(held.spare.len(), 4, "the emptied record's list is kept");
        held.hold(4, 3, batch(1));
        assert!(
            held.spare.is_empty() && held.spare.capacity() == 0,
            "and reused"
        );
        for key in 4..7 {
            assert_eq!(held.id_of(TaskKey(key)), None, "no id yet");
        }
        assert_eq!(held.take(tag(4), TaskId(700)), None, "an old id");
        held.set_id(5, TaskId(901));
        assert_eq!(held.take(tag(5), TaskId(901)), Some((TaskKey(5), batch(1))));
        assert_eq!(held.len(), 2);
    }

    /// Two commands (one of 70 tasks, one of 3 that came in out of key
    /// order): each task's end is taken once, with its key and batch; a second end, an end
    /// naming another id and a key nobody holds are refused; a record goes with its last
    /// task.
    #[test]
    fn each_held_task_ends_once_with_its_key_and_batch() {
        let mut held = HeldBatches::default();
        held.hold(100, 3, batch(1));
        held.hold(10, 70, batch(0));
        assert_eq!(held.id_of(TaskKey(10)), None, "no id yet");
        held.set_ids(10, (0..70).map(|i| TaskId(1000 + i)));
        for i in 0..3 {
            held.set_id(100 + i, TaskId(5000 + i as u32));
        }
        assert_eq!(held.len(), 73);
        let tag = |key: u64| key | BATCH_TAG;
        assert_eq!(
            held.take(tag(101), TaskId(5001)),
            Some((TaskKey(101), batch(1)))
        );
        assert_eq!(held.take(tag(101), TaskId(5001)), None, "a second end");
        assert_eq!(held.take(tag(102), TaskId(1)), None, "another task's id");
        assert_eq!(
            held.take(tag(80), TaskId(1070)),
            None,
            "no record covers it"
        );
        assert_eq!(held.id_of(TaskKey(79)), Some(TaskId(1069)));
        for i in 0..70 {
            let key = 10 + i;
            assert_eq!(
                held.take(tag(key), TaskId(1000 + i as u32)),
                Some((TaskKey(key), batch(0)))
            );
        }
        assert_eq!(held.id_of(TaskKey(79)), None, "ended");
        assert_eq!(held.records.len(), 2, "emptied in place");
        assert!(
            held.records[0].ids.is_empty(),
            "the first record was emptied"
        );
        assert_eq!(held.len(), 2);
        let rest = held.drain();
        assert_eq!(rest, [(batch(1), TaskKey(100)), (batch(1), TaskKey(102))]);
        assert_eq!(held.len(), 0);
        assert_eq!(held.take(tag(100), TaskId(5000)), None);
    }

    /// Thousands of one-task commands in flight, ended in start order and then out of it:
    /// every end is taken once, emptied records are swept so that few stay, and the keys of
    /// the records left are still found.
    #[test]
    fn many_commands_end_in_any_order_and_emptied_records_are_swept() {
        let mut held = HeldBatches::default();
        let n = 5_000u64;
        for key in 1..=n {
            held.hold(key, 1, batch(0));
            held.set_id(key, TaskId(key as u32));
        }
        let take =
            |held: &mut HeldBatches, key: u64| held.take(key | BATCH_TAG, TaskId(key as u32));
        // The first half in order, then every third of the rest, then the others backwards.
        for key in 1..=n / 2 {
            assert_eq!(take(&mut held, key), Some((TaskKey(key), batch(0))));
        }
        // Emptied records never outnumber the live ones by more than a sweep's worth.
        let bounded = |held: &HeldBatches| held.records.len() <= 2 * held.len() + MIN_SWEEP + 1;
        assert!(bounded(&held), "{} records", held.records.len());
        let rest: Vec<u64> = (n / 2 + 1..=n).collect();
        for &key in rest.iter().step_by(3) {
            assert_eq!(take(&mut held, key), Some((TaskKey(key), batch(0))));
        }
        assert!(bounded(&held), "{} records", held.records.len());
        for &key in rest.iter().rev() {
            let owed = (key - (n / 2 + 1)) % 3 != 0;
            assert_eq!(held.id_of(TaskKey(key)).is_some(), owed);
            assert_eq!(take(&mut held, key).is_some(), owed, "key {key}");
        }
        assert_eq!(held.len(), 0);
        assert!(
            held.records.len() <= 2 * MIN_SWEEP + 1,
            "{}",
            held.records.len()
        );
    }

    /// Ends that came together are taken while they are owed and end into the first one's
    /// batch, across commands of that batch (the first emptied on the way); the first end
    /// that is not (a second end, another batch's task, a waiter's) and those after it stay.
    #[test]
    fn ends_together_are_taken_while_owed_into_one_batch() {
        let mut held = HeldBatches::default();
        held.hold(10, 3, batch(0));
        held.hold(13, 2, batch(0));
        held.hold(20, 2, batch(1));
        held.set_ids(10, (0..3).map(|i| TaskId(100 + i)));
        held.set_ids(13, (0..2).map(|i| TaskId(200 + i)));
        held.set_ids(20, (0..2).map(|i| TaskId(300 + i)));
        // Across the first two commands, then another batch's task.
        let ends = [
            end(10, 100),
            end(11, 101),
            end(12, 102),
            end(13, 200),
            end(20, 300),
        ];
        assert_eq!(held.take_together(&ends), (4, Some(batch(0))));
        assert_eq!(held.len(), 3);
        assert_eq!(held.id_of(TaskKey(12)), None, "ended");
        assert_eq!(held.id_of(TaskKey(20)), Some(TaskId(300)), "not taken");
        // A second end first: nothing is taken.
        assert_eq!(held.take_together(&[end(13, 200), end(14, 201)]), (0, None));
        assert_eq!(held.len(), 3);
        // Another id in a held place, then a waiter's end (no batch tag): taken up to them.
        let mut waiter = end(21, 301);
        waiter.tag = 5;
        assert_eq!(
            held.take_together(&[end(14, 201), end(20, 999), end(20, 300)]),
            (1, Some(batch(0)))
        );
        assert_eq!(
            held.take_together(&[end(20, 300), waiter]),
            (1, Some(batch(1)))
        );
        assert_eq!(held.take_together(&[]), (0, None));
        assert_eq!(held.drain(), [(batch(1), TaskKey(21))]);
    }
}
