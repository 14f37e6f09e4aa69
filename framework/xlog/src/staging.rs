//! The staging buffer: blocks being filled in the memory-mapped file, and crash recovery.
//!
//! # File layout (`<prefix>.mmap3`, 308 224 bytes)
//!
//! ```text
//! 0                 153 600            307 200        307 712        308 224
//! +-----------------+------------------+--------------+--------------+
//! | slot 0 block    | slot 1 block     | slot 0 meta  | slot 1 meta  |
//! | (Mars layout)   | (Mars layout)    | 512 bytes    | 512 bytes    |
//! +-----------------+------------------+--------------+--------------+
//! ```
//!
//! Each slot holds one block exactly as Mars's 150 KiB buffer does: header at offset 0 whose
//! length field covers the bytes staged so far, no end byte. Slot 0 sits where Mars's whole
//! buffer is, so a `.mmap3` left by Mars (153 600 bytes, no meta) is recovered too. The writer
//! first grows such a file to this layout with zeros after Mars's bytes (slot 0 unchanged, so
//! Mars still reads it), so that its block's write intent has a place in slot 0's meta. Two slots
//! let callers keep logging into one while the background thread appends the other to the log
//! file, without copying.
//!
//! Slot meta (all little-endian):
//!
//! | Offset | Size | Field |
//! |---|---|---|
//! | 0 | 8 | generation: orders the slots' blocks (0 = never used) |
//! | 8 | 1 | 1 while the block is being appended to a log file (write intent) |
//! | 9 | 1 | intent directory: 0 log dir, 1 cache dir |
//! | 10 | 2 | intent file name length |
//! | 12 | 4 | intent: CRC-32 of the intent record (see below) |
//! | 16 | 8 | intent: log file length before the append |
//! | 24 | 4 | undo: body length whose clear tail is saved below |
//! | 28 | 1 | undo: tail length (≤ 64) |
//! | 32 | 64 | undo: tail bytes |
//! | 96 | 4 | intent: length of the block being appended (0: the staged block itself) |
//! | 100 | 4 | intent: CRC-32 of the block being appended |
//! | 104 | 8 | intent: generation of the staged block it belongs to |
//! | 112 | 4 | intent: body length of that staged block |
//! | 120 | 8 | intent: the log file's inode (0: unknown) |
//! | 128 | ≤ 255 | intent file name |
//!
//! The intent record is bytes 8–23 and 96–127 plus the name; its CRC-32 covers bytes 8–11,
//! 16–23, 96–127 and the name, with the flag byte set. Recovery uses an intent only if that
//! CRC matches and it names the slot's own block (generation and body length): a stale or
//! damaged record then never hides a staged block nor truncates a log file. The whole record
//! is zeroed once its block reached the file. Intents written by older versions of this crate
//! carry no CRC and are ignored: their block is appended again, at worst a second time, and
//! nothing is truncated.
//!
//! # Crash safety
//!
//! A line is committed by three stores, in this order: (1) with a cipher that left clear bytes
//! at the end of the body (TEA's 0–7 byte partial unit), those bytes are saved in the undo
//! field; (2) the new ciphertext is written over the old tail and beyond; (3) the length field
//! is set. A crash before (3) leaves the old length, and recovery puts the saved tail back,
//! so the block decodes to exactly the lines committed before. (Mars overwrites the tail in
//! place and can garble the last line.) The write intent makes appending a recovered block
//! exactly-once: if the crash came after (part of) the append reached the log file, recovery
//! finds it there and does not append it twice.

use chacha20::cipher::{KeyIvInit, StreamCipher, StreamCipherSeek};
use chacha20::ChaCha20;
use phobos_plugin_api::cipher::{BlockEncryptor, CipherError, CipherKind};
use rand_core::{OsRng, RngCore};

use crate::block::{
    async_magic, staged_block, BlockHeader, BlockView, Encryption, BUFFER_BLOCK_LEN,
    END_HOUR_OFFSET, HEADER_LEN, LEN_OFFSET, MAGIC_END, STAGED_KIND_AUTHENTICATED,
    STAGED_KIND_MARS,
};
use crate::compress::{bound, zstd_decompress_capped, BlockCompressor, StoredFramer};
use crate::config::Compression;
use crate::mmap::Backing;

