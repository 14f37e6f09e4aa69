//! `#[repr(C)]` mirrors of the plain types the plugin traits mention, with conversions.
//!
//! Conversions from the ergonomic enums (all `#[non_exhaustive]`) map a variant this ABI does
//! not know yet to the `Other` code [`UNMAPPED_VARIANT`], so adding a variant upstream can never
//! make a conversion fail.

use std::collections::HashSet;
use std::marker::PhantomData;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use abi_stable::std_types::{ROption, RSlice, RStr, RString};
use abi_stable::StableAbi;
use phobos_plugin_api::codec::{DecodeError, EncodeError, FrameHead, FrameKind, ShortLinkReject};
use phobos_plugin_api::{
    AddrSource, AuthError, CipherError, CipherKind, CmdId, HeartbeatContext, IdentifyVerdict,
    LinkPurpose, NetKind, ResolveError, ResolvedAddr, Seq,
};

pub use phobos_plugin_api::panics::PLUGIN_PANICKED;
/// Codec reason reported when a loaded codec returned a result that cannot be right (a decoded
/// range outside the buffer, a zero-length frame, a "need more" asking for no more bytes than
/// are already buffered or for more than the codec's `max_frame_len`).
pub const INVALID_PLUGIN_OUTPUT: u32 = 0xFFFF_FF02;
/// Codec reason reported for an error variant that this ABI version cannot carry.
pub const UNMAPPED_VARIANT: u32 = 0xFFFF_FF03;
/// How many distinct unusual key names (besides `public` and `private`) a host keeps for
/// `CipherError::MissingKey` errors coming from loaded ciphers. The error carries a
/// `&'static str`, so each kept name stays allocated for the life of the process.
pub const INTERNED_KEY_NAMES_MAX: usize = 64;
/// The key name a `CipherError::MissingKey` from a loaded cipher carries once
/// [`INTERNED_KEY_NAMES_MAX`] other names have been kept.
pub const UNNAMED_KEY: &str = "(unnamed)";

/// The host's output buffer, lent to the plugin for one call: the plugin appends bytes by
/// calling back into the host, which extends its own `Vec<u8>` with its own allocator.
///
/// This is how every "append to `out`" method crosses the boundary. It costs one indirect
/// call and never allocates on the plugin's side for the host, nor frees across allocators.
#[repr(C)]
#[derive(StableAbi)]
pub struct FfiAppend<'a> {
    target: *mut (),
    append: unsafe extern "C" fn(target: *mut (), bytes: RSlice<'_, u8>) -> bool,
    _borrow: PhantomData<&'a mut ()>,
}

impl<'a> FfiAppend<'a> {
    /// Lends `out` (host side).
    pub fn new(out: &'a mut Vec<u8>) -> Self {
        FfiAppend {
            target: (out as *mut Vec<u8>).cast(),
            append: append_to_vec,
            _borrow: PhantomData,
        }
    }

    /// Appends `bytes` to the lent buffer. `false` if the host failed to (it never does short
    /// of running out of address space).
    pub fn extend(&mut self, bytes: &[u8]) -> bool {
        // SAFETY: `new` paired `append` with a `target` taken from a `&'a mut Vec<u8>`, and
        // `self` holds that exclusive borrow for `'a`, so the pointer is live and unaliased.
        unsafe { (self.append)(self.target, bytes.into()) }
    }
}

/// The host-side half of [`FfiAppend`].
///
/// # Safety
///
/// `target` must point to a live `Vec<u8>` not otherwise borrowed during the call.
unsafe extern "C" fn append_to_vec(target: *mut (), bytes: RSlice<'_, u8>) -> bool {
    // SAFETY: the caller's contract; `FfiAppend::new` is the only place pairing this function
    // with a pointer, taken from an exclusive `&mut Vec<u8>`.
    let out = unsafe { &mut *target.cast::<Vec<u8>>() };
    crate::guard::catch(|| out.extend_from_slice(bytes.as_slice())).is_ok()
}

/// [`FrameHead`] across the boundary.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq)]
pub struct FfiFrameHead {
    /// The command id.
    pub cmd_id: u32,
    /// The sequence number.
    pub seq: u32,
}

