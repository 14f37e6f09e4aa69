//! Body decompression: raw inflate and zstd that accept unterminated streams, and the legacy
//! `0x05` chunk format, with the official Python decoder's semantics (format doc §3, §9.1).
//!
//! ```
//! use std::io::Write;
//!
//! // A raw deflate stream flushed but never finished, as Mars writes it.
//! let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
//! z.write_all(b"line one\n").unwrap();
//! z.flush().unwrap();
//! let body = z.get_ref().clone();
//! assert_eq!(phobos_xlog_decode::body::inflate_raw(&body).unwrap(), b"line one\n");
//! ```

use std::fmt;

use flate2::{Decompress, FlushDecompress, Status};
use phobos_plugin_api::CipherError;
use zstd::stream::raw::{Decoder as ZstdDecoder, InBuffer, Operation, OutBuffer};

/// Why a block's body could not be turned into text. `Display` is what follows
/// `decompress err, ` in the decoder's output line.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BodyError {
    /// Raw inflate failed. The text is zlib's reason when the backend gives one.
    Inflate(String),
    /// Inflated text would exceed [`MAX_TEXT_PER_BLOCK`].
    TooLarge,
    /// zstd failed; the text is zstd's error name.
    Zstd(String),
    /// A zstd body of length 0 (Python raises `StopIteration`, whose text is empty).
    EmptyZstd,
    /// A legacy `0x05` body ends inside a chunk length.
    LegacyChunk,
    /// The block is encrypted and no cipher for its kind was given.
    MissingKey {
        /// The block's magic.
        magic: u8,
    },
    /// The cipher refused the header key or the body.
    Cipher(CipherError),
    /// A staged-stream body (`0x47`/`0x4C`) is too short for its prefix, names an unknown
    /// cipher kind, or its wrapped key does not decrypt to 32 bytes.
    StagedPrefix,
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Inflate(reason) => write!(f, "Error -3 while decompressing: {reason}"),
            Self::TooLarge => write!(
                f,
                "decompressed block exceeds {MAX_TEXT_PER_BLOCK} bytes, block skipped"
            ),
            Self::Zstd(reason) => write!(f, "zstd decompress error: {reason}"),
            Self::EmptyZstd => Ok(()),
            // Python 2.7's `struct.error` text for a 1-byte tail.
            Self::LegacyChunk => f.write_str("unpack_from requires a buffer of at least 2 bytes"),
            Self::MissingKey { magic } => write!(
                f,
                "block (magic {magic:#04x}) is encrypted and no private key was given"
            ),
            Self::Cipher(e) => write!(f, "decryption failed: {e}"),
            Self::StagedPrefix => f.write_str("malformed staged-block key prefix"),
        }
    }
}

impl std::error::Error for BodyError {}

/// Inflates a raw deflate stream (no zlib header), stopping at the end of the input or of the
/// stream, like Python's `zlib.decompressobj(-15).decompress(body)`: a truncated stream
/// yields what decodes, invalid data is an error.
///
/// # Errors
///
/// [`BodyError::Inflate`] on invalid data, [`BodyError::TooLarge`] past
/// [`MAX_TEXT_PER_BLOCK`].
pub fn inflate_raw(body: &[u8]) -> Result<Vec<u8>, BodyError> {
    let mut inflater = Decompress::new(false);
    let mut out = Vec::with_capacity(body.len().saturating_mul(3).min(1 << 20));
    loop {
        if out.len() >= MAX_TEXT_PER_BLOCK {
            return Err(BodyError::TooLarge);
        }
        out.reserve(OUT_CHUNK);
        let consumed = inflater.total_in() as usize;
        let before_out = out.len();
        let status = inflater
            .decompress_vec(
                body.get(consumed..).unwrap_or(&[]),
                &mut out,
                FlushDecompress::None,
            )
            .map_err(|e| {
                let reason = match e.message() {
                    Some(LOST_REASON) => reason_on_slow_path(body),
                    other => other.map(str::to_owned),
                };
                BodyError::Inflate(reason.unwrap_or_else(|| "invalid deflate data".to_owned()))
            })?;
        if status == Status::StreamEnd {
            break;
        }
        // Done once all input is used and the last call had room to spare (a full output
        // buffer may mean more decoded bytes are pending).
        let room_left = out.len() < out.capacity();
        if inflater.total_in() as usize >= body.len() && room_left {
            break;
        }
        let progressed = inflater.total_in() as usize > consumed || out.len() > before_out;
        if !progressed && room_left {
            break;
        }
    }
    Ok(out)
}