pub(crate) const SLOTS: usize = 2;
pub(crate) const SLOT_LEN: usize = BUFFER_BLOCK_LEN;
pub(crate) const META_LEN: usize = 512;
pub(crate) const META_BASE: usize = SLOT_LEN * SLOTS;
pub(crate) const FILE_LEN: usize = META_BASE + META_LEN * SLOTS;
/// Seal the block once this much is staged (zlib). Mars seals at 1/3 of its buffer of
/// *compressed* bytes; here lines are staged uncompressed and a sealed block is compressed as a
/// whole, so a larger unit (about 500 lines of 200 bytes) compresses better and wakes the
/// writer less often, while the last third of the slot still absorbs lines when the writer is
/// busy.
pub(crate) const SOFT_LIMIT: usize = SLOT_LEN * 2 / 3;
/// The input bytes of a zstd body that Mars's Python decoder reads:
/// `next(ZstdDecompressor().read_from(reader, 100000, 1000000))` feeds the first `read_size`
/// = 100 000 bytes of the body to the decompressor and keeps only the output of that first
/// read, so whatever a body holds past them is lost without an error.
pub(crate) const MARS_ZSTD_READ_SIZE: usize = 100_000;
/// The largest zstd body staged, hence written (see [`MARS_ZSTD_READ_SIZE`]).
///
/// Design: the cap is on the staged block, not on the written one. A staged block goes to the
/// log as it is when it is recovered after a crash, or when compression does not make it
/// smaller (incompressible lines), and the block the writer thread makes from it is never
/// longer; a keyed writer's staged block cannot be cut up or compressed anew after a crash,
/// since only the private key's holder can read it. So every zstd body, recovered or written,
/// keyed or not, stays below what Mars's decoder reads, and no line is lost to it. Blocks over
/// the cap left by Mars or by older versions are cut anew at recovery when they have no key
/// ([`mars_readable`]).
pub(crate) const ZSTD_MAX_BODY: usize = MARS_ZSTD_READ_SIZE - 1;
/// Seal a zstd block once this much is staged: two thirds of [`ZSTD_MAX_BODY`], as
/// [`SOFT_LIMIT`] is of the slot, so the last third absorbs lines while the writer is busy.
pub(crate) const ZSTD_SOFT_LIMIT: usize = ZSTD_MAX_BODY * 2 / 3;
/// The largest zlib body staged: what fits in the slot with the header and the end byte.
const ZLIB_MAX_BODY: usize = SLOT_LEN - HEADER_LEN - 1;
/// Largest clear tail a cipher may leave unconsumed.
pub(crate) const MAX_TAIL: usize = 64;

const M_GEN: usize = 0;
const M_INTENT: usize = 8;
const M_DIR: usize = 9;
const M_NAME_LEN: usize = 10;
const M_OFFSET: usize = 16;
const M_UNDO_LEN: usize = 24;
const M_UNDO_TAIL_LEN: usize = 28;
const M_UNDO_TAIL: usize = 32;
const M_WRITTEN_LEN: usize = 96;
const M_WRITTEN_CRC: usize = 100;
const M_INTENT_CRC: usize = 12;
const M_INTENT_GEN: usize = 104;
const M_INTENT_STAGED_LEN: usize = 112;
const M_INTENT_FILE_ID: usize = 120;
const M_NAME: usize = 128;
const MAX_NAME: usize = 255;

/// Which part of a slot a store goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Area {
    Block,
    Meta,
}

/// Byte stores into a slot. The real one writes the mapping; tests record the stores to
/// replay crashes between (and inside) them.
pub(crate) trait Store {
    fn put(&mut self, area: Area, off: usize, bytes: &[u8]);
}

/// One slot of the staging file.
#[derive(Debug)]
pub(crate) struct Region {
    pub(crate) block: Backing,
    pub(crate) meta: Backing,
    /// The slot's index in the staging file.
    pub(crate) slot: usize,
    /// Which staging file the slot is mapped from: 0 the one opened with the writer, then
    /// one more for every file made anew after it was removed (see `StagingFile`).
    pub(crate) file: u32,
}

impl Store for Region {
    fn put(&mut self, area: Area, off: usize, bytes: &[u8]) {
        let dst = match area {
            Area::Block => &mut self.block[..],
            Area::Meta => &mut self.meta[..],
        };
        dst[off..off + bytes.len()].copy_from_slice(bytes);
    }
}

/// Where a sealed block is being appended (recorded before the append).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Intent {
    pub(crate) in_cache: bool,
    pub(crate) name: String,
    pub(crate) offset: u64,
    /// Length and CRC-32 of the block being appended when it is not the staged block itself
    /// (the writer appends a compressed copy).
    pub(crate) written: Option<(u32, u32)>,
    /// The log file's inode when the intent was recorded (0: unknown).
    pub(crate) file_id: u64,
}

impl Region {
    /// Marks the slot empty after its block reached the log file: magic first, then the whole
    /// intent record (not just its flag, so no stale target survives for a later block).
    pub(crate) fn clear_after_write(&mut self) {
        self.put(Area::Block, 0, &[0]);
        self.clear_intent();
    }

