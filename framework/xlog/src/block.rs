//! The xlog block: a pure view over bytes, shared by the writer and crash recovery.
//!
//! ```text
//! offset 0     1        3       4       5           9                73          73+len
//!        +-----+--------+-------+-------+-----------+-----------------+-----------+------+
//!        |magic| seq    | begin | end   | len       | key field       | body      | 0x00 |
//!        | u8  | u16 LE | hour  | hour  | u32 LE    | 64 bytes        | len bytes | end  |
//!        +-----+--------+-------+-------+-----------+-----------------+-----------+------+
//! ```
//!
//! Magics (Mars's `log_magic_num.h`, plus two of our own for authenticated ciphers):
//!
//! | Magic | Block | Body |
//! |---|---|---|
//! | `0x06` / `0x0A` | sync, Mars key configured (zlib / zstd appender) | plain text (tips only, see crate docs) |
//! | `0x07` / `0x0C` | async, Mars TEA cipher | zlib / zstd, then TEA |
//! | `0x08` / `0x0B` | sync, no key (zlib / zstd appender) | plain text |
//! | `0x09` / `0x0D` | async, no key | raw deflate / zstd frame |
//! | [`MAGIC_ASYNC_ZLIB_AUTH`] `0x27` / [`MAGIC_ASYNC_ZSTD_AUTH`] `0x2C` | async, [`CipherKind::Authenticated`] cipher | zlib / zstd, then the cipher's records |
//!
//! | [`MAGIC_ASYNC_ZLIB_STAGED`] `0x47` / [`MAGIC_ASYNC_ZSTD_STAGED`] `0x4C` | a keyed writer's staged block, recovered after a crash | [staged-stream body](#staged-stream-body) |
//!
//! `0x27`/`0x2C` are Mars's keyed async magics with bit `0x20` set, `0x47`/`0x4C` with bit
//! `0x40`. Mars's decoders do not know them (by design: they could not read the body), and
//! they lie outside the `0x01`–`0x0D` range that Mars's resync scan stops on.
//!
//! # Staged-stream body
//!
//! A keyed writer stages lines in its buffer file uncompressed (deflate stored blocks or zstd
//! raw blocks, see `compress::StoredFramer`) and encrypted with ChaCha20 under a key `K` drawn
//! at random for the writer session. `K` itself is encrypted ("wrapped") with the configured
//! [`LogCipher`](phobos_plugin_api::cipher::LogCipher) session whose key goes into the block
//! header, so only the holder of the private key can read the block. Such a block reaches a
//! log file only when it is recovered after a crash (normally the writer thread compresses
//! the block's text and writes a Mars block instead):
//!
//! ```text
//! 0      1      2                2+n           2+n+8
//! +------+------+----------------+-------------+------------------------------------------+
//! | kind | n    | wrapped K      | nonce       | ChaCha20(K, nonce || 0u32) XOR framing   |
//! | u8   | u8   | n bytes        | u64 LE      | (stored deflate / zstd raw blocks)       |
//! +------+------+----------------+-------------+------------------------------------------+
//! ```
//!
//! `kind` names the wrapping cipher's family ([`STAGED_KIND_MARS`], [`STAGED_KIND_AUTHENTICATED`]);
//! the wrapped key decrypts (one whole block body for that cipher) to the 32 bytes of `K`;
//! the keystream starts at block counter 0 for the first byte after the nonce. The nonce is
//! the block's generation, unique within a session.
//!
//! ```
//! use phobos_xlog::block::{BlockHeader, HEADER_LEN, MAGIC_ASYNC_ZLIB_NO_KEY};
//! let h = BlockHeader { magic: MAGIC_ASYNC_ZLIB_NO_KEY, seq: 7, begin_hour: 9, end_hour: 10,
//!                       len: 42, key: [0; 64] };
//! let mut bytes = [0u8; HEADER_LEN];
//! h.emit(&mut bytes);
//! assert_eq!(BlockHeader::parse(&bytes), Ok(h));
//! ```

use phobos_plugin_api::cipher::{CipherKind, HEADER_KEY_LEN};

use crate::config::Compression;

/// Header length in bytes.
pub const HEADER_LEN: usize = 73;
/// The end byte after every body.
pub const MAGIC_END: u8 = 0x00;
/// Offset of the u32 length field in the header.
pub const LEN_OFFSET: usize = 5;
/// Offset of the end-hour byte in the header.
pub const END_HOUR_OFFSET: usize = 4;
/// Mars's staging buffer size (`kBufferBlockLength`, 150 KiB): the largest block.
pub const BUFFER_BLOCK_LEN: usize = 150 * 1024;

