//! The decoder: walks a file the way Mars's official Python decoder does and turns each block
//! into text, reporting damage, gaps and bad keys inline (format doc §9).
//!
//! [`Decoder::events`] yields what happened, block by block, as [`Event`]s;
//! [`Decoder::decode`] renders them to the exact bytes the Python decoder writes.
//!
//! The walk:
//! 1. Find the start: the first offset holding a recognised magic where two consecutive blocks
//!    check out ([`StartRule::TwoGoodBlocks`], the Python rule; reaching the end of the input
//!    after the first counts) or one ([`StartRule::OneGoodBlock`], lenient). None: no output.
//! 2. At each offset, if the bytes are not a good block, scan forward for the next good one and
//!    report [`Event::Resync`] with the reason the first check failed; none left: stop quietly.
//!    Which candidate the scan accepts is the [`ResyncRule`] (below).
//! 3. Report sequence gaps ([`Event::SeqGap`]), then the block's text ([`Event::Text`]) or why
//!    it has none ([`Event::Failed`]: decompression error, missing or wrong key).
//!
//! Design: resync. The scan starts inside damaged data, usually inside a block's compressed
//! body, where about one byte in seventeen looks like a magic. The Python decoder takes the
//! first candidate that passes the structural check alone; a lucky zero at the end of a
//! random length then makes compressed bytes a "block" (its text is junk or a decompress
//! error) and everything up to its end is skipped. Two things keep that cheap here:
//!
//! - Lengths are bounded by what writers produce for the magic ([`Magic::max_length`]): a
//!   false block swallows at most 150 KiB, never megabytes. (One damaged trailer in a 33 MB
//!   file lost 300 000 of 500 000 lines to false blocks of 3 MB and more.)
//! - A block that is not confirmed by what follows it and reaches past a confirmed block is
//!   damage ([`BlockError::RunsOverBlock`]), at the expected offset as well as after a
//!   resync. A bit flip in a length field that lands on a zero byte (a later block's key
//!   field has 64) made the Python decoder skip up to 150 KiB of real blocks.
//! - [`ResyncRule::Confirmed`] (`phobos-xlog decode --lenient`) accepts a candidate only if
//!   what follows it confirms it ([`is_confirmed`]: a good block, the end of the file, or a
//!   block cut by the end), as the start rule asks for two good blocks. A false block is
//!   then about as unlikely as a false start, and the damage costs only the damaged block.
//!
//! The default, [`ResyncRule::Mars`], keeps Mars's choice wherever it costs no real block: it
//! takes the first good block with a Mars magic, as Mars does, unless that block reaches past
//! the next confirmed block, and it asks confirmation of candidates with Phobos's magics
//! (`0x27`, `0x2C`, `0x47`, `0x4C`), which Mars's decoder never stops on. Our promise is
//! Mars's output, damage reports included, and Mars's output does contain false blocks: in the
//! `07_corrupted` vector the scan stops on the damaged block's seq byte (5, read as the legacy
//! magic `0x05`), decodes that 11-byte "block" to a decompress error and reports the seq
//! ranges it implies. Its successor is junk, so the confirmed rule would print something else;
//! but it ends before the next real block, so the default prints it, as Mars does.
//!
//! [`Magic::max_length`]: crate::format::Magic::max_length
//! [`is_confirmed`]: crate::format::is_confirmed

use std::borrow::Cow;
use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

use chacha20::cipher::{KeyIvInit, StreamCipher};
use chacha20::ChaCha20;
use phobos_plugin_api::cipher::HEADER_KEY_LEN;
use phobos_plugin_api::{CipherError, CipherKind, LogCipher};

use crate::body::{self, BodyError};
use crate::format::{
    check_block, find_block_start, is_confirmed, Block, BlockError, Compression, Encryption,
    MagicSet,
};
use crate::guarded::{self, GuardedDecryptor};
use crate::mmap3::{self, Mmap3Error};

/// Decodes xlog files and `.mmap3` staging files. Cheap to share; holds ciphers and options.
#[derive(Clone, Debug, Default)]
pub struct Decoder {
    mars: Option<Arc<dyn LogCipher>>,
    authenticated: Option<Arc<dyn LogCipher>>,
    /// Why a cipher given to the builder could not be used (its `kind` panicked): the error
    /// of every encrypted block that has no cipher for its kind.
    unusable: Option<CipherError>,
    options: DecodeOptions,
}

