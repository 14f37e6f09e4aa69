//! The zombie tasks (§14), by id and by age.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use phobos_plugin_api::TaskId;

use super::Zombie;

/// The zombie tasks, by id, with an index by the instant each was saved.
///
/// Design: the restart timer follows the oldest zombie and the restart takes those old
/// enough; with only the map by id both were scans, run for every zombie saved and every
/// task started while zombies wait, so a link drop that saved 100,000 running tasks blocked
/// the driver for 44 s (quadratic). The index makes each O(log n).
///
/// Generic over what is kept only so the tests can keep instants instead of tasks.
#[derive(Debug)]
pub(super) struct Zombies<Z = Zombie> {
    by_id: BTreeMap<TaskId, Z>,
    by_age: BTreeSet<(Instant, TaskId)>,
}

/// What [`Zombies`] keeps: something saved at an instant.
pub(super) trait Saved {
    fn saved_at(&self) -> Instant;
}

impl Saved for Zombie {
    fn saved_at(&self) -> Instant {
        self.saved_at
    }
}

impl<Z> Default for Zombies<Z> {
    fn default() -> Self {
        Zombies {
            by_id: BTreeMap::new(),
            by_age: BTreeSet::new(),
        }
    }
}

impl<Z: Saved> Zombies<Z> {
    /// Keeps `zombie` as `id` (replacing a zombie of that id, which the engine never has).
    pub(super) fn insert(&mut self, id: TaskId, zombie: Z) {
        let saved_at = zombie.saved_at();
        if let Some(old) = self.by_id.insert(id, zombie) {
            self.by_age.remove(&(old.saved_at(), id));
        }
        self.by_age.insert((saved_at, id));
    }

    /// Takes zombie `id` out.
    pub(super) fn remove(&mut self, id: &TaskId) -> Option<Z> {
        let zombie = self.by_id.remove(id)?;
        self.by_age.remove(&(zombie.saved_at(), *id));
        Some(zombie)
    }

    /// Takes every zombie out, by id.
    pub(super) fn take_all(&mut self) -> BTreeMap<TaskId, Z> {
        self.by_age.clear();
        std::mem::take(&mut self.by_id)
    }

    /// When the oldest zombie was saved.
    pub(super) fn oldest(&self) -> Option<Instant> {
        self.by_age.first().map(|&(at, _)| at)
    }

    /// The zombies saved at least `age` before `now`, by id.
    pub(super) fn aged(&self, now: Instant, age: Duration) -> Vec<TaskId> {
        let Some(latest) = now.checked_sub(age) else {
            return Vec::new();
        };
        let mut ids: Vec<TaskId> = self
            .by_age
            .range(..=(latest, TaskId(u32::MAX)))
            .map(|&(_, id)| id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Every zombie's id, in order.
    pub(super) fn ids(&self) -> Vec<TaskId> {
        self.by_id.keys().copied().collect()
    }

    /// The zombies, by id.
    pub(super) fn values(&self) -> impl Iterator<Item = &Z> + '_ {
        self.by_id.values()
    }

    pub(super) fn contains_key(&self, id: &TaskId) -> bool {
        self.by_id.contains_key(id)
    }

    pub(super) fn len(&self) -> usize {
        self.by_id.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::{Duration, Instant};

    use phobos_plugin_api::TaskId;

    use super::{Saved, Zombies};

    impl Saved for Instant {
        fn saved_at(&self) -> Instant {
            *self
        }
    }

    /// The oldest zombie and the aged ones are what a scan of a plain map finds, under a
    /// random mix of saves (several per instant), removals, restarts and resets.
    #[test]
    fn the_age_index_agrees_with_a_scan() {
        let mut zombies: Zombies<Instant> = Zombies::default();
        let mut model: BTreeMap<TaskId, Instant> = BTreeMap::new();
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(3);
        let mut rand = |n: u64| rand::Rng::gen_range(&mut rng, 0..n);
        let start = crate::tests::epoch::epoch();
        let mut now = start + Duration::from_secs(100);
        let age = Duration::from_secs(3);
        for step in 0..20_000 {
            now += Duration::from_millis(rand(400));
            match rand(10) {
                0..=4 => {
                    let id = TaskId(rand(2_000) as u32);
                    if let std::collections::btree_map::Entry::Vacant(e) = model.entry(id) {
                        e.insert(now);
                        zombies.insert(id, now);
                    }
                }
                5..=7 => {
                    let id = TaskId(rand(2_000) as u32);
                    assert_eq!(zombies.remove(&id), model.remove(&id));
                }
                8 => {
                    // A restart of the aged ones.
                    for id in zombies.aged(now, age) {
                        assert!(zombies.remove(&id).is_some());
                        model.remove(&id);
                    }
                }
                _ if step % 500 == 0 => {
                    assert_eq!(zombies.take_all(), std::mem::take(&mut model));
                }
                _ => {}
            }
            assert_eq!(zombies.oldest(), model.values().min().copied());
            let aged: Vec<TaskId> = model
                .iter()
                .filter(|(_, at)| now.saturating_duration_since(**at) >= age)
                .map(|(id, _)| *id)
                .collect();
            assert_eq!(zombies.aged(now, age), aged);
            assert_eq!(zombies.ids(), model.keys().copied().collect::<Vec<_>>());
            assert_eq!(zombies.len(), model.len());
        }
        // An age longer than the clock has run finds none.
        assert!(zombies.aged(start, Duration::MAX).is_empty());
    }
}