    /// Puts a recovered block (as [`recover`] returns it) back into this empty slot as a
    /// staged block of generation `gen`, for the next start to recover again.
    pub(crate) fn restore_recovered(&mut self, gen: u64, block: &[u8]) {
        // The block without its end byte; magic last.
        let staged = &block[..block.len().saturating_sub(1)];
        if staged.len() <= HEADER_LEN || staged.len() > SLOT_LEN {
            return;
        }
        self.put(Area::Meta, M_GEN, &gen.to_le_bytes());
        self.put(Area::Block, 1, &staged[1..]);
        self.put(Area::Block, 0, &staged[..1]);
    }

    /// Zeroes the write-intent record (the block, its generation and undo data stay).
    pub(crate) fn clear_intent(&mut self) {
        self.put(Area::Meta, M_INTENT, &[0; M_UNDO_LEN - M_INTENT]);
        self.put(
            Area::Meta,
            M_WRITTEN_LEN,
            &[0; M_NAME + MAX_NAME - M_WRITTEN_LEN],
        );
    }
}

/// Zeroes the write-intent record in a copy of a slot's meta, as [`Region::clear_intent`]
/// does in the slot itself.
pub(crate) fn clear_intent_record(meta: &mut [u8]) {
    if meta.len() >= M_NAME + MAX_NAME {
        meta[M_INTENT..M_UNDO_LEN].fill(0);
        meta[M_WRITTEN_LEN..M_NAME + MAX_NAME].fill(0);
    }
}

/// Records in a slot's meta where its sealed block (generation `gen`, staged body length
/// `staged_len`) is about to be appended. The flag byte is stored last.
pub(crate) fn write_intent(meta: &mut [u8], intent: &Intent, gen: u64, staged_len: u32) {
    let name = intent.name.as_bytes();
    let n = name.len().min(MAX_NAME);
    meta[M_DIR] = u8::from(intent.in_cache);
    meta[M_NAME_LEN..M_NAME_LEN + 2].copy_from_slice(&(n as u16).to_le_bytes());
    meta[M_OFFSET..M_OFFSET + 8].copy_from_slice(&intent.offset.to_le_bytes());
    meta[M_NAME..M_NAME + n].copy_from_slice(&name[..n]);
    let (len, crc) = intent.written.unwrap_or((0, 0));
    meta[M_WRITTEN_LEN..M_WRITTEN_LEN + 4].copy_from_slice(&len.to_le_bytes());
    meta[M_WRITTEN_CRC..M_WRITTEN_CRC + 4].copy_from_slice(&crc.to_le_bytes());
    meta[M_INTENT_GEN..M_INTENT_GEN + 8].copy_from_slice(&gen.to_le_bytes());
    meta[M_INTENT_STAGED_LEN..M_INTENT_STAGED_LEN + 4].copy_from_slice(&staged_len.to_le_bytes());
    meta[M_INTENT_FILE_ID..M_INTENT_FILE_ID + 8].copy_from_slice(&intent.file_id.to_le_bytes());
    let crc = intent_crc(meta, n);
    meta[M_INTENT_CRC..M_INTENT_CRC + 4].copy_from_slice(&crc.to_le_bytes());
    meta[M_INTENT] = 1;
}

/// CRC-32 of the intent record with a name of `n` bytes, computed as if the flag were set.
fn intent_crc(m: &[u8], n: usize) -> u32 {
    let mut c = flate2::Crc::new();
    c.update(&[1]);
    c.update(&m[M_DIR..M_INTENT_CRC]);
    c.update(&m[M_OFFSET..M_UNDO_LEN]);
    c.update(&m[M_WRITTEN_LEN..M_NAME]);
    c.update(&m[M_NAME..M_NAME + n]);
    c.sum()
}

/// In-memory state of the block being filled.
#[derive(Debug, Default)]
pub(crate) struct Active {
    pub(crate) gen: u64,
    /// The sequence number in the block's header.
    pub(crate) seq: u16,
    /// Bytes in the body, clear tail included.
    pub(crate) body_len: usize,
    /// Cipher input not consumed yet; also the last bytes of the body, in clear.
    pub(crate) tail: Vec<u8>,
    pub(crate) lines: u64,
    /// The block's text (the lines as staged, before framing and encryption), kept in
    /// process memory for the writer thread to compress.
    pub(crate) plain: Vec<u8>,
    /// The most body bytes the block may hold ([`Stager::max_body`]).
    pub(crate) max_body: usize,
}

