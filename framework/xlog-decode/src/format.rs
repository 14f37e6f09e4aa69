//! Block framing: magics, header views and the structural check the official decoder applies.
//!
//! A block is `header | body (length bytes) | 0x00`. Current magics use a 73-byte header,
//! the legacy magics `0x03`–`0x05` a 13-byte one (Python decoder semantics, format doc §2.1):
//!
//! ```text
//!  0       1         3            4          5            9                     9+K
//! +-------+---------+------------+----------+------------+---------------------+------ - -
//! | magic | seq u16 | begin hour | end hour | length u32 | key field (K bytes) | body ...
//! +-------+---------+------------+----------+------------+---------------------+------ - -
//!           LE                                 LE          K = 64, or 4 for 0x03–0x05
//! ```
//!
//! Magics recognised ([`Magic`]):
//!
//! | Byte | Block | Body |
//! |---|---|---|
//! | `0x03` / `0x04` / `0x05` | legacy, 13-byte header | plain / raw deflate / `u16`-chunked raw deflate |
//! | `0x06`, `0x08`, `0x0A`, `0x0B` | sync (Mars) | plain text (also under the "crypt" magics `0x06`/`0x0A`) |
//! | `0x07` / `0x0C` | async, Mars TEA | raw deflate / zstd, then TEA-ECB with a clear tail |
//! | `0x09` / `0x0D` | async, no key | raw deflate / zstd |
//! | `0x27` / `0x2C` | async, authenticated cipher (Phobos; `0x07`/`0x0C` with bit `0x20`) | raw deflate / zstd, then the cipher's records |
//! | `0x47` / `0x4C` | a keyed Phobos writer's staged block, recovered after a crash (`0x07`/`0x0C` with bit `0x40`) | `kind u8, n u8, wrapped key (n), nonce u64 LE`, then ChaCha20 over deflate stored / zstd raw blocks |
//!
//! The last two rows are only recognised with [`MagicSet::MarsAndAuthenticated`] (the
//! default). Their bytes lie outside `0x03`–`0x0D`, so Mars's own decoder neither reads nor
//! resyncs on them.
//!
//! Staged-stream body (`0x47`/`0x4C`): `kind` is 1 when the key was wrapped by a Mars-compatible
//! cipher, 2 for an authenticated one; the `n` bytes of wrapped key decrypt, as one block body
//! of that cipher under the header's key field, to a 32-byte ChaCha20 key; the rest of the body
//! is ChaCha20 (IETF, nonce = the 8 nonce bytes then 4 zero bytes, counter from 0) over a raw
//! deflate or zstd stream.
//!
//! # Length bounds
//!
//! The official decoder accepts any length that fits in the file. We also require the length
//! to be one a writer can produce for the magic ([`Magic::max_length`]), because the resync
//! scan (format doc §9.2) stops on magic-looking bytes inside compressed data, and a random
//! length field that happens to fit would make one such "block" swallow megabytes of real
//! blocks:
//!
//! - Async magics (and the legacy ones, which no current writer produces) are flushed from
//!   the 150 KiB staging buffer, header and trailer included (format doc §4.1; Mars's recovery
//!   clamps to the same, §4.4): at most `153 600 − header − 1` bytes of body, 153 526 for a
//!   73-byte header. `phobos-xlog` stages in slots of the same size and appends a compressed
//!   copy only when it is smaller; its keyed sync-mode lines (one line per async-magic block)
//!   are far below that.
//! - Sync magics hold one formatted line or a tip: Mars formats into 16 KiB and frames into
//!   16 KiB (`__WriteSync`, header and trailer included), its tips are at most 4 095 bytes
//!   (§5.2, §5.6), and `phobos-xlog` cuts lines to `MAX_LINE_LEN`, 16 KiB with the newline.
//!   Bound: 16 384 bytes.
//!
//! The bound is checked only after the official decoder's own checks pass, so wherever that
//! decoder rejects a block we report its reason, word for word; a block it would accept with an
//! impossible length is [`BlockError::LengthTooLarge`]. No Mars file written by Mars
//! (`shared/testdata/xlog`) holds such a block, so the decoded text of every vector is
//! unchanged.
//!
//! All functions here take untrusted bytes and never panic.
//!
//! ```
//! use phobos_xlog_decode::format::{check_block, Magic, MagicSet};
//!
//! // A sync block (magic 0x08) holding "hi\n".
//! let mut file = vec![0x08, 0, 0, 7, 7, 3, 0, 0, 0];
//! file.extend([0; 64]);
//! file.extend(b"hi\n");
//! file.push(0);
//! let block = check_block(&file, 0, MagicSet::default()).unwrap();
//! assert_eq!(block.magic, Magic::SyncZlib);
//! assert_eq!(block.body(&file), b"hi\n");
//! assert_eq!(block.end, file.len());
//! ```

