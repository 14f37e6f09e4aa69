//! The one line that makes this crate a Phobos plugin library.

use crate::{AcmeCipher, AcmeCipherConfig, AcmeCodec, AcmeCodecConfig};

phobos_plugin_abi::export_plugin! {
    codec "acme" => |cfg: AcmeCodecConfig| AcmeCodec::new(cfg),
    cipher "acme-aes256gcm" => |cfg: AcmeCipherConfig| AcmeCipher::new(cfg),
}