/// What zlib-rs (0.6) says of an error its fast decoding loop found: that loop records the
/// reason ("invalid distance too far back", "invalid distance code", "invalid
/// literal/length code"), and the main loop then overwrites it with this.
const LOST_REASON: &str = "repeated call with bad state";

/// The reason zlib gives for invalid data in `body`, found again with the fast loop kept out
/// of the way (it runs only with at least 260 bytes of output room, so this decodes into 256 at
/// a time): the texts are zlib's own, as the Python decoder prints them. Runs only on a body
/// already known to be invalid.
fn reason_on_slow_path(body: &[u8]) -> Option<String> {
    let mut inflater = Decompress::new(false);
    let mut out = [0u8; 256];
    while inflater.total_out() <= MAX_TEXT_PER_BLOCK as u64 {
        let before = (inflater.total_in(), inflater.total_out());
        let input = body.get(before.0 as usize..).unwrap_or(&[]);
        match inflater.decompress(input, &mut out, FlushDecompress::None) {
            Err(e) => return e.message().map(str::to_owned),
            Ok(Status::StreamEnd) => return None,
            Ok(_) if (inflater.total_in(), inflater.total_out()) == before => return None,
            Ok(_) => {}
        }
    }
    None
}

/// Decompresses a zstd body that may end in the middle of a frame (Mars never closes its
/// frames), by driving the streaming decoder until the input is used up and no decoded bytes
/// are pending.
///
/// The Python decoder keeps only the first output chunk of
/// `read_from(reader, 100000, 1000000)`: python-zstandard reads `read_size` = 100 000 bytes of
/// the body, feeds them all to the decompressor and yields what they decode to, and `next()`
/// takes that one chunk. So it decodes only the first 100 000 bytes of a body and drops the
/// rest without an error. The shared format doc (§9.1) reads the quirk as a cap of 1 000 000
/// *output* bytes and calls it unreachable; that is wrong: a 150 KiB Mars block that
/// compresses badly, or a block of raw zstd blocks (Phobos's staged form, appended as it is
/// after a crash), passes 100 000 bytes. Phobos's writer keeps every zstd body below that
/// (`phobos_xlog`'s staging caps it, and its recovery cuts a longer keyless block left by
/// Mars or an older Phobos anew); Mars's own writer does not, and a keyed block cannot be
/// cut anew. We do not copy the loss: the whole block is decoded, up to
/// [`MAX_TEXT_PER_BLOCK`].
///
/// # Errors
///
/// [`BodyError::Zstd`] on invalid data, [`BodyError::EmptyZstd`] for an empty body,
/// [`BodyError::TooLarge`] past [`MAX_TEXT_PER_BLOCK`].
pub fn zstd_unterminated(body: &[u8]) -> Result<Vec<u8>, BodyError> {
    if body.is_empty() {
        return Err(BodyError::EmptyZstd);
    }
    let mut decoder = ZstdDecoder::new().map_err(|e| BodyError::Zstd(e.to_string()))?;
    decoder
        .set_parameter(zstd::stream::raw::DParameter::WindowLogMax(
            ZSTD_WINDOW_LOG_MAX,
        ))
        .map_err(|e| BodyError::Zstd(e.to_string()))?;
    let mut out: Vec<u8> = Vec::with_capacity(body.len().saturating_mul(4).min(1 << 20));
    let mut input = InBuffer::around(body);
    loop {
        if out.len() >= MAX_TEXT_PER_BLOCK {
            return Err(BodyError::TooLarge);
        }
        out.reserve(OUT_CHUNK);
        let before = (input.pos(), out.len());
        let pos = out.len();
        decoder
            .run(&mut input, &mut OutBuffer::around_pos(&mut out, pos))
            .map_err(|e| BodyError::Zstd(e.to_string()))?;
        let room_left = out.len() < out.capacity();
        if input.pos() >= body.len() && room_left {
            break;
        }
        if (input.pos(), out.len()) == before && room_left {
            break;
        }
    }
    Ok(out)
}