use std::fmt;

/// A block magic the decoder knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Magic {
    /// `0x03`, legacy: 13-byte header, plain text.
    LegacySync,
    /// `0x04`, legacy: 13-byte header, raw deflate.
    LegacyZlib,
    /// `0x05`, legacy: 13-byte header, `u16 LE n, n bytes` chunks, then raw deflate.
    LegacyChunkedZlib,
    /// `0x06`: sync block of a keyed zlib appender; plain text (Mars never encrypts sync).
    SyncZlibCrypt,
    /// `0x07`: async, raw deflate, Mars TEA.
    AsyncZlibCrypt,
    /// `0x08`: sync block, no key; plain text.
    SyncZlib,
    /// `0x09`: async, raw deflate, no key.
    AsyncZlib,
    /// `0x0A`: sync block of a keyed zstd appender; plain text.
    SyncZstdCrypt,
    /// `0x0B`: sync block of a zstd appender, no key; plain text.
    SyncZstd,
    /// `0x0C`: async, zstd, Mars TEA.
    AsyncZstdCrypt,
    /// `0x0D`: async, zstd, no key.
    AsyncZstd,
    /// `0x27` (Phobos): async, raw deflate, then an authenticated cipher's records. Mars's
    /// `0x07` with bit `0x20` set, as `phobos-xlog` writes it.
    AsyncZlibAuthenticated,
    /// `0x2C` (Phobos): async, zstd, then an authenticated cipher's records (`0x0C | 0x20`).
    AsyncZstdAuthenticated,
    /// `0x47` (Phobos): a keyed writer's staged block (`0x07 | 0x40`): raw deflate under
    /// ChaCha20 with a wrapped session key (see the module docs).
    AsyncZlibStaged,
    /// `0x4C` (Phobos): as `0x47`, zstd (`0x0C | 0x40`).
    AsyncZstdStaged,
}

/// Which magics the decoder recognises, also while scanning for the next block after damage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MagicSet {
    /// Exactly the official Python decoder's set, `0x03`–`0x0D`.
    Mars,
    /// Mars's set plus Phobos's magics `0x27`, `0x2C`, `0x47` and `0x4C` (the default). On Mars
    /// files this only differs from [`Mars`](Self::Mars) if a resync scan meets one of those
    /// bytes where a structurally plausible block would start.
    #[default]
    MarsAndAuthenticated,
}

/// How a block body was compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Compression {
    /// Plain text.
    None,
    /// Raw deflate, possibly unterminated.
    Zlib,
    /// Legacy `0x05` chunks, then raw deflate.
    ChunkedZlib,
    /// One zstd frame, possibly unterminated.
    Zstd,
}

/// How a block body was encrypted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Encryption {
    /// Not encrypted.
    None,
    /// Mars's ECDH + TEA ([`CipherKind::MarsCompatible`](phobos_plugin_api::CipherKind)).
    Mars,
    /// An authenticated cipher ([`CipherKind::Authenticated`](phobos_plugin_api::CipherKind)).
    Authenticated,
    /// ChaCha20 under a session key wrapped by either kind of cipher (staged-stream body).
    Staged,
}