/// Sync block, Mars key configured, zlib appender (body is plain text).
pub const MAGIC_SYNC_ZLIB_KEY: u8 = 0x06;
/// Async block, zlib, Mars TEA cipher.
pub const MAGIC_ASYNC_ZLIB_KEY: u8 = 0x07;
/// Sync block, no key, zlib appender.
pub const MAGIC_SYNC_ZLIB_NO_KEY: u8 = 0x08;
/// Async block, zlib, no key.
pub const MAGIC_ASYNC_ZLIB_NO_KEY: u8 = 0x09;
/// Sync block, Mars key configured, zstd appender (body is plain text).
pub const MAGIC_SYNC_ZSTD_KEY: u8 = 0x0A;
/// Sync block, no key, zstd appender.
pub const MAGIC_SYNC_ZSTD_NO_KEY: u8 = 0x0B;
/// Async block, zstd, Mars TEA cipher.
pub const MAGIC_ASYNC_ZSTD_KEY: u8 = 0x0C;
/// Async block, zstd, no key.
pub const MAGIC_ASYNC_ZSTD_NO_KEY: u8 = 0x0D;
/// Async block, zlib, authenticated cipher (Phobos only; not a Mars magic).
pub const MAGIC_ASYNC_ZLIB_AUTH: u8 = 0x27;
/// Async block, zstd, authenticated cipher (Phobos only; not a Mars magic).
pub const MAGIC_ASYNC_ZSTD_AUTH: u8 = 0x2C;

/// Staged block of a keyed writer, zlib framing (Phobos only; see
/// [Staged-stream body](self#staged-stream-body)).
pub const MAGIC_ASYNC_ZLIB_STAGED: u8 = 0x47;
/// Staged block of a keyed writer, zstd framing (Phobos only).
pub const MAGIC_ASYNC_ZSTD_STAGED: u8 = 0x4C;
/// Staged-stream `kind`: the key is wrapped by a [`CipherKind::MarsCompatible`] cipher.
pub const STAGED_KIND_MARS: u8 = 1;
/// Staged-stream `kind`: the key is wrapped by a [`CipherKind::Authenticated`] cipher.
pub const STAGED_KIND_AUTHENTICATED: u8 = 2;

/// How a block's body is encrypted, as far as the magic tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Encryption {
    /// No cipher.
    None,
    /// A [`CipherKind::MarsCompatible`] cipher.
    Mars,
    /// A [`CipherKind::Authenticated`] cipher.
    Authenticated,
    /// ChaCha20 under a wrapped session key ([staged-stream body](self#staged-stream-body)).
    Staged,
}

/// The parts of a staged-stream body: `(kind, wrapped key, nonce, ciphertext)`, or `None` if
/// the body is too short for its prefix.
pub fn parse_staged_body(body: &[u8]) -> Option<(u8, &[u8], u64, &[u8])> {
    let (&kind, rest) = body.split_first()?;
    let (&n, rest) = rest.split_first()?;
    let wrapped = rest.get(..usize::from(n))?;
    let rest = &rest[usize::from(n)..];
    let (nonce, rest) = rest.split_first_chunk::<8>()?;
    Some((kind, wrapped, u64::from_le_bytes(*nonce), rest))
}

impl Encryption {
    /// The encryption family for a cipher kind.
    pub fn from_kind(kind: CipherKind) -> Self {
        match kind {
            CipherKind::MarsCompatible => Encryption::Mars,
            _ => Encryption::Authenticated,
        }
    }
}

/// What a magic byte says about its block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MagicInfo {
    /// Async (compressed) block; false for sync (plain text) blocks.
    pub is_async: bool,
    /// The appender's compression.
    pub compression: Compression,
    /// The encryption family.
    pub encryption: Encryption,
}

/// Describes a current (non-legacy) magic, or `None` for anything else.
pub fn magic_info(magic: u8) -> Option<MagicInfo> {
    use Compression::{Zlib, Zstd};
    use Encryption::{Authenticated, Mars, None as Plain};
    let (is_async, compression, encryption) = match magic {
        MAGIC_SYNC_ZLIB_KEY => (false, Zlib, Mars),
        MAGIC_ASYNC_ZLIB_KEY => (true, Zlib, Mars),
        MAGIC_SYNC_ZLIB_NO_KEY => (false, Zlib, Plain),
        MAGIC_ASYNC_ZLIB_NO_KEY => (true, Zlib, Plain),
        MAGIC_SYNC_ZSTD_KEY => (false, Zstd, Mars),
        MAGIC_SYNC_ZSTD_NO_KEY => (false, Zstd, Plain),
        MAGIC_ASYNC_ZSTD_KEY => (true, Zstd, Mars),
        MAGIC_ASYNC_ZSTD_NO_KEY => (true, Zstd, Plain),
        MAGIC_ASYNC_ZLIB_AUTH => (true, Zlib, Authenticated),
        MAGIC_ASYNC_ZSTD_AUTH => (true, Zstd, Authenticated),
        MAGIC_ASYNC_ZLIB_STAGED => (true, Zlib, Encryption::Staged),
        MAGIC_ASYNC_ZSTD_STAGED => (true, Zstd, Encryption::Staged),
        _ => return None,
    };
    Some(MagicInfo {
        is_async,
        compression,
        encryption,
    })
}