/// Reassembles a legacy `0x05` body (`u16 LE n, n bytes`, repeated; a chunk running past the
/// end is cut, as Python slicing does) and inflates the result.
///
/// # Errors
///
/// [`BodyError::LegacyChunk`] when one byte is left where a chunk length should be; the
/// errors of [`inflate_raw`].
pub fn legacy_chunks(body: &[u8]) -> Result<Vec<u8>, BodyError> {
    let mut joined = Vec::with_capacity(body.len());
    let mut rest = body;
    while !rest.is_empty() {
        let Some((len, after)) = rest.split_first_chunk::<2>() else {
            return Err(BodyError::LegacyChunk);
        };
        let n = usize::from(u16::from_le_bytes(*len)).min(after.len());
        joined.extend_from_slice(&after[..n]);
        rest = &after[n..];
    }
    inflate_raw(&joined)
}

/// The most text one block may inflate to. Python has no limit; we stop a decompression bomb
/// here (a real 150 KiB Mars block inflates to a few MB at most).
pub const MAX_TEXT_PER_BLOCK: usize = 256 << 20;

/// The largest zstd window accepted (16 MiB); Mars writes 64 KiB windows. Bounds the memory a
/// hostile frame header can make us allocate.
const ZSTD_WINDOW_LOG_MAX: u32 = 24;