impl Active {
    /// Whether a line of `line_len` formatted bytes surely fits.
    pub(crate) fn fits(&self, line_len: usize) -> bool {
        self.body_len + bound(line_len) + MAX_TAIL <= self.max_body
    }
}

/// Why staging a line failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StageError {
    #[error(transparent)]
    Cipher(#[from] CipherError),
    #[error("compressed line does not fit the staging buffer")]
    NoRoom,
}

/// The staging cipher of a keyed writer: ChaCha20 under a session key `K`, which the
/// session's [`BlockEncryptor`] wraps into the body prefix of every staged block (see
/// [`crate::block`], "Staged-stream body"). Logging threads then encrypt a line with a fast
/// stream cipher instead of the configured cipher, and no text is ever in clear in the buffer
/// file.
pub(crate) struct StreamStaging {
    key: [u8; 32],
    /// `kind | n | wrapped K`: the body prefix without the nonce.
    head: Vec<u8>,
    /// The keystream of the block being staged.
    cipher: Option<Keystream>,
    /// A keystream computed ahead of time by the writer thread for the block generation it
    /// names (see [`Stager::install_keystream`]).
    prepared: Option<(u64, Vec<u8>)>,
    /// The last block's precomputed keystream buffer, for the writer thread to refill.
    spent: Option<Vec<u8>>,
}

/// The ChaCha20 keystream of one staged block: precomputed bytes when the writer thread made
/// them in time (a line then costs an XOR), else computed as lines come.
struct Keystream {
    pre: Vec<u8>,
    cipher: ChaCha20,
    pos: usize,
}

impl Keystream {
    fn apply(&mut self, data: &mut [u8]) {
        let end = self.pos + data.len();
        if let Some(ks) = self.pre.get(self.pos..end) {
            for (d, k) in data.iter_mut().zip(ks) {
                *d ^= k;
            }
        } else {
            self.cipher.seek(self.pos as u64);
            self.cipher.apply_keystream(data);
        }
        self.pos = end;
    }
}

/// The ChaCha20 cipher of staged block `gen` under `key` (nonce: `gen` LE, then 4 zeros).
fn block_cipher(key: &[u8; 32], gen: u64) -> ChaCha20 {
    let mut nonce = [0u8; 12];
    nonce[..8].copy_from_slice(&gen.to_le_bytes());
    ChaCha20::new(key.into(), &nonce.into())
}

/// Keystream bytes precomputed per block: enough for a block sealed at [`SOFT_LIMIT`] (zstd
/// blocks are sealed sooner, at [`ZSTD_SOFT_LIMIT`]); a
/// block that grows further (the writer fell behind) computes the rest as lines come.
const PRECOMPUTED_KEYSTREAM: usize = SOFT_LIMIT + 4096;

/// Fills `buf` with the first keystream bytes of staged block `gen` (what the writer thread
/// precomputes).
pub(crate) fn compute_keystream(key: &[u8; 32], gen: u64, buf: &mut Vec<u8>) {
    buf.clear();
    buf.resize(PRECOMPUTED_KEYSTREAM, 0);
    block_cipher(key, gen).apply_keystream(buf);
}

impl std::fmt::Debug for StreamStaging {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StreamStaging(..)")
    }
}

impl Drop for StreamStaging {
    fn drop(&mut self) {
        // Best effort: the key stays in memory only while the writer runs.
        self.key.fill(0);
    }
}

impl StreamStaging {
    /// Draws a session key and wraps it with `enc` (a cipher of kind `kind`).
    pub(crate) fn new(enc: &mut dyn BlockEncryptor, kind: CipherKind) -> Result<Self, CipherError> {
        let mut key = [0u8; 32];
        OsRng
            .try_fill_bytes(&mut key)
            .map_err(|e| CipherError::Crypto(format!("no randomness for the staging key: {e}")))?;
        let mut wrapped = Vec::with_capacity(64);
        let used = enc.encrypt(&key, &mut wrapped)?.min(key.len());
        enc.finish_block(&key[used..], &mut wrapped)?;
        let n = u8::try_from(wrapped.len())
            .map_err(|_| CipherError::Crypto("wrapped staging key over 255 bytes".into()))?;
        let kind = match kind {
            CipherKind::MarsCompatible => STAGED_KIND_MARS,
            _ => STAGED_KIND_AUTHENTICATED,
        };
        let mut head = vec![kind, n];
        head.extend_from_slice(&wrapped);
        Ok(StreamStaging {
            key,
            head,
            cipher: None,
            prepared: None,
            spent: None,
        })
    }

    /// The session key (for the writer thread's keystream precomputation).
    pub(crate) fn key(&self) -> [u8; 32] {
        self.key
    }
}