/// The magic for an async (compressed) block.
pub fn async_magic(compression: Compression, encryption: Encryption) -> u8 {
    match (compression, encryption) {
        (Compression::Zlib, Encryption::None) => MAGIC_ASYNC_ZLIB_NO_KEY,
        (Compression::Zlib, Encryption::Mars) => MAGIC_ASYNC_ZLIB_KEY,
        (Compression::Zlib, Encryption::Authenticated) => MAGIC_ASYNC_ZLIB_AUTH,
        (Compression::Zstd, Encryption::None) => MAGIC_ASYNC_ZSTD_NO_KEY,
        (Compression::Zstd, Encryption::Mars) => MAGIC_ASYNC_ZSTD_KEY,
        (Compression::Zstd, Encryption::Authenticated) => MAGIC_ASYNC_ZSTD_AUTH,
        (Compression::Zlib, Encryption::Staged) => MAGIC_ASYNC_ZLIB_STAGED,
        (Compression::Zstd, Encryption::Staged) => MAGIC_ASYNC_ZSTD_STAGED,
    }
}

/// The magic for a plain-text sync block (tips; sync-mode lines without a key).
///
/// A Mars key gives Mars's "key configured" sync magics (their body is still plain text, as in
/// Mars); an authenticated cipher has no sync magic, so its tips use the no-key magics.
pub fn sync_magic(compression: Compression, encryption: Encryption) -> u8 {
    match (compression, encryption) {
        (Compression::Zlib, Encryption::Mars) => MAGIC_SYNC_ZLIB_KEY,
        (Compression::Zlib, _) => MAGIC_SYNC_ZLIB_NO_KEY,
        (Compression::Zstd, Encryption::Mars) => MAGIC_SYNC_ZSTD_KEY,
        (Compression::Zstd, _) => MAGIC_SYNC_ZSTD_NO_KEY,
    }
}

/// A parsed block header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockHeader {
    /// Magic byte.
    pub magic: u8,
    /// Sequence number (0 for sync blocks and tips).
    pub seq: u16,
    /// Local hour when the block was started.
    pub begin_hour: u8,
    /// Local hour when the block was flushed.
    pub end_hour: u8,
    /// Body length in bytes.
    pub len: u32,
    /// The 64-byte key field.
    pub key: [u8; HEADER_KEY_LEN],
}

/// Why bytes are not a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BlockError {
    /// Fewer bytes than a header or than header + body + end byte.
    #[error("truncated block")]
    Truncated,
    /// The first byte is not a known magic.
    #[error("unknown magic {0:#04x}")]
    BadMagic(u8),
    /// The byte after the body is not `0x00`.
    #[error("missing end byte")]
    BadEnd,
}

impl BlockHeader {
    /// Parses a header from the first [`HEADER_LEN`] bytes; checks only the magic.
    ///
    /// # Errors
    ///
    /// [`BlockError::Truncated`] or [`BlockError::BadMagic`].
    pub fn parse(bytes: &[u8]) -> Result<BlockHeader, BlockError> {
        let h = bytes.get(..HEADER_LEN).ok_or(BlockError::Truncated)?;
        if magic_info(h[0]).is_none() {
            return Err(BlockError::BadMagic(h[0]));
        }
        let mut key = [0u8; HEADER_KEY_LEN];
        key.copy_from_slice(&h[9..HEADER_LEN]);
        Ok(BlockHeader {
            magic: h[0],
            seq: u16::from_le_bytes([h[1], h[2]]),
            begin_hour: h[3],
            end_hour: h[4],
            len: u32::from_le_bytes([h[5], h[6], h[7], h[8]]),
            key,
        })
    }

    /// Writes the header into `out`.
    pub fn emit(&self, out: &mut [u8; HEADER_LEN]) {
        out[0] = self.magic;
        out[1..3].copy_from_slice(&self.seq.to_le_bytes());
        out[3] = self.begin_hour;
        out[4] = self.end_hour;
        out[5..9].copy_from_slice(&self.len.to_le_bytes());
        out[9..].copy_from_slice(&self.key);
    }
}

/// A complete block found in bytes: header and body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockView<'a> {
    /// The header.
    pub header: BlockHeader,
    /// The body (`header.len` bytes).
    pub body: &'a [u8],
}