impl Magic {
    /// Classifies a byte, or `None` if it is not a magic of `set`.
    pub fn from_byte(byte: u8, set: MagicSet) -> Option<Self> {
        let magic = match byte {
            0x03 => Self::LegacySync,
            0x04 => Self::LegacyZlib,
            0x05 => Self::LegacyChunkedZlib,
            0x06 => Self::SyncZlibCrypt,
            0x07 => Self::AsyncZlibCrypt,
            0x08 => Self::SyncZlib,
            0x09 => Self::AsyncZlib,
            0x0A => Self::SyncZstdCrypt,
            0x0B => Self::SyncZstd,
            0x0C => Self::AsyncZstdCrypt,
            0x0D => Self::AsyncZstd,
            0x27 => Self::AsyncZlibAuthenticated,
            0x2C => Self::AsyncZstdAuthenticated,
            0x47 => Self::AsyncZlibStaged,
            0x4C => Self::AsyncZstdStaged,
            _ => return None,
        };
        if set == MagicSet::Mars && !magic.is_mars() {
            return None;
        }
        Some(magic)
    }

    /// The byte value.
    pub fn byte(self) -> u8 {
        match self {
            Self::LegacySync => 0x03,
            Self::LegacyZlib => 0x04,
            Self::LegacyChunkedZlib => 0x05,
            Self::SyncZlibCrypt => 0x06,
            Self::AsyncZlibCrypt => 0x07,
            Self::SyncZlib => 0x08,
            Self::AsyncZlib => 0x09,
            Self::SyncZstdCrypt => 0x0A,
            Self::SyncZstd => 0x0B,
            Self::AsyncZstdCrypt => 0x0C,
            Self::AsyncZstd => 0x0D,
            Self::AsyncZlibAuthenticated => 0x27,
            Self::AsyncZstdAuthenticated => 0x2C,
            Self::AsyncZlibStaged => 0x47,
            Self::AsyncZstdStaged => 0x4C,
        }
    }

    /// Whether this is one of the legacy magics `0x03`–`0x05` with a 13-byte header.
    pub fn is_legacy(self) -> bool {
        matches!(
            self,
            Self::LegacySync | Self::LegacyZlib | Self::LegacyChunkedZlib
        )
    }

    /// The length of the key field: 4 for legacy magics, 64 otherwise.
    pub fn key_len(self) -> usize {
        if self.is_legacy() {
            LEGACY_KEY_LEN
        } else {
            KEY_LEN
        }
    }

    /// The header length: 13 for legacy magics, 73 otherwise.
    pub fn header_len(self) -> usize {
        FIXED_HEADER_LEN + self.key_len()
    }

    /// How the body is compressed. Sync magics are plain text even when "crypt" is in their
    /// Mars name (format doc §3.1).
    pub fn compression(self) -> Compression {
        match self {
            Self::LegacySync
            | Self::SyncZlibCrypt
            | Self::SyncZlib
            | Self::SyncZstdCrypt
            | Self::SyncZstd => Compression::None,
            Self::LegacyZlib
            | Self::AsyncZlibCrypt
            | Self::AsyncZlib
            | Self::AsyncZlibAuthenticated
            | Self::AsyncZlibStaged => Compression::Zlib,
            Self::LegacyChunkedZlib => Compression::ChunkedZlib,
            Self::AsyncZstdCrypt
            | Self::AsyncZstd
            | Self::AsyncZstdAuthenticated
            | Self::AsyncZstdStaged => Compression::Zstd,
        }
    }

    /// How the body is encrypted.
    pub fn encryption(self) -> Encryption {
        match self {
            Self::AsyncZlibCrypt | Self::AsyncZstdCrypt => Encryption::Mars,
            Self::AsyncZlibAuthenticated | Self::AsyncZstdAuthenticated => {
                Encryption::Authenticated
            }
            Self::AsyncZlibStaged | Self::AsyncZstdStaged => Encryption::Staged,
            _ => Encryption::None,
        }
    }