/// Frames and encrypts lines into a slot.
#[derive(Debug)]
pub(crate) struct Stager {
    framer: StoredFramer,
    encryptor: Option<Box<dyn BlockEncryptor>>,
    stream: Option<StreamStaging>,
    magic: u8,
    key: [u8; 64],
    /// The most body bytes a block may hold: the slot for zlib, [`ZSTD_MAX_BODY`] for zstd.
    max_body: usize,
    comp: Vec<u8>,
    joined: Vec<u8>,
    enc: Vec<u8>,
}

impl Stager {
    pub(crate) fn new(
        framer: StoredFramer,
        encryptor: Option<Box<dyn BlockEncryptor>>,
        stream: Option<StreamStaging>,
        magic: u8,
    ) -> Self {
        let key = encryptor
            .as_ref()
            .map(|e| e.header_key())
            .unwrap_or([0; 64]);
        let max_body = if framer.is_zstd() {
            ZSTD_MAX_BODY
        } else {
            ZLIB_MAX_BODY
        };
        Stager {
            framer,
            encryptor,
            stream,
            magic,
            key,
            max_body,
            comp: Vec::with_capacity(1024),
            joined: Vec::with_capacity(1024),
            enc: Vec::with_capacity(1024),
        }
    }

    /// The staged length at which a block is sealed when a spare slot is there.
    pub(crate) fn soft_limit(&self) -> usize {
        if self.framer.is_zstd() {
            ZSTD_SOFT_LIMIT
        } else {
            SOFT_LIMIT
        }
    }

    /// Starts a block in `store`: header with length 0, generation, cleared undo.
    pub(crate) fn begin(
        &mut self,
        store: &mut impl Store,
        gen: u64,
        seq: u16,
        hour: u8,
    ) -> Result<Active, StageError> {
        self.framer.reset();
        let mut body_len = 0;
        if let Some(s) = self.stream.as_mut() {
            let mut prefix = s.head.clone();
            prefix.extend_from_slice(&gen.to_le_bytes());
            let pre = match s.prepared.take() {
                Some((g, buf)) if g == gen => buf,
                other => {
                    s.prepared = other;
                    Vec::new()
                }
            };
            s.cipher = Some(Keystream {
                pre,
                cipher: block_cipher(&s.key, gen),
                pos: 0,
            });
            store.put(Area::Block, HEADER_LEN, &prefix);
            body_len = prefix.len();
        }
        let h = BlockHeader {
            magic: self.magic,
            seq,
            begin_hour: hour,
            end_hour: hour,
            len: body_len as u32,
            key: self.key,
        };
        let mut hb = [0u8; HEADER_LEN];
        h.emit(&mut hb);
        store.put(Area::Meta, M_UNDO_LEN, &0u32.to_le_bytes());
        store.put(Area::Meta, M_GEN, &gen.to_le_bytes());
        // Magic last, so a crash in between leaves an empty slot rather than a stale header.
        store.put(Area::Block, 1, &hb[1..]);
        store.put(Area::Block, 0, &hb[..1]);
        Ok(Active {
            gen,
            seq,
            body_len,
            max_body: self.max_body,
            ..Active::default()
        })
    }

    /// Frames, encrypts and commits one line (see the module docs for the store order), and
    /// keeps its text in `active.plain`.
    pub(crate) fn append(
        &mut self,
        store: &mut impl Store,
        active: &mut Active,
        line: &[u8],
    ) -> Result<(), StageError> {
        self.comp.clear();
        self.framer.frame_line(line, &mut self.comp);
        let write_pos;
        let data: &[u8];
        let new_tail_len;
        if let Some(cipher) = self.stream.as_mut().and_then(|s| s.cipher.as_mut()) {
            // Check the room first: the keystream must only advance for stored bytes.
            if active.body_len + self.comp.len() > self.max_body {
                return Err(StageError::NoRoom);
            }
            cipher.apply(&mut self.comp);
            new_tail_len = 0;
            write_pos = active.body_len;
            data = &self.comp;
        } else if let Some(enc) = self.encryptor.as_mut() {
            self.joined.clear();
            self.joined.extend_from_slice(&active.tail);
            self.joined.extend_from_slice(&self.comp);
            self.enc.clear();
            let used = enc
                .encrypt(&self.joined, &mut self.enc)?
                .min(self.joined.len());
            new_tail_len = self.joined.len() - used;
            if new_tail_len > MAX_TAIL {
                return Err(StageError::Cipher(CipherError::Crypto(format!(
                    "cipher left {new_tail_len} bytes unconsumed (at most {MAX_TAIL} supported)"
                ))));
            }
            self.enc.extend_from_slice(&self.joined[used..]);
            write_pos = active.body_len - active.tail.len();
            data = &self.enc;
        } else {
            new_tail_len = 0;
            write_pos = active.body_len;
            data = &self.comp;
        }
        let new_len = write_pos + data.len();
        if new_len > self.max_body {
            return Err(StageError::NoRoom);
        }
        if !active.tail.is_empty() {
            save_undo(store, active.body_len, &active.tail);
        }
        store.put(Area::Block, HEADER_LEN + write_pos, data);
        store.put(Area::Block, LEN_OFFSET, &(new_len as u32).to_le_bytes());
        active.body_len = new_len;
        active.tail.clear();
        active
            .tail
            .extend_from_slice(&data[data.len() - new_tail_len..]);
        active.lines += 1;
        active.plain.extend_from_slice(line);
        Ok(())
    }

