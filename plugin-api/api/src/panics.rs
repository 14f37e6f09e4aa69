//! What the framework does when a plugin panics: one definition of the fallbacks, shared by
//! the engine and driver (in-process plugins) and by `phobos-plugin-abi`'s adapters (plugins
//! loaded from a dynamic library).
//!
//! A plugin must not panic, but a broken one may. The framework catches the panic where it
//! calls the plugin, answers the call as this table says, and carries on: the plugin's caller
//! gets a clear error and loses nothing else, and nothing hangs or spins.
//!
//! | Trait | Method | Result after a panic inside the plugin |
//! |---|---|---|
//! | `PacketCodec` | `encode`, `encode_heartbeat`, `encode_identify` | `EncodeError::Other(`[`PLUGIN_PANICKED`]`)`, `out` unchanged |
//! | | `decode` | `DecodeError::Other(PLUGIN_PANICKED)` (the link is dropped) |
//! | | `shortlink_check_response` | `ShortLinkReject::Other(PLUGIN_PANICKED)` |
//! | | `classify` | [`fallback_classify`]: a response for the frame's sequence |
//! | | `max_frame_len` | [`DEFAULT_MAX_FRAME_LEN`] |
//! | | `heartbeat_interval` | `None` (the heartbeat policy decides) |
//! | | `is_reserved_seq` | [`fallback_is_reserved_seq`], the trait's default rule |
//! | | `shortlink_headers`, `shortlink_body` | the trait's default (Mars's) shape, [`DefaultShape`]'s |
//! | `AuthCheck` | `ensure_authed` | [`auth_panicked`]: `AuthError::Transient` naming the plugin |
//! | | `is_authed` | [`FALLBACK_IS_AUTHED`] (`false`: tasks wait, `ensure_authed` is asked) |
//! | | `identify_request` | [`FALLBACK_IDENTIFY_REQUEST`] (`Later`: ask again at the next heartbeat) |
//! | | `on_identify_response` | [`FALLBACK_IDENTIFY_VERDICT`] (`Retry`) |
//! | `IpSource` | `resolve` | [`resolve_panicked`]: `ResolveError::Failed` naming the plugin; the chain moves on |
//! | | `network_changed` | ignored |
//! | `HeartbeatPolicyFactory` | `build` | [`FallbackHeartbeat`], a fixed [`FALLBACK_HEARTBEAT_INTERVAL`] |
//! | | `export_state` / `import_state` | `None` (nothing saved) / `false` (state ignored) |
//! | `HeartbeatPolicy` | `next_interval` | `Some(FALLBACK_HEARTBEAT_INTERVAL)` |
//! | | `on_*` hooks | ignored |
//! | `LogCipher` (xlog's writer) | `kind`, `new_encryptor` | [`cipher_panicked`]: `CipherError::Crypto` naming the plugin; the writer is not made |
//! | `BlockEncryptor` (xlog's writer) | `encrypt`, `finish_block` | [`cipher_panicked`]: a line is lost and reported (sync mode), a block is appended as staged (async) |
//! | | `header_key` | read once, when the encryptor is made: a panic there fails the making |
//! | any | the plugin's `Drop` | caught; whatever it failed to release is leaked |
//!
//! A panic whose payload panics again when dropped is contained as well ([`catch`]).
//!
//! Nothing can be caught in a build with `panic = "abort"`: there, a panicking plugin ends
//! the process, in-process or loaded.
//!
//! [`DEFAULT_MAX_FRAME_LEN`]: crate::codec::DEFAULT_MAX_FRAME_LEN

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use crate::auth::{AuthError, IdentifyRequest, IdentifyVerdict};
use crate::cipher::{CipherError, CipherKind, LogCipher};
use crate::codec::{
    DecodeError, Decoded, EncodeError, FrameHead, FrameKind, PacketCodec, PUSH_SEQ, SIGNAL_KEEP_SEQ,
};
use crate::heartbeat::{HeartbeatContext, HeartbeatPolicy};
use crate::ipsource::ResolveError;
use crate::types::Seq;

/// Codec reason reported (as `DecodeError::Other`, `EncodeError::Other` or
/// `ShortLinkReject::Other`) when the codec panicked inside the call.
pub const PLUGIN_PANICKED: u32 = 0xFFFF_FF01;

