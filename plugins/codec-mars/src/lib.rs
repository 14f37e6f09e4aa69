//! Mars-compatible long-link packet codec: [`MarsCodec`].
//!
//! This crate speaks the frame format of Mars's default long-link packer (`longlink_packer.cc`),
//! so a Phobos client can talk to an existing Mars server unchanged. It implements
//! [`PacketCodec`](phobos_plugin_api::PacketCodec) and nothing else: no IO, no clock, no
//! per-frame state, so one `Arc<MarsCodec>` serves every link.
//!
//! # Wire format
//!
//! Every frame is a 20-byte header of five unsigned 32-bit **big-endian** fields, followed by
//! the body. There is no padding, no magic and no checksum.
//!
//! ```text
//!  offset 0        4                8        12       16            20
//!         +--------+----------------+--------+--------+-------------+----------------------+
//!         | head   | client_version | cmd_id |  seq   | body_length | body (body_length B) |
//!         | length |                |        |        |             |                      |
//!         |  = 20  |  (configured)  |        |        |             |                      |
//!         +--------+----------------+--------+--------+-------------+----------------------+
//!         |<------------------------- 20-byte header ------------->|
//!         |<------------------- frame: 20 + body_length bytes, at most 1 MiB ------------->|
//! ```
//!
//! Reserved values (see [`phobos_plugin_api::codec`]):
//!
//! | Field | Value | Meaning |
//! |---|---|---|
//! | `seq` | `0x0000_0000` | server push |
//! | `seq` | `0xFFFF_FFFF` | heartbeat ("noop") |
//! | `seq` | `0xFFFF_FFFE` | identify ("synccheck") |
//! | `seq` | `0xFFFF_FFFD` | signalling keeper |
//! | `cmd_id` | `6` | heartbeat; **any** frame with this command id is a heartbeat reply |
//!
//! Received frames are classified from the header alone, in this order: `cmd_id == 6` →
//! heartbeat reply (whatever the sequence); `seq == 0xFFFF_FFFE` → identify reply;
//! `seq == 0` → push; anything else → the response to the task whose id equals `seq`.
//!
//! # Validation
//!
//! Where Mars trusts the peer, this codec does not (spec §16.1 and §18.3):
//!
//! - `head_length` must be exactly 20, otherwise [`DecodeError::HeadLength`](phobos_plugin_api::DecodeError::HeadLength). Mars uses the
//!   field to locate the body, so a header with `head_length = 0` and `body_length = 0`
//!   consumes nothing and spins Mars's reader forever; here it is a malformed frame, and every
//!   frame [`decode`](phobos_plugin_api::PacketCodec::decode) returns has `len >= 20`.
//! - `client_version` must equal the configured value, otherwise [`DecodeError::Version`](phobos_plugin_api::DecodeError::Version).
//! - `20 + body_length` must not exceed the frame limit (1 MiB, or lower if configured),
//!   otherwise [`DecodeError::TooLarge`](phobos_plugin_api::DecodeError::TooLarge), reported as soon as the header is complete, so a
//!   reader never buffers more than the limit.
//!
//! The `extension` buffer of [`PacketCodec::encode`](phobos_plugin_api::PacketCodec::encode)
//! has no place in this format and is ignored, as Mars's packer ignores it; decoded frames
//! carry `extension: None`.
//!
//! # Example
//!
//! ```
//! use phobos_codec_mars::{MarsCodec, MarsCodecConfig};
//! use phobos_plugin_api::{CmdId, Decoded, FrameHead, FrameKind, PacketCodec, Seq};
//!
//! let codec = MarsCodec::new(MarsCodecConfig { client_version: 0x0102, ..Default::default() })?;
//!
//! let mut wire = Vec::new();
//! codec.encode(FrameHead::new(CmdId(42), Seq(7)), b"hello", &[], &mut wire)?;
//! assert_eq!(
//!     wire,
//!     [
//!         0, 0, 0, 20, // head_length
//!         0, 0, 1, 2, // client_version
//!         0, 0, 0, 42, // cmd_id
//!         0, 0, 0, 7, // seq
//!         0, 0, 0, 5, // body_length
//!         b'h', b'e', b'l', b'l', b'o',
//!     ]
//! );
//!
//! // A reader sees the header first, then the whole frame.
//! assert_eq!(
//!     codec.decode(&wire[..22])?,
//!     Decoded::Incomplete { head: Some(FrameHead::new(CmdId(42), Seq(7))), needed: 25 }
//! );
//! let Decoded::Frame(frame) = codec.decode(&wire)? else { unreachable!("whole frame given") };
//! assert_eq!(&wire[frame.body.clone()], b"hello");
//! assert_eq!(frame.len, wire.len());
//! assert_eq!(codec.classify(&frame.head), FrameKind::Response(Seq(7)));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # What this crate does not do
//!
//! It does not read sockets, keep a receive buffer, match responses to tasks or time
//! heartbeats: the framework does that with whatever codec it is given. It does not implement
//! Mars's legacy 16-byte test-stub header (spec §16.4).

mod codec;
mod config;
#[cfg(feature = "dynamic")]
mod dynamic;
pub mod fuzzing;

pub use codec::{MarsCodec, HEAD_LENGTH, MAX_FRAME_LEN};
pub use config::{ConfigError, MarsCodecConfig};
