//! Conformance checks for [`LogCipher`], run by [`cipher_conformance!`](crate::cipher_conformance).
//!
//! The checks need a cipher holding both keys, and for the wrong-key check a second cipher
//! holding another key pair. What they take as the contract:
//!
//! - Plaintext fed to [`BlockEncryptor::encrypt`] in arbitrary chunks (keeping and re-feeding
//!   what a call did not consume, as xlog does) and closed with
//!   [`BlockEncryptor::finish_block`] decrypts back exactly, block by block, with one
//!   decryptor opened from the session's [`BlockEncryptor::header_key`].
//! - A decryptor for another key pair never silently yields the plaintext of a block of at
//!   least 64 random bytes: it fails, or yields other bytes. (Shorter blocks are exempt:
//!   Mars's scheme leaves a final partial 8-byte unit in clear.)
//! - Truncated or damaged bodies and random header keys give an error or garbage, never a panic.
//! - The header key of a session does not change while the session is used.

use phobos_plugin_api::cipher::HEADER_KEY_LEN;
use phobos_plugin_api::{BlockEncryptor, LogCipher};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use crate::rng::TestRng;

/// Encrypts `blocks` in one writer session, feeding each block in pieces of the sizes in
/// `chunks` (used cyclically; empty means whole), and returns the header key and each block's
/// ciphertext.
///
/// # Panics
///
/// When the cipher fails, or `encrypt` claims to consume more than it was given.
pub fn encrypt_session(
    cipher: &dyn LogCipher,
    blocks: &[Vec<u8>],
    chunks: &[usize],
) -> ([u8; HEADER_KEY_LEN], Vec<Vec<u8>>) {
    let mut enc = cipher
        .new_encryptor()
        .unwrap_or_else(|e| panic!("{}: new_encryptor: {e}", cipher.name()));
    let key = enc.header_key();
    let bodies = blocks
        .iter()
        .map(|plain| encrypt_block(cipher, &mut *enc, plain, chunks))
        .collect();
    (key, bodies)
}

/// Random blocks (proptest) split into random chunks encrypt and decrypt back exactly.
///
/// # Panics
///
/// On a mismatch or a cipher error (proptest shrinks and reports the input).
pub fn check_round_trip(cipher: &dyn LogCipher) {
    let mut runner = TestRunner::new(Config::with_cases(crate::proptest_cases()));
    let strategy = (
        proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..3000), 1..4),
        proptest::collection::vec(0usize..700, 0..12),
    );
    runner
        .run(&strategy, |(blocks, chunks)| {
            let (key, bodies) = encrypt_session(cipher, &blocks, &chunks);
            let mut dec = cipher
                .new_decryptor(&key)
                .map_err(|e| TestCaseError::fail(format!("new_decryptor: {e}")))?;
            for (i, (plain, body)) in blocks.iter().zip(&bodies).enumerate() {
                let mut out = Vec::new();
                dec.decrypt_block(body, &mut out)
                    .map_err(|e| TestCaseError::fail(format!("block {i}: {e}")))?;
                prop_assert!(out == *plain, "block {} decrypts to other bytes", i);
            }
            Ok(())
        })
        .unwrap();
}

/// Blocks of 64 bytes and more encrypted by `right` never decrypt to the plaintext with the
/// other key pair's cipher `wrong`, and the other way round.
///
/// # Panics
///
/// When the plaintext comes back through the wrong key.
pub fn check_wrong_key(right: &dyn LogCipher, wrong: &dyn LogCipher) {
    let mut rng = TestRng::new(0x3A0C);
    for (writer, reader) in [(right, wrong), (wrong, right)] {
        for len in [64, 65, 100, 1000, 4096] {
            let plain = rng.bytes(len);
            let (key, bodies) = encrypt_session(writer, std::slice::from_ref(&plain), &[33]);
            let Ok(mut dec) = reader.new_decryptor(&key) else {
                continue;
            };
            let mut out = Vec::new();
            if dec.decrypt_block(&bodies[0], &mut out).is_ok() {
                assert!(
                    out != plain,
                    "{} read {} bytes written by {} with another key",
                    reader.name(),
                    len,
                    writer.name()
                );
            }
        }
    }
}

