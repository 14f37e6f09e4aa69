//! This crate built as a plugin library (`--features dynamic`, by the test itself) is
//! loaded through phobos-plugin-abi's loader, and the loaded cipher passes the conformance
//! suite and reads real Mars blocks.
//!
//! `cargo test -p phobos-cipher-mars --test dynamic_load`

use std::sync::Arc;

use phobos_plugin_abi::PluginLibrary;
use phobos_plugin_api::LogCipher;

const PRIVATE: &str = "b404e0f7d50323e5327c23603878c594189d63e76e4550fdea108b9ea41d3885";
const PUBLIC: &str = "1bcf0e7fed231a624d49eb6d58fa55ba73ba3b88a9498d4bba80bd798e5c9040\
                      e189ef6daf920dc81eac3b6f25808ca0753ed9b2d0787610321221ec5e0e0329";

#[path = "../../../plugin-api/abi/tests/common/mod.rs"]
mod common;

/// This crate built as a plugin library (`--features dynamic`, a nested build: no workspace
/// member turns the feature on, so the test builds it).
fn library() -> Arc<PluginLibrary> {
    PluginLibrary::load(&common::cipher_libraries().mars_tea).unwrap()
}

fn loaded(public: &str, private: &str) -> Arc<dyn LogCipher> {
    let config = format!(r#"{{ "public_key": "{public}", "private_key": "{private}" }}"#);
    library().log_cipher("mars-tea", Some(&config)).unwrap()
}

fn loaded_fresh_pair() -> Arc<dyn LogCipher> {
    let pair = phobos_cipher_mars::MarsCipher::generate_key_pair();
    loaded(&pair.public_key, &pair.private_key)
}

phobos_plugin_testkit::cipher_conformance!(mars_tea_loaded, loaded_fresh_pair, loaded_fresh_pair);

#[test]
fn loaded_cipher_reads_a_real_mars_block() {
    let file = include_bytes!("data/async_zlib_crypt.xlog");
    let len = u32::from_le_bytes(file[5..9].try_into().unwrap()) as usize;
    let key: [u8; 64] = file[9..73].try_into().unwrap();
    let body = &file[73..73 + len];

    let cipher = loaded(PUBLIC, PRIVATE);
    assert_eq!(cipher.name(), "mars-tea");
    let mut via_plugin = Vec::new();
    cipher
        .new_decryptor(&key)
        .unwrap()
        .decrypt_block(body, &mut via_plugin)
        .unwrap();
    let in_process = phobos_cipher_mars::MarsCipher::from_private_key_hex(PRIVATE).unwrap();
    let mut direct = Vec::new();
    in_process
        .new_decryptor(&key)
        .unwrap()
        .decrypt_block(body, &mut direct)
        .unwrap();
    assert_eq!(via_plugin, direct);
}

#[test]
fn a_bad_key_is_refused_at_load_with_the_ciphers_message() {
    let err = library()
        .log_cipher("mars-tea", Some(r#"{ "public_key": "abcd" }"#))
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("public key must be 128 hex characters"),
        "{err}"
    );
    let err = library()
        .log_cipher("mars-tea", Some(r#"{ "pubkey": "abcd" }"#))
        .unwrap_err();
    assert!(err.to_string().contains("pubkey"), "{err}");
}
