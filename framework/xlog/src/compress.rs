//! Per-line framing into the staging buffer, and whole-block compression for the log file.
//!
//! Two kinds of encoder live here:
//!
//! - [`StoredFramer`] works line by line, each line ending on a byte boundary, so a block cut
//!   after any line decodes to exactly the lines before the cut. It is what the writer stages
//!   with: each line is framed as uncompressed deflate *stored* blocks (zlib) or zstd *raw*
//!   blocks (zstd), which costs a copy instead of a compressor run on the logging thread and
//!   is still a valid Mars block body (Mars's tools read it).
//! - [`BlockCompressor`] compresses a whole block's text in one call (no per-line flush). The
//!   writer thread uses it to turn a full staged block into the block it appends to the log
//!   file.

use flate2::{Compress, FlushCompress, Status};
use zstd::zstd_safe::CParameter;

use crate::config::Compression;

/// An upper bound of the framed size of a line of `len` bytes, padding included.
pub(crate) fn bound(len: usize) -> usize {
    len + len / 8 + 128
}

/// Frames lines as uncompressed data inside a valid deflate stream or zstd frame.
///
/// zlib: each line is one or more deflate *stored* blocks (`00 | LEN | NLEN`, 5 bytes, at most
/// 65 535 bytes each), never final, so the stream reads like Mars's unfinished ones.
/// zstd: the block starts with the frame header Mars writes (`28 B5 2F FD 00 30`, 64 KiB
/// window, no content size, no checksum) and each line is one or more *raw* blocks (3-byte
/// header, at most 64 KiB each), never last.
///
/// With `align`, every line's framing is padded so that the stream length after the line is a
/// multiple of 8: a block cipher with 8-byte units (Mars's TEA) then consumes every byte and
/// leaves no clear tail of text in the staging file. The padding is zlib's empty
/// fixed-Huffman block (10 bits each, before the stored header) or zstd's empty raw block
/// (3 bytes each): both decode to nothing.
#[derive(Clone, Debug)]
pub(crate) struct StoredFramer {
    zstd: bool,
    align: bool,
    /// Bytes emitted since the start of the block.
    pos: usize,
}

/// Zstd frame header as Mars writes it: no dictionary, no checksum, no content size, window
/// descriptor `0x30` (64 KiB).
const ZSTD_FRAME_HEADER: [u8; 6] = [0x28, 0xB5, 0x2F, 0xFD, 0x00, 0x30];
/// Largest zstd raw block under a 64 KiB window.
const ZSTD_RAW_MAX: usize = 64 * 1024;
/// Largest deflate stored block.
const STORED_MAX: usize = 65_535;

impl StoredFramer {
    /// A framer for zlib (`zstd` false) or zstd bodies; `align` pads lines to 8 bytes.
    pub(crate) fn new(zstd: bool, align: bool) -> Self {
        StoredFramer {
            zstd,
            align,
            pos: 0,
        }
    }

    /// Whether it frames zstd (else zlib).
    pub(crate) fn is_zstd(&self) -> bool {
        self.zstd
    }

    /// Starts a new block (a new deflate stream / zstd frame).
    pub(crate) fn reset(&mut self) {
        self.pos = 0;
    }

    /// Appends `line`'s framing and bytes to `out`.
    pub(crate) fn frame_line(&mut self, line: &[u8], out: &mut Vec<u8>) {
        let start = out.len();
        if self.zstd {
            if self.pos == 0 {
                out.extend_from_slice(&ZSTD_FRAME_HEADER);
            }
            let chunks = line.len().div_ceil(ZSTD_RAW_MAX).max(1);
            let unpadded = out.len() - start + 3 * chunks + line.len();
            let need = self.padding(unpadded);
            // 3 * k covers every residue mod 8 for k in 0..8.
            let k = (0..8).find(|k| (3 * k) % 8 == need).unwrap_or(0);
            for _ in 0..k {
                out.extend_from_slice(&[0, 0, 0]);
            }
            let mut rest = line;
            loop {
                let n = rest.len().min(ZSTD_RAW_MAX);
                // Last_Block 0, Block_Type 0 (raw), Block_Size n.
                let h = (n as u32) << 3;
                out.extend_from_slice(&h.to_le_bytes()[..3]);
                out.extend_from_slice(&rest[..n]);
                rest = &rest[n..];
                if rest.is_empty() {
                    break;
                }
            }
        } else {
            let chunks = line.len().div_ceil(STORED_MAX).max(1);
            let need = self.padding(5 * chunks + line.len());
            // Extra header bytes given by k empty fixed blocks before the first stored header
            // (ceil((10k + 3) / 8) + 4 bytes instead of 5).
            const K_FOR_EXTRA: [usize; 8] = [0, 1, 2, 9, 3, 4, 5, 6];
            let k = K_FOR_EXTRA[need];
            let bits = 10 * k + 3;
            let mut acc = vec_bits(k);
            let nbytes = bits.div_ceil(8);
            for _ in 0..nbytes {
                out.push(acc as u8);
                acc >>= 8;
            }
            let mut rest = line;
            let mut first = true;
            loop {
                let n = rest.len().min(STORED_MAX);
                if !first {
                    out.push(0);
                }
                first = false;
                out.extend_from_slice(&(n as u16).to_le_bytes());
                out.extend_from_slice(&(!(n as u16)).to_le_bytes());
                out.extend_from_slice(&rest[..n]);
                rest = &rest[n..];
                if rest.is_empty() {
                    break;
                }
            }
        }
        self.pos += out.len() - start;
    }

