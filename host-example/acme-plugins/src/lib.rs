//! ACME's Phobos plugins: what a team that owns its own server protocol writes instead of
//! patching Mars's C++ packer and log encryption.
//!
//! - [`AcmeCodec`] (`"acme"`): the long-link frame format, below.
//! - [`AcmeCipher`] (`"acme-aes256gcm"`): the xlog cipher, X25519 + HKDF-SHA256 +
//!   AES-256-GCM in ACME's own header and record format (see the [`cipher`] module).
//!
//! [`AcmeCodec`] frames the long link with ACME's header: a magic, a version, the routing
//! fields, the body length and a CRC-32 of the body, so a corrupted or foreign frame is caught
//! at the first byte that does not fit.
//!
//! ```text
//!  0       2     3      4        8        12            16        20
//!  +-------+-----+------+--------+--------+-------------+---------+------------------+
//!  | magic | ver | rsvd | cmd_id |  seq   | body_length |  crc32  | body             |
//!  | AC 3E | 01  |  00  |  u32   |  u32   |    u32      | of body |                  |
//!  +-------+-----+------+--------+--------+-------------+---------+------------------+
//!  all integers big-endian; header 20 bytes; frame at most `max_frame_len` (default 256 KiB)
//! ```
//!
//! ```
//! use acme_phobos_plugins::{AcmeCodec, AcmeCodecConfig};
//! use phobos_plugin_api::{CmdId, Decoded, FrameHead, PacketCodec, Seq};
//!
//! let codec = AcmeCodec::new(AcmeCodecConfig::default())?;
//! let mut wire = Vec::new();
//! codec.encode(FrameHead::new(CmdId(1), Seq(9)), b"hi", &[], &mut wire)?;
//! assert_eq!(&wire[..4], &[0xAC, 0x3E, 0x01, 0x00]);
//! let Decoded::Frame(frame) = codec.decode(&wire)? else { unreachable!() };
//! assert_eq!(&wire[frame.body], b"hi");
//!
//! wire[21] ^= 0xFF; // one flipped bit in the body
//! assert!(codec.decode(&wire).is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Built with `--features dynamic` the crate is a plugin library offering the codec `"acme"`
//! and the cipher `"acme-aes256gcm"`; see `docs/PLUGINS.md` for the walk-through.

use phobos_plugin_api::codec::{DecodeError, Decoded, EncodeError, FrameHead, FrameKind, RawFrame};
use phobos_plugin_api::{CmdId, PacketCodec, Seq};
use serde::Deserialize;

pub mod cipher;
#[cfg(feature = "dynamic")]
mod dynamic;

pub use cipher::{AcmeCipher, AcmeCipherConfig};

/// ACME's long-link codec.
#[derive(Clone, Debug)]
pub struct AcmeCodec {
    max_frame_len: usize,
}

impl AcmeCodec {
    /// The name it is registered under.
    pub const NAME: &'static str = "acme";

    /// A codec with the given limits.
    ///
    /// # Errors
    ///
    /// [`AcmeConfigError`] when `max_frame_len` is below the header length or above 16 MiB.
    pub fn new(config: AcmeCodecConfig) -> Result<Self, AcmeConfigError> {
        if !(HEADER_LEN..=MAX_FRAME_LIMIT).contains(&config.max_frame_len) {
            return Err(AcmeConfigError::MaxFrameLen(config.max_frame_len));
        }
        Ok(AcmeCodec {
            max_frame_len: config.max_frame_len,
        })
    }
}

impl Default for AcmeCodec {
    fn default() -> Self {
        AcmeCodec {
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
        }
    }
}

