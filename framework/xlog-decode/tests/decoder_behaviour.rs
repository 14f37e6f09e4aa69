//! Decoder behaviour on synthetic files: sequence reporting, resync, legacy magics, and
//! blocks sealed by the authenticated cipher.

use std::io::Write;
use std::sync::Arc;

use phobos_cipher_modern::ModernCipher;
use phobos_plugin_api::LogCipher;
use phobos_xlog_decode::{BodyError, Decoder, Event, MagicSet};

fn block(magic: u8, seq: u16, key: &[u8], body: &[u8]) -> Vec<u8> {
    let mut b = vec![magic];
    b.extend(seq.to_le_bytes());
    b.extend([10, 11]);
    b.extend((body.len() as u32).to_le_bytes());
    b.extend(key);
    b.extend(body);
    b.push(0);
    b
}

fn sync(seq: u16, text: &str) -> Vec<u8> {
    block(0x08, seq, &[0; 64], text.as_bytes())
}

fn deflate_lines(lines: &[&str]) -> Vec<u8> {
    let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    for l in lines {
        z.write_all(l.as_bytes()).unwrap();
        z.flush().unwrap();
    }
    z.get_ref().clone()
}

fn text(decoder: &Decoder, file: &[u8]) -> String {
    String::from_utf8(decoder.decode(file)).unwrap()
}

#[test]
fn sequence_gaps_follow_python_rules() {
    let mut file = Vec::new();
    for (seq, t) in [
        (1, "a\n"),
        (2, "b\n"),
        (5, "c\n"),
        (0, "tip\n"),
        (6, "d\n"),
        (1, "restart\n"),
        (3, "e\n"),
    ] {
        file.extend(sync(seq, t));
    }
    assert_eq!(
        text(&Decoder::new(), &file),
        "a\nb\n[F]decode_log_file.py log seq:3-4 is missing\nc\ntip\nd\nrestart\n\
         [F]decode_log_file.py log seq:2-2 is missing\ne\n"
    );
}

#[test]
fn first_seq_and_wrap_are_silent_and_backwards_is_reported() {
    let mut file = Vec::new();
    for (seq, t) in [
        (7, "x\n"),
        (65535, "y\n"),
        (1, "z\n"),
        (40, "p\n"),
        (30, "q\n"),
    ] {
        file.extend(sync(seq, t));
    }
    assert_eq!(
        text(&Decoder::new(), &file),
        "x\n[F]decode_log_file.py log seq:8-65534 is missing\ny\nz\n\
         [F]decode_log_file.py log seq:2-39 is missing\np\n\
         [F]decode_log_file.py log seq:41-29 is missing\nq\n"
    );
}

#[test]
fn junk_before_the_start_is_skipped_silently_and_later_junk_reported() {
    let mut file = b"JUNK".to_vec();
    file.extend(sync(0, "one\n"));
    file.extend(sync(0, "two\n"));
    let at = file.len();
    file.extend([0xEE; 3]);
    file.extend(sync(0, "three\n"));
    assert_eq!(
        text(&Decoder::new(), &file),
        format!(
            "one\ntwo\n[F]decode_log_file.py decode error len=3, result:_buffer[{at}]:238 != MAGIC_NUM_START \nthree\n"
        )
    );
}

#[test]
fn damage_with_no_good_block_after_it_ends_the_output_quietly() {
    let mut file = sync(0, "one\n");
    file.extend(sync(0, "two\n"));
    file.extend(&sync(0, "three\n")[..20]);
    assert_eq!(text(&Decoder::new(), &file), "one\ntwo\n");
}

#[test]
fn no_good_start_means_no_output() {
    assert!(Decoder::new().decode(b"").is_empty());
    assert!(Decoder::new().decode(&[0x09; 500]).is_empty());
}

#[test]
fn legacy_magics_use_python_semantics() {
    let mut file = block(0x03, 0, &[0; 4], b"legacy plain\n");
    file.extend(block(0x04, 0, &[0; 4], &deflate_lines(&["legacy zlib\n"])));
    let stream = deflate_lines(&["legacy chunks\n"]);
    let mut chunked = Vec::new();
    for part in stream.chunks(4) {
        chunked.extend((part.len() as u16).to_le_bytes());
        chunked.extend(part);
    }
    file.extend(block(0x05, 0, &[0; 4], &chunked));
    assert_eq!(
        text(&Decoder::new(), &file),
        "legacy plain\nlegacy zlib\nlegacy chunks\n"
    );
}

#[test]
fn a_bad_zlib_body_fails_only_its_block() {
    let mut file = block(0x09, 1, &[0; 64], &deflate_lines(&["ok\n"]));
    file.extend(block(0x09, 2, &[0; 64], &[0xFF, 0x00, 0x01]));
    file.extend(block(0x09, 3, &[0; 64], &deflate_lines(&["still ok\n"])));
    assert_eq!(
        text(&Decoder::new(), &file),
        "ok\n[F]decode_log_file.py decompress err, Error -3 while decompressing: invalid block type\nstill ok\n"
    );
}

#[test]
fn an_empty_zstd_body_prints_pythons_empty_stopiteration_message() {
    let mut file = block(0x0D, 0, &[0; 64], b"");
    file.extend(sync(0, "next\n"));
    assert_eq!(
        text(&Decoder::new(), &file),
        "[F]decode_log_file.py decompress err, \nnext\n"
    );
}

