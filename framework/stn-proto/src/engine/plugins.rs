//! The engine's calls into plugins, guarded: a panic in a plugin is caught where the engine
//! calls it, the call is answered with the fallback `phobos_plugin_api::panics` documents
//! (the same one a plugin loaded from a dynamic library gets from its adapter), and the panic
//! is reported as [`Event::PluginPanicked`](crate::Event::PluginPanicked). The engine's state
//! stays what it would be after that fallback answer: a panicking `decode` drops the link as
//! a malformed frame does, a panicking `encode` ends its task with a codec error, and so on.
//!
//! Design: `catch_unwind` where the engine calls the plugin, not wrapper plugins applied
//! once to the config, and on the batch lane's hot loops one guard per loop rather than per
//! call. Measured as instructions per task of the long-link bench's batch client
//! (`benches/tools/instructions-per-task.sh phobos-like 100`; 888, 890 and 892 before any
//! guard): a `CatchPanics` wrapper around the codec (a second indirect call and a guard in
//! every codec call) 985; a guard at every call site 934 (the guard's result passes through
//! memory; the lane run's per-frame `decode` and `classify`, a block's per-id
//! `is_reserved_seq` took most of it); as it is now (moving closures, the lane's run and a
//! block's ids guarded once, see `lane.rs`) 898–905. Taking the remaining per-task guard,
//! `encode`'s, away again gave 898 and 903: what is left is within the count's spread of
//! about ±10, not one guard's cost.
//!
//! Reports go to a [`PanicLog`] the engine drains into its event queue when that runs
//! empty, so a guard needs only `&` access (`is_authed` is asked from `&self` methods).

use std::any::Any;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use phobos_plugin_api::codec::{PacketCodec, ShortLinkRequest, DEFAULT_MAX_FRAME_LEN};
use phobos_plugin_api::panics::{
    self, catch, drop_caught, fallback_classify, fallback_is_reserved_seq, into_message,
    DefaultShape, FallbackHeartbeat, FALLBACK_HEARTBEAT_INTERVAL, FALLBACK_IDENTIFY_REQUEST,
    FALLBACK_IDENTIFY_VERDICT, FALLBACK_IS_AUTHED, PLUGIN_PANICKED,
};
use phobos_plugin_api::{
    AuthCheck, CmdId, DecodeError, Decoded, EncodeError, FrameHead, FrameKind, HeartbeatContext,
    HeartbeatPolicy, HeartbeatPolicyFactory, IdentifyRequest, IdentifyVerdict, Seq,
    ShortLinkReject,
};

use crate::error::{PluginKind, PluginPanic};
use crate::io::Event;

/// Panics caught since the engine last drained them into its events.
#[derive(Debug, Default)]
pub(super) struct PanicLog(RefCell<Vec<PluginPanic>>);

impl PanicLog {
    /// Records a panic of the `kind` plugin (named by `name`, asked only now) in `call`.
    #[cold]
    #[inline(never)]
    pub(super) fn record(
        &self,
        kind: PluginKind,
        name: &dyn Fn() -> String,
        call: &'static str,
        message: String,
    ) {
        let name = catch(name).unwrap_or_else(|_| "(its name() panicked too)".to_owned());
        let panic = PluginPanic::new(kind, name, call, message);
        if let Ok(mut log) = self.0.try_borrow_mut() {
            log.push(panic);
        }
    }

    /// Moves the recorded panics to `events`; whether there were any.
    #[cold]
    #[inline(never)]
    pub(super) fn drain_into(&self, events: &mut VecDeque<Event>) -> bool {
        let Ok(mut log) = self.0.try_borrow_mut() else {
            return false;
        };
        let any = !log.is_empty();
        events.extend(log.drain(..).map(Event::PluginPanicked));
        any
    }

    /// Whether no panic waits to be reported.
    #[inline]
    pub(super) fn is_empty(&self) -> bool {
        self.0.try_borrow().is_ok_and(|log| log.is_empty())
    }
}