    /// The largest body length a writer produces under this magic (see the module docs,
    /// "Length bounds"): [`MAX_SYNC_LEN`] for sync magics, what the 150 KiB staging buffer
    /// holds for the others.
    pub fn max_length(self) -> u32 {
        match self {
            Self::SyncZlibCrypt | Self::SyncZlib | Self::SyncZstdCrypt | Self::SyncZstd => {
                MAX_SYNC_LEN
            }
            // At most 153 600 − 14: fits in u32.
            _ => (BUFFER_LEN - self.header_len() - 1) as u32,
        }
    }

    /// Whether Mars's official decoder knows this magic (`0x03`–`0x0D`); `false` for
    /// Phobos's `0x27`, `0x2C`, `0x47` and `0x4C`.
    pub fn is_mars(self) -> bool {
        !matches!(
            self.encryption(),
            Encryption::Authenticated | Encryption::Staged
        )
    }

    /// Whether a Mars writer (or Phobos's) can leave a block of this magic in a `.mmap3`
    /// staging file: the eight current Mars magics and Phobos's authenticated ones.
    pub fn is_current(self) -> bool {
        !self.is_legacy()
    }
}

/// A block that passed the structural check: where it is and what its header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Block {
    /// Offset of the magic byte.
    pub offset: usize,
    /// The magic.
    pub magic: Magic,
    /// The sequence number (0 for sync blocks and tips).
    pub seq: u16,
    /// The begin hour byte (local time, not validated).
    pub begin_hour: u8,
    /// The end hour byte (local time, not validated).
    pub end_hour: u8,
    /// The body length from the header.
    pub length: u32,
    /// Offset just past the trailer byte: where the next block starts.
    pub end: usize,
}

impl Block {
    /// The key field (64 bytes, or 4 for legacy magics).
    pub fn key_field<'a>(&self, input: &'a [u8]) -> &'a [u8] {
        let start = self.offset.saturating_add(FIXED_HEADER_LEN);
        input
            .get(start..start.saturating_add(self.magic.key_len()))
            .unwrap_or(&[])
    }

    /// The body bytes.
    pub fn body<'a>(&self, input: &'a [u8]) -> &'a [u8] {
        let start = self.offset.saturating_add(self.magic.header_len());
        input.get(start..self.end.saturating_sub(1)).unwrap_or(&[])
    }
}

/// Why the bytes at an offset are not a block. `Display` gives the official decoder's exact
/// wording (the `result:` part of its `decode error` line), with absolute offsets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BlockError {
    /// The byte is not a recognised magic.
    BadMagic {
        /// Offset of the byte.
        offset: usize,
        /// Its value.
        byte: u8,
    },
    /// The header (plus two bytes) does not fit in the input.
    HeaderPastEnd {
        /// Offset of the block.
        offset: usize,
        /// Input size.
        size: usize,
    },
    /// The body and trailer do not fit in the input.
    BodyPastEnd {
        /// The length field.
        length: u32,
        /// Where the trailer would end.
        end: u64,
        /// Input size.
        size: usize,
    },
    /// The byte after the body is not the `0x00` trailer.
    BadTrailer {
        /// The length field.
        length: u32,
        /// Offset of the would-be trailer.
        pos: usize,
        /// Its value.
        byte: u8,
    },
    /// The block passes the official decoder's checks, but its length is more than any
    /// writer puts under its magic ([`Magic::max_length`]): damage, or bytes inside another
    /// block that only look like a header. (The official decoder would decode it.)
    LengthTooLarge {
        /// The magic byte.
        magic: u8,
        /// The length field.
        length: u32,
        /// The largest length a writer produces for this magic.
        max: u32,
    },
    /// The block passes every check, but a block confirmed by its successor starts inside it
    /// and it is not confirmed itself: its length field is damaged, or it is bytes inside
    /// another block that only look like a header (reported by the decoder, not by
    /// [`check_block`]; the official decoder would decode it and skip the blocks it covers).
    RunsOverBlock {
        /// The length field.
        length: u32,
        /// Offset of the confirmed block inside it.
        next: usize,
    },
}