    /// Bytes of padding that make `pos + len` a multiple of 8 (0 without alignment).
    fn padding(&self, len: usize) -> usize {
        if self.align {
            (8 - (self.pos + len) % 8) % 8
        } else {
            0
        }
    }
}

/// The bits of `k` empty fixed-Huffman blocks followed by a stored block's 3 header bits, LSB
/// first: each empty block is BFINAL 0, BTYPE 01, end-of-block code 0000000.
fn vec_bits(k: usize) -> u128 {
    (0..k).fold(0u128, |acc, i| acc | (1u128 << (10 * i + 1)))
}

/// Compresses a whole block's text at once, for the block appended to the log file.
///
/// zlib: one raw deflate stream, finished (the last deflate block is final; Mars's readers
/// accept it). zstd: one closed frame, window log 17 (the block's text fits), no checksum.
pub(crate) enum BlockCompressor {
    /// zlib's compressor (zlib-rs), reused across blocks.
    Zlib(Box<Compress>),
    /// A reused zstd context.
    Zstd(Box<zstd::bulk::Compressor<'static>>),
}

impl std::fmt::Debug for BlockCompressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BlockCompressor::Zlib(_) => "BlockCompressor::Zlib",
            BlockCompressor::Zstd(_) => "BlockCompressor::Zstd",
        })
    }
}

impl BlockCompressor {
    /// A compressor of `kind` at `level` (zlib 0–9, zstd 1–22 or negative fast levels).
    pub(crate) fn new(kind: Compression, level: i32) -> Result<Self, String> {
        match kind {
            Compression::Zlib => {
                if !(0..=9).contains(&level) {
                    return Err(format!("zlib level {level} is not in 0..=9"));
                }
                Ok(BlockCompressor::Zlib(Box::new(Compress::new(
                    flate2::Compression::new(level as u32),
                    false,
                ))))
            }
            Compression::Zstd => {
                let mut c = zstd::bulk::Compressor::new(level).map_err(|e| e.to_string())?;
                c.set_parameter(CParameter::WindowLog(17))
                    .map_err(|e| e.to_string())?;
                c.set_parameter(CParameter::ChecksumFlag(false))
                    .map_err(|e| e.to_string())?;
                Ok(BlockCompressor::Zstd(Box::new(c)))
            }
        }
    }

    /// Compresses `text` as one complete body, appending it to `out`.
    pub(crate) fn compress_block(&mut self, text: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        match self {
            BlockCompressor::Zlib(c) => {
                c.reset();
                let start = out.len();
                out.reserve(text.len() + text.len() / 1000 + 64);
                loop {
                    let consumed = c.total_in() as usize;
                    let st = c
                        .compress_vec(&text[consumed..], out, FlushCompress::Finish)
                        .map_err(|e| e.to_string())?;
                    if st == Status::StreamEnd {
                        return Ok(());
                    }
                    if out.len() - start > text.len() * 2 + 1024 {
                        return Err("deflate did not finish".to_owned());
                    }
                    out.reserve(text.len() / 4 + 1024);
                }
            }
            BlockCompressor::Zstd(c) => {
                let start = out.len();
                let cap = zstd::zstd_safe::compress_bound(text.len());
                out.resize(start + cap, 0);
                let n = c
                    .compress_to_buffer(text, &mut out[start..])
                    .map_err(|e| e.to_string())?;
                out.truncate(start + n);
                Ok(())
            }
        }
    }
}