/// `catch_unwind` with the payload left to the caller's cold path ([`into_message`]): on the
/// hot path, `f`'s result is handed through as it is.
#[inline(always)]
fn guard<R>(f: impl FnOnce() -> R) -> Result<R, Box<dyn Any + Send>> {
    catch_unwind(AssertUnwindSafe(f))
}

// ----- codec -------------------------------------------------------------------------------

/// `codec.decode(buf)`; a panic is `DecodeError::Other(PLUGIN_PANICKED)` (the link drops).
#[inline(always)]
pub(super) fn decode(
    codec: &dyn PacketCodec,
    buf: &[u8],
    log: &PanicLog,
) -> Result<Decoded, DecodeError> {
    match guard(move || codec.decode(buf)) {
        Ok(r) => r,
        Err(p) => {
            let m = into_message(p);
            log.record(PluginKind::Codec, &|| codec.name().to_owned(), "decode", m);
            Err(DecodeError::Other(PLUGIN_PANICKED))
        }
    }
}

/// `codec.classify(head)`; a panic is [`fallback_classify`].
#[inline(always)]
pub(super) fn classify(codec: &dyn PacketCodec, head: &FrameHead, log: &PanicLog) -> FrameKind {
    match guard(move || codec.classify(head)) {
        Ok(kind) => kind,
        Err(p) => {
            let m = into_message(p);
            log.record(
                PluginKind::Codec,
                &|| codec.name().to_owned(),
                "classify",
                m,
            );
            fallback_classify(head)
        }
    }
}

/// `codec.encode(…)`; a panic is `EncodeError::Other(PLUGIN_PANICKED)` with `out` as it was.
#[inline(always)]
pub(super) fn encode(
    codec: &dyn PacketCodec,
    head: FrameHead,
    body: &[u8],
    extension: &[u8],
    out: &mut Vec<u8>,
    log: &PanicLog,
) -> Result<(), EncodeError> {
    let before = out.len();
    let o = &mut *out;
    match guard(move || codec.encode(head, body, extension, o)) {
        Ok(r) => r,
        Err(p) => encode_panicked(codec, "encode", out, before, log, into_message(p)),
    }
}

/// `codec.encode_heartbeat(out)`, guarded as [`encode`].
pub(super) fn encode_heartbeat(
    codec: &dyn PacketCodec,
    out: &mut Vec<u8>,
    log: &PanicLog,
) -> Result<(), EncodeError> {
    let before = out.len();
    match catch(|| codec.encode_heartbeat(&mut *out)) {
        Ok(r) => r,
        Err(m) => encode_panicked(codec, "encode_heartbeat", out, before, log, m),
    }
}

/// `codec.encode_identify(…)`, guarded as [`encode`].
pub(super) fn encode_identify(
    codec: &dyn PacketCodec,
    cmd_id: CmdId,
    body: &[u8],
    out: &mut Vec<u8>,
    log: &PanicLog,
) -> Result<(), EncodeError> {
    let before = out.len();
    match catch(|| codec.encode_identify(cmd_id, body, &mut *out)) {
        Ok(r) => r,
        Err(m) => encode_panicked(codec, "encode_identify", out, before, log, m),
    }
}

/// `codec.max_frame_len()`; a panic is [`DEFAULT_MAX_FRAME_LEN`].
#[inline(always)]
pub(super) fn max_frame_len(codec: &dyn PacketCodec, log: &PanicLog) -> usize {
    match guard(move || codec.max_frame_len()) {
        Ok(len) => len,
        Err(p) => {
            let m = into_message(p);
            log.record(
                PluginKind::Codec,
                &|| codec.name().to_owned(),
                "max_frame_len",
                m,
            );
            DEFAULT_MAX_FRAME_LEN
        }
    }
}