/// Builds an authenticated block the way a writer does: compress, then seal line by line.
fn sealed_file(
    cipher: &ModernCipher,
    magic: u8,
    seq_start: u16,
    blocks: &[&[&str]],
) -> (Vec<u8>, [u8; 64]) {
    let mut enc = cipher.new_encryptor().unwrap();
    let key = enc.header_key();
    let mut file = Vec::new();
    for (i, lines) in blocks.iter().enumerate() {
        let mut body = Vec::new();
        if magic == 0x27 {
            let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
            for l in *lines {
                let before = z.get_ref().len();
                z.write_all(l.as_bytes()).unwrap();
                z.flush().unwrap();
                let fresh = z.get_ref()[before..].to_vec();
                enc.encrypt(&fresh, &mut body).unwrap();
            }
        } else {
            let mut zst = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
            for l in *lines {
                let before = zst.get_ref().len();
                zst.write_all(l.as_bytes()).unwrap();
                zst.flush().unwrap();
                let fresh = zst.get_ref()[before..].to_vec();
                enc.encrypt(&fresh, &mut body).unwrap();
            }
        }
        enc.finish_block(&[], &mut body).unwrap();
        file.extend(block(magic, seq_start + i as u16, &key, &body));
    }
    (file, key)
}

#[test]
fn authenticated_blocks_decode_with_the_modern_cipher() {
    let pair = ModernCipher::generate_key_pair();
    let writer = ModernCipher::from_public_key_hex(&pair.public_key).unwrap();
    let reader = Arc::new(ModernCipher::from_private_key_hex(&pair.private_key).unwrap());
    let decoder = Decoder::builder().cipher(reader).build();
    for magic in [0x27u8, 0x2C] {
        let (file, _) = sealed_file(&writer, magic, 1, &[&["a\n", "b\n"], &["c\n"]]);
        assert_eq!(text(&decoder, &file), "a\nb\nc\n", "magic {magic:#x}");
        // Mars's magic set does not know these blocks: nothing is found.
        let mars_only = Decoder::builder().magic_set(MagicSet::Mars).build();
        assert!(mars_only.decode(&file).is_empty());
    }
}

#[test]
fn authenticated_blocks_report_tampering_missing_and_wrong_keys() {
    let pair = ModernCipher::generate_key_pair();
    let writer = ModernCipher::from_public_key_hex(&pair.public_key).unwrap();
    let reader = Arc::new(ModernCipher::from_private_key_hex(&pair.private_key).unwrap());
    let (mut file, _) = sealed_file(&writer, 0x27, 1, &[&["a\n"], &["b\n"], &["c\n"]]);

    // No key: each block says so.
    let out = text(&Decoder::new(), &file);
    assert_eq!(out.lines().count(), 3);
    assert!(out
        .lines()
        .all(|l| l.ends_with("block (magic 0x27) is encrypted and no private key was given")));

    // Wrong key: integrity failure per block.
    let other = ModernCipher::generate_key_pair();
    let wrong = Decoder::builder()
        .cipher(Arc::new(
            ModernCipher::from_private_key_hex(&other.private_key).unwrap(),
        ))
        .build();
    assert_eq!(
        text(&wrong, &file).lines().collect::<Vec<_>>(),
        vec!["[F]decode_log_file.py decompress err, decryption failed: integrity check failed (wrong key or damaged block)"; 3]
    );

    // One flipped ciphertext byte in the second block: only that block fails.
    let second_body = file.len() / 3 + 73 + 14;
    file[second_body] ^= 0x40;
    let decoder = Decoder::builder().cipher(reader).build();
    let events: Vec<_> = decoder.events(&file).collect();
    assert!(matches!(&events[0], Event::Text { text, .. } if &text[..] == b"a\n"));
    assert!(matches!(
        &events[1],
        Event::Failed {
            error: BodyError::Cipher(_),
            ..
        }
    ));
    assert!(matches!(&events[2], Event::Text { text, .. } if &text[..] == b"c\n"));
}

#[test]
fn mars_and_modern_ciphers_can_be_used_together() {
    let modern = ModernCipher::generate_key_pair();
    let mars = phobos_cipher_mars::MarsCipher::generate_key_pair();
    let decoder = Decoder::builder()
        .cipher(Arc::new(
            ModernCipher::from_private_key_hex(&modern.private_key).unwrap(),
        ))
        .cipher(Arc::new(
            phobos_cipher_mars::MarsCipher::from_private_key_hex(&mars.private_key).unwrap(),
        ))
        .build();
    let writer = ModernCipher::from_public_key_hex(&modern.public_key).unwrap();
    let (mut file, _) = sealed_file(&writer, 0x2C, 1, &[&["modern\n"]]);

    let mars_writer =
        phobos_cipher_mars::MarsCipher::from_public_key_hex(&mars.public_key).unwrap();
    let mut enc = mars_writer.new_encryptor().unwrap();
    let plain = deflate_lines(&["mars\n"]);
    let mut body = Vec::new();
    let used = enc.encrypt(&plain, &mut body).unwrap();
    enc.finish_block(&plain[used..], &mut body).unwrap();
    file.extend(block(0x07, 2, &enc.header_key(), &body));
    assert_eq!(text(&decoder, &file), "modern\nmars\n");
}