impl fmt::Display for BlockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::BadMagic { offset, byte } => {
                write!(f, "_buffer[{offset}]:{byte} != MAGIC_NUM_START")
            }
            Self::HeaderPastEnd { offset, size } => {
                write!(f, "offset:{offset} > len(buffer):{size}")
            }
            Self::BodyPastEnd { length, end, size } => {
                write!(f, "log length:{length}, end pos {end} > len(buffer):{size}")
            }
            Self::BadTrailer { length, pos, byte } => {
                write!(f, "log length:{length}, buffer[{pos}]:{byte} != MAGIC_END")
            }
            Self::LengthTooLarge { magic, length, max } => {
                write!(
                    f,
                    "log length:{length} > {max}, the most for magic {magic:#04x}"
                )
            }
            Self::RunsOverBlock { length, next } => {
                write!(f, "log length:{length} runs over the block at {next}")
            }
        }
    }
}

impl std::error::Error for BlockError {}

/// The official decoder's structural check of one block at `offset` (format doc §9.1 step 2):
/// a recognised magic, room for the header plus two bytes, room for body and trailer, and a
/// `0x00` trailer; then our own: a length no larger than [`Magic::max_length`]. Nothing about
/// the body is checked.
///
/// # Errors
///
/// A [`BlockError`] saying which check failed, in that order. An `offset` at or past the end
/// is [`BlockError::HeaderPastEnd`].
pub fn check_block(input: &[u8], offset: usize, set: MagicSet) -> Result<Block, BlockError> {
    let size = input.len();
    let Some(&byte) = input.get(offset) else {
        return Err(BlockError::HeaderPastEnd { offset, size });
    };
    let Some(magic) = Magic::from_byte(byte, set) else {
        return Err(BlockError::BadMagic { offset, byte });
    };
    let header_len = magic.header_len();
    // Python: `offset + header_len + 1 + 1 > len(buffer)`.
    if offset.saturating_add(header_len + 2) > size {
        return Err(BlockError::HeaderPastEnd { offset, size });
    }
    let length = read_u32(input, offset + 5);
    let trailer = offset as u64 + header_len as u64 + u64::from(length);
    if trailer + 1 > size as u64 {
        return Err(BlockError::BodyPastEnd {
            length,
            end: trailer + 1,
            size,
        });
    }
    // `trailer < size` was just checked, so it fits in usize.
    let trailer = trailer as usize;
    let end_byte = input[trailer];
    if end_byte != MAGIC_END {
        return Err(BlockError::BadTrailer {
            length,
            pos: trailer,
            byte: end_byte,
        });
    }
    let max = magic.max_length();
    if length > max {
        return Err(BlockError::LengthTooLarge {
            magic: byte,
            length,
            max,
        });
    }
    Ok(Block {
        offset,
        magic,
        seq: read_u16(input, offset + 1),
        begin_hour: input[offset + 3],
        end_hour: input[offset + 4],
        length,
        end: trailer + 1,
    })
}

/// Whether `count` consecutive blocks check out from `offset`, where reaching exactly the end
/// of the input after a good block also counts (the Python decoder's `is_good_log_buffer`).
pub fn is_good_run(input: &[u8], offset: usize, count: usize, set: MagicSet) -> bool {
    let mut at = offset;
    for _ in 0..count.max(1) {
        if at == input.len() {
            return true;
        }
        match check_block(input, at, set) {
            Ok(block) => at = block.end,
            Err(_) => return false,
        }
    }
    true
}

/// The first offset at or after `from` that holds a recognised magic starting a run of
/// `count` good blocks ([`is_good_run`]), as the Python decoder's `get_log_start_pos` scans.
pub fn find_block_start(input: &[u8], from: usize, count: usize, set: MagicSet) -> Option<usize> {
    (from..input.len()).find(|&at| {
        Magic::from_byte(input[at], set).is_some() && is_good_run(input, at, count, set)
    })
}