/// `codec.heartbeat_interval()`; a panic is `None` (the heartbeat policy decides).
pub(super) fn heartbeat_interval(codec: &dyn PacketCodec, log: &PanicLog) -> Option<Duration> {
    match catch(|| codec.heartbeat_interval()) {
        Ok(iv) => iv,
        Err(m) => {
            let name = || codec.name().to_owned();
            log.record(PluginKind::Codec, &name, "heartbeat_interval", m);
            None
        }
    }
}

/// `codec.is_reserved_seq(seq)`; a panic is [`fallback_is_reserved_seq`].
#[inline(always)]
pub(super) fn is_reserved_seq(codec: &dyn PacketCodec, seq: Seq, log: &PanicLog) -> bool {
    match guard(move || codec.is_reserved_seq(seq)) {
        Ok(reserved) => reserved,
        Err(p) => {
            let m = into_message(p);
            let name = || codec.name().to_owned();
            log.record(PluginKind::Codec, &name, "is_reserved_seq", m);
            fallback_is_reserved_seq(seq)
        }
    }
}

/// `codec.shortlink_headers(…)`; a panic is the trait's default shape.
pub(super) fn shortlink_headers(
    codec: &dyn PacketCodec,
    req: &ShortLinkRequest<'_>,
    headers: &mut Vec<(String, String)>,
    log: &PanicLog,
) {
    if let Err(m) = catch(|| codec.shortlink_headers(req, &mut *headers)) {
        let name = || codec.name().to_owned();
        log.record(PluginKind::Codec, &name, "shortlink_headers", m);
        DefaultShape.shortlink_headers(req, headers);
    }
}

/// `codec.shortlink_body(…)`; a panic is the trait's default (the task's body as it is).
pub(super) fn shortlink_body(
    codec: &dyn PacketCodec,
    req: &ShortLinkRequest<'_>,
    out: &mut Vec<u8>,
    log: &PanicLog,
) {
    let before = out.len();
    if let Err(m) = catch(|| codec.shortlink_body(req, &mut *out)) {
        log.record(
            PluginKind::Codec,
            &|| codec.name().to_owned(),
            "shortlink_body",
            m,
        );
        out.truncate(before);
        DefaultShape.shortlink_body(req, out);
    }
}

/// `codec.shortlink_check_response(…)`; a panic is `ShortLinkReject::Other(PLUGIN_PANICKED)`.
pub(super) fn shortlink_check_response(
    codec: &dyn PacketCodec,
    status: u16,
    headers: &[(String, String)],
    body: &[u8],
    log: &PanicLog,
) -> Result<(), ShortLinkReject> {
    match catch(|| codec.shortlink_check_response(status, headers, body)) {
        Ok(r) => r,
        Err(m) => {
            let name = || codec.name().to_owned();
            log.record(PluginKind::Codec, &name, "shortlink_check_response", m);
            Err(ShortLinkReject::Other(PLUGIN_PANICKED))
        }
    }
}

#[cold]
#[inline(never)]
fn encode_panicked(
    codec: &dyn PacketCodec,
    call: &'static str,
    out: &mut Vec<u8>,
    before: usize,
    log: &PanicLog,
    message: String,
) -> Result<(), EncodeError> {
    log.record(
        PluginKind::Codec,
        &|| codec.name().to_owned(),
        call,
        message,
    );
    out.truncate(before);
    Err(EncodeError::Other(PLUGIN_PANICKED))
}

// ----- auth --------------------------------------------------------------------------------

/// `auth.is_authed(host)`; a panic is [`FALLBACK_IS_AUTHED`] (tasks wait for a login).
pub(super) fn is_authed(auth: &dyn AuthCheck, host: &str, log: &PanicLog) -> bool {
    match catch(|| auth.is_authed(host)) {
        Ok(authed) => authed,
        Err(m) => {
            log.record(PluginKind::Auth, &|| auth.name().to_owned(), "is_authed", m);
            FALLBACK_IS_AUTHED
        }
    }
}

