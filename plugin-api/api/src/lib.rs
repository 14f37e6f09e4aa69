//! The Phobos extension traits and the plain types they mention.
//!
//! This crate is the source of truth for what a Phobos plugin is. It holds five small trait
//! families and nothing else:
//!
//! | Trait | Kind | Called by |
//! |---|---|---|
//! | [`PacketCodec`] | pure, synchronous | the sans-IO core, inline, for every frame |
//! | [`AuthCheck`] | async `ensure_authed` + synchronous identify hooks | the driver (async part, on a thread of its own when [`is_blocking`](AuthCheck::is_blocking)), the core (identify) |
//! | [`IpSource`] | async | the driver, off the core's loop (on a thread of its own when [`is_blocking`](IpSource::is_blocking)) |
//! | [`LogCipher`] | pure, synchronous | xlog's writer thread and the decoder |
//! | [`HeartbeatPolicyFactory`] / [`HeartbeatPolicy`] | pure, synchronous | the sans-IO core |
//!
//! Every shared plugin object is `Send + Sync + Debug + 'static` and used as `Arc<dyn Trait>`,
//! so an in-process plugin and one loaded from a dynamic library (see `phobos-plugin-abi`) look
//! the same to the framework. Per-link or per-session state comes from a factory method that
//! builds a fresh `Box<dyn …>`.
//!
//! What this crate deliberately does **not** contain: IO, tokio, abi_stable, or any concrete
//! plugin. Defaults live in `plugins/*`; the selection of plugins by configuration lives in
//! `phobos-plugin-registry`.
//!
//! # Rules every trait follows
//!
//! - Time is an argument (`now: Instant`); a plugin never reads a clock or a global.
//! - Bytes come in as `&[u8]` and go out by appending to a caller's `Vec<u8>`.
//! - Decoders tell "need more" apart from "malformed" and never panic, whatever the input.
//! - Required methods are the minimum; optional hooks have default bodies.
//! - A plugin does not panic; should one all the same, the framework catches it where it
//!   calls the plugin and uses the fallback [`panics`] documents.
//!
//! # Example
//!
//! A codec is used through `dyn PacketCodec` by the framework:
//!
//! ```
//! use phobos_plugin_api::{codec::{Decoded, FrameHead, PacketCodec}, CmdId, Seq};
//!
//! fn roundtrip(codec: &dyn PacketCodec) {
//!     let mut wire = Vec::new();
//!     codec.encode(FrameHead::new(CmdId(7), Seq(1)), b"hi", &[], &mut wire).unwrap();
//!     match codec.decode(&wire).unwrap() {
//!         Decoded::Frame(f) => assert_eq!(&wire[f.body.clone()], b"hi"),
//!         Decoded::Incomplete { .. } => unreachable!("a whole frame was given"),
//!     }
//! }
//! # #[derive(Debug)] struct Demo;
//! # impl PacketCodec for Demo {
//! #   fn name(&self) -> &str { "demo" }
//! #   fn encode(&self, h: FrameHead, body: &[u8], _e: &[u8], out: &mut Vec<u8>)
//! #     -> Result<(), phobos_plugin_api::codec::EncodeError> {
//! #     out.extend_from_slice(&h.cmd_id.0.to_be_bytes()); out.extend_from_slice(&h.seq.0.to_be_bytes());
//! #     out.extend_from_slice(&(body.len() as u32).to_be_bytes()); out.extend_from_slice(body); Ok(()) }
//! #   fn decode(&self, b: &[u8]) -> Result<Decoded, phobos_plugin_api::codec::DecodeError> {
//! #     if b.len() < 12 { return Ok(Decoded::Incomplete { head: None, needed: 12 }); }
//! #     let n = u32::from_be_bytes([b[8], b[9], b[10], b[11]]) as usize;
//! #     if b.len() < 12 + n { return Ok(Decoded::Incomplete { head: None, needed: 12 + n }); }
//! #     Ok(Decoded::Frame(phobos_plugin_api::codec::RawFrame {
//! #       head: FrameHead::new(CmdId(u32::from_be_bytes([b[0],b[1],b[2],b[3]])), Seq(u32::from_be_bytes([b[4],b[5],b[6],b[7]]))),
//! #       body: 12..12 + n, extension: None, len: 12 + n })) }
//! #   fn classify(&self, h: &FrameHead) -> phobos_plugin_api::codec::FrameKind {
//! #     phobos_plugin_api::codec::FrameKind::Response(h.seq) }
//! # }
//! # roundtrip(&Demo);
//! ```

#![forbid(unsafe_code)]

pub mod auth;
pub mod cipher;
pub mod codec;
pub mod heartbeat;
pub mod ipsource;
pub mod panics;
mod types;

pub use auth::{AuthCheck, AuthError, IdentifyRequest, IdentifyVerdict};
pub use cipher::{BlockDecryptor, BlockEncryptor, CipherError, CipherKind, LogCipher};
pub use codec::{
    DecodeError, Decoded, EncodeError, FrameHead, FrameKind, PacketCodec, RawFrame,
    ShortLinkReject, ShortLinkRequest,
};
pub use heartbeat::{HeartbeatContext, HeartbeatPolicy, HeartbeatPolicyFactory};
pub use ipsource::{AddrSource, IpSource, ResolveError, ResolvedAddr};
pub use types::{ChannelKind, CmdId, IpPort, LinkPurpose, NetKind, Seq, TaskId};

/// The version of this API, as a semantic version triple.
///
/// `phobos-plugin-abi` embeds it in every plugin library and the host refuses a library whose
/// major version differs (or, while the major version is 0, whose minor version differs).
///
/// 0.2.0: every plugin library carries the plain version symbol the loader reads before
/// anything else (`phobos-plugin-abi`'s `API_VERSION_SYMBOL`); libraries built for 0.1 lack
/// it and must be rebuilt.
pub const API_VERSION: (u16, u16, u16) = (0, 2, 0);