impl Decoder {
    /// A decoder without keys and with Python-compatible options.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts configuring a decoder.
    pub fn builder() -> DecoderBuilder {
        DecoderBuilder::default()
    }

    /// Whether any cipher was given.
    pub fn has_ciphers(&self) -> bool {
        self.mars.is_some() || self.authenticated.is_some() || self.unusable.is_some()
    }

    /// The options in force.
    pub fn options(&self) -> DecodeOptions {
        self.options
    }

    /// Walks `input` (a whole `.xlog` file) and yields what it finds, in file order.
    pub fn events<'a>(&'a self, input: &'a [u8]) -> Events<'a> {
        Events {
            decoder: self,
            input,
            state: State::Start,
            last_seq: 0,
            queue: VecDeque::new(),
            session: None,
            confirmed: None,
        }
    }

    /// Decodes a whole `.xlog` file to the text Mars's official Python decoder produces
    /// (including its `[F]decode_log_file.py …` lines for damage, gaps and failed blocks).
    pub fn decode(&self, input: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(input.len().saturating_mul(3).min(64 << 20));
        self.decode_into(input, &mut out);
        out
    }

    /// Like [`decode`](Self::decode), appending to `out`, and counting what happened.
    pub fn decode_into(&self, input: &[u8], out: &mut Vec<u8>) -> Summary {
        let mut summary = Summary::default();
        for event in self.events(input) {
            summary.record(&event);
            event.render(out);
        }
        summary
    }

    /// Decodes a `.mmap3` staging file: the block in progress (Mars's layout: at offset 0;
    /// `phobos-xlog`'s: one per used slot) is cut out (header plus the bytes its length field
    /// covers), closed with a trailer and decoded. See [`mmap3::recovered_blocks`].
    ///
    /// # Errors
    ///
    /// [`Mmap3Error`] when the file holds no block in progress.
    pub fn decode_mmap3(&self, input: &[u8]) -> Result<Vec<u8>, Mmap3Error> {
        let block = mmap3::recovered_blocks(input, self.options.magics)?;
        Ok(self.decode(&block))
    }
}

/// Configures a [`Decoder`].
///
/// ```
/// use std::sync::Arc;
/// use phobos_xlog_decode::{Decoder, StartRule};
///
/// let cipher = phobos_cipher_mars::MarsCipher::from_private_key_hex(
///     "b404e0f7d50323e5327c23603878c594189d63e76e4550fdea108b9ea41d3885",
/// )
/// .unwrap();
/// let decoder = Decoder::builder()
///     .cipher(Arc::new(cipher))
///     .start_rule(StartRule::OneGoodBlock)
///     .build();
/// assert!(decoder.decode(b"not a log").is_empty());
/// ```
#[derive(Clone, Debug, Default)]
pub struct DecoderBuilder {
    inner: Decoder,
}

impl DecoderBuilder {
    /// Adds a cipher for reading encrypted blocks; it serves the magics of its
    /// [`kind`](LogCipher::kind) (Mars's `0x07`/`0x0C`, or the authenticated `0x27`/`0x2C`),
    /// replacing an earlier cipher of the same kind. Kinds this decoder does not know are
    /// treated as authenticated.
    ///
    /// The cipher's calls are guarded: a panic in one (an in-process plugin's bug) fails the
    /// block being decrypted, with `log cipher "<name>" panicked: <message>` on its
    /// `decompress err` line, and the next block is decrypted afresh. If `kind` panics, the
    /// cipher is not used and every encrypted block without a cipher for its kind fails with
    /// that error instead of "no private key was given".
    pub fn cipher(mut self, cipher: Arc<dyn LogCipher>) -> Self {
        match phobos_plugin_api::panics::cipher_kind(&*cipher) {
            Ok(CipherKind::MarsCompatible) => self.inner.mars = Some(cipher),
            Ok(_) => self.inner.authenticated = Some(cipher),
            Err(e) => self.inner.unusable = Some(e),
        }
        self
    }

    /// How the start of the log is found (default: the Python rule, two good blocks).
    pub fn start_rule(mut self, rule: StartRule) -> Self {
        self.inner.options.start = rule;
        self
    }

    /// Which magics are recognised (default: Mars's plus Phobos's authenticated ones).
    pub fn magic_set(mut self, set: MagicSet) -> Self {
        self.inner.options.magics = set;
        self
    }

    /// Which block a resync after damage accepts (default: [`ResyncRule::Mars`]).
    pub fn resync_rule(mut self, rule: ResyncRule) -> Self {
        self.inner.options.resync = rule;
        self
    }