const OUT_CHUNK: usize = 64 << 10;

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    /// Invalid bodies get zlib's own reasons, as the Python decoder prints them, including
    /// those found by zlib-rs's fast loop (which loses them: see [`LOST_REASON`]). The
    /// expected counts are C zlib 1.2.13's verdicts (through CPython's `zlib`) on the same
    /// 2,000 pseudo-random 200-byte bodies.
    #[test]
    fn junk_gets_the_reasons_c_zlib_gives() {
        let mut seed: u64 = 12345;
        let mut got = std::collections::BTreeMap::new();
        for _ in 0..2000 {
            let body: Vec<u8> = (0..200)
                .map(|_| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    (seed >> 33) as u8
                })
                .collect();
            let verdict = match inflate_raw(&body) {
                Ok(_) => "ok".to_owned(),
                Err(BodyError::Inflate(reason)) => reason,
                Err(other) => format!("{other:?}"),
            };
            *got.entry(verdict).or_insert(0) += 1;
        }
        let want: std::collections::BTreeMap<String, i32> = [
            ("invalid bit length repeat", 1),
            ("invalid block type", 499),
            ("invalid code -- missing end-of-block", 1),
            ("invalid code lengths set", 439),
            ("invalid distance code", 32),
            ("invalid distance too far back", 461),
            ("invalid literal/length code", 17),
            ("invalid stored block lengths", 491),
            ("too many length or distance symbols", 47),
            ("ok", 12),
        ]
        .into_iter()
        .map(|(k, n)| (k.to_owned(), n))
        .collect();
        assert_eq!(got, want);
    }

    fn deflate_flushed(parts: &[&[u8]]) -> Vec<u8> {
        let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        for p in parts {
            z.write_all(p).unwrap();
            z.flush().unwrap();
        }
        z.get_ref().clone()
    }

    #[test]
    fn inflate_stops_at_end_of_unfinished_stream() {
        let body = deflate_flushed(&[b"a\n", b"bb\n"]);
        assert_eq!(inflate_raw(&body).unwrap(), b"a\nbb\n");
        // A prefix that ends inside the second flush yields at least the first line.
        let first = deflate_flushed(&[b"a\n"]).len();
        assert!(inflate_raw(&body[..first + 1]).unwrap().starts_with(b"a\n"));
    }

    #[test]
    fn inflate_ignores_bytes_after_stream_end() {
        let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        z.write_all(b"done").unwrap();
        let mut body = z.finish().unwrap();
        body.extend(b"garbage after end");
        assert_eq!(inflate_raw(&body).unwrap(), b"done");
    }

    #[test]
    fn invalid_block_type_is_an_error() {
        // BTYPE = 11 is reserved.
        let err = inflate_raw(&[0xff, 0x00]).unwrap_err();
        assert!(err
            .to_string()
            .starts_with("Error -3 while decompressing: "));
    }

    #[test]
    fn zstd_unclosed_frame_decodes() {
        let mut enc = zstd::stream::raw::Encoder::new(3).unwrap();
        let mut out = vec![0u8; 1024];
        let mut written = 0;
        for line in [&b"hello\n"[..], b"world\n"] {
            let mut input = InBuffer::around(line);
            let mut output = OutBuffer::around_pos(&mut out[..], written);
            enc.run(&mut input, &mut output).unwrap();
            enc.flush(&mut output).unwrap();
            written = output.pos();
        }
        // Never call finish: the frame stays open, as Mars leaves it.
        assert_eq!(
            zstd_unterminated(&out[..written]).unwrap(),
            b"hello\nworld\n"
        );
        assert_eq!(zstd_unterminated(b""), Err(BodyError::EmptyZstd));
        assert!(matches!(
            zstd_unterminated(b"not zstd"),
            Err(BodyError::Zstd(_))
        ));
    }

    /// Many megabytes of varied text per block: every output-buffer refill must be drained,
    /// including bytes still pending when the input is used up.
    #[test]
    fn large_blocks_decode_completely() {
        let mut text = Vec::new();
        for i in 0..20_000u32 {
            text.extend(
                format!(
                    "line {i} value={} {}\n",
                    i.wrapping_mul(2_654_435_761),
                    "ab".repeat((i % 40) as usize)
                )
                .as_bytes(),
            );
        }
        text.extend(std::iter::repeat_n(b'z', 1 << 20));
        text.push(b'\n');
        let deflated = deflate_flushed(&[&text]);
        assert_eq!(inflate_raw(&deflated).unwrap(), text);

        let mut enc = zstd::stream::raw::Encoder::new(3).unwrap();
        let mut out = Vec::with_capacity(text.len());
        let mut input = InBuffer::around(&text);
        while input.pos() < text.len() {
            let pos = out.len();
            out.reserve(1 << 16);
            enc.run(&mut input, &mut OutBuffer::around_pos(&mut out, pos))
                .unwrap();
        }
        loop {
            let pos = out.len();
            out.reserve(1 << 16);
            if enc
                .flush(&mut OutBuffer::around_pos(&mut out, pos))
                .unwrap()
                == 0
            {
                break;
            }
        }
        // Unterminated frame, and larger than the Python decoder's 1 000 000-byte chunk.
        assert!(text.len() > 1_000_000);
        assert_eq!(zstd_unterminated(&out).unwrap(), text);
    }

    #[test]
    fn legacy_chunks_join_then_inflate() {
        let stream = deflate_flushed(&[b"legacy text\n"]);
        let (a, b) = stream.split_at(3);
        let mut body = Vec::new();
        for part in [a, b] {
            body.extend((part.len() as u16).to_le_bytes());
            body.extend(part);
        }
        assert_eq!(legacy_chunks(&body).unwrap(), b"legacy text\n");
        body.push(7);
        assert_eq!(legacy_chunks(&body), Err(BodyError::LegacyChunk));
        assert_eq!(
            BodyError::LegacyChunk.to_string(),
            "unpack_from requires a buffer of at least 2 bytes"
        );
    }

    #[test]
    fn legacy_chunk_longer_than_rest_is_cut() {
        let stream = deflate_flushed(&[b"x"]);
        let mut body = 1000u16.to_le_bytes().to_vec();
        body.extend(&stream);
        assert_eq!(legacy_chunks(&body).unwrap(), b"x");
    }
}
