//! [`Slab`]: values in a `Vec`, addressed by the index they were stored at.

/// Values addressed by a `u32` index, with the indexes of removed values reused.
///
/// Design: the core keeps its tasks here rather than in a hash map of boxes, so admitting a
/// task allocates nothing (once the slab has grown to the number of tasks in flight) and the
/// per-task timers can find a task's deadlines by index ([`crate::timer`]). An index is only
/// meaningful until its value is removed; whoever keeps one keeps it next to something that
/// tells the old value from a new one (the task id).
#[derive(Debug)]
pub(crate) struct Slab<T> {
    entries: Vec<Option<T>>,
    /// Indexes of empty entries, reused last in, first out.
    free: Vec<u32>,
    len: usize,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab {
            entries: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }
}

impl<T> Slab<T> {
    /// Stores the value `make` builds from its index, and returns the index.
    ///
    /// Design: the value is built where it is stored rather than moved in, which for a
    /// few-hundred-byte task spares a copy.
    #[inline(always)]
    pub(crate) fn insert_with(&mut self, make: impl FnOnce(u32) -> T) -> u32 {
        self.len += 1;
        match self.free.pop() {
            Some(i) => {
                self.entries[i as usize] = Some(make(i));
                i
            }
            None => {
                // The core stores tasks, numbered by `u32` ids: never more than fit.
                let i = self.entries.len() as u32;
                self.entries.push(Some(make(i)));
                i
            }
        }
    }

    /// The value at `i`, if there is one.
    pub(crate) fn get(&self, i: u32) -> Option<&T> {
        self.entries.get(i as usize)?.as_ref()
    }

    /// The value at `i`, if there is one.
    pub(crate) fn get_mut(&mut self, i: u32) -> Option<&mut T> {
        self.entries.get_mut(i as usize)?.as_mut()
    }

    /// Takes the value at `i` out; its index becomes free.
    pub(crate) fn remove(&mut self, i: u32) -> Option<T> {
        let value = self.entries.get_mut(i as usize)?.take()?;
        self.free.push(i);
        self.len -= 1;
        Some(value)
    }

    /// Runs `f` on the value at `i`, then drops the value in place; its index becomes free.
    pub(crate) fn remove_with<R>(&mut self, i: u32, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        let entry = self.entries.get_mut(i as usize)?;
        let r = f(entry.as_mut()?);
        *entry = None;
        self.free.push(i);
        self.len -= 1;
        Some(r)
    }

    /// How many values are stored.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The stored values, by index.
    pub(crate) fn values(&self) -> impl Iterator<Item = &T> {
        self.entries.iter().flatten()
    }

    /// The stored values, mutably, by index.
    pub(crate) fn values_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.entries.iter_mut().flatten()
    }

    /// The indexes holding a value, in index order.
    pub(crate) fn indexes(&self) -> impl Iterator<Item = u32> + '_ {
        let held = self.entries.iter().enumerate();
        held.filter(|(_, e)| e.is_some()).map(|(i, _)| i as u32)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// Behaves like a map from index to value under a random mix of inserts and removals
    /// (of present and absent indexes), and reuses indexes, so it never grows past the most
    /// values held at once.
    #[test]
    fn behaves_like_a_map_and_reuses_indexes() {
        let mut slab: Slab<u64> = Slab::default();
        let mut model: BTreeMap<u32, u64> = BTreeMap::new();
        let mut most = 0;
        let mut rng =
            <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0x5eed_51ab_0000_0001);
        let mut rand = |n: u64| rand::Rng::gen_range(&mut rng, 0..n);
        for step in 0..20_000u64 {
            match rand(5) {
                0 | 1 => {
                    let mut next = None;
                    let i = slab.insert_with(|i| {
                        next = Some(i);
                        step
                    });
                    assert_eq!(Some(i), next);
                    assert_eq!(model.insert(i, step), None, "index {i} was in use");
                }
                2 | 3 => {
                    let i = rand(model.len() as u64 + 4) as u32;
                    assert_eq!(slab.remove(i), model.remove(&i));
                }
                _ => {
                    let i = rand(model.len() as u64 + 4) as u32;
                    assert_eq!(slab.get(i), model.get(&i));
                    if let (Some(v), Some(m)) = (slab.get_mut(i), model.get_mut(&i)) {
                        *v += 1;
                        *m += 1;
                    }
                }
            }
            most = most.max(model.len());
            assert_eq!(slab.len(), model.len());
            assert!(slab.values().eq(model.values()));
            assert!(slab.entries.len() <= most);
        }
    }
}