    /// Sets all options at once.
    pub fn options(mut self, options: DecodeOptions) -> Self {
        self.inner.options = options;
        self
    }

    /// Finishes the decoder.
    pub fn build(self) -> Decoder {
        self.inner
    }
}

/// Decoder options. The defaults reproduce the official Python decoder on Mars files.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct DecodeOptions {
    /// How the first block is found.
    pub start: StartRule,
    /// Which magics are recognised.
    pub magics: MagicSet,
    /// Which block a resync after damage accepts.
    pub resync: ResyncRule,
}

impl DecodeOptions {
    /// Options with the given start rule and magic set, and the default resync rule.
    pub fn new(start: StartRule, magics: MagicSet) -> Self {
        Self {
            start,
            magics,
            resync: ResyncRule::default(),
        }
    }

    /// These options with another resync rule.
    pub fn with_resync_rule(self, resync: ResyncRule) -> Self {
        Self { resync, ..self }
    }
}

/// How the decoder finds where the log starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StartRule {
    /// The Python decoder's rule: two consecutive good blocks (or one that ends exactly at the
    /// end of the file). A file of one complete block followed by a partial one decodes to
    /// nothing (format doc §9.2).
    #[default]
    TwoGoodBlocks,
    /// Lenient: one good block is enough, so the complete block before a partial one is kept.
    OneGoodBlock,
}

impl StartRule {
    fn count(self) -> usize {
        match self {
            Self::TwoGoodBlocks => 2,
            Self::OneGoodBlock => 1,
        }
    }
}

/// Which block the scan after damaged bytes accepts (see the module docs, "Design: resync").
/// Both rules skip lengths no writer produces ([`Magic::max_length`]).
///
/// [`Magic::max_length`]: crate::format::Magic::max_length
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ResyncRule {
    /// The Python decoder's rule for Mars's magics: the first good block, except one that
    /// would reach past the next [confirmed](crate::format::is_confirmed) block (it would
    /// swallow a real block). A candidate with one of Phobos's magics, which that decoder does
    /// not scan for, must be confirmed. Mars files decode to Mars's output, damage reports
    /// included, except where Mars's decoder skips real blocks.
    #[default]
    Mars,
    /// Every candidate must be [confirmed](crate::format::is_confirmed) by what follows it
    /// (a good block, the end of the file, or a block cut by the end). Loses the fewest lines
    /// after damage; the damage reports can differ from Mars's.
    Confirmed,
}

/// One thing the decoder found, in file order.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event<'a> {
    /// The bytes at the expected offset were not a block; `skipped` bytes later one was found.
    Resync {
        /// How many bytes were skipped.
        skipped: usize,
        /// Why the block check failed at the first offset.
        reason: BlockError,
    },
    /// Sequence numbers `first..=last` are missing (`last < first` is reported as is, as the
    /// Python decoder does when the sequence goes backwards).
    SeqGap {
        /// The first missing number (previous + 1).
        first: u32,
        /// The last missing number (this block's − 1).
        last: u32,
    },
    /// A block and its text.
    Text {
        /// The block.
        block: Block,
        /// Its text: decompressed and decrypted as its magic says.
        text: Cow<'a, [u8]>,
    },
    /// A block whose body could not be turned into text.
    Failed {
        /// The block.
        block: Block,
        /// Why.
        error: BodyError,
    },
}

impl Event<'_> {
    /// Appends the event's bytes in the Python decoder's output format.
    pub fn render(&self, out: &mut Vec<u8>) {
        use std::io::Write as _;
        // Writing into a Vec cannot fail.
        let _ = match self {
            Self::Resync { skipped, reason } => writeln!(
                out,
                "[F]decode_log_file.py decode error len={skipped}, result:{reason} "
            ),
            Self::SeqGap { first, last } => {
                writeln!(
                    out,
                    "[F]decode_log_file.py log seq:{first}-{last} is missing"
                )
            }
            Self::Text { text, .. } => {
                out.extend_from_slice(text);
                Ok(())
            }
            Self::Failed { error, .. } => {
                writeln!(out, "[F]decode_log_file.py decompress err, {error}")
            }
        };
    }
}

