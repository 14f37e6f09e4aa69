//! Conformance suites every Phobos plugin implementation should pass.
//!
//! Each suite is a plain function per property (in [`codec`], [`heartbeat`], [`cipher`],
//! [`ipsource`], [`auth`]) plus a macro that turns them into `#[test]` functions for one implementation,
//! given an expression that builds it. The same suite runs against a plugin used in-process and
//! against the same plugin loaded from its dynamic library, so both must behave alike;
//! [`codec::assert_codecs_identical`] compares two codecs byte for byte.
//!
//! | Macro | Trait | What it checks |
//! |---|---|---|
//! | [`codec_conformance!`] | [`PacketCodec`](phobos_plugin_api::PacketCodec) | round trips (empty and largest bodies), incremental decode at every split, decode never panics and keeps `needed ≤ max`, `len > 0`, heartbeat/identify classification, oversize encode leaves `out` unchanged |
//! | [`heartbeat_conformance!`] | [`HeartbeatPolicyFactory`](phobos_plugin_api::HeartbeatPolicyFactory) | intervals positive and bounded, fresh policies independent, export → import round trip, corrupt state harmless |
//! | [`cipher_conformance!`] | [`LogCipher`](phobos_plugin_api::LogCipher) | chunked encryption decrypts exactly, a wrong key never yields the plaintext, damaged bodies never panic |
//! | [`ipsource_conformance!`] | [`IpSource`](phobos_plugin_api::IpSource) | resolving never panics, every address carries the expected source tag |
//! | [`auth_conformance!`] | [`AuthCheck`](phobos_plugin_api::AuthCheck) | identify exchange never panics and avoids the heartbeat command, gate consistent with `ensure_authed` |
//!
//! For in-process versus loaded comparisons, each module also has an `assert_*` function
//! that drives two implementations through the same calls: [`codec::assert_codecs_identical`],
//! [`heartbeat::assert_factories_identical`], [`cipher::assert_ciphers_interoperate`],
//! [`ipsource::assert_sources_identical`], [`auth::assert_auth_identical`].
//!
//! Randomised checks use proptest with a small number of cases by default ([`DEFAULT_CASES`]),
//! overridable through the `PROPTEST_CASES` environment variable; the other checks use a fixed
//! seed, so a failure replays exactly.
//!
//! # Example
//!
//! In a plugin crate's tests (a dev-dependency on this crate is enough; the generated tests
//! need no other dependency):
//!
//! ```
//! use std::sync::Arc;
//! # use phobos_plugin_api::{codec::*, CmdId, Seq};
//! # #[derive(Debug)]
//! # struct MyCodec;
//! # impl PacketCodec for MyCodec {
//! #   fn name(&self) -> &str { "mine" }
//! #   fn encode(&self, h: FrameHead, body: &[u8], _e: &[u8], out: &mut Vec<u8>)
//! #     -> Result<(), EncodeError> {
//! #     let len = 12 + body.len();
//! #     if len > self.max_frame_len() { return Err(EncodeError::TooLarge { len: len as u64, max: self.max_frame_len() as u64 }); }
//! #     out.extend_from_slice(&h.cmd_id.0.to_be_bytes()); out.extend_from_slice(&h.seq.0.to_be_bytes());
//! #     out.extend_from_slice(&(body.len() as u32).to_be_bytes()); out.extend_from_slice(body); Ok(()) }
//! #   fn decode(&self, b: &[u8]) -> Result<Decoded, DecodeError> {
//! #     let Some(h) = b.first_chunk::<12>() else { return Ok(Decoded::Incomplete { head: None, needed: 12 }) };
//! #     let f = |i: usize| u32::from_be_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
//! #     let n = 12 + f(8) as usize;
//! #     if n > self.max_frame_len() { return Err(DecodeError::TooLarge { len: n as u64, max: self.max_frame_len() as u64 }); }
//! #     let head = FrameHead::new(CmdId(f(0)), Seq(f(4)));
//! #     if b.len() < n { return Ok(Decoded::Incomplete { head: Some(head), needed: n }); }
//! #     Ok(Decoded::Frame(RawFrame { head, body: 12..n, extension: None, len: n })) }
//! #   fn classify(&self, h: &FrameHead) -> FrameKind {
//! #     if h.cmd_id == HEARTBEAT_CMD { FrameKind::HeartbeatReply }
//! #     else if h.seq == IDENTIFY_SEQ { FrameKind::IdentifyReply }
//! #     else if h.seq == PUSH_SEQ { FrameKind::Push } else { FrameKind::Response(h.seq) } }
//! #   fn max_frame_len(&self) -> usize { 4096 }
//! # }
//!
//! // Expands to a module `my_codec` with one `#[test]` per property.
//! phobos_plugin_testkit::codec_conformance!(my_codec, || Arc::new(MyCodec));
//!
//! // The checks are plain functions too, for use outside the macro:
//! # fn main() {
//! phobos_plugin_testkit::codec::check_round_trip(&MyCodec);
//! phobos_plugin_testkit::codec::check_incremental(&MyCodec);
//! phobos_plugin_testkit::codec::assert_codecs_identical(&MyCodec, &MyCodec);
//! # }
//! ```