/// Whether `block` (a good block of `input`) is confirmed by what follows it: another good
/// block, the end of the input, or a block cut short by the end of the input (a recognised
/// magic whose header or body runs past the end, with a length its magic allows), as a crash
/// during an append leaves it. Bytes inside compressed data that happen to look like a block
/// are almost never followed by one; real blocks are.
pub fn is_confirmed(input: &[u8], block: &Block, set: MagicSet) -> bool {
    let next = block.end;
    if next == input.len() {
        return true;
    }
    match check_block(input, next, set) {
        Ok(_) => true,
        Err(BlockError::HeaderPastEnd { .. }) => true,
        Err(BlockError::BodyPastEnd { length, .. }) => {
            Magic::from_byte(input[next], set).is_some_and(|m| length <= m.max_length())
        }
        Err(_) => false,
    }
}

/// The largest body of a sync block: one formatted line of at most 16 KiB (format doc §5.2;
/// `phobos-xlog`'s `MAX_LINE_LEN`), or a tip of at most 4 095 bytes.
pub const MAX_SYNC_LEN: u32 = 16 * 1024;
/// The staging buffer size (Mars's `kBufferBlockLength`, 150 KiB): a whole async block,
/// header and trailer included, fits in it.
pub const BUFFER_LEN: usize = 150 * 1024;

/// The length of the fixed header part before the key field.
pub const FIXED_HEADER_LEN: usize = 9;
/// The key field length of current magics.
pub const KEY_LEN: usize = 64;
/// The key field length of legacy magics `0x03`–`0x05`.
pub const LEGACY_KEY_LEN: usize = 4;
/// The header length of current magics (73).
pub const HEADER_LEN: usize = FIXED_HEADER_LEN + KEY_LEN;
/// The trailer byte.
pub const MAGIC_END: u8 = 0x00;

fn read_u16(input: &[u8], at: usize) -> u16 {
    match input.get(at..at + 2) {
        Some(b) => u16::from_le_bytes([b[0], b[1]]),
        None => 0,
    }
}

