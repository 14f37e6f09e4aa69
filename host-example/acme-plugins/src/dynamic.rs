//! The one line that makes this crate a Phobos plugin library.

use crate::{AcmeCodec, AcmeCodecConfig};

phobos_plugin_abi::export_plugin! {
    codec "acme" => |cfg: AcmeCodecConfig| AcmeCodec::new(cfg),
}
