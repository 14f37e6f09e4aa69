//! Parsing untrusted bytes never panics: arbitrary bytes, and real Mars files with random
//! corruption, through the `fuzzing` entry points (which also check invariants).

use std::sync::Arc;

use phobos_cipher_mars::MarsCipher;
use phobos_xlog_decode::{fuzzing, mmap3, Decoder};
use proptest::prelude::*;

const VECTORS: &[&[u8]] = &[
    include_bytes!("data/02_async_zlib_crypt/demo_20261126.xlog"),
    include_bytes!("data/04_async_zstd_crypt/demo_20261126.xlog"),
    include_bytes!("data/05_sync_modes/sync_zstd_20261126.xlog"),
    include_bytes!("data/08_split_by_size/split_20261126_3.xlog"),
];

const PRIVATE: &str = "b404e0f7d50323e5327c23603878c594189d63e76e4550fdea108b9ea41d3885";

#[derive(Clone, Debug)]
enum Damage {
    Flip(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Truncate(usize),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(at, x)| Damage::Flip(at, x)),
        (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 1..40)
        )
            .prop_map(|(at, b)| Damage::Insert(at, b)),
        (any::<usize>(), 1usize..200).prop_map(|(at, n)| Damage::Delete(at, n)),
        any::<usize>().prop_map(Damage::Truncate),
    ]
}

fn apply(file: &mut Vec<u8>, d: &Damage) {
    let len = file.len().max(1);
    match d {
        Damage::Flip(at, x) => {
            let at = at % len;
            if let Some(b) = file.get_mut(at) {
                *b ^= x;
            }
        }
        Damage::Insert(at, bytes) => {
            let at = at % (file.len() + 1);
            file.splice(at..at, bytes.iter().copied());
        }
        Damage::Delete(at, n) => {
            let at = at % len;
            let end = (at + n).min(file.len());
            if at < end {
                file.drain(at..end);
            }
        }
        Damage::Truncate(at) => file.truncate(at % len),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        fuzzing::decode_file(&data);
        fuzzing::decode_mmap3(&data);
        fuzzing::scan_blocks(&data);
        fuzzing::decode_bodies(&data);
    }

    #[test]
    fn block_shaped_bytes_never_panic(
        magic in prop_oneof![3u8..=0x0D, Just(0x27u8), Just(0x2C)],
        len in 0u32..64,
        body in proptest::collection::vec(any::<u8>(), 0..64),
        tail in proptest::collection::vec(any::<u8>(), 0..8),
    ) {
        // Headers that pass the structural check more often than random bytes do.
        let mut data = vec![magic, 2, 0, 1, 1];
        data.extend(len.to_le_bytes());
        data.extend([0x11; 64]);
        data.extend(&body);
        data.push(0);
        data.extend(&tail);
        fuzzing::decode_file(&data);
        let keyed = Decoder::builder()
            .cipher(Arc::new(MarsCipher::from_private_key_hex(PRIVATE).unwrap()))
            .build();
        let _ = keyed.decode(&data);
    }

    #[test]
    fn two_slot_staging_files_never_panic(
        magic0 in prop_oneof![Just(0u8), 3u8..=0x0D, Just(0x27u8)],
        len0 in any::<u32>(),
        meta in proptest::collection::vec(any::<u8>(), 1024),
        body in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        let mut file = vec![0u8; mmap3::PHOBOS_FILE_LEN];
        for slot in 0..2 {
            let at = slot * mmap3::BUFFER_LEN;
            file[at] = if slot == 0 { magic0 } else { 0x09 };
            file[at + 5..at + 9].copy_from_slice(&(len0 >> (slot * 20)).to_le_bytes());
            file[at + 73..at + 73 + body.len()].copy_from_slice(&body);
        }
        let meta_base = 2 * mmap3::BUFFER_LEN;
        file[meta_base..].copy_from_slice(&meta);
        fuzzing::decode_mmap3(&file);
        let _ = Decoder::new().decode_mmap3(&file);
    }

    #[test]
    fn corrupted_real_files_never_panic(
        which in 0..VECTORS.len(),
        damages in proptest::collection::vec(damage(), 1..5),
    ) {
        let mut file = VECTORS[which].to_vec();
        for d in &damages {
            apply(&mut file, d);
        }
        let keyed = Decoder::builder()
            .cipher(Arc::new(MarsCipher::from_private_key_hex(PRIVATE).unwrap()))
            .build();
        let out = keyed.decode(&file);
        // Damage never makes the decoder invent more than a bounded amount of text.
        prop_assert!(out.len() <= 64 * file.len() + 4096);
        fuzzing::decode_file(&file);
    }
}

#[test]
fn one_flipped_byte_in_a_clean_file_costs_at_most_that_block() {
    // Every single-byte change to the trailer of block 1 of vector 08_3 leaves block 2 intact.
    let file = VECTORS[3];
    let clean = Decoder::new().decode(file);
    let first_end = {
        let len = u32::from_le_bytes(file[5..9].try_into().unwrap()) as usize;
        73 + len
    };
    for x in [1u8, 0x55, 0xFF] {
        let mut bad = file.to_vec();
        bad[first_end] ^= x;
        let out = Decoder::new().decode(&bad);
        // The tail of the clean output (blocks after the first) survives.
        let last_line = clean.rsplit(|&b| b == b'\n').nth(1).unwrap();
        prop_assert_contains(&out, last_line);
    }
}

fn prop_assert_contains(hay: &[u8], needle: &[u8]) {
    assert!(hay.windows(needle.len()).any(|w| w == needle));
}