/// Decompresses a zstd body: one or more frames, the last possibly unfinished (as Mars and
/// this crate leave them). `None` if it is not valid zstd or would decompress to more than
/// `cap` bytes (a damaged or hostile body cannot make it allocate without bound).
pub(crate) fn zstd_decompress_capped(body: &[u8], cap: usize) -> Option<Vec<u8>> {
    use zstd::stream::raw::{Decoder, InBuffer, Operation, OutBuffer};
    let mut d = Decoder::new().ok()?;
    let mut input = InBuffer::around(body);
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let before = input.pos;
        let mut ob = OutBuffer::around(&mut buf[..]);
        d.run(&mut input, &mut ob).ok()?;
        let n = ob.pos();
        if out.len() + n > cap {
            return None;
        }
        out.extend_from_slice(&buf[..n]);
        if input.pos >= body.len() && n < buf.len() {
            return Some(out);
        }
        if input.pos == before && n == 0 {
            // No progress with input left: cannot happen with a conforming decoder; never spin.
            return None;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn lines() -> Vec<Vec<u8>> {
        let mut v: Vec<Vec<u8>> = (0..300)
            .map(|i| format!("[I][line {i}] some {} text\n", "x".repeat(i % 23)).into_bytes())
            .collect();
        v.push(vec![b'L'; 70_000]);
        v.push(b"after the long line\n".to_vec());
        v
    }

    fn inflate(body: &[u8]) -> Vec<u8> {
        let mut d = flate2::Decompress::new(false);
        let mut text = Vec::with_capacity(1 << 20);
        d.decompress_vec(body, &mut text, flate2::FlushDecompress::Sync)
            .unwrap();
        text
    }

    fn unzstd(body: &[u8]) -> Vec<u8> {
        let mut dec = zstd::stream::read::Decoder::new(body).unwrap();
        let mut text = Vec::new();
        // An unclosed frame ends with an error after all the text.
        let _ = dec.read_to_end(&mut text);
        text
    }

    #[test]
    fn stored_framing_decodes_after_every_line_and_aligns() {
        for zstd in [false, true] {
            for align in [false, true] {
                let mut f = StoredFramer::new(zstd, align);
                let mut out = Vec::new();
                let mut expect = Vec::new();
                for l in lines() {
                    f.frame_line(&l, &mut out);
                    expect.extend_from_slice(&l);
                    if align {
                        assert_eq!(out.len() % 8, 0, "zstd={zstd}");
                    }
                    if expect.len() < 2000 || l.len() > 1000 {
                        let text = if zstd { unzstd(&out) } else { inflate(&out) };
                        assert!(text == expect, "zstd={zstd} align={align}");
                    }
                }
                if zstd {
                    assert_eq!(&out[..6], &ZSTD_FRAME_HEADER);
                }
                let text = if zstd { unzstd(&out) } else { inflate(&out) };
                assert!(text == expect);
                f.reset();
                let mut again = Vec::new();
                f.frame_line(b"again\n", &mut again);
                let text = if zstd {
                    unzstd(&again)
                } else {
                    inflate(&again)
                };
                assert_eq!(text, b"again\n");
            }
        }
    }

    #[test]
    fn every_padding_amount_is_valid_deflate_and_zstd() {
        for zstd in [false, true] {
            for prefix in 0..8 {
                let mut f = StoredFramer::new(zstd, true);
                let mut out = Vec::new();
                let first = vec![b'a'; prefix];
                f.frame_line(&first, &mut out);
                f.frame_line(b"bc", &mut out);
                assert_eq!(out.len() % 8, 0);
                let text = if zstd { unzstd(&out) } else { inflate(&out) };
                let mut expect = first.clone();
                expect.extend_from_slice(b"bc");
                assert_eq!(text, expect, "zstd={zstd} prefix={prefix}");
            }
        }
    }

    #[test]
    fn block_compressor_round_trips_and_reuses_its_context() {
        let text: Vec<u8> = lines().concat();
        let mut z = BlockCompressor::new(Compression::Zlib, 6).unwrap();
        for _ in 0..2 {
            let mut out = Vec::new();
            z.compress_block(&text, &mut out).unwrap();
            assert!(out.len() < text.len() / 4);
            assert!(inflate(&out) == text);
        }
        let mut z = BlockCompressor::new(Compression::Zstd, 1).unwrap();
        for _ in 0..2 {
            let mut out = Vec::new();
            z.compress_block(&text, &mut out).unwrap();
            assert!(out.len() < text.len() / 4);
            assert!(zstd::stream::decode_all(&out[..]).unwrap() == text);
        }
        assert!(BlockCompressor::new(Compression::Zlib, 10).is_err());
    }
}