/// Counts of what a decode met.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Summary {
    /// Blocks decoded to text.
    pub blocks: usize,
    /// Blocks whose body failed (decompression, key, integrity).
    pub failed_blocks: usize,
    /// Resyncs after damaged bytes.
    pub resyncs: usize,
    /// Bytes skipped by resyncs.
    pub skipped_bytes: usize,
    /// Sequence gaps reported.
    pub seq_gaps: usize,
    /// Encrypted blocks met (decoded or failed).
    pub encrypted_blocks: usize,
    /// Encrypted blocks that failed (no key, wrong key, damage).
    pub failed_encrypted_blocks: usize,
    /// Encrypted blocks that decoded, but to no text or to bytes no log holds (control
    /// characters other than tab, line feed, carriage return and escape): what a wrong key
    /// gives when the bytes it decrypts to happen to inflate (a raw deflate stream has no
    /// check, and Mars never ends its streams).
    pub garbled_encrypted_blocks: usize,
}

impl Summary {
    /// Counts one event.
    pub fn record(&mut self, event: &Event<'_>) {
        match event {
            Event::Resync { skipped, .. } => {
                self.resyncs += 1;
                self.skipped_bytes += skipped;
            }
            Event::SeqGap { .. } => self.seq_gaps += 1,
            Event::Text { block, text } => {
                self.blocks += 1;
                if block.magic.encryption() != Encryption::None {
                    self.encrypted_blocks += 1;
                    if is_garbled(text) {
                        self.garbled_encrypted_blocks += 1;
                    }
                }
            }
            Event::Failed { block, .. } => {
                self.failed_blocks += 1;
                if block.magic.encryption() != Encryption::None {
                    self.encrypted_blocks += 1;
                    self.failed_encrypted_blocks += 1;
                }
            }
        }
    }

    /// Whether encrypted blocks were met and none of them decoded to text (each failed or
    /// was [garbled](Self::garbled_encrypted_blocks)): with a key given, the key is most
    /// likely wrong (Mars's TEA has no integrity check to say so directly).
    pub fn all_encrypted_blocks_failed(&self) -> bool {
        self.encrypted_blocks > 0
            && self.failed_encrypted_blocks + self.garbled_encrypted_blocks == self.encrypted_blocks
    }

    /// Whether any block, good or failed, was found.
    pub fn found_blocks(&self) -> bool {
        self.blocks + self.failed_blocks > 0
    }
}

/// Whether decoded block text cannot be log text: empty, or holding a control character other
/// than tab, line feed, carriage return and escape (which no log line holds, in any encoding,
/// and which random bytes hold about once in eleven).
fn is_garbled(text: &[u8]) -> bool {
    text.is_empty()
        || text
            .iter()
            .any(|&b| b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r' | 0x1b))
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} blocks decoded, {} failed, {} resyncs ({} bytes skipped), {} sequence gaps",
            self.blocks, self.failed_blocks, self.resyncs, self.skipped_bytes, self.seq_gaps
        )
    }
}

/// The iterator returned by [`Decoder::events`].
pub struct Events<'a> {
    decoder: &'a Decoder,
    input: &'a [u8],
    state: State,
    last_seq: u32,
    queue: VecDeque<Event<'a>>,
    /// The decryptor of the last session seen: blocks of one session share a header key.
    session: Option<Session>,
    /// The last search for a confirmed block: `(from, found)`. No confirmed block starts in
    /// `from..found` (or after `from`, if none was found), so the answer holds for every start
    /// in between; without this, resyncs in a long damaged stretch would rescan it each time.
    confirmed: Option<(usize, Option<Block>)>,
}

impl fmt::Debug for Events<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Events")
            .field("state", &self.state)
            .field("last_seq", &self.last_seq)
            .finish_non_exhaustive()
    }
}

impl<'a> Iterator for Events<'a> {
    type Item = Event<'a>;

    fn next(&mut self) -> Option<Event<'a>> {
        loop {
            if let Some(event) = self.queue.pop_front() {
                return Some(event);
            }
            match self.state {
                State::Done => return None,
                State::Start => {
                    let count = self.decoder.options.start.count();
                    self.state = match find_block_start(self.input, 0, count, self.magics()) {
                        Some(at) => State::At(at),
                        None => State::Done,
                    };
                }
                State::At(at) => self.step(at),
            }
        }
    }
}

impl<'a> Events<'a> {
    fn magics(&self) -> MagicSet {
        self.decoder.options.magics
    }