    /// Finishes the block: the cipher's last bytes, end hour, end byte. Returns the block's
    /// total length (header + body + end byte) at the start of the slot.
    pub(crate) fn seal(
        &mut self,
        store: &mut impl Store,
        active: &mut Active,
        hour: u8,
    ) -> Result<usize, StageError> {
        if let Some(s) = self.stream.as_mut() {
            if let Some(ks) = s.cipher.take() {
                if ks.pre.capacity() > 0 {
                    s.spent = Some(ks.pre);
                }
            }
        } else if let Some(enc) = self.encryptor.as_mut() {
            self.enc.clear();
            enc.finish_block(&active.tail, &mut self.enc)?;
            let write_pos = active.body_len - active.tail.len();
            let new_len = write_pos + self.enc.len();
            if new_len > self.max_body {
                return Err(StageError::NoRoom);
            }
            if !active.tail.is_empty() {
                save_undo(store, active.body_len, &active.tail);
            }
            store.put(Area::Block, HEADER_LEN + write_pos, &self.enc);
            store.put(Area::Block, LEN_OFFSET, &(new_len as u32).to_le_bytes());
            active.body_len = new_len;
            active.tail.clear();
        }
        store.put(Area::Block, END_HOUR_OFFSET, &[hour]);
        store.put(Area::Block, HEADER_LEN + active.body_len, &[MAGIC_END]);
        Ok(HEADER_LEN + active.body_len + 1)
    }

    /// The staging stream's session key, if lines are staged with it.
    #[cfg(test)]
    pub(crate) fn stream_key(&self) -> Option<[u8; 32]> {
        self.stream.as_ref().map(StreamStaging::key)
    }

    /// A spent keystream buffer to refill (none: allocate one).
    pub(crate) fn take_spent_keystream(&mut self) -> Option<Vec<u8>> {
        self.stream.as_mut().and_then(|s| s.spent.take())
    }

    /// Hands over the keystream the writer thread computed for block generation `gen`; it is
    /// used if that block is the next one to begin.
    pub(crate) fn install_keystream(&mut self, gen: u64, buf: Vec<u8>) {
        if let Some(s) = self.stream.as_mut() {
            s.prepared = Some((gen, buf));
        }
    }

    /// The header key of this session (zeros without a cipher).
    pub(crate) fn header_key(&self) -> [u8; 64] {
        self.key
    }

    /// Frames and encrypts `line` as one complete, self-contained block body (the framer is
    /// reset: call it only while no async block is being staged).
    pub(crate) fn one_shot_body(&mut self, line: &[u8]) -> Result<Vec<u8>, StageError> {
        let mut framer = self.framer.clone();
        framer.reset();
        self.comp.clear();
        framer.frame_line(line, &mut self.comp);
        let mut body = Vec::with_capacity(self.comp.len() + 32);
        match self.encryptor.as_mut() {
            Some(enc) => {
                let used = enc.encrypt(&self.comp, &mut body)?.min(self.comp.len());
                enc.finish_block(&self.comp[used..], &mut body)?;
            }
            None => body.extend_from_slice(&self.comp),
        }
        Ok(body)
    }
}

fn save_undo(store: &mut impl Store, body_len: usize, tail: &[u8]) {
    store.put(Area::Meta, M_UNDO_TAIL, tail);
    store.put(Area::Meta, M_UNDO_TAIL_LEN, &[tail.len() as u8]);
    store.put(Area::Meta, M_UNDO_LEN, &(body_len as u32).to_le_bytes());
}

/// A block found in the staging file at start-up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Recovered {
    /// The slot it was found in.
    pub(crate) slot: usize,
    pub(crate) gen: u64,
    /// The complete block (end hour set, end byte added).
    pub(crate) block: Vec<u8>,
    /// Set when the crashed writer had started appending this block to a log file.
    pub(crate) intent: Option<Intent>,
}

