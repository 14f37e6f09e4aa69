//! Mars `.mmap3` staging files: the block in progress when the writer stopped.
//!
//! The 150 KiB file holds one block being built at offset 0: a header whose length field
//! covers the bytes staged so far, then those bytes, then zeros; there is no trailer byte
//! (format doc §4.1, §4.4). Recovery follows Mars's `__Fix`: byte 0 must be a current magic,
//! a length reaching the end of the buffer is clamped to `153 600 − 73 − 1`, and the block is
//! closed with a `0x00` trailer.
//!
//! `phobos-xlog` writes a larger file (308 224 bytes): two such 150 KiB slots, then 512 bytes
//! of metadata per slot (a `u64` generation at offset 0 orders the slots; an undo record at
//! offsets 24–95 holds the clear tail a TEA block had before a line that may not have been
//! committed). [`recovered_blocks`] reads both layouts.
//!
//! ```
//! use phobos_xlog_decode::format::MagicSet;
//! use phobos_xlog_decode::mmap3::{recovered_block, Mmap3Error};
//!
//! let mut staging = vec![0u8; 153_600];
//! staging[0] = 0x08; // a sync magic, for the example
//! staging[5] = 3; // length 3
//! staging[73..76].copy_from_slice(b"hi\n");
//! let block = recovered_block(&staging, MagicSet::default()).unwrap();
//! assert_eq!(block.len(), 73 + 3 + 1);
//! assert_eq!(recovered_block(&[0; 100], MagicSet::default()), Err(Mmap3Error::NoBlock { byte: 0 }));
//! ```

use crate::format::{Magic, MagicSet, HEADER_LEN, MAGIC_END};

/// Why a `.mmap3` file yields no block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Mmap3Error {
    /// The file is shorter than a block header.
    #[error("mmap3 file is {size} bytes, shorter than a {HEADER_LEN}-byte block header")]
    TooShort {
        /// The file size.
        size: usize,
    },
    /// Byte 0 is not a current magic: no block in progress (a clean shutdown leaves zeros).
    #[error("no block in progress (byte 0 is {byte:#04x}, not a block magic)")]
    NoBlock {
        /// Byte 0.
        byte: u8,
    },
    /// The block in progress has no body yet.
    #[error("the block in progress is empty (length 0)")]
    Empty,
}

/// Cuts the block in progress out of a `.mmap3` file and closes it: header (with the length
/// field set to the bytes taken), body, `0x00`. A length past the end of a short file is cut
/// to what the file holds.
///
/// # Errors
///
/// [`Mmap3Error`] when there is no block in progress.
pub fn recovered_block(input: &[u8], set: MagicSet) -> Result<Vec<u8>, Mmap3Error> {
    let Some(header) = input.get(..HEADER_LEN) else {
        return Err(Mmap3Error::TooShort { size: input.len() });
    };
    let byte = header[0];
    let Some(magic) = Magic::from_byte(byte, set).filter(|m| m.is_current()) else {
        return Err(Mmap3Error::NoBlock { byte });
    };
    let mut length = u32::from_le_bytes([header[5], header[6], header[7], header[8]]) as usize;
    if HEADER_LEN.saturating_add(length) >= BUFFER_LEN {
        length = BUFFER_LEN - HEADER_LEN - 1;
    }
    // For async magics that is the clamp above; a sync magic (never staged by a writer) is cut
    // to what a sync block holds, so the result always passes `check_block`.
    length = length
        .min(magic.max_length() as usize)
        .min(input.len() - HEADER_LEN);
    if length == 0 {
        return Err(Mmap3Error::Empty);
    }
    let mut block = Vec::with_capacity(HEADER_LEN + length + 1);
    block.extend_from_slice(&input[..HEADER_LEN + length]);
    // `length` ≤ BUFFER_LEN, so it fits in the u32 field.
    block[5..9].copy_from_slice(&(length as u32).to_le_bytes());
    block.push(MAGIC_END);
    Ok(block)
}

