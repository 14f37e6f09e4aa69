//! This crate built as a plugin library (`--features dynamic`, by the test itself) is
//! loaded through phobos-plugin-abi's loader, and the loaded cipher passes the conformance
//! suite and interoperates with the in-process one.
//!
//! `cargo test -p phobos-cipher-modern --test dynamic_load`

use std::sync::Arc;

use phobos_cipher_modern::ModernCipher;
use phobos_plugin_abi::PluginLibrary;
use phobos_plugin_api::{CipherError, LogCipher};

const NAME: &str = "x25519-chacha20poly1305";

#[path = "../../../plugin-api/abi/tests/common/mod.rs"]
mod common;

/// This crate built as a plugin library (`--features dynamic`, a nested build: no workspace
/// member turns the feature on, so the test builds it).
fn library() -> Arc<PluginLibrary> {
    PluginLibrary::load(&common::cipher_libraries().modern).unwrap()
}

fn loaded_fresh_pair() -> Arc<dyn LogCipher> {
    let pair = ModernCipher::generate_key_pair();
    let config = format!(
        r#"{{ "public_key": "{}", "private_key": "{}" }}"#,
        pair.public_key, pair.private_key
    );
    library().log_cipher(NAME, Some(&config)).unwrap()
}

phobos_plugin_testkit::cipher_conformance!(modern_loaded, loaded_fresh_pair, loaded_fresh_pair);

#[test]
fn loaded_writer_and_in_process_reader_agree() {
    let pair = ModernCipher::generate_key_pair();
    let config = format!(r#"{{ "public_key": "{}" }}"#, pair.public_key);
    let writer = library().log_cipher(NAME, Some(&config)).unwrap();
    let mut enc = writer.new_encryptor().unwrap();
    let mut body = Vec::new();
    enc.encrypt(b"through the plugin\n", &mut body).unwrap();
    enc.finish_block(b"", &mut body).unwrap();

    let reader = ModernCipher::from_private_key_hex(&pair.private_key).unwrap();
    let mut plain = Vec::new();
    let mut dec = reader.new_decryptor(&enc.header_key()).unwrap();
    dec.decrypt_block(&body, &mut plain).unwrap();
    assert_eq!(plain, b"through the plugin\n");

    body[20] ^= 1;
    let mut dec = reader.new_decryptor(&enc.header_key()).unwrap();
    assert_eq!(
        dec.decrypt_block(&body, &mut Vec::new()),
        Err(CipherError::Integrity)
    );
}

#[test]
fn a_bad_key_is_refused_at_load() {
    let err = library()
        .log_cipher(NAME, Some(r#"{ "private_key": "00" }"#))
        .unwrap_err();
    assert!(err.to_string().contains("64 hex characters"), "{err}");
}