pub mod auth;
pub mod cipher;
pub mod codec;
pub mod heartbeat;
pub mod ipsource;
mod rng;

pub use rng::TestRng;

/// Proptest cases per randomised check when `PROPTEST_CASES` is not set.
pub const DEFAULT_CASES: u32 = 64;

/// The number of proptest cases to run: `PROPTEST_CASES` if set to a number, else
/// [`DEFAULT_CASES`].
pub fn proptest_cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CASES)
}

/// Items the macros refer to; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use phobos_plugin_api::{
        AddrSource, AuthCheck, HeartbeatPolicyFactory, IpSource, LogCipher, PacketCodec,
    };
    pub use std::sync::Arc;
}

/// Generates a module `$name` of `#[test]` functions checking a
/// [`PacketCodec`](phobos_plugin_api::PacketCodec).
///
/// `$ctor` is an expression callable with no arguments that returns an `Arc` of the codec
/// (`Arc<MyCodec>` or `Arc<dyn PacketCodec>`); it is called once per test. Names in it are
/// resolved as in the calling module. See [`codec`] for what each test checks.
#[macro_export]
macro_rules! codec_conformance {
    ($name:ident, $ctor:expr $(,)?) => {
        #[allow(non_snake_case)]
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[allow(dead_code)]
            fn subject() -> $crate::__private::Arc<dyn $crate::__private::PacketCodec> {
                let ctor = $ctor;
                ctor()
            }

            #[test]
            pub(super) fn round_trips_generated_frames() {
                $crate::codec::check_round_trip(&*subject());
            }

            #[test]
            pub(super) fn round_trips_empty_and_largest_bodies() {
                $crate::codec::check_edge_sizes(&*subject());
            }

            #[test]
            pub(super) fn decodes_incrementally_at_every_split() {
                $crate::codec::check_incremental(&*subject());
            }

            #[test]
            pub(super) fn decodes_a_stream_arriving_one_byte_at_a_time() {
                $crate::codec::check_byte_at_a_time(&*subject());
            }

            #[test]
            pub(super) fn never_panics_on_random_bytes() {
                $crate::codec::check_random_bytes(&*subject());
            }

            #[test]
            pub(super) fn never_panics_on_damaged_frames() {
                $crate::codec::check_damaged_frames(&*subject());
            }

            #[test]
            pub(super) fn heartbeat_and_identify_frames_classify_as_such() {
                $crate::codec::check_reserved_frames(&*subject());
            }

            #[test]
            pub(super) fn oversize_encode_fails_and_leaves_out_unchanged() {
                $crate::codec::check_oversize_encode(&*subject());
            }

            #[test]
            pub(super) fn two_instances_behave_identically() {
                $crate::codec::assert_codecs_identical(&*subject(), &*subject());
            }
        }
    };
}

/// Generates a module `$name` of `#[test]` functions checking a
/// [`HeartbeatPolicyFactory`](phobos_plugin_api::HeartbeatPolicyFactory).
///
/// `$ctor` is called with no arguments and returns an `Arc` of a **fresh** factory (no learnt
/// state) each time. See [`heartbeat`] for what each test checks.
#[macro_export]
macro_rules! heartbeat_conformance {
    ($name:ident, $ctor:expr $(,)?) => {
        #[allow(non_snake_case)]
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            fn subject() -> $crate::__private::Arc<dyn $crate::__private::HeartbeatPolicyFactory> {
                let ctor = $ctor;
                ctor()
            }

            #[test]
            pub(super) fn intervals_are_positive_and_bounded() {
                $crate::heartbeat::check_intervals_bounded(&*subject());
            }

            #[test]
            pub(super) fn fresh_policies_are_independent() {
                $crate::heartbeat::check_fresh_policies_independent(&*subject());
            }

            #[test]
            pub(super) fn exported_state_imports_back_unchanged() {
                $crate::heartbeat::check_state_round_trip(&*subject(), &*subject());
            }

            #[test]
            pub(super) fn corrupt_state_is_harmless() {
                $crate::heartbeat::check_corrupt_state(&*subject());
            }
        }
    };
}