fn read_u32(input: &[u8], at: usize) -> u32 {
    match input.get(at..at + 4) {
        Some(b) => u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        None => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(magic: u8, seq: u16, body: &[u8]) -> Vec<u8> {
        let key_len = Magic::from_byte(magic, MagicSet::default())
            .unwrap()
            .key_len();
        let mut b = vec![magic];
        b.extend(seq.to_le_bytes());
        b.extend([1, 2]);
        b.extend((body.len() as u32).to_le_bytes());
        b.extend(vec![0; key_len]);
        b.extend(body);
        b.push(0);
        b
    }

    #[test]
    fn checks_each_condition_in_python_order() {
        let good = block(0x09, 0x40, b"abc");
        let b = check_block(&good, 0, MagicSet::default()).unwrap();
        assert_eq!(
            (b.seq, b.begin_hour, b.end_hour, b.length, b.end),
            (0x40, 1, 2, 3, good.len())
        );

        assert_eq!(
            check_block(&good, 1, MagicSet::default())
                .unwrap_err()
                .to_string(),
            "_buffer[1]:64 != MAGIC_NUM_START"
        );
        // Header plus two bytes must fit: 73 + 2 > 74.
        assert_eq!(
            check_block(&good[..74], 0, MagicSet::default())
                .unwrap_err()
                .to_string(),
            "offset:0 > len(buffer):74"
        );
        assert_eq!(
            check_block(&good[..76], 0, MagicSet::default())
                .unwrap_err()
                .to_string(),
            "log length:3, end pos 77 > len(buffer):76"
        );
        let mut bad_end = good.clone();
        *bad_end.last_mut().unwrap() = 0x55;
        assert_eq!(
            check_block(&bad_end, 0, MagicSet::default())
                .unwrap_err()
                .to_string(),
            "log length:3, buffer[76]:85 != MAGIC_END"
        );
    }

    #[test]
    fn legacy_magics_have_13_byte_headers() {
        let b = block(0x05, 0, b"xy");
        let parsed = check_block(&b, 0, MagicSet::Mars).unwrap();
        assert_eq!(parsed.magic.header_len(), 13);
        assert_eq!(parsed.body(&b), b"xy");
        assert_eq!(parsed.key_field(&b), &[0; 4]);
    }

    #[test]
    fn huge_length_does_not_overflow() {
        let mut b = block(0x09, 0, b"x");
        b[5..9].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            check_block(&b, 0, MagicSet::default()),
            Err(BlockError::BodyPastEnd { .. })
        ));
    }

    #[test]
    fn lengths_past_what_writers_produce_are_refused_after_pythons_checks() {
        // Sync: one line of at most 16 KiB.
        let b = block(0x08, 0, &vec![b'x'; 16 * 1024]);
        assert!(check_block(&b, 0, MagicSet::default()).is_ok());
        let b = block(0x08, 0, &vec![b'x'; 16 * 1024 + 1]);
        assert_eq!(
            check_block(&b, 0, MagicSet::default())
                .unwrap_err()
                .to_string(),
            "log length:16385 > 16384, the most for magic 0x08"
        );
        // Async, Mars's and Phobos's: what fits the 150 KiB buffer with header and trailer.
        for magic in [0x09, 0x07, 0x0D, 0x27, 0x2C, 0x47, 0x4C] {
            let b = block(magic, 1, &vec![1; 153_600 - 74]);
            assert_eq!(b.len(), 153_600);
            assert!(check_block(&b, 0, MagicSet::default()).is_ok());
            let b = block(magic, 1, &vec![1; 153_600 - 73]);
            assert!(matches!(
                check_block(&b, 0, MagicSet::default()),
                Err(BlockError::LengthTooLarge { max: 153_526, .. })
            ));
        }
        // Legacy: 13-byte header, same buffer.
        assert_eq!(Magic::LegacyZlib.max_length(), 153_600 - 14);
        // Python's own reasons come first: a too-long body past the end is "end pos".
        let mut b = block(0x09, 1, b"x");
        b[5..9].copy_from_slice(&200_000u32.to_le_bytes());
        assert!(matches!(
            check_block(&b, 0, MagicSet::default()),
            Err(BlockError::BodyPastEnd { .. })
        ));
    }

    #[test]
    fn a_block_is_confirmed_by_a_good_block_the_end_or_a_block_cut_by_the_end() {
        let first = block(0x09, 1, b"a");
        let second = block(0x09, 2, b"bb");
        let check = |file: &[u8]| {
            let b = check_block(file, 0, MagicSet::default()).unwrap();
            is_confirmed(file, &b, MagicSet::default())
        };
        assert!(check(&first));
        assert!(check(&[&first[..], &second].concat()));
        assert!(check(&[&first[..], &second[..10]].concat()));
        assert!(check(&[&first[..], &second[..second.len() - 1]].concat()));
        assert!(!check(&[&first[..], b"junk"].concat()));
        assert!(!check(
            &[&first[..], &second[..second.len() - 1], b"\x55"].concat()
        ));
        // A cut block must have a length its magic allows.
        let mut huge = second.clone();
        huge[5..9].copy_from_slice(&200_000u32.to_le_bytes());
        assert!(!check(&[&first[..], &huge].concat()));
    }

    #[test]
    fn authenticated_magics_only_in_extended_set() {
        let b = block(0x27, 1, b"z");
        assert!(check_block(&b, 0, MagicSet::MarsAndAuthenticated).is_ok());
        assert_eq!(
            check_block(&b, 0, MagicSet::Mars),
            Err(BlockError::BadMagic {
                offset: 0,
                byte: 0x27
            })
        );
        for byte in 0..=255u8 {
            if let Some(m) = Magic::from_byte(byte, MagicSet::default()) {
                assert_eq!(m.byte(), byte);
            }
        }
    }

    #[test]
    fn run_of_two_accepts_end_of_input() {
        let mut file = block(0x09, 1, b"a");
        assert!(is_good_run(&file, 0, 2, MagicSet::default()));
        let second = block(0x09, 2, b"bb");
        file.extend(&second[..10]);
        assert!(!is_good_run(&file, 0, 2, MagicSet::default()));
        assert!(is_good_run(&file, 0, 1, MagicSet::default()));
        assert_eq!(find_block_start(&file, 0, 2, MagicSet::default()), None);
        assert_eq!(find_block_start(&file, 0, 1, MagicSet::default()), Some(0));
    }
}