impl PacketCodec for AcmeCodec {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn encode(
        &self,
        head: FrameHead,
        body: &[u8],
        _extension: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        let len = HEADER_LEN + body.len();
        if len > self.max_frame_len {
            return Err(EncodeError::TooLarge {
                len: len as u64,
                max: self.max_frame_len as u64,
            });
        }
        out.reserve(len);
        out.extend_from_slice(&MAGIC.to_be_bytes());
        out.push(VERSION);
        out.push(0);
        out.extend_from_slice(&head.cmd_id.0.to_be_bytes());
        out.extend_from_slice(&head.seq.0.to_be_bytes());
        // Fits: len <= max_frame_len <= 16 MiB.
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&crc32fast::hash(body).to_be_bytes());
        out.extend_from_slice(body);
        Ok(())
    }

    fn decode(&self, buf: &[u8]) -> Result<Decoded, DecodeError> {
        // Check what we have of the fixed prefix first, so garbage fails fast.
        if let Some(m) = buf.get(..2) {
            let magic = u16::from_be_bytes([m[0], m[1]]);
            if magic != MAGIC {
                return Err(DecodeError::Magic {
                    got: u32::from(magic),
                });
            }
        }
        if let Some(&v) = buf.get(2) {
            if v != VERSION {
                return Err(DecodeError::Version {
                    expected: u32::from(VERSION),
                    got: u32::from(v),
                });
            }
        }
        let Some(header) = buf.get(..HEADER_LEN) else {
            return Ok(Decoded::Incomplete {
                head: None,
                needed: HEADER_LEN,
            });
        };
        let word = |at: usize| {
            u32::from_be_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
        };
        let head = FrameHead::new(CmdId(word(4)), Seq(word(8)));
        let body_len = word(12) as usize;
        let total = HEADER_LEN as u64 + body_len as u64;
        if total > self.max_frame_len as u64 {
            return Err(DecodeError::TooLarge {
                len: total,
                max: self.max_frame_len as u64,
            });
        }
        let total = HEADER_LEN + body_len;
        let Some(body) = buf.get(HEADER_LEN..total) else {
            return Ok(Decoded::Incomplete {
                head: Some(head),
                needed: total,
            });
        };
        if crc32fast::hash(body) != word(16) {
            return Err(DecodeError::Checksum);
        }
        Ok(Decoded::Frame(RawFrame {
            head,
            body: HEADER_LEN..total,
            extension: None,
            len: total,
        }))
    }

    fn classify(&self, head: &FrameHead) -> FrameKind {
        // ACME keeps Mars's reserved command ids and sequence numbers.
        phobos_plugin_api::codec::classify_mars(head)
    }

    fn max_frame_len(&self) -> usize {
        self.max_frame_len
    }
}

/// [`AcmeCodec`]'s configuration (`config = { max_frame_len = 65536 }` in the host's TOML).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AcmeCodecConfig {
    /// The largest frame accepted, header included (20 bytes to 16 MiB; default 256 KiB).
    pub max_frame_len: usize,
}

impl Default for AcmeCodecConfig {
    fn default() -> Self {
        AcmeCodecConfig {
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
        }
    }
}

/// A rejected [`AcmeCodecConfig`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AcmeConfigError {
    /// `max_frame_len` out of range.
    #[error("max_frame_len {0} is outside 20..=16777216")]
    MaxFrameLen(usize),
}

/// ACME's magic, the first two bytes of every frame.
pub const MAGIC: u16 = 0xAC3E;
/// The header version this codec speaks.
pub const VERSION: u8 = 0x01;
/// Header length in bytes.
pub const HEADER_LEN: usize = 20;
const DEFAULT_MAX_FRAME_LEN: usize = 256 * 1024;
const MAX_FRAME_LIMIT: usize = 16 * 1024 * 1024;

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    phobos_plugin_testkit::codec_conformance!(acme_conformance, || Arc::new(AcmeCodec::default()));

    #[test]
    fn a_frame_with_a_bad_crc_is_malformed() {
        let codec = AcmeCodec::default();
        let mut wire = Vec::new();
        codec
            .encode(FrameHead::new(CmdId(3), Seq(4)), b"payload", &[], &mut wire)
            .unwrap();
        let last = wire.len() - 1;
        wire[last] ^= 1;
        assert_eq!(codec.decode(&wire), Err(DecodeError::Checksum));
    }

    #[test]
    fn a_mars_frame_is_rejected_at_its_first_bytes() {
        // Mars's header starts with head_length = 20: 00 00 00 14.
        assert_eq!(
            AcmeCodec::default().decode(&[0, 0]),
            Err(DecodeError::Magic { got: 0 })
        );
    }

    #[test]
    fn config_limits_are_checked() {
        assert!(AcmeCodec::new(AcmeCodecConfig { max_frame_len: 19 }).is_err());
        assert!(AcmeCodec::new(AcmeCodecConfig {
            max_frame_len: 17 * 1024 * 1024
        })
        .is_err());
        assert!(AcmeCodec::new(AcmeCodecConfig { max_frame_len: 20 }).is_ok());
    }
}
