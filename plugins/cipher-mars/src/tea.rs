//! The 16-round TEA variant Mars's xlog uses, in ECB mode over 8-byte little-endian units.
//!
//! Mars runs TEA with half the textbook rounds (16 instead of 32), delta `0x9E37_79B9`, and
//! reads both the 8-byte unit and the 16-byte key as little-endian `u32` words. There is no IV,
//! no padding and no MAC: each full 8-byte unit is transformed on its own, and a trailing
//! partial unit is left to the caller (Mars keeps it in clear).
//!
//! ```
//! use phobos_cipher_mars::tea::TeaKey;
//!
//! let key = TeaKey::from_bytes(&[7; 16]);
//! let mut data = *b"sixteen byte msg";
//! key.encrypt_units(&mut data);
//! assert_ne!(&data, b"sixteen byte msg");
//! key.decrypt_units(&mut data);
//! assert_eq!(&data, b"sixteen byte msg");
//! ```

use zeroize::Zeroize;

/// A TEA key: four `u32` words. Zeroed on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct TeaKey([u32; 4]);

impl TeaKey {
    /// Builds a key from 16 bytes read as four little-endian words, as Mars does with the first
    /// 16 bytes of the ECDH secret.
    pub fn from_bytes(bytes: &[u8; 16]) -> Self {
        let mut words = [0u32; 4];
        for (word, chunk) in words.iter_mut().zip(bytes.chunks_exact(4)) {
            *word = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        }
        Self(words)
    }

    /// Builds a key from its four words.
    pub fn from_words(words: [u32; 4]) -> Self {
        Self(words)
    }

    /// Encrypts one unit given as its two words `(v0, v1)`.
    pub fn encrypt_words(&self, v0: u32, v1: u32) -> (u32, u32) {
        let [k0, k1, k2, k3] = self.0;
        let (mut v0, mut v1) = (v0, v1);
        let mut sum = 0u32;
        for _ in 0..ROUNDS {
            sum = sum.wrapping_add(DELTA);
            v0 = v0.wrapping_add(mix(v1, sum, k0, k1));
            v1 = v1.wrapping_add(mix(v0, sum, k2, k3));
        }
        (v0, v1)
    }

    /// Decrypts one unit given as its two words `(v0, v1)`.
    pub fn decrypt_words(&self, v0: u32, v1: u32) -> (u32, u32) {
        let [k0, k1, k2, k3] = self.0;
        let (mut v0, mut v1) = (v0, v1);
        let mut sum = DELTA.wrapping_mul(ROUNDS);
        for _ in 0..ROUNDS {
            v1 = v1.wrapping_sub(mix(v0, sum, k2, k3));
            v0 = v0.wrapping_sub(mix(v1, sum, k0, k1));
            sum = sum.wrapping_sub(DELTA);
        }
        (v0, v1)
    }

    /// Encrypts every full 8-byte unit of `data` in place and returns how many bytes that was
    /// (`data.len()` rounded down to a multiple of 8). The tail is left untouched.
    pub fn encrypt_units(&self, data: &mut [u8]) -> usize {
        self.apply_units(data, Self::encrypt_words)
    }

    /// Decrypts every full 8-byte unit of `data` in place and returns how many bytes that was.
    /// The tail is left untouched.
    pub fn decrypt_units(&self, data: &mut [u8]) -> usize {
        self.apply_units(data, Self::decrypt_words)
    }

    fn apply_units(&self, data: &mut [u8], f: fn(&Self, u32, u32) -> (u32, u32)) -> usize {
        let mut done = 0;
        for unit in data.chunks_exact_mut(UNIT) {
            let v0 = u32::from_le_bytes([unit[0], unit[1], unit[2], unit[3]]);
            let v1 = u32::from_le_bytes([unit[4], unit[5], unit[6], unit[7]]);
            let (a, b) = f(self, v0, v1);
            unit[..4].copy_from_slice(&a.to_le_bytes());
            unit[4..].copy_from_slice(&b.to_le_bytes());
            done += UNIT;
        }
        done
    }
}

impl std::fmt::Debug for TeaKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TeaKey(..)")
    }
}

impl Drop for TeaKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// The size of one TEA unit in bytes.
pub const UNIT: usize = 8;

fn mix(v: u32, sum: u32, ka: u32, kb: u32) -> u32 {
    ((v << 4).wrapping_add(ka)) ^ v.wrapping_add(sum) ^ ((v >> 5).wrapping_add(kb))
}

const DELTA: u32 = 0x9E37_79B9;
const ROUNDS: u32 = 16;

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    // Vectors computed by hand from the round function in the format doc (§3.4) with an
    // independent script; they pin the 16-round variant and the word order.
    #[test]
    fn zero_key_zero_block() {
        let key = TeaKey::from_words([0; 4]);
        assert_eq!(key.encrypt_words(0, 0), (0xa889_f798, 0x182d_8083));
        assert_eq!(key.decrypt_words(0xa889_f798, 0x182d_8083), (0, 0));
    }

    #[test]
    fn counting_key() {
        let key = TeaKey::from_words([0x0123_4567, 0x89ab_cdef, 0xfedc_ba98, 0x7654_3210]);
        assert_eq!(
            key.encrypt_words(0x1122_3344, 0x5566_7788),
            (0xc23a_a0bb, 0xe2bc_4b3c)
        );
    }

    #[test]
    fn all_ones() {
        let key = TeaKey::from_bytes(&[0xff; 16]);
        let mut unit = [0xff; 8];
        assert_eq!(key.encrypt_units(&mut unit), 8);
        assert_eq!(unit, [0x41, 0x79, 0x6c, 0xb0, 0x9f, 0xfe, 0x10, 0x6d]);
    }

    #[test]
    fn bytes_are_little_endian_words() {
        let mut bytes = [0u8; 16];
        bytes[0] = 0x67;
        bytes[1] = 0x45;
        bytes[2] = 0x23;
        bytes[3] = 0x01;
        let key = TeaKey::from_bytes(&bytes);
        assert_eq!(key, TeaKey::from_words([0x0123_4567, 0, 0, 0]));
    }

    #[test]
    fn tail_is_left_alone() {
        let key = TeaKey::from_words([1, 2, 3, 4]);
        let mut data = *b"0123456789abc";
        assert_eq!(key.encrypt_units(&mut data), 8);
        assert_eq!(&data[8..], b"89abc");
        assert_ne!(&data[..8], b"01234567");
    }

    proptest! {
        #[test]
        fn decrypt_inverts_encrypt(k in any::<[u32; 4]>(), data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let key = TeaKey::from_words(k);
            let mut buf = data.clone();
            key.encrypt_units(&mut buf);
            key.decrypt_units(&mut buf);
            prop_assert_eq!(buf, data);
        }
    }
}