impl<'a> BlockView<'a> {
    /// Parses one complete block (header, body, end byte) at the start of `bytes`.
    ///
    /// # Errors
    ///
    /// Any [`BlockError`]; never panics.
    pub fn parse(bytes: &'a [u8]) -> Result<BlockView<'a>, BlockError> {
        let header = BlockHeader::parse(bytes)?;
        let end = HEADER_LEN
            .checked_add(header.len as usize)
            .ok_or(BlockError::Truncated)?;
        let body = bytes.get(HEADER_LEN..end).ok_or(BlockError::Truncated)?;
        match bytes.get(end) {
            Some(&MAGIC_END) => Ok(BlockView { header, body }),
            Some(_) => Err(BlockError::BadEnd),
            None => Err(BlockError::Truncated),
        }
    }

    /// The whole block's length on disk.
    pub fn total_len(&self) -> usize {
        HEADER_LEN + self.body.len() + 1
    }
}

/// Builds a complete block (header, body, end byte) into `out`.
pub fn emit_block(out: &mut Vec<u8>, magic: u8, seq: u16, hour: u8, key: &[u8; 64], body: &[u8]) {
    let h = BlockHeader {
        magic,
        seq,
        begin_hour: hour,
        end_hour: hour,
        len: body.len() as u32,
        key: *key,
    };
    let mut hb = [0u8; HEADER_LEN];
    h.emit(&mut hb);
    out.extend_from_slice(&hb);
    out.extend_from_slice(body);
    out.push(MAGIC_END);
}

/// Reads the staged, unfinished block at the start of a staging slot as Mars's recovery does
/// (§4.4 of the format notes): a known magic at byte 0 and the length field, clamped to what
/// the slot can hold. Returns the header and the body; `None` when the slot holds nothing.
/// Never panics, whatever the bytes.
pub fn staged_block(slot: &[u8]) -> Option<(BlockHeader, &[u8])> {
    let header = BlockHeader::parse(slot).ok()?;
    let cap = slot
        .len()
        .min(BUFFER_BLOCK_LEN)
        .checked_sub(HEADER_LEN + 1)?;
    let len = (header.len as usize).min(cap);
    if len == 0 {
        return None;
    }
    // A staged-stream block with no line after its prefix holds nothing to recover.
    if magic_info(header.magic).is_some_and(|i| i.encryption == Encryption::Staged)
        && parse_staged_body(&slot[HEADER_LEN..HEADER_LEN + len]).is_none_or(|p| p.3.is_empty())
    {
        return None;
    }
    Some((
        BlockHeader {
            len: len as u32,
            ..header
        },
        &slot[HEADER_LEN..HEADER_LEN + len],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn complete_block_round_trips() {
        let mut out = Vec::new();
        emit_block(&mut out, MAGIC_SYNC_ZLIB_NO_KEY, 0, 9, &[0; 64], b"hello\n");
        let v = BlockView::parse(&out).unwrap();
        assert_eq!(v.body, b"hello\n");
        assert_eq!(v.total_len(), out.len());
        assert_eq!(
            BlockView::parse(&out[..out.len() - 1]),
            Err(BlockError::Truncated)
        );
        let mut bad = out.clone();
        *bad.last_mut().unwrap() = 1;
        assert_eq!(BlockView::parse(&bad), Err(BlockError::BadEnd));
        bad[0] = 0x42;
        assert_eq!(BlockView::parse(&bad), Err(BlockError::BadMagic(0x42)));
    }

    #[test]
    fn staged_block_clamps_like_mars() {
        let mut slot = vec![0u8; BUFFER_BLOCK_LEN];
        assert!(staged_block(&slot).is_none());
        let h = BlockHeader {
            magic: MAGIC_ASYNC_ZLIB_KEY,
            seq: 4,
            begin_hour: 1,
            end_hour: 1,
            len: u32::MAX,
            key: [7; 64],
        };
        let mut hb = [0u8; HEADER_LEN];
        h.emit(&mut hb);
        slot[..HEADER_LEN].copy_from_slice(&hb);
        let (hh, body) = staged_block(&slot).unwrap();
        assert_eq!(body.len(), BUFFER_BLOCK_LEN - HEADER_LEN - 1);
        assert_eq!(hh.seq, 4);
        assert!(staged_block(&slot[..10]).is_none());
    }

    #[test]
    fn magics_are_consistent() {
        for c in [Compression::Zlib, Compression::Zstd] {
            for e in [
                Encryption::None,
                Encryption::Mars,
                Encryption::Authenticated,
            ] {
                let a = magic_info(async_magic(c, e)).unwrap();
                assert!(a.is_async);
                assert_eq!((a.compression, a.encryption), (c, e));
                let s = magic_info(sync_magic(c, e)).unwrap();
                assert!(!s.is_async);
                assert_eq!(s.compression, c);
            }
        }
    }
}