impl From<FrameHead> for FfiFrameHead {
    fn from(h: FrameHead) -> Self {
        FfiFrameHead {
            cmd_id: h.cmd_id.0,
            seq: h.seq.0,
        }
    }
}

impl From<FfiFrameHead> for FrameHead {
    fn from(h: FfiFrameHead) -> Self {
        FrameHead::new(CmdId(h.cmd_id), Seq(h.seq))
    }
}

/// A byte range `start..end` into a buffer.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq)]
pub struct FfiRange {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
}

/// `Decoded` across the boundary: offsets only, so decoding allocates nothing.
#[repr(C, u8)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FfiDecoded {
    /// `Decoded::Incomplete`.
    Incomplete {
        /// The head, when known.
        head: ROption<FfiFrameHead>,
        /// Total bytes needed.
        needed: u64,
    },
    /// `Decoded::Frame`.
    Frame {
        /// The head.
        head: FfiFrameHead,
        /// The body range.
        body: FfiRange,
        /// The extension range, if any.
        extension: ROption<FfiRange>,
        /// Bytes the frame occupies.
        len: u64,
    },
}

/// `DecodeError` across the boundary.
#[repr(C, u8)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FfiDecodeError {
    /// `HeadLength`.
    HeadLength {
        /// Required.
        expected: u32,
        /// Found.
        got: u32,
    },
    /// `Version`.
    Version {
        /// Configured.
        expected: u32,
        /// Found.
        got: u32,
    },
    /// `TooLarge`.
    TooLarge {
        /// Announced.
        len: u64,
        /// Limit.
        max: u64,
    },
    /// `Magic`.
    Magic {
        /// Found.
        got: u32,
    },
    /// `Checksum`.
    Checksum,
    /// `Other`.
    Other(u32),
}

impl From<DecodeError> for FfiDecodeError {
    fn from(e: DecodeError) -> Self {
        match e {
            DecodeError::HeadLength { expected, got } => {
                FfiDecodeError::HeadLength { expected, got }
            }
            DecodeError::Version { expected, got } => FfiDecodeError::Version { expected, got },
            DecodeError::TooLarge { len, max } => FfiDecodeError::TooLarge { len, max },
            DecodeError::Magic { got } => FfiDecodeError::Magic { got },
            DecodeError::Checksum => FfiDecodeError::Checksum,
            DecodeError::Other(code) => FfiDecodeError::Other(code),
            _ => FfiDecodeError::Other(UNMAPPED_VARIANT),
        }
    }
}

impl From<FfiDecodeError> for DecodeError {
    fn from(e: FfiDecodeError) -> Self {
        match e {
            FfiDecodeError::HeadLength { expected, got } => {
                DecodeError::HeadLength { expected, got }
            }
            FfiDecodeError::Version { expected, got } => DecodeError::Version { expected, got },
            FfiDecodeError::TooLarge { len, max } => DecodeError::TooLarge { len, max },
            FfiDecodeError::Magic { got } => DecodeError::Magic { got },
            FfiDecodeError::Checksum => DecodeError::Checksum,
            FfiDecodeError::Other(code) => DecodeError::Other(code),
        }
    }
}

/// `EncodeError` across the boundary.
#[repr(C, u8)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FfiEncodeError {
    /// `TooLarge`.
    TooLarge {
        /// Frame length.
        len: u64,
        /// Limit.
        max: u64,
    },
    /// `Other`.
    Other(u32),
}

impl From<EncodeError> for FfiEncodeError {
    fn from(e: EncodeError) -> Self {
        match e {
            EncodeError::TooLarge { len, max } => FfiEncodeError::TooLarge { len, max },
            EncodeError::Other(code) => FfiEncodeError::Other(code),
            _ => FfiEncodeError::Other(UNMAPPED_VARIANT),
        }
    }
}

impl From<FfiEncodeError> for EncodeError {
    fn from(e: FfiEncodeError) -> Self {
        match e {
            FfiEncodeError::TooLarge { len, max } => EncodeError::TooLarge { len, max },
            FfiEncodeError::Other(code) => EncodeError::Other(code),
        }
    }
}

