//! Decoder library (and the `phobos-xlog` CLI) for xlog files, written from the format
//! document alone so that it can serve as the test oracle for the `phobos-xlog` writer.
//!
//! It reads what Tencent Mars's xlog writes (and what `phobos-xlog` writes in its
//! Mars-compatible and authenticated modes) and prints exactly what Mars's official Python
//! decoder prints, damage reports included:
//!
//! - **Framing** ([`format`](mod@format)): the 73-byte header, the legacy 13-byte header of magics
//!   `0x03`–`0x05` (Python semantics), the Python decoder's structural check and its resync
//!   scan; the start needs two good blocks unless [`StartRule::OneGoodBlock`] is chosen.
//! - **Bodies** ([`body`]): raw inflate and zstd frames that were never finished, the legacy
//!   chunked format.
//! - **Encryption**: through any [`LogCipher`](phobos_plugin_api::LogCipher): Mars's
//!   ECDH + TEA (`phobos-cipher-mars`) for magics `0x07`/`0x0C`, an authenticated cipher
//!   (`phobos-cipher-modern`) for Phobos's magics `0x27`/`0x2C`, and the staged blocks a keyed
//!   Phobos writer leaves after a crash (`0x47`/`0x4C`: ChaCha20 under a session key wrapped
//!   by either cipher). A missing or wrong key is reported on the block's line and decoding
//!   goes on; so is a cipher that panics (its calls are guarded, as in the writer).
//! - **Staging files** ([`mmap3`]): the block in progress in a `.mmap3` file.
//! - **Output** ([`Decoder::decode`]): the text, plus the Python decoder's lines
//!   `[F]decode_log_file.py decode error len=…, result:… `, `… log seq:…-… is missing` and
//!   `… decompress err, …`.
//!
//! Deliberate differences:
//! - The Python decoder keeps at most 1 000 000 bytes of text per zstd block (a quirk, format
//!   doc §9.1); we decode the whole block (up to [`body::MAX_TEXT_PER_BLOCK`], a bound
//!   against decompression bombs).
//! - A block whose length is larger than any writer produces for its magic
//!   ([`Magic::max_length`]: 150 KiB of staging buffer for async blocks, a 16 KiB line for
//!   sync ones) is damage, not a block: after damage, the Python decoder's scan can take bytes
//!   inside compressed data for a block megabytes long and skip all of it. Files that Mars
//!   wrote never hold one, so their text is the same; only damaged files can differ.
//! - After damage, a candidate block with one of Phobos's magics must be confirmed by the
//!   block after it; [`ResyncRule::Confirmed`] asks that of every candidate, losing the
//!   fewest lines (see [`decoder`]'s "Design: resync").
//!
//! What it deliberately does not do: write logs (that is `phobos-xlog`), accept Mars's C
//! decoder's variants of the legacy magics `0x01`–`0x05`, or keep Python's exact exception
//! texts where Python prints its own internals (only the `decompress err, ` prefix and zlib's
//! reasons are reproduced).
//!
//! Parsing untrusted bytes never panics; [`fuzzing`] has the entry points for fuzz targets.
//!
//! Feature `cli` (default) builds the `phobos-xlog` binary (`decode`, `append` through
//! `phobos-xlog`'s public API, `keygen`); depend with `default-features = false` for the
//! library alone, which needs neither the writer nor the cipher crates.
//!
//! ```
//! use phobos_xlog_decode::Decoder;
//!
//! // Two sync blocks (magic 0x08, seq 0) with plain-text bodies.
//! let mut file = Vec::new();
//! for line in [&b"hello\n"[..], b"world\n"] {
//!     file.extend([0x08, 0, 0, 9, 9]);
//!     file.extend((line.len() as u32).to_le_bytes());
//!     file.extend([0; 64]);
//!     file.extend(line);
//!     file.push(0);
//! }
//! assert_eq!(Decoder::new().decode(&file), b"hello\nworld\n");
//!
//! // Junk between blocks is reported the way Mars's decoder reports it.
//! let mut damaged = file.clone();
//! damaged.extend(b"??");
//! damaged.extend(&file[..80]); // the "hello" block again
//! assert_eq!(
//!     Decoder::new().decode(&damaged),
//!     b"hello\nworld\n\
//!       [F]decode_log_file.py decode error len=2, result:_buffer[160]:63 != MAGIC_NUM_START \n\
//!       hello\n"
//! );
//! ```

pub mod body;
pub mod decoder;
pub mod format;
pub mod fuzzing;
mod guarded;
pub mod mmap3;

pub use body::BodyError;
pub use decoder::{
    DecodeOptions, Decoder, DecoderBuilder, Event, Events, ResyncRule, StartRule, Summary,
};
pub use format::{Block, BlockError, Magic, MagicSet};
pub use mmap3::Mmap3Error;