/// Finds the staged blocks in what a crashed writer left, oldest first. Never panics.
pub(crate) fn recover(file: &[u8], hour: u8) -> Vec<Recovered> {
    let mut out = Vec::new();
    for i in 0..SLOTS {
        let start = i * SLOT_LEN;
        let Some(slot) = file.get(start..file.len().min(start + SLOT_LEN)) else {
            continue;
        };
        let meta = file.get(META_BASE + i * META_LEN..META_BASE + (i + 1) * META_LEN);
        let Some((header, body)) = staged_block(slot) else {
            continue;
        };
        let mut body = body.to_vec();
        let mut gen = 0;
        let mut intent = None;
        if let Some(m) = meta {
            gen = u64_at(m, M_GEN);
            let undo_len = u32_at(m, M_UNDO_LEN) as usize;
            let t = usize::from(m[M_UNDO_TAIL_LEN]);
            if undo_len == body.len() && t > 0 && t <= MAX_TAIL && t <= undo_len {
                body[undo_len - t..].copy_from_slice(&m[M_UNDO_TAIL..M_UNDO_TAIL + t]);
            }
            // Only an intent naming this very block counts (see the module docs).
            intent = parse_intent(m).and_then(|(i, g, staged_len)| {
                (g == gen && staged_len as usize == body.len()).then_some(i)
            });
        }
        let h = BlockHeader {
            end_hour: hour,
            len: body.len() as u32,
            ..header
        };
        let mut block = Vec::with_capacity(HEADER_LEN + body.len() + 1);
        let mut hb = [0u8; HEADER_LEN];
        h.emit(&mut hb);
        block.extend_from_slice(&hb);
        block.extend_from_slice(&body);
        block.push(MAGIC_END);
        out.push(Recovered {
            slot: i,
            gen,
            block,
            intent,
        });
    }
    out.sort_by_key(|r| r.gen);
    out
}

/// The bytes to append for a recovered `block` (as [`recover`] returns it): the block itself,
/// or, for a zstd block without a key whose body Mars's Python decoder would cut short
/// (longer than [`ZSTD_MAX_BODY`]: left by Mars, whose 4/5 guard lets a block reach about
/// 123 000 compressed bytes, or by a version of this crate before the cap), the same text
/// recompressed at zstd `level` (at most [`RECUT_MAX_LEVEL`]) into blocks whose bodies it
/// reads whole. Never panics, whatever the bytes.
///
/// Design: only such a block is cut anew; every other one is appended as it is.
/// - A keyed block cannot be: Mars's (magic `0x0C`) is TEA under a key agreed between the
///   crashed process's ephemeral private key, gone with it, and the server's public key; a
///   writer holds only that public key, so only the server's private key reads the block.
///   This crate's keyed staged blocks (`0x4C`) are ChaCha20 under a session key only the
///   private key's holder can unwrap, and Mars's tools skip them anyway.
/// - The first new block keeps the recovered block's sequence number and the others carry 0,
///   which decoders leave out of their gap check (as for sync blocks and tips), so the cut
///   adds no false "missing" range. Hours and magic are the block's.
/// - The text is cut at line ends near the middle of each piece (into halves until each
///   compresses below the cap), so a piece that fails to decode costs whole lines.
/// - The new blocks are used only if together they are no longer than the block. A write
///   intent recorded for the append (see the module docs) names the length and CRC of the
///   bytes appended, and recovery believes it only for a copy no longer than the block; a
///   longer one would be appended again after a crash in the middle. Lines of text always
///   compress that well; a block whose text does not stays as it is.
/// - A body that does not decode (damaged), or whose text would pass [`RECUT_MAX_TEXT`], is
///   appended as it is: what Mars's decoder reads of it is all there was before, and
///   `phobos-xlog decode` reads it whole.
pub(crate) fn mars_readable(block: &[u8], level: i32) -> std::borrow::Cow<'_, [u8]> {
    recut_for_mars(block, level).map_or(std::borrow::Cow::Borrowed(block), std::borrow::Cow::Owned)
}