/// `auth.identify_request(link)`; a panic is [`FALLBACK_IDENTIFY_REQUEST`] (a heartbeat now,
/// the question again at the next slot).
pub(super) fn identify_request(
    auth: &dyn AuthCheck,
    link: &str,
    log: &PanicLog,
) -> IdentifyRequest {
    match catch(|| auth.identify_request(link)) {
        Ok(request) => request,
        Err(m) => {
            let name = || auth.name().to_owned();
            log.record(PluginKind::Auth, &name, "identify_request", m);
            FALLBACK_IDENTIFY_REQUEST
        }
    }
}

/// `auth.on_identify_response(…)`; a panic is [`FALLBACK_IDENTIFY_VERDICT`] (ask again).
pub(super) fn on_identify_response(
    auth: &dyn AuthCheck,
    link: &str,
    body: &[u8],
    hash: &[u8],
    log: &PanicLog,
) -> IdentifyVerdict {
    match catch(|| auth.on_identify_response(link, body, hash)) {
        Ok(verdict) => verdict,
        Err(m) => {
            let name = || auth.name().to_owned();
            log.record(PluginKind::Auth, &name, "on_identify_response", m);
            FALLBACK_IDENTIFY_VERDICT
        }
    }
}

// ----- heartbeat ---------------------------------------------------------------------------

/// A link's heartbeat policy, called under guard. A panic in `next_interval` is
/// [`FALLBACK_HEARTBEAT_INTERVAL`]; in a hook, ignored; in the policy's `Drop`, contained
/// (whatever that drop failed to release is leaked, and nothing is reported: the link is
/// gone).
#[derive(Debug)]
pub(super) struct Policy {
    inner: Box<dyn HeartbeatPolicy>,
    /// The factory's name, for reports.
    name: String,
}

impl Policy {
    /// `factory.build(now, ctx)`; a panic is [`FallbackHeartbeat`].
    pub(super) fn build(
        factory: &dyn HeartbeatPolicyFactory,
        now: Instant,
        ctx: &HeartbeatContext,
        log: &PanicLog,
    ) -> Self {
        let name = panics::name_of(|| factory.name().to_owned());
        let inner = match catch(|| factory.build(now, ctx)) {
            Ok(policy) => policy,
            Err(m) => {
                log.record(PluginKind::Heartbeat, &|| name.clone(), "build", m);
                Box::new(FallbackHeartbeat)
            }
        };
        Policy { inner, name }
    }

    /// `next_interval`; a panic is `Some(FALLBACK_HEARTBEAT_INTERVAL)`.
    pub(super) fn next_interval(
        &mut self,
        now: Instant,
        ctx: &HeartbeatContext,
        log: &PanicLog,
    ) -> Option<Duration> {
        let inner = &mut self.inner;
        match catch(|| inner.next_interval(now, ctx)) {
            Ok(iv) => iv,
            Err(m) => {
                let name = || self.name.clone();
                log.record(PluginKind::Heartbeat, &name, "next_interval", m);
                Some(FALLBACK_HEARTBEAT_INTERVAL)
            }
        }
    }

    /// Calls the hook `call` (`f`); a panic is ignored (and reported).
    pub(super) fn hook(
        &mut self,
        call: &'static str,
        log: &PanicLog,
        f: impl FnOnce(&mut dyn HeartbeatPolicy),
    ) {
        let inner = &mut *self.inner;
        if let Err(m) = catch(|| f(inner)) {
            log.record(PluginKind::Heartbeat, &|| self.name.clone(), call, m);
        }
    }
}

impl Drop for Policy {
    fn drop(&mut self) {
        // The plugin's policy is swapped for a zero-sized one (no allocation) and dropped
        // under guard; the placeholder's own drop does nothing.
        let inner = std::mem::replace(&mut self.inner, Box::new(FallbackHeartbeat));
        let _ = drop_caught(inner);
    }
}