/// `FrameKind` across the boundary.
#[repr(C, u8)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FfiFrameKind {
    /// `Response(seq)`.
    Response(u32),
    /// `Push`.
    Push,
    /// `HeartbeatReply`.
    HeartbeatReply,
    /// `IdentifyReply`.
    IdentifyReply,
}

impl FfiFrameKind {
    /// Converts `kind`; a variant unknown to this ABI becomes `Response(seq)` of `head`.
    pub fn from_kind(kind: FrameKind, head: &FrameHead) -> Self {
        match kind {
            FrameKind::Response(seq) => FfiFrameKind::Response(seq.0),
            FrameKind::Push => FfiFrameKind::Push,
            FrameKind::HeartbeatReply => FfiFrameKind::HeartbeatReply,
            FrameKind::IdentifyReply => FfiFrameKind::IdentifyReply,
            _ => FfiFrameKind::Response(head.seq.0),
        }
    }
}

impl From<FfiFrameKind> for FrameKind {
    fn from(k: FfiFrameKind) -> Self {
        match k {
            FfiFrameKind::Response(seq) => FrameKind::Response(Seq(seq)),
            FfiFrameKind::Push => FrameKind::Push,
            FfiFrameKind::HeartbeatReply => FrameKind::HeartbeatReply,
            FfiFrameKind::IdentifyReply => FrameKind::IdentifyReply,
        }
    }
}

/// `ShortLinkReject` across the boundary.
#[repr(C, u8)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FfiShortLinkReject {
    /// `Status`.
    Status(u16),
    /// `Other`.
    Other(u32),
}

impl From<ShortLinkReject> for FfiShortLinkReject {
    fn from(e: ShortLinkReject) -> Self {
        match e {
            ShortLinkReject::Status(s) => FfiShortLinkReject::Status(s),
            ShortLinkReject::Other(c) => FfiShortLinkReject::Other(c),
            _ => FfiShortLinkReject::Other(UNMAPPED_VARIANT),
        }
    }
}

impl From<FfiShortLinkReject> for ShortLinkReject {
    fn from(e: FfiShortLinkReject) -> Self {
        match e {
            FfiShortLinkReject::Status(s) => ShortLinkReject::Status(s),
            FfiShortLinkReject::Other(c) => ShortLinkReject::Other(c),
        }
    }
}

/// A `Duration` across the boundary.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq)]
pub struct FfiDuration {
    /// Whole seconds.
    pub secs: u64,
    /// Nanoseconds, below 1e9.
    pub nanos: u32,
}

impl From<Duration> for FfiDuration {
    fn from(d: Duration) -> Self {
        FfiDuration {
            secs: d.as_secs(),
            nanos: d.subsec_nanos(),
        }
    }
}

impl From<FfiDuration> for Duration {
    fn from(d: FfiDuration) -> Self {
        // Design: `Duration::new` would panic on overflow when nanos >= 1e9 pushes secs past
        // u64::MAX; saturate instead, bytes from the other side must never panic.
        Duration::from_secs(d.secs).saturating_add(Duration::from_nanos(u64::from(d.nanos)))
    }
}

/// An `Instant` across the boundary, as signed nanoseconds from a per-library anchor.
///
/// `Instant` is opaque, so each side of the boundary keeps its own anchor (the first instant
/// it converted) and sends offsets. Each side only ever sees instants on its own consistent
/// timeline, so every difference between two instants survives the trip exactly, which is
/// all a plugin may rely on (plugins never read the clock themselves).
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq)]
pub struct FfiInstant {
    /// Nanoseconds from the sending side's anchor.
    pub nanos: i64,
}

impl From<Instant> for FfiInstant {
    fn from(t: Instant) -> Self {
        let a = anchor();
        let nanos = if t >= a {
            i64::try_from((t - a).as_nanos()).unwrap_or(i64::MAX)
        } else {
            i64::try_from((a - t).as_nanos()).map_or(i64::MIN, |n| -n)
        };
        FfiInstant { nanos }
    }
}

