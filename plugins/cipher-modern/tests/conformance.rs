//! The testkit's cipher conformance suite against `ModernCipher`.

use std::sync::Arc;

use phobos_cipher_modern::{ModernCipher, ModernCipherConfig};

fn both_keys() -> Arc<ModernCipher> {
    let pair = ModernCipher::generate_key_pair();
    Arc::new(
        ModernCipher::from_config(&ModernCipherConfig {
            public_key: Some(pair.public_key),
            private_key: Some(pair.private_key),
        })
        .unwrap(),
    )
}

phobos_plugin_testkit::cipher_conformance!(x25519_chacha20poly1305, both_keys, both_keys);
