//! Test helpers: a toy cipher and a minimal block decoder (the real, independent decoder is
//! `phobos-xlog-decode`, used by the workspace integration tests).

use std::sync::Arc;

use phobos_plugin_api::cipher::{
    BlockDecryptor, BlockEncryptor, CipherError, CipherKind, LogCipher, HEADER_KEY_LEN,
};

use crate::block::{magic_info, BlockView, Encryption};
use crate::config::Compression;
use crate::{FixedClock, WallTime, Xlog, XlogGuard};

/// The tests' fixed clock: 2024-03-14 10:26:53.137 in +8.
pub(crate) fn clock() -> Arc<FixedClock> {
    Arc::new(FixedClock(WallTime::new(
        1_710_383_213,
        137_000_000,
        8 * 3600,
    )))
}

/// A logger in `dir` named `prefix`, without banners, on the test clock.
pub(crate) fn quiet_logger(dir: &std::path::Path, prefix: &str) -> XlogGuard {
    Xlog::builder()
        .log_dir(dir)
        .name_prefix(prefix)
        .banners(false)
        .clock(clock())
        .build()
        .unwrap()
}

const PAD: [u8; 8] = [0x5A, 0xC3, 0x11, 0x7E, 0x99, 0x02, 0xF0, 0x3D];

/// ECB-like toy: XORs every complete 8-byte unit with a fixed pad, leaves the tail in clear
/// (the shape of Mars's TEA, without its cost).
#[derive(Debug)]
pub(crate) struct ToyCipher;

#[derive(Debug)]
pub(crate) struct ToyEnc;

impl LogCipher for ToyCipher {
    fn name(&self) -> &str {
        "toy"
    }
    fn kind(&self) -> CipherKind {
        CipherKind::MarsCompatible
    }
    fn new_encryptor(&self) -> Result<Box<dyn BlockEncryptor>, CipherError> {
        Ok(Box::new(ToyEnc))
    }
    fn new_decryptor(
        &self,
        _: &[u8; HEADER_KEY_LEN],
    ) -> Result<Box<dyn BlockDecryptor>, CipherError> {
        Ok(Box::new(ToyEnc))
    }
}

impl BlockEncryptor for ToyEnc {
    fn header_key(&self) -> [u8; HEADER_KEY_LEN] {
        [0xAA; HEADER_KEY_LEN]
    }
    fn encrypt(&mut self, plain: &[u8], out: &mut Vec<u8>) -> Result<usize, CipherError> {
        let n = plain.len() / 8 * 8;
        out.extend(plain[..n].iter().enumerate().map(|(i, b)| b ^ PAD[i % 8]));
        Ok(n)
    }
    fn finish_block(&mut self, rest: &[u8], out: &mut Vec<u8>) -> Result<(), CipherError> {
        out.extend_from_slice(rest);
        Ok(())
    }
}

impl BlockDecryptor for ToyEnc {
    fn decrypt_block(&mut self, body: &[u8], out: &mut Vec<u8>) -> Result<(), CipherError> {
        let n = body.len() / 8 * 8;
        out.extend(body[..n].iter().enumerate().map(|(i, b)| b ^ PAD[i % 8]));
        out.extend_from_slice(&body[n..]);
        Ok(())
    }
}

pub(crate) fn toy() -> Arc<dyn LogCipher> {
    Arc::new(ToyCipher)
}

/// `b` with the toy cipher when `keyed`.
pub(crate) fn toy_if(b: crate::XlogBuilder, keyed: bool) -> crate::XlogBuilder {
    match keyed {
        true => b.cipher(toy()),
        false => b,
    }
}

/// Decodes a body of an async block to text (toy cipher if encrypted).
pub(crate) fn decode_body(magic: u8, body: &[u8]) -> Vec<u8> {
    let info = magic_info(magic).expect("known magic");
    if !info.is_async {
        return body.to_vec();
    }
    let mut plain = Vec::new();
    if info.encryption == Encryption::None {
        plain.extend_from_slice(body);
    } else if info.encryption == Encryption::Staged {
        use chacha20::cipher::{KeyIvInit, StreamCipher};
        let (_, wrapped, nonce, data) = crate::block::parse_staged_body(body).expect("prefix");
        let mut key = Vec::new();
        ToyEnc.decrypt_block(wrapped, &mut key).unwrap();
        let key: [u8; 32] = key.try_into().expect("32-byte key");
        let mut iv = [0u8; 12];
        iv[..8].copy_from_slice(&nonce.to_le_bytes());
        plain.extend_from_slice(data);
        chacha20::ChaCha20::new(&key.into(), &iv.into()).apply_keystream(&mut plain);
    } else {
        ToyEnc.decrypt_block(body, &mut plain).unwrap();
    }
    match info.compression {
        Compression::Zlib => {
            let mut d = flate2::Decompress::new(false);
            let mut out = Vec::with_capacity(plain.len() * 20 + 1024);
            loop {
                let before = d.total_in() as usize;
                let st = d
                    .decompress_vec(&plain[before..], &mut out, flate2::FlushDecompress::Sync)
                    .unwrap();
                if d.total_in() as usize >= plain.len() || st == flate2::Status::StreamEnd {
                    break;
                }
                out.reserve(out.capacity());
            }
            out
        }
        Compression::Zstd => {
            let mut d = zstd::stream::raw::Decoder::new().unwrap();
            use zstd::stream::raw::{InBuffer, Operation, OutBuffer};
            let mut out = Vec::new();
            let mut inb = InBuffer::around(&plain);
            let mut buf = vec![0u8; 1 << 16];
            loop {
                let mut ob = OutBuffer::around(&mut buf[..]);
                d.run(&mut inb, &mut ob).unwrap();
                let n = ob.pos();
                out.extend_from_slice(&buf[..n]);
                if inb.pos >= plain.len() && n < buf.len() {
                    break;
                }
            }
            out
        }
    }
}

/// Decodes a whole file of well-formed blocks to text.
pub(crate) fn decode_file(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut off = 0;
    while off < bytes.len() {
        let v = BlockView::parse(&bytes[off..]).expect("well-formed block");
        out.extend_from_slice(&decode_body(v.header.magic, v.body));
        off += v.total_len();
    }
    out
}
