//! Known-answer tests: blocks written by the real Mars xlog (encrypted with the key pair in
//! `tests/data/keys.txt`) decrypt, inflate and match the official decoder's output.

use std::io::Write;

use phobos_cipher_mars::MarsCipher;
use phobos_plugin_api::LogCipher;

const HEADER: usize = 73;

fn private_key() -> String {
    let keys = include_str!("data/keys.txt");
    keys.lines()
        .find_map(|l| l.strip_prefix("private_key = "))
        .expect("keys.txt has a private_key line")
        .trim()
        .to_owned()
}

/// A plain sequential walk over a clean file: (header key field, body) per block.
fn blocks(file: &[u8]) -> Vec<([u8; 64], &[u8])> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < file.len() {
        assert_eq!(file[at], 0x07, "clean async zlib crypt block at {at}");
        let len = u32::from_le_bytes(file[at + 5..at + 9].try_into().unwrap()) as usize;
        let key: [u8; 64] = file[at + 9..at + 73].try_into().unwrap();
        out.push((key, &file[at + HEADER..at + HEADER + len]));
        assert_eq!(file[at + HEADER + len], 0);
        at += HEADER + len + 1;
    }
    out
}

fn raw_inflate(data: &[u8]) -> Vec<u8> {
    // Mars never finishes the deflate stream, so feed everything and keep what comes out.
    let mut d = flate2::write::DeflateDecoder::new(Vec::new());
    d.write_all(data).unwrap();
    d.flush().unwrap();
    d.get_ref().clone()
}

#[test]
fn real_mars_blocks_decrypt_to_the_expected_text() {
    let file = include_bytes!("data/async_zlib_crypt.xlog");
    let expected = include_bytes!("data/async_zlib_crypt.expected.log");
    let reader = MarsCipher::from_private_key_hex(&private_key()).unwrap();

    let mut text = Vec::new();
    let blocks = blocks(file);
    assert_eq!(blocks.len(), 6);
    for (key, body) in blocks {
        let mut dec = reader.new_decryptor(&key).unwrap();
        let mut plain = Vec::new();
        dec.decrypt_block(body, &mut plain).unwrap();
        assert_eq!(plain.len(), body.len());
        // The clear tail (len % 8 bytes) is copied unchanged.
        let tail = body.len() % 8;
        assert_eq!(plain[plain.len() - tail..], body[body.len() - tail..]);
        text.extend(raw_inflate(&plain));
    }
    assert_eq!(text, expected.to_vec());
}

#[test]
fn our_encryptor_round_trips_real_block_plaintext_under_the_real_public_key() {
    let keys = include_str!("data/keys.txt");
    let public = keys
        .lines()
        .find_map(|l| l.strip_prefix("public_key = "))
        .unwrap()
        .trim();
    let writer = MarsCipher::from_public_key_hex(public).unwrap();
    let reader = MarsCipher::from_private_key_hex(&private_key()).unwrap();
    let file = include_bytes!("data/async_zlib_crypt.xlog");
    let (key, body) = blocks(file)[0];
    let mut compressed = Vec::new();
    reader
        .new_decryptor(&key)
        .unwrap()
        .decrypt_block(body, &mut compressed)
        .unwrap();

    // Re-encrypt line-sized pieces incrementally, the way the writer stages them.
    let mut enc = writer.new_encryptor().unwrap();
    let mut out = Vec::new();
    let mut pending = Vec::new();
    for piece in compressed.chunks(37) {
        pending.extend_from_slice(piece);
        let used = enc.encrypt(&pending, &mut out).unwrap();
        pending.drain(..used);
    }
    enc.finish_block(&pending, &mut out).unwrap();
    assert_eq!(out.len(), compressed.len());
    assert_ne!(out, compressed);

    let mut back = Vec::new();
    reader
        .new_decryptor(&enc.header_key())
        .unwrap()
        .decrypt_block(&out, &mut back)
        .unwrap();
    assert_eq!(back, compressed);
}