impl From<FfiInstant> for Instant {
    fn from(t: FfiInstant) -> Self {
        let a = anchor();
        let d = Duration::from_nanos(t.nanos.unsigned_abs());
        let moved = if t.nanos >= 0 {
            a.checked_add(d)
        } else {
            a.checked_sub(d)
        };
        // An offset beyond what this platform's Instant can hold (centuries) saturates at the
        // anchor rather than panicking.
        moved.unwrap_or(a)
    }
}

fn anchor() -> Instant {
    static ANCHOR: OnceLock<Instant> = OnceLock::new();
    *ANCHOR.get_or_init(Instant::now)
}

/// `NetKind` across the boundary.
#[repr(u8)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FfiNetKind {
    /// No network.
    None,
    /// Wi-Fi.
    Wifi,
    /// Mobile.
    Mobile,
    /// Anything else.
    Other,
}

impl From<NetKind> for FfiNetKind {
    fn from(n: NetKind) -> Self {
        match n {
            NetKind::None => FfiNetKind::None,
            NetKind::Wifi => FfiNetKind::Wifi,
            NetKind::Mobile => FfiNetKind::Mobile,
            _ => FfiNetKind::Other,
        }
    }
}

impl From<FfiNetKind> for NetKind {
    fn from(n: FfiNetKind) -> Self {
        match n {
            FfiNetKind::None => NetKind::None,
            FfiNetKind::Wifi => NetKind::Wifi,
            FfiNetKind::Mobile => NetKind::Mobile,
            FfiNetKind::Other => NetKind::Other,
        }
    }
}

/// `HeartbeatContext` across the boundary, borrowing the label.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug)]
pub struct FfiHeartbeatContext<'a> {
    /// The network kind.
    pub net: FfiNetKind,
    /// The network label.
    pub net_label: RStr<'a>,
    /// Whether the app is active.
    pub app_active: bool,
}

impl<'a> From<&'a HeartbeatContext> for FfiHeartbeatContext<'a> {
    fn from(c: &'a HeartbeatContext) -> Self {
        FfiHeartbeatContext {
            net: c.net.into(),
            net_label: RStr::from_str(&c.net_label),
            app_active: c.app_active,
        }
    }
}

impl From<FfiHeartbeatContext<'_>> for HeartbeatContext {
    fn from(c: FfiHeartbeatContext<'_>) -> Self {
        HeartbeatContext {
            net: c.net.into(),
            net_label: c.net_label.as_str().to_owned(),
            app_active: c.app_active,
        }
    }
}

/// `LinkPurpose` across the boundary.
#[repr(u8)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FfiLinkPurpose {
    /// Long link.
    LongLink,
    /// Short link.
    ShortLink,
}

impl From<LinkPurpose> for FfiLinkPurpose {
    fn from(p: LinkPurpose) -> Self {
        match p {
            LinkPurpose::LongLink => FfiLinkPurpose::LongLink,
            LinkPurpose::ShortLink => FfiLinkPurpose::ShortLink,
        }
    }
}

impl From<FfiLinkPurpose> for LinkPurpose {
    fn from(p: FfiLinkPurpose) -> Self {
        match p {
            FfiLinkPurpose::LongLink => LinkPurpose::LongLink,
            FfiLinkPurpose::ShortLink => LinkPurpose::ShortLink,
        }
    }
}

/// `AddrSource` across the boundary.
#[repr(u8)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FfiAddrSource {
    /// Debug list.
    Debug,
    /// The app's resolver.
    NewDns,
    /// Runtime list.
    Dynamic,
    /// DNS over HTTPS.
    Doh,
    /// System resolver.
    SystemDns,
    /// Backup list.
    Backup,
}

/// A resolved address across the boundary.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq)]
pub struct FfiResolvedAddr {
    /// True for IPv6; then all of `octets` is the address, else the first four.
    pub is_v6: bool,
    /// The address bytes, network order.
    pub octets: [u8; 16],
    /// The port, if known.
    pub port: ROption<u16>,
    /// Where it came from.
    pub source: FfiAddrSource,
}