/// Generates a module `$name` of `#[test]` functions checking a
/// [`LogCipher`](phobos_plugin_api::LogCipher).
///
/// `$ctor` returns an `Arc` of a cipher holding **both** keys (public for writing, private for
/// reading); `$wrong` returns one holding both keys of a **different** key pair. See
/// [`cipher`] for what each test checks.
#[macro_export]
macro_rules! cipher_conformance {
    ($name:ident, $ctor:expr, $wrong:expr $(,)?) => {
        #[allow(non_snake_case)]
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            fn subject() -> $crate::__private::Arc<dyn $crate::__private::LogCipher> {
                let ctor = $ctor;
                ctor()
            }

            fn wrong() -> $crate::__private::Arc<dyn $crate::__private::LogCipher> {
                let ctor = $wrong;
                ctor()
            }

            #[test]
            pub(super) fn chunked_plaintext_decrypts_back_exactly() {
                $crate::cipher::check_round_trip(&*subject());
            }

            #[test]
            pub(super) fn a_wrong_key_never_yields_the_plaintext() {
                $crate::cipher::check_wrong_key(&*subject(), &*wrong());
            }

            #[test]
            pub(super) fn damaged_bodies_never_panic() {
                $crate::cipher::check_damaged_bodies(&*subject());
            }

            #[test]
            pub(super) fn header_key_is_stable_within_a_session() {
                $crate::cipher::check_header_key_stable(&*subject());
            }
        }
    };
}

/// Generates a module `$name` of `#[test]` functions checking an
/// [`IpSource`](phobos_plugin_api::IpSource).
///
/// `$ctor` returns an `Arc` of the source; every address it returns must be tagged `$source`
/// (an [`AddrSource`](phobos_plugin_api::AddrSource)); `$hosts` is an array of host names to
/// resolve (only names that resolve without external network: `"localhost"`, literal IPs,
/// names the source is configured with). See [`ipsource`] for what each test checks.
#[macro_export]
macro_rules! ipsource_conformance {
    ($name:ident, $ctor:expr, $source:expr, $hosts:expr $(,)?) => {
        #[allow(non_snake_case)]
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            fn subject() -> $crate::__private::Arc<dyn $crate::__private::IpSource> {
                let ctor = $ctor;
                ctor()
            }

            #[test]
            pub(super) fn resolving_never_panics_and_tags_every_address() {
                let source: $crate::__private::AddrSource = $source;
                $crate::ipsource::check_resolve(&*subject(), source, &$hosts);
            }

            #[test]
            pub(super) fn odd_host_names_never_panic() {
                $crate::ipsource::check_odd_hosts(&*subject());
            }
        }
    };
}

/// Generates a module `$name` of `#[test]` functions checking an
/// [`AuthCheck`](phobos_plugin_api::AuthCheck).
///
/// `$ctor` returns an `Arc` of the plugin; it is called once per test. See [`auth`] for what
/// each test checks.
#[macro_export]
macro_rules! auth_conformance {
    ($name:ident, $ctor:expr $(,)?) => {
        #[allow(non_snake_case)]
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            fn subject() -> $crate::__private::Arc<dyn $crate::__private::AuthCheck> {
                let ctor = $ctor;
                ctor()
            }

            #[test]
            pub(super) fn identify_exchange_never_panics() {
                $crate::auth::check_identify_exchange(&*subject());
            }

            #[test]
            pub(super) fn gate_agrees_with_ensure_authed() {
                $crate::auth::check_gate_consistent(&*subject());
            }

            #[test]
            pub(super) fn two_instances_behave_identically() {
                $crate::auth::assert_auth_identical(&*subject(), &*subject());
            }
        }
    };
}
