//! The dynamic-library export (feature `dynamic`): built as a `cdylib`, this crate is a Phobos
//! plugin library offering the cipher `"x25519-chacha20poly1305"`, configured with a
//! [`ModernCipherConfig`] (e.g. `{ "public_key": "<64 hex>" }` for a writer). A bad key is
//! refused at load time with the cipher's own message.

use crate::{ModernCipher, ModernCipherConfig};

phobos_plugin_abi::export_plugin! {
    cipher "x25519-chacha20poly1305" => |cfg: ModernCipherConfig| ModernCipher::from_config(&cfg),
}
