//! The dynamic-library export (feature `dynamic`): built as a `cdylib`, this crate is a Phobos
//! plugin library offering the cipher `"mars-tea"`, configured with a [`MarsCipherConfig`]
//! (e.g. `{ "private_key": "<64 hex>" }` for a reader). A bad key is refused at load time
//! with the cipher's own message.

use crate::{MarsCipher, MarsCipherConfig};

phobos_plugin_abi::export_plugin! {
    cipher "mars-tea" => |cfg: MarsCipherConfig| MarsCipher::from_config(&cfg),
}