impl FfiResolvedAddr {
    /// Converts an address; `None` for a source kind this ABI cannot carry.
    pub fn from_addr(a: &ResolvedAddr) -> Option<Self> {
        let source = match a.source {
            AddrSource::Debug => FfiAddrSource::Debug,
            AddrSource::NewDns => FfiAddrSource::NewDns,
            AddrSource::Dynamic => FfiAddrSource::Dynamic,
            AddrSource::Doh => FfiAddrSource::Doh,
            AddrSource::SystemDns => FfiAddrSource::SystemDns,
            AddrSource::Backup => FfiAddrSource::Backup,
            _ => return None,
        };
        let mut octets = [0u8; 16];
        let is_v6 = match a.ip {
            IpAddr::V4(v4) => {
                octets[..4].copy_from_slice(&v4.octets());
                false
            }
            IpAddr::V6(v6) => {
                octets = v6.octets();
                true
            }
        };
        Some(FfiResolvedAddr {
            is_v6,
            octets,
            port: a.port.into(),
            source,
        })
    }
}

impl From<FfiResolvedAddr> for ResolvedAddr {
    fn from(a: FfiResolvedAddr) -> Self {
        let o = a.octets;
        let ip = if a.is_v6 {
            IpAddr::V6(Ipv6Addr::from(o))
        } else {
            IpAddr::V4(Ipv4Addr::new(o[0], o[1], o[2], o[3]))
        };
        let source = match a.source {
            FfiAddrSource::Debug => AddrSource::Debug,
            FfiAddrSource::NewDns => AddrSource::NewDns,
            FfiAddrSource::Dynamic => AddrSource::Dynamic,
            FfiAddrSource::Doh => AddrSource::Doh,
            FfiAddrSource::SystemDns => AddrSource::SystemDns,
            FfiAddrSource::Backup => AddrSource::Backup,
        };
        ResolvedAddr {
            ip,
            port: a.port.into(),
            source,
        }
    }
}

/// `ResolveError` across the boundary.
#[repr(C, u8)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub enum FfiResolveError {
    /// `Timeout`.
    Timeout,
    /// `NoSuchHost`.
    NoSuchHost,
    /// `Failed`.
    Failed(RString),
}

impl From<ResolveError> for FfiResolveError {
    fn from(e: ResolveError) -> Self {
        match e {
            ResolveError::Timeout => FfiResolveError::Timeout,
            ResolveError::NoSuchHost => FfiResolveError::NoSuchHost,
            ResolveError::Failed(m) => FfiResolveError::Failed(m.into()),
            other => FfiResolveError::Failed(other.to_string().into()),
        }
    }
}

impl From<FfiResolveError> for ResolveError {
    fn from(e: FfiResolveError) -> Self {
        match e {
            FfiResolveError::Timeout => ResolveError::Timeout,
            FfiResolveError::NoSuchHost => ResolveError::NoSuchHost,
            FfiResolveError::Failed(m) => ResolveError::Failed(m.into()),
        }
    }
}

/// `AuthError` across the boundary.
#[repr(C, u8)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub enum FfiAuthError {
    /// `Rejected`.
    Rejected(RString),
    /// `Transient`.
    Transient(RString),
}

impl From<AuthError> for FfiAuthError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Rejected(m) => FfiAuthError::Rejected(m.into()),
            AuthError::Transient(m) => FfiAuthError::Transient(m.into()),
            other => FfiAuthError::Transient(other.to_string().into()),
        }
    }
}

impl From<FfiAuthError> for AuthError {
    fn from(e: FfiAuthError) -> Self {
        match e {
            FfiAuthError::Rejected(m) => AuthError::Rejected(m.into()),
            FfiAuthError::Transient(m) => AuthError::Transient(m.into()),
        }
    }
}

/// `IdentifyVerdict` across the boundary.
#[repr(u8)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FfiIdentifyVerdict {
    /// `Accepted`.
    Accepted,
    /// `Retry`.
    Retry,
    /// `Rejected`.
    Rejected,
}

