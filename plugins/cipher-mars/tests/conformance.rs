//! The testkit's cipher conformance suite against `MarsCipher`.

use std::sync::Arc;

use phobos_cipher_mars::{MarsCipher, MarsCipherConfig};

fn both_keys() -> Arc<MarsCipher> {
    let pair = MarsCipher::generate_key_pair();
    Arc::new(
        MarsCipher::from_config(&MarsCipherConfig {
            public_key: Some(pair.public_key),
            private_key: Some(pair.private_key),
        })
        .unwrap(),
    )
}

phobos_plugin_testkit::cipher_conformance!(mars_tea, both_keys, both_keys);
