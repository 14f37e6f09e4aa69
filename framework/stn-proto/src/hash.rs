//! A small, fast, deterministic hasher for the engine's internal maps.
//!
//! The keys are our own small ids (task ids, connection ids, timer kinds), never chosen by a
//! peer, so HashDoS resistance buys nothing here while SipHash costs a noticeable share of a
//! task's cycle. Being deterministic (no random seed) also keeps replays exact. This is the
//! well-known "Fx" multiply-rotate scheme, written out here rather than pulled in as a
//! dependency. Public so the driver can key its own per-task maps the same way; use it only
//! for keys an untrusted peer cannot choose.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// A `HashMap` with [`FxHasher`].
pub type FxHashMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// A `HashSet` with [`FxHasher`].
pub type FxHashSet<T> = HashSet<T, BuildHasherDefault<FxHasher>>;

/// Multiply-rotate hasher over machine words.
#[derive(Default, Clone, Copy, Debug)]
pub struct FxHasher {
    hash: u64,
}

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w) ^ ((rest.len() as u64) << 56));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u16(&mut self, i: u16) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.hash
    }
}

#[cfg(test)]
mod tests {
    use std::hash::{BuildHasher, BuildHasherDefault};

    use super::*;

    #[test]
    fn equal_keys_hash_equal_and_small_ids_spread() {
        let b = BuildHasherDefault::<FxHasher>::default();
        assert_eq!(
            b.hash_one("default-longlink"),
            b.hash_one("default-longlink")
        );
        assert_ne!(b.hash_one("a"), b.hash_one("b"));
        assert_ne!(b.hash_one(&[1u8, 0][..]), b.hash_one(&[1u8][..]));
        let hashes: std::collections::HashSet<u64> = (0u32..1000).map(|i| b.hash_one(i)).collect();
        assert_eq!(hashes.len(), 1000);
    }
}