/// The heartbeat interval used when a heartbeat plugin panicked: Mars's `MinHeartInterval`,
/// the interval Mars itself uses when it has nothing smarter, short enough for common NAT
/// timeouts.
pub const FALLBACK_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(210_000);

/// [`AuthCheck::is_authed`](crate::AuthCheck::is_authed)'s answer after a panic: not
/// authenticated, so tasks needing auth wait and `ensure_authed` is asked.
pub const FALLBACK_IS_AUTHED: bool = false;

/// [`AuthCheck::identify_request`](crate::AuthCheck::identify_request)'s answer after a
/// panic: a heartbeat now, and the question again at the next heartbeat slot.
pub const FALLBACK_IDENTIFY_REQUEST: IdentifyRequest = IdentifyRequest::Later;

/// [`AuthCheck::on_identify_response`](crate::AuthCheck::on_identify_response)'s answer after
/// a panic: not identified yet, ask again at the next heartbeat slot.
pub const FALLBACK_IDENTIFY_VERDICT: IdentifyVerdict = IdentifyVerdict::Retry;

/// Runs `f`, turning a panic into `Err(message)` (the panic's `&str` or `String` payload, or
/// a placeholder).
///
/// A payload whose own `drop` panics is contained as well: that second panic is caught and
/// its payload forgotten, so no panic leaves this function. Costs nothing on the path that
/// does not panic beyond keeping `f`'s result where the caller can take it.
#[inline]
pub fn catch<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => Ok(r),
        Err(payload) => Err(into_message(payload)),
    }
}

/// What [`name_of`] answers for a plugin whose `name()` panicked.
pub const NAME_PANICKED: &str = "(its name() panicked)";

/// A plugin's name, read by `name` (a call of its `name()`) under [`catch`]:
/// [`NAME_PANICKED`] if that panics. For log lines and labels, which must not fail.
pub fn name_of(name: impl FnOnce() -> String) -> String {
    catch(name).unwrap_or_else(|_| NAME_PANICKED.to_owned())
}

/// Drops `value` under [`catch`]: a panicking `Drop` (a plugin's, say) is contained, and
/// whatever it failed to release is leaked. Returns the panic message, if any.
pub fn drop_caught<T>(value: T) -> Result<(), String> {
    catch(move || drop(value))
}

/// The text of a panic payload (`&str` or `String`), or a placeholder.
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_owned()
    }
}

/// [`PacketCodec::classify`]'s answer after a panic: the
/// response to the task whose id is the frame's sequence (a response for no pending task is
/// dropped by the engine).
#[inline]
pub fn fallback_classify(head: &FrameHead) -> FrameKind {
    FrameKind::Response(head.seq)
}

/// The default rule of [`PacketCodec::is_reserved_seq`],
/// also its answer after a panic: push (`0`) and the top three sequences (signalling keeper,
/// identify, heartbeat) are reserved.
#[inline]
pub fn fallback_is_reserved_seq(seq: Seq) -> bool {
    seq == PUSH_SEQ || seq.0 >= SIGNAL_KEEP_SEQ.0
}

/// The error [`AuthCheck::ensure_authed`](crate::AuthCheck::ensure_authed) gives after a panic
/// in the plugin named `plugin`: transient, so the login is tried again later.
pub fn auth_panicked(plugin: &str, message: &str) -> AuthError {
    AuthError::Transient(format!("auth plugin {plugin:?} panicked: {message}"))
}

/// The error [`IpSource::resolve`](crate::IpSource::resolve) gives after a panic in the source
/// named `plugin`: the chain moves on to the next source.
pub fn resolve_panicked(plugin: &str, message: &str) -> ResolveError {
    ResolveError::Failed(format!("ip source {plugin:?} panicked: {message}"))
}

/// A log cipher's name, read under guard ([`name_of`]).
pub fn cipher_name(cipher: &dyn LogCipher) -> String {
    name_of(|| cipher.name().to_owned())
}

/// [`LogCipher::kind`], called under guard: a panic is [`cipher_panicked`]. What the xlog
/// writer and the decoder both ask first of an in-process cipher.
pub fn cipher_kind(cipher: &dyn LogCipher) -> Result<CipherKind, CipherError> {
    catch(|| cipher.kind()).map_err(|m| cipher_panicked(&cipher_name(cipher), &m))
}