impl From<IdentifyVerdict> for FfiIdentifyVerdict {
    fn from(v: IdentifyVerdict) -> Self {
        match v {
            IdentifyVerdict::Accepted => FfiIdentifyVerdict::Accepted,
            IdentifyVerdict::Rejected => FfiIdentifyVerdict::Rejected,
            // Retry, and anything newer: the cautious answer.
            _ => FfiIdentifyVerdict::Retry,
        }
    }
}

impl From<FfiIdentifyVerdict> for IdentifyVerdict {
    fn from(v: FfiIdentifyVerdict) -> Self {
        match v {
            FfiIdentifyVerdict::Accepted => IdentifyVerdict::Accepted,
            FfiIdentifyVerdict::Retry => IdentifyVerdict::Retry,
            FfiIdentifyVerdict::Rejected => IdentifyVerdict::Rejected,
        }
    }
}

/// `CipherKind` across the boundary.
#[repr(u8)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FfiCipherKind {
    /// `MarsCompatible`.
    MarsCompatible,
    /// `Authenticated`.
    Authenticated,
}

/// `CipherError` across the boundary.
#[repr(C, u8)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub enum FfiCipherError {
    /// `MissingKey`.
    MissingKey(RString),
    /// `BadKey`.
    BadKey(RString),
    /// `BadHeaderKey`.
    BadHeaderKey,
    /// `Integrity`.
    Integrity,
    /// `Crypto`.
    Crypto(RString),
}

impl From<CipherError> for FfiCipherError {
    fn from(e: CipherError) -> Self {
        match e {
            CipherError::MissingKey(k) => FfiCipherError::MissingKey(k.into()),
            CipherError::BadKey(m) => FfiCipherError::BadKey(m.into()),
            CipherError::BadHeaderKey => FfiCipherError::BadHeaderKey,
            CipherError::Integrity => FfiCipherError::Integrity,
            CipherError::Crypto(m) => FfiCipherError::Crypto(m.into()),
            other => FfiCipherError::Crypto(other.to_string().into()),
        }
    }
}

impl From<FfiCipherError> for CipherError {
    fn from(e: FfiCipherError) -> Self {
        match e {
            FfiCipherError::MissingKey(k) => CipherError::MissingKey(intern(k.as_str())),
            FfiCipherError::BadKey(m) => CipherError::BadKey(m.into()),
            FfiCipherError::BadHeaderKey => CipherError::BadHeaderKey,
            FfiCipherError::Integrity => CipherError::Integrity,
            FfiCipherError::Crypto(m) => CipherError::Crypto(m.into()),
        }
    }
}

/// Turns the key-side name of `CipherError::MissingKey` back into a `&'static str`.
///
/// The usual names are constants; any other name is leaked once and reused. At most
/// [`INTERNED_KEY_NAMES_MAX`] names are kept that way: past that, a name not kept already comes
/// back as [`UNNAMED_KEY`] (with one warning for the process), so a plugin making up a new
/// name per call cannot grow memory without bound.
fn intern(s: &str) -> &'static str {
    static NAMES: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut names = NAMES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    intern_in(&mut names, s)
}

/// [`intern`] over a given set (the tests use their own).
fn intern_in(names: &mut HashSet<&'static str>, s: &str) -> &'static str {
    static WARNED: AtomicBool = AtomicBool::new(false);
    match s {
        "public" => return "public",
        "private" => return "private",
        _ => {}
    }
    if let Some(found) = names.get(s) {
        return found;
    }
    if names.len() >= INTERNED_KEY_NAMES_MAX {
        if !WARNED.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "a loaded log cipher reported more than {INTERNED_KEY_NAMES_MAX} distinct missing \
                 key names; further new names are reported as \"{UNNAMED_KEY}\""
            );
        }
        return UNNAMED_KEY;
    }
    let leaked: &'static str = Box::leak(s.to_owned().into_boxed_str());
    names.insert(leaked);
    leaked
}

