//! Mars `.mmap3` staging files: the block in progress when the writer stopped.
//!
//! The 150 KiB file holds one block being built at offset 0: a header whose length field
//! covers the bytes staged so far, then those bytes, then zeros; there is no trailer byte
//! (format doc §4.1, §4.4). Recovery follows Mars's `__Fix`: byte 0 must be a current magic,
//! a length reaching the end of the buffer is clamped to `153 600 − 73 − 1`, and the block is
//! closed with a `0x00` trailer.
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
    if !Magic::from_byte(byte, set).is_some_and(Magic::is_current) {
        return Err(Mmap3Error::NoBlock { byte });
    }
    let mut length = u32::from_le_bytes([header[5], header[6], header[7], header[8]]) as usize;
    if HEADER_LEN.saturating_add(length) >= BUFFER_LEN {
        length = BUFFER_LEN - HEADER_LEN - 1;
    }
    length = length.min(input.len() - HEADER_LEN);
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

/// The size of Mars's staging buffer (`kBufferBlockLength`, 150 KiB).
pub const BUFFER_LEN: usize = 150 * 1024;

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