/// Truncated and bit-flipped bodies, and random header keys, never make decryption panic.
///
/// # Panics
///
/// Only by the cipher panicking, or a cipher error while encrypting.
pub fn check_damaged_bodies(cipher: &dyn LogCipher) {
    let mut rng = TestRng::new(0xDA3A);
    let plain = rng.bytes(1000);
    let (key, bodies) = encrypt_session(cipher, std::slice::from_ref(&plain), &[100]);
    let body = &bodies[0];
    let mut cuts = vec![0, 1, 7, 8, 9, 15, 16, 17, 31, 32, 33];
    cuts.extend([body.len() / 2, body.len().saturating_sub(1)]);
    for cut in cuts.into_iter().filter(|c| *c <= body.len()) {
        if let Ok(mut dec) = cipher.new_decryptor(&key) {
            let _ = dec.decrypt_block(&body[..cut], &mut Vec::new());
        }
    }
    for _ in 0..32 {
        let mut damaged = body.clone();
        if !damaged.is_empty() {
            let at = rng.below(damaged.len());
            damaged[at] ^= 1 << rng.below(8);
        }
        if let Ok(mut dec) = cipher.new_decryptor(&key) {
            let _ = dec.decrypt_block(&damaged, &mut Vec::new());
        }
    }
    for _ in 0..32 {
        let mut random_key = [0u8; HEADER_KEY_LEN];
        random_key.copy_from_slice(&rng.bytes(HEADER_KEY_LEN));
        if let Ok(mut dec) = cipher.new_decryptor(&random_key) {
            let _ = dec.decrypt_block(body, &mut Vec::new());
        }
    }
    for key in [[0u8; HEADER_KEY_LEN], [0xFF; HEADER_KEY_LEN]] {
        if let Ok(mut dec) = cipher.new_decryptor(&key) {
            let _ = dec.decrypt_block(body, &mut Vec::new());
        }
    }
}

/// The header key is the same before and after encrypting blocks in a session.
///
/// # Panics
///
/// When it changes, or on a cipher error.
pub fn check_header_key_stable(cipher: &dyn LogCipher) {
    let mut enc = cipher
        .new_encryptor()
        .unwrap_or_else(|e| panic!("{}: new_encryptor: {e}", cipher.name()));
    let before = enc.header_key();
    let mut rng = TestRng::new(0x4EAD);
    for len in [0, 5, 300] {
        encrypt_block(cipher, &mut *enc, &rng.bytes(len), &[7]);
        assert_eq!(
            enc.header_key(),
            before,
            "{}: header key changed",
            cipher.name()
        );
    }
}

fn encrypt_block(
    cipher: &dyn LogCipher,
    enc: &mut dyn BlockEncryptor,
    plain: &[u8],
    chunks: &[usize],
) -> Vec<u8> {
    let mut out = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    let mut fed = 0;
    let mut i = 0;
    while fed < plain.len() {
        let size = match chunks {
            [] => plain.len(),
            _ => chunks[i % chunks.len()].max(1),
        };
        i += 1;
        let end = (fed + size).min(plain.len());
        pending.extend_from_slice(&plain[fed..end]);
        fed = end;
        let used = enc
            .encrypt(&pending, &mut out)
            .unwrap_or_else(|e| panic!("{}: encrypt: {e}", cipher.name()));
        assert!(
            used <= pending.len(),
            "{}: encrypt consumed {used} of {} bytes",
            cipher.name(),
            pending.len()
        );
        pending.drain(..used);
    }
    enc.finish_block(&pending, &mut out)
        .unwrap_or_else(|e| panic!("{}: finish_block: {e}", cipher.name()));
    out
}

/// Asserts that two ciphers holding the same key pair interoperate: blocks written by either
/// decrypt exactly with the other, and both report the same name and kind.
///
/// Meant for comparing a plugin used in-process with the same plugin loaded from its library
/// (ciphertexts differ between sessions, so they are not compared byte for byte).
///
/// # Panics
///
/// When a block does not come back, or the names or kinds differ.
pub fn assert_ciphers_interoperate(a: &dyn LogCipher, b: &dyn LogCipher) {
    assert_eq!(a.name(), b.name(), "name");
    assert_eq!(a.kind(), b.kind(), "kind");
    let mut rng = TestRng::new(0x1C1F);
    let blocks: Vec<Vec<u8>> = [0, 1, 7, 8, 9, 100, 4096]
        .iter()
        .map(|&len| rng.bytes(len))
        .collect();
    for (writer, reader, direction) in [(a, b, "a → b"), (b, a, "b → a")] {
        let (key, bodies) = encrypt_session(writer, &blocks, &[5, 64, 1]);
        let mut dec = reader
            .new_decryptor(&key)
            .unwrap_or_else(|e| panic!("{direction}: new_decryptor: {e}"));
        for (i, (plain, body)) in blocks.iter().zip(&bodies).enumerate() {
            let mut out = Vec::new();
            dec.decrypt_block(body, &mut out)
                .unwrap_or_else(|e| panic!("{direction}: block {i}: {e}"));
            assert!(out == *plain, "{direction}: block {i} differs");
        }
    }
}
