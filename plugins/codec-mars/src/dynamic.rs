//! The dynamic-library export (feature `dynamic`): built as a `cdylib`, this crate is a Phobos
//! plugin library offering the codec `"mars"`, configured with a [`MarsCodecConfig`] (JSON or
//! TOML table on the host side, e.g. `{ "client_version": 200 }`).

use crate::{MarsCodec, MarsCodecConfig};

phobos_plugin_abi::export_plugin! {
    codec "mars" => |cfg: MarsCodecConfig| MarsCodec::new(cfg),
}