/// The blocks in progress of a `.mmap3` file, closed and concatenated in writing order, ready
/// for [`Decoder::decode`](crate::Decoder::decode):
///
/// - Mars's layout (any size other than [`PHOBOS_FILE_LEN`]): the block at offset 0, as
///   [`recovered_block`].
/// - `phobos-xlog`'s two-slot layout ([`PHOBOS_FILE_LEN`] bytes): every slot holding a block
///   (a current magic, length > 0) in generation order, as the writer's own recovery takes
///   them; where a slot's undo record matches its length, the saved clear tail is put back
///   first. Generation 0 comes first: a Mars file whose block could not be written when
///   `phobos-xlog` opened it is extended to this layout with that block in slot 0 and its
///   metadata zeroed.
///
/// # Errors
///
/// [`Mmap3Error`] when no slot holds a block in progress (for the two-slot layout, the error
/// of slot 0).
pub fn recovered_blocks(input: &[u8], set: MagicSet) -> Result<Vec<u8>, Mmap3Error> {
    if input.len() != PHOBOS_FILE_LEN {
        return recovered_block(input, set);
    }
    let mut slots = Vec::new();
    let mut first_error = None;
    for slot in 0..PHOBOS_SLOTS {
        let region = &input[slot * BUFFER_LEN..(slot + 1) * BUFFER_LEN];
        let meta_at = PHOBOS_META_BASE + slot * PHOBOS_META_LEN;
        let meta = &input[meta_at..meta_at + PHOBOS_META_LEN];
        let generation = u64::from_le_bytes(le_array(&meta[0..8]));
        match recovered_block(region, set) {
            Ok(mut block) => {
                restore_undo_tail(&mut block, meta);
                slots.push((generation, block));
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if slots.is_empty() {
        return Err(first_error.unwrap_or(Mmap3Error::Empty));
    }
    slots.sort_by_key(|(generation, _)| *generation);
    Ok(slots.into_iter().flat_map(|(_, block)| block).collect())
}

/// Puts back the clear tail saved before an uncommitted line (undo length = block length).
fn restore_undo_tail(block: &mut [u8], meta: &[u8]) {
    let length = u32::from_le_bytes(le_array(&block[5..9])) as usize;
    let undo_len = u32::from_le_bytes(le_array(&meta[24..28])) as usize;
    let tail = usize::from(meta[28]);
    if undo_len != length || tail == 0 || tail > 64 || tail > length {
        return;
    }
    let body_end = HEADER_LEN + length;
    block[body_end - tail..body_end].copy_from_slice(&meta[32..32 + tail]);
}

fn le_array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[..N]);
    out
}

/// The size of `phobos-xlog`'s two-slot staging file: two slots and 512 bytes of metadata each.
pub const PHOBOS_FILE_LEN: usize = PHOBOS_META_BASE + PHOBOS_SLOTS * PHOBOS_META_LEN;
const PHOBOS_SLOTS: usize = 2;
const PHOBOS_META_LEN: usize = 512;
const PHOBOS_META_BASE: usize = PHOBOS_SLOTS * BUFFER_LEN;

/// The size of Mars's staging buffer (`kBufferBlockLength`, 150 KiB).
pub const BUFFER_LEN: usize = crate::format::BUFFER_LEN;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_is_clamped_like_mars() {
        let mut staging = vec![0x41u8; BUFFER_LEN];
        staging[0] = 0x09;
        staging[5..9].copy_from_slice(&u32::MAX.to_le_bytes());
        let block = recovered_block(&staging, MagicSet::default()).unwrap();
        assert_eq!(block.len(), BUFFER_LEN);
        assert_eq!(
            u32::from_le_bytes(block[5..9].try_into().unwrap()) as usize,
            BUFFER_LEN - HEADER_LEN - 1
        );
        assert_eq!(*block.last().unwrap(), 0);
    }

    #[test]
    fn legacy_magic_and_empty_and_short() {
        let mut staging = vec![0u8; 200];
        staging[0] = 0x04;
        assert_eq!(
            recovered_block(&staging, MagicSet::default()),
            Err(Mmap3Error::NoBlock { byte: 4 })
        );
        staging[0] = 0x07;
        assert_eq!(
            recovered_block(&staging, MagicSet::default()),
            Err(Mmap3Error::Empty)
        );
        assert_eq!(
            recovered_block(&staging[..10], MagicSet::default()),
            Err(Mmap3Error::TooShort { size: 10 })
        );
    }

    fn slot(region: &mut [u8], seq: u16, body: &[u8]) {
        region[0] = 0x08;
        region[1..3].copy_from_slice(&seq.to_le_bytes());
        region[5..9].copy_from_slice(&(body.len() as u32).to_le_bytes());
        region[HEADER_LEN..HEADER_LEN + body.len()].copy_from_slice(body);
    }

    #[test]
    fn two_slot_layout_in_generation_order_with_undo() {
        let mut file = vec![0u8; PHOBOS_FILE_LEN];
        slot(&mut file[..BUFFER_LEN], 0, b"second\nXX");
        slot(&mut file[BUFFER_LEN..2 * BUFFER_LEN], 0, b"first\n");
        file[PHOBOS_META_BASE] = 9; // slot 0: generation 9
        file[PHOBOS_META_BASE + PHOBOS_META_LEN] = 4; // slot 1: generation 4
                                                      // Slot 0's undo record: length 9, tail "YY" goes back over "XX".
        let meta0 = PHOBOS_META_BASE;
        file[meta0 + 24..meta0 + 28].copy_from_slice(&9u32.to_le_bytes());
        file[meta0 + 28] = 2;
        file[meta0 + 32..meta0 + 34].copy_from_slice(b"YY");
        let blocks = recovered_blocks(&file, MagicSet::default()).unwrap();
        assert_eq!(crate::Decoder::new().decode(&blocks), b"first\nsecond\nYY");

        // A stale undo record (other length) is ignored.
        file[meta0 + 24..meta0 + 28].copy_from_slice(&5u32.to_le_bytes());
        let blocks = recovered_blocks(&file, MagicSet::default()).unwrap();
        assert_eq!(crate::Decoder::new().decode(&blocks), b"first\nsecond\nXX");

        // A Mars file's block, extended to two slots with its metadata zeroed (generation
        // 0), is recovered as the writer recovers it; a slot with no block is skipped.
        let mut mars = vec![0u8; PHOBOS_FILE_LEN];
        slot(&mut mars[..BUFFER_LEN], 0, b"from mars\n");
        let blocks = recovered_blocks(&mars, MagicSet::default()).unwrap();
        assert_eq!(crate::Decoder::new().decode(&blocks), b"from mars\n");
        let zeros = vec![0u8; PHOBOS_FILE_LEN];
        assert_eq!(
            recovered_blocks(&zeros, MagicSet::default()),
            Err(Mmap3Error::NoBlock { byte: 0 })
        );
    }

    #[test]
    fn a_sync_magic_is_cut_to_what_a_sync_block_holds() {
        let mut staging = vec![b'x'; BUFFER_LEN];
        staging[0] = 0x08;
        staging[5..9].copy_from_slice(&100_000u32.to_le_bytes());
        let block = recovered_block(&staging, MagicSet::default()).unwrap();
        assert_eq!(block.len(), HEADER_LEN + 16 * 1024 + 1);
        assert!(crate::format::check_block(&block, 0, MagicSet::default()).is_ok());
    }

    #[test]
    fn short_file_keeps_what_it_has() {
        let mut staging = vec![0u8; 80];
        staging[0] = 0x08;
        staging[5] = 100;
        let block = recovered_block(&staging, MagicSet::default()).unwrap();
        assert_eq!(block.len(), 80 + 1);
        assert_eq!(block[5], 7);
    }
}