fn recut_for_mars(block: &[u8], level: i32) -> Option<Vec<u8>> {
    let v = BlockView::parse(block).ok()?;
    let magic = async_magic(Compression::Zstd, Encryption::None);
    if v.header.magic != magic || v.body.len() <= ZSTD_MAX_BODY {
        return None;
    }
    let text = zstd_decompress_capped(v.body, RECUT_MAX_TEXT)?;
    let mut c = BlockCompressor::new(Compression::Zstd, level.min(RECUT_MAX_LEVEL)).ok()?;
    let mut bodies = Vec::new();
    cut_and_compress(&text, &mut c, &mut bodies)?;
    let len: usize = bodies.iter().map(|b| HEADER_LEN + b.len() + 1).sum();
    if len > block.len() {
        return None;
    }
    let mut out = Vec::with_capacity(len);
    for (i, body) in bodies.iter().enumerate() {
        let h = BlockHeader {
            seq: if i == 0 { v.header.seq } else { 0 },
            len: body.len() as u32,
            ..v.header
        };
        let mut hb = [0u8; HEADER_LEN];
        h.emit(&mut hb);
        out.extend_from_slice(&hb);
        out.extend_from_slice(body);
        out.push(MAGIC_END);
    }
    Some(out)
}

/// Compresses `text` into zstd bodies of at most [`ZSTD_MAX_BODY`] bytes each, in order,
/// halving it at a line end until each piece fits. `None` if compression fails.
fn cut_and_compress(text: &[u8], c: &mut BlockCompressor, out: &mut Vec<Vec<u8>>) -> Option<()> {
    let mut body = Vec::new();
    c.compress_block(text, &mut body).ok()?;
    if body.len() <= ZSTD_MAX_BODY {
        out.push(body);
        return Some(());
    }
    // Any 64 KiB compresses below the cap, so a piece this long is at least 64 KiB: each cut
    // leaves between a quarter and three quarters of it on each side.
    let (lo, mid, hi) = (text.len() / 4, text.len() / 2, text.len() * 3 / 4);
    let before = text[lo..mid]
        .iter()
        .rposition(|&b| b == b'\n')
        .map(|p| lo + p + 1);
    let after = text[mid..hi]
        .iter()
        .position(|&b| b == b'\n')
        .map(|p| mid + p + 1);
    let cut = match (before, after) {
        (Some(b), Some(a)) if mid - b <= a - mid => b,
        (_, Some(a)) => a,
        (Some(b), None) => b,
        (None, None) => mid,
    };
    cut_and_compress(&text[..cut], c, out)?;
    cut_and_compress(&text[cut..], c, out)
}

/// The most text a recovered block is decompressed to for [`mars_readable`]: a 150 KiB body
/// of log lines holds a few MiB at most.
const RECUT_MAX_TEXT: usize = 16 << 20;

/// The highest zstd level a recovered block is cut anew at ([`mars_readable`]).
///
/// Design: the cut runs at open, on the thread building the writer, over text of the block's
/// (up to [`RECUT_MAX_TEXT`], untrusted). Levels up to 15 (zstd's greedy and lazy strategies)
/// stay cheap, levels from 16 (btopt, btultra) are slower by an order of magnitude or more:
/// 16 MB of log text took 0.22 s at 15 and 5.4 s at 16 (`release`, this machine), 0.5 MB 0.03 s
/// at 15 and 0.93 s at 19, for a gain of a few per cent.
pub(crate) const RECUT_MAX_LEVEL: i32 = 15;

/// The intent in `m` with the generation and staged body length it is bound to, if the flag
/// is set and the record's CRC matches.
fn parse_intent(m: &[u8]) -> Option<(Intent, u64, u32)> {
    if m[M_INTENT] != 1 {
        return None;
    }
    let n = usize::from(u16::from_le_bytes([m[M_NAME_LEN], m[M_NAME_LEN + 1]]));
    if n > MAX_NAME || intent_crc(m, n) != u32_at(m, M_INTENT_CRC) {
        return None;
    }
    let name = std::str::from_utf8(m.get(M_NAME..M_NAME + n)?).ok()?;
    // Only a plain file name is accepted: the bytes are untrusted.
    if name.is_empty() || name.contains('/') || name.contains('\\') || name.starts_with('.') {
        return None;
    }
    let intent = Intent {
        in_cache: m[M_DIR] == 1,
        name: name.to_owned(),
        offset: u64_at(m, M_OFFSET),
        written: match u32_at(m, M_WRITTEN_LEN) {
            0 => None,
            len => Some((len, u32_at(m, M_WRITTEN_CRC))),
        },
        file_id: u64_at(m, M_INTENT_FILE_ID),
    };
    Some((
        intent,
        u64_at(m, M_INTENT_GEN),
        u32_at(m, M_INTENT_STAGED_LEN),
    ))
}

fn u64_at(m: &[u8], off: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&m[off..off + 8]);
    u64::from_le_bytes(b)
}

fn u32_at(m: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([m[off], m[off + 1], m[off + 2], m[off + 3]])
}

#[cfg(test)]
mod tests;