/// The error a [`LogCipher`] call (or one of its encryptor's or decryptor's)
/// gives after a panic in the cipher named `plugin`.
pub fn cipher_panicked(plugin: &str, message: &str) -> CipherError {
    CipherError::Crypto(format!("log cipher {plugin:?} panicked: {message}"))
}

/// A codec with only the trait's default methods: the fallback shape of
/// `shortlink_headers` and `shortlink_body` (Mars's) after a codec's own panicked. Its
/// required methods fail (`encode`, `decode`) or fall back ([`fallback_classify`]); only its
/// default methods are meant to be called.
#[derive(Clone, Copy, Debug, Default)]
pub struct DefaultShape;

impl PacketCodec for DefaultShape {
    fn name(&self) -> &str {
        "default"
    }
    fn encode(&self, _: FrameHead, _: &[u8], _: &[u8], _: &mut Vec<u8>) -> Result<(), EncodeError> {
        Err(EncodeError::Other(PLUGIN_PANICKED))
    }
    fn decode(&self, _: &[u8]) -> Result<Decoded, DecodeError> {
        Err(DecodeError::Other(PLUGIN_PANICKED))
    }
    fn classify(&self, head: &FrameHead) -> FrameKind {
        fallback_classify(head)
    }
}

/// The heartbeat policy used when a factory's `build` panicked: a fixed
/// [`FALLBACK_HEARTBEAT_INTERVAL`].
#[derive(Clone, Copy, Debug, Default)]
pub struct FallbackHeartbeat;

impl HeartbeatPolicy for FallbackHeartbeat {
    fn next_interval(&mut self, _now: Instant, _ctx: &HeartbeatContext) -> Option<Duration> {
        Some(FALLBACK_HEARTBEAT_INTERVAL)
    }
}

/// The cold half of [`catch`], for callers using `std::panic::catch_unwind` themselves: the
/// payload's message, the payload dropped under a second guard (its own `drop` may panic).
#[cold]
#[inline(never)]
pub fn into_message(payload: Box<dyn Any + Send>) -> String {
    let message = panic_message(payload.as_ref());
    if let Err(again) = catch_unwind(AssertUnwindSafe(move || drop(payload))) {
        std::mem::forget(again);
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catch_returns_the_panic_message() {
        assert_eq!(catch(|| 7), Ok(7));
        let r: Result<(), String> = catch(|| panic!("boom {}", 7));
        assert_eq!(r, Err("boom 7".to_owned()));
        let r: Result<(), String> = catch(|| std::panic::panic_any(5u8));
        assert_eq!(r, Err("panic with a non-string payload".to_owned()));
    }

    /// A panic whose payload panics when dropped: no panic leaves `catch`.
    #[test]
    fn a_payload_that_panics_when_dropped_is_contained() {
        struct PanicsOnDrop;
        impl Drop for PanicsOnDrop {
            fn drop(&mut self) {
                panic!("the payload's drop exploded");
            }
        }
        let r: Result<(), String> = catch(|| std::panic::panic_any(PanicsOnDrop));
        assert_eq!(r, Err("panic with a non-string payload".to_owned()));
        struct Bomb;
        impl Drop for Bomb {
            fn drop(&mut self) {
                std::panic::panic_any(PanicsOnDrop);
            }
        }
        assert!(drop_caught(Bomb).is_err());
    }

    #[test]
    fn the_fallbacks_are_the_documented_ones() {
        let head = FrameHead::new(crate::CmdId(9), Seq(5));
        assert_eq!(fallback_classify(&head), FrameKind::Response(Seq(5)));
        assert!(fallback_is_reserved_seq(Seq(0)));
        assert!(fallback_is_reserved_seq(Seq(0xFFFF_FFFD)));
        assert!(!fallback_is_reserved_seq(Seq(0xFFFF_FFFC)));
        let ctx = HeartbeatContext::default();
        assert_eq!(
            FallbackHeartbeat.next_interval(Instant::now(), &ctx),
            Some(FALLBACK_HEARTBEAT_INTERVAL)
        );
        let e = auth_panicked("basic", "boom").to_string();
        assert!(e.contains("\"basic\" panicked: boom"), "{e}");
        let e = resolve_panicked("dns", "boom").to_string();
        assert!(e.contains("\"dns\" panicked: boom"), "{e}");
    }
}