impl From<CipherKind> for FfiCipherKind {
    fn from(k: CipherKind) -> Self {
        match k {
            CipherKind::MarsCompatible => FfiCipherKind::MarsCompatible,
            // Authenticated, and anything newer: never written under Mars's magics.
            _ => FfiCipherKind::Authenticated,
        }
    }
}

impl From<FfiCipherKind> for CipherKind {
    fn from(k: FfiCipherKind) -> Self {
        match k {
            FfiCipherKind::MarsCompatible => CipherKind::MarsCompatible,
            FfiCipherKind::Authenticated => CipherKind::Authenticated,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_keep_their_differences_across_the_boundary() {
        let base = Instant::now();
        let earlier = base.checked_sub(Duration::from_secs(5)).unwrap_or(base);
        let later = base + Duration::from_millis(1500);
        let back: Vec<Instant> = [earlier, base, later]
            .iter()
            .map(|&t| Instant::from(FfiInstant::from(t)))
            .collect();
        assert_eq!(back[1] - back[0], base - earlier);
        assert_eq!(back[2] - back[1], later - base);
    }

    #[test]
    fn huge_ffi_durations_saturate_instead_of_panicking() {
        let d = Duration::from(FfiDuration {
            secs: u64::MAX,
            nanos: 3_000_000_000,
        });
        assert_eq!(d, Duration::MAX);
    }

    #[test]
    fn resolved_addresses_round_trip() {
        for a in [
            ResolvedAddr {
                ip: "10.1.2.3".parse().unwrap(),
                port: Some(443),
                source: AddrSource::Backup,
            },
            ResolvedAddr {
                ip: "2001:db8::1".parse().unwrap(),
                port: None,
                source: AddrSource::Doh,
            },
        ] {
            let ffi = FfiResolvedAddr::from_addr(&a).unwrap();
            assert_eq!(ResolvedAddr::from(ffi), a);
        }
    }

    #[test]
    fn missing_key_names_are_interned() {
        let e = CipherError::from(FfiCipherError::MissingKey("escrow".into()));
        let again = CipherError::from(FfiCipherError::MissingKey("escrow".into()));
        match (e, again) {
            (CipherError::MissingKey(a), CipherError::MissingKey(b)) => {
                assert_eq!(a, "escrow");
                assert!(std::ptr::eq(a, b));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn interned_key_names_stop_at_the_cap() {
        let mut names = HashSet::new();
        let kept: Vec<&'static str> = (0..INTERNED_KEY_NAMES_MAX)
            .map(|i| intern_in(&mut names, &format!("key-{i}")))
            .collect();
        assert_eq!(kept[7], "key-7");
        assert_eq!(names.len(), INTERNED_KEY_NAMES_MAX);
        // A new name past the cap is not kept: it comes back as the placeholder, and the set
        // does not grow however many more there are.
        for i in 0..1000 {
            assert_eq!(intern_in(&mut names, &format!("fresh-{i}")), UNNAMED_KEY);
        }
        assert_eq!(names.len(), INTERNED_KEY_NAMES_MAX);
        // Names kept before the cap keep their own text and address.
        let again = intern_in(&mut names, "key-7");
        assert!(std::ptr::eq(again, kept[7]));
    }

    #[test]
    fn the_usual_key_names_are_kept_past_the_cap() {
        let mut names = HashSet::new();
        for i in 0..=INTERNED_KEY_NAMES_MAX {
            intern_in(&mut names, &format!("filler-{i}"));
        }
        assert_eq!(intern_in(&mut names, "public"), "public");
        assert_eq!(intern_in(&mut names, "private"), "private");
        assert_eq!(intern_in(&mut names, "yet-another"), UNNAMED_KEY);
    }

    #[test]
    fn decode_errors_round_trip() {
        for e in [
            DecodeError::HeadLength {
                expected: 20,
                got: 3,
            },
            DecodeError::Version {
                expected: 1,
                got: 2,
            },
            DecodeError::TooLarge { len: 9, max: 8 },
            DecodeError::Magic { got: 7 },
            DecodeError::Checksum,
            DecodeError::Other(4),
        ] {
            assert_eq!(DecodeError::from(FfiDecodeError::from(e)), e);
        }
    }
}