    /// Handles the block at `at` (or the next good one), queueing its events.
    fn step(&mut self, at: usize) {
        if at >= self.input.len() {
            self.state = State::Done;
            return;
        }
        let checked = check_block(self.input, at, self.magics()).and_then(|b| self.overrun(b));
        let block = match checked {
            Ok(block) => block,
            Err(reason) => {
                let Some(block) = self.resync_target(at) else {
                    self.state = State::Done;
                    return;
                };
                self.queue.push_back(Event::Resync {
                    skipped: block.offset - at,
                    reason,
                });
                block
            }
        };
        self.state = State::At(block.end);

        let seq = u32::from(block.seq);
        if seq != 0 && seq != 1 && self.last_seq != 0 && seq != self.last_seq + 1 {
            self.queue.push_back(Event::SeqGap {
                first: self.last_seq + 1,
                last: seq - 1,
            });
        }
        if seq != 0 {
            self.last_seq = seq;
        }

        let event = match self.body_text(&block) {
            Ok(text) => Event::Text { block, text },
            Err(error) => Event::Failed { block, error },
        };
        self.queue.push_back(event);
    }

    /// `block`, or [`BlockError::RunsOverBlock`] if it is not confirmed and a confirmed block
    /// starts inside it: a damaged length field that happens to end on a zero byte (the key
    /// field of a later block has 64 of them) would otherwise swallow the blocks in between.
    fn overrun(&mut self, block: Block) -> Result<Block, BlockError> {
        if is_confirmed(self.input, &block, self.magics()) {
            return Ok(block);
        }
        match self.next_confirmed(block.offset + 1) {
            Some(next) if next.offset < block.end => Err(BlockError::RunsOverBlock {
                length: block.length,
                next: next.offset,
            }),
            _ => Ok(block),
        }
    }

    /// The block at or after `from` that the resync rule accepts.
    fn resync_target(&mut self, from: usize) -> Option<Block> {
        let confirmed = self.next_confirmed(from);
        if self.decoder.options.resync == ResyncRule::Confirmed {
            return confirmed;
        }
        // Mars's rule: the first good block with a Mars magic, unless it reaches past the next
        // confirmed block (it would swallow a real block); Phobos's magics need confirmation.
        let (input, set) = (self.input, self.magics());
        let limit = confirmed.map_or(input.len(), |b| b.offset);
        let mut at = from;
        while let Some(candidate) = find_block_start(input, at, 1, set) {
            if candidate >= limit {
                break;
            }
            let block = check_block(input, candidate, set).ok()?;
            if block.magic.is_mars() && block.end <= limit {
                return Some(block);
            }
            at = candidate + 1;
        }
        confirmed
    }

    /// The first good block at or after `from` that what follows it confirms
    /// ([`is_confirmed`]).
    fn next_confirmed(&mut self, from: usize) -> Option<Block> {
        if let Some((start, found)) = self.confirmed {
            if start <= from && found.is_none_or(|b| from <= b.offset) {
                return found;
            }
        }
        let (input, set) = (self.input, self.magics());
        let mut at = from;
        let found = loop {
            let Some(candidate) = find_block_start(input, at, 1, set) else {
                break None;
            };
            match check_block(input, candidate, set) {
                Ok(block) if is_confirmed(input, &block, set) => break Some(block),
                _ => at = candidate + 1,
            }
        };
        self.confirmed = Some((from, found));
        found
    }

