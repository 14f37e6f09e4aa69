//! Per-line compression into one stream per block.

use flate2::{Compress, FlushCompress, Status};
use zstd::stream::raw::{Encoder, InBuffer, Operation, OutBuffer};
use zstd::zstd_safe::CParameter;

use crate::config::Compression;
use crate::deflate::LineDeflater;

/// One block's compressor. Every line is flushed to a byte boundary (zlib `Z_SYNC_FLUSH`, zstd
/// `ZSTD_e_flush`), so a block cut after any line decodes to exactly the lines before the cut.
pub(crate) enum LineCompressor {
    /// Level 1: zlib's fast path (`deflate_quick`, via zlib-rs), the cheapest per line.
    ZlibQuick(Box<Compress>),
    /// Levels 0 and 2–9: our fixed-code encoder (see `deflate`), which finds zlib-level-9-like
    /// matches without zlib's per-flush tree building.
    Zlib(Box<LineDeflater>),
    Zstd(Box<Encoder<'static>>),
}

impl LineCompressor {
    pub(crate) fn new(kind: Compression, level: i32) -> Result<Self, String> {
        match kind {
            Compression::Zlib => {
                if level == 1 {
                    return Ok(LineCompressor::ZlibQuick(Box::new(Compress::new(
                        flate2::Compression::new(1),
                        false,
                    ))));
                }
                Ok(LineCompressor::Zlib(Box::new(LineDeflater::new(level))))
            }
            Compression::Zstd => {
                let mut e = Encoder::new(level).map_err(|e| e.to_string())?;
                e.set_parameter(CParameter::WindowLog(16))
                    .map_err(|e| e.to_string())?;
                Ok(LineCompressor::Zstd(Box::new(e)))
            }
        }
    }

    /// Starts a new block: a fresh deflate stream / zstd frame.
    pub(crate) fn reset(&mut self) -> Result<(), String> {
        match self {
            LineCompressor::Zlib(c) => {
                c.reset();
                Ok(())
            }
            LineCompressor::ZlibQuick(c) => {
                c.reset();
                Ok(())
            }
            // `reinit` is ZSTD_CCtx_reset(session only): parameters stay.
            LineCompressor::Zstd(e) => e.reinit().map_err(|e| e.to_string()),
        }
    }

    /// Compresses `line` and appends the output, flushed to a byte boundary, to `out`.
    pub(crate) fn compress_line(&mut self, line: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        match self {
            LineCompressor::Zlib(c) => {
                c.compress_line(line, out);
                Ok(())
            }
            LineCompressor::ZlibQuick(c) => {
                let mut input = line;
                loop {
                    out.reserve(input.len() + input.len() / 4 + 64);
                    let before_in = c.total_in();
                    let before_out = out.len();
                    let st = c
                        .compress_vec(input, out, FlushCompress::Sync)
                        .map_err(|e| e.to_string())?;
                    let used = (c.total_in() - before_in) as usize;
                    input = &input[used..];
                    // Done when all input is in and the flush did not fill the offered space.
                    if input.is_empty() && out.len() < out.capacity() {
                        return Ok(());
                    }
                    if st == Status::BufError && used == 0 && out.len() == before_out {
                        return Err("deflate made no progress".to_owned());
                    }
                }
            }
            LineCompressor::Zstd(e) => {
                let mut inb = InBuffer::around(line);
                loop {
                    out.reserve(line.len() + 256);
                    let start = out.len();
                    let cap = out.capacity();
                    out.resize(cap, 0);
                    let (pos, remaining) = {
                        let mut ob = OutBuffer::around_pos(&mut out[..], start);
                        if inb.pos < line.len() {
                            e.run(&mut inb, &mut ob).map_err(|e| e.to_string())?;
                        }
                        let r = e.flush(&mut ob).map_err(|e| e.to_string())?;
                        (ob.pos(), r)
                    };
                    out.truncate(pos);
                    if inb.pos >= line.len() && remaining == 0 {
                        return Ok(());
                    }
                }
            }
        }
    }
}

/// An upper bound of the compressed size of a line of `len` bytes, flush included.
pub(crate) fn bound(len: usize) -> usize {
    len + len / 8 + 128
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn lines() -> Vec<Vec<u8>> {
        (0..300)
            .map(|i| format!("[I][line {i}] some repeated text {}\n", i * 7919).into_bytes())
            .collect()
    }

    #[test]
    fn zlib_output_inflates_after_every_line() {
        for level in [1, 4] {
            zlib_level_inflates(level);
        }
    }

    fn zlib_level_inflates(level: i32) {
        let mut c = LineCompressor::new(Compression::Zlib, level).unwrap();
        let mut out = Vec::new();
        let mut expect = Vec::new();
        for l in lines() {
            c.compress_line(&l, &mut out).unwrap();
            expect.extend_from_slice(&l);
        }
        let mut d = flate2::Decompress::new(false);
        let mut text = Vec::with_capacity(expect.len() + 10);
        d.decompress_vec(&out, &mut text, flate2::FlushDecompress::Sync)
            .unwrap();
        assert_eq!(text, expect);
        // A second block starts a fresh stream.
        c.reset().unwrap();
        let mut out2 = Vec::new();
        c.compress_line(b"again\n", &mut out2).unwrap();
        let mut d = flate2::Decompress::new(false);
        let mut text = Vec::with_capacity(100);
        d.decompress_vec(&out2, &mut text, flate2::FlushDecompress::Sync)
            .unwrap();
        assert_eq!(text, b"again\n");
    }

    #[test]
    fn zstd_output_is_an_unterminated_frame_with_window_log_16() {
        let mut c = LineCompressor::new(Compression::Zstd, 3).unwrap();
        let mut out = Vec::new();
        let mut expect = Vec::new();
        for l in lines() {
            c.compress_line(&l, &mut out).unwrap();
            expect.extend_from_slice(&l);
        }
        assert_eq!(&out[..6], &[0x28, 0xB5, 0x2F, 0xFD, 0x00, 0x30]);
        let mut dec = zstd::stream::read::Decoder::new(&out[..]).unwrap();
        let mut text = Vec::new();
        // The frame is never closed: reading ends with an error after all the text.
        let _ = dec.read_to_end(&mut text);
        assert_eq!(text, expect);
    }
}