    fn body_text(&mut self, block: &Block) -> Result<Cow<'a, [u8]>, BodyError> {
        let body = block.body(self.input);
        let plain: Cow<'a, [u8]> = match block.magic.encryption() {
            Encryption::None => Cow::Borrowed(body),
            Encryption::Mars => Cow::Owned(self.decrypt(block, CipherKind::MarsCompatible)?),
            Encryption::Authenticated => {
                Cow::Owned(self.decrypt(block, CipherKind::Authenticated)?)
            }
            Encryption::Staged => {
                let plain = self.decrypt_staged(block)?;
                if plain.is_empty() {
                    // A staged block cut before its first line holds no text.
                    return Ok(Cow::Owned(Vec::new()));
                }
                Cow::Owned(plain)
            }
        };
        match block.magic.compression() {
            Compression::None => Ok(plain),
            Compression::Zlib => body::inflate_raw(&plain).map(Cow::Owned),
            Compression::ChunkedZlib => body::legacy_chunks(&plain).map(Cow::Owned),
            Compression::Zstd => body::zstd_unterminated(&plain).map(Cow::Owned),
        }
    }

    /// Unwraps a staged-stream body's session key and decrypts the stream after the prefix.
    fn decrypt_staged(&mut self, block: &Block) -> Result<Vec<u8>, BodyError> {
        let body = block.body(self.input);
        let (&kind, rest) = body.split_first().ok_or(BodyError::StagedPrefix)?;
        let (&n, rest) = rest.split_first().ok_or(BodyError::StagedPrefix)?;
        let wrapped = rest.get(..usize::from(n)).ok_or(BodyError::StagedPrefix)?;
        let rest = &rest[usize::from(n)..];
        let (nonce, data) = rest
            .split_first_chunk::<8>()
            .ok_or(BodyError::StagedPrefix)?;
        let kind = match kind {
            1 => CipherKind::MarsCompatible,
            2 => CipherKind::Authenticated,
            _ => return Err(BodyError::StagedPrefix),
        };
        let key = self.decrypt_bytes(block, kind, wrapped)?;
        let key: [u8; 32] = key.try_into().map_err(|_| BodyError::StagedPrefix)?;
        let mut iv = [0u8; 12];
        iv[..8].copy_from_slice(nonce);
        let mut plain = data.to_vec();
        ChaCha20::new(&key.into(), &iv.into()).apply_keystream(&mut plain);
        Ok(plain)
    }

    fn decrypt(&mut self, block: &Block, kind: CipherKind) -> Result<Vec<u8>, BodyError> {
        let body = block.body(self.input);
        self.decrypt_bytes(block, kind, body)
    }

    /// Decrypts `body` (a whole block body for the cipher) with the session of `block`'s key.
    fn decrypt_bytes(
        &mut self,
        block: &Block,
        kind: CipherKind,
        body: &[u8],
    ) -> Result<Vec<u8>, BodyError> {
        let cipher = match kind {
            CipherKind::MarsCompatible => self.decoder.mars.as_ref(),
            _ => self.decoder.authenticated.as_ref(),
        };
        let Some(cipher) = cipher else {
            return Err(match &self.decoder.unusable {
                Some(e) => BodyError::Cipher(e.clone()),
                None => BodyError::MissingKey {
                    magic: block.magic.byte(),
                },
            });
        };
        let key: [u8; HEADER_KEY_LEN] = block
            .key_field(self.input)
            .try_into()
            .map_err(|_| BodyError::Cipher(CipherError::BadHeaderKey))?;
        let reuse = self
            .session
            .as_ref()
            .is_some_and(|s| s.kind == kind && s.header_key == key);
        if !reuse {
            self.session = None;
        }
        let session = match &mut self.session {
            Some(session) => session,
            None => {
                let decryptor = match guarded::new_decryptor(&**cipher, &key) {
                    guarded::Made::Decryptor(d) => Ok(d),
                    guarded::Made::Failed(e) => Err(e),
                    // Not kept for the session: the next block asks the cipher again.
                    guarded::Made::Panicked(e) => return Err(BodyError::Cipher(e)),
                };
                self.session.insert(Session {
                    kind,
                    header_key: key,
                    decryptor,
                })
            }
        };
        let decryptor = session
            .decryptor
            .as_mut()
            .map_err(|e| BodyError::Cipher(e.clone()))?;
        let mut out = Vec::with_capacity(body.len());
        let res = decryptor.decrypt_block(body, &mut out);
        if decryptor.has_panicked() {
            // Its state may be half-changed: the next block gets a new decryptor.
            self.session = None;
        }
        res.map_err(BodyError::Cipher)?;
        Ok(out)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Start,
    At(usize),
    Done,
}

struct Session {
    kind: CipherKind,
    header_key: [u8; HEADER_KEY_LEN],
    decryptor: Result<GuardedDecryptor, CipherError>,
}

#[cfg(test)]
mod tests {
    use super::is_garbled;

    #[test]
    fn log_text_in_any_encoding_is_not_garbled_junk_and_nothing_are() {
        assert!(!is_garbled(
            b"[I][2026-11-26 +8.0 15:00:00.000][1, 2][tag][x.cc, f, 7][hi\tthere\r\n"
        ));
        assert!(!is_garbled("中文日志\n".as_bytes()));
        // GBK bytes are not UTF-8 but are log text all the same.
        assert!(!is_garbled(&[0xd6, 0xd0, 0xce, 0xc4, b'\n']));
        assert!(!is_garbled(b"\x1b[31mred\x1b[0m\n"));
        assert!(is_garbled(b""));
        assert!(is_garbled(&[0x9c, 0x03, 0x41, 0x00, 0x17]));
        assert!(is_garbled(b"almost text\x01"));
    }
}
