//! [`PacketCodec`] across the boundary: [`FfiPacketCodec`], [`export_codec`] (plugin side)
//! and [`import_codec`] (host side).
//!
//! The hot path allocates nothing per call (a test checks it): `decode` returns offsets into
//! the caller's buffer, and `encode` has the plugin write into a scratch buffer the plugin
//! object keeps, then appends the frame to the caller's `Vec` through
//! [`FfiAppend`], a callback into the host. The plugin cannot append
//! to the host's `Vec` directly because it may use another allocator; that costs one extra
//! copy of each encoded frame.
//!
//! # Panics in the plugin
//!
//! As for an in-process codec (`phobos_plugin_api::panics`, which defines these fallbacks):
//!
//! | Method | Result after a panic inside the plugin |
//! |---|---|
//! | `encode`, `encode_heartbeat`, `encode_identify` | `EncodeError::Other(PLUGIN_PANICKED)`, `out` unchanged |
//! | `decode` | `DecodeError::Other(PLUGIN_PANICKED)` (the link is dropped) |
//! | `shortlink_check_response` | `ShortLinkReject::Other(PLUGIN_PANICKED)` |
//! | `classify` | `fallback_classify`: `FrameKind::Response(head.seq)` (a response for no pending task is dropped) |
//! | `max_frame_len` | `DEFAULT_MAX_FRAME_LEN` |
//! | `heartbeat_interval` | `None` (the heartbeat policy decides) |
//! | `is_reserved_seq` | `fallback_is_reserved_seq`, the trait's default rule (push and the top three sequences) |
//! | `shortlink_headers`, `shortlink_body` | the trait's default (Mars's) shape |
//! | `name` | cannot panic: read once when the plugin is built |
//!
//! [`PLUGIN_PANICKED`]: crate::types::PLUGIN_PANICKED

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use abi_stable::sabi_trait;
use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{RBox, ROption, RResult, RSlice, RStr, RString, RVec, Tuple2};
use abi_stable::StableAbi;
use phobos_plugin_api::codec::{
    DecodeError, Decoded, EncodeError, FrameHead, FrameKind, PacketCodec, RawFrame,
    ShortLinkReject, ShortLinkRequest, DEFAULT_MAX_FRAME_LEN,
};
use phobos_plugin_api::panics::{fallback_classify, fallback_is_reserved_seq, DefaultShape};
use phobos_plugin_api::{CmdId, Seq};

use crate::guard::{catch, Guarded, Scratch};
use crate::types::{
    FfiAppend, FfiDecodeError, FfiDecoded, FfiDuration, FfiEncodeError, FfiFrameHead, FfiFrameKind,
    FfiRange, FfiShortLinkReject, INVALID_PLUGIN_OUTPUT, PLUGIN_PANICKED,
};

/// The FFI-safe mirror of [`PacketCodec`]. Method for method the same contract, with
/// abi_stable types.
#[sabi_trait]
pub trait FfiPacketCodec: Send + Sync + 'static {
    /// `PacketCodec::name`.
    fn name(&self) -> RStr<'_>;
    /// `PacketCodec::encode`, appending to `out`.
    fn encode(
        &self,
        head: FfiFrameHead,
        body: RSlice<'_, u8>,
        extension: RSlice<'_, u8>,
        out: FfiAppend<'_>,
    ) -> RResult<(), FfiEncodeError>;
    /// `PacketCodec::decode`, as offsets into `buf`.
    fn decode(&self, buf: RSlice<'_, u8>) -> RResult<FfiDecoded, FfiDecodeError>;
    /// `PacketCodec::classify`.
    fn classify(&self, head: FfiFrameHead) -> FfiFrameKind;
    /// `PacketCodec::max_frame_len`.
    fn max_frame_len(&self) -> u64;
    /// `PacketCodec::encode_heartbeat`.
    fn encode_heartbeat(&self, out: FfiAppend<'_>) -> RResult<(), FfiEncodeError>;
    /// `PacketCodec::encode_identify`.
    fn encode_identify(
        &self,
        cmd_id: u32,
        body: RSlice<'_, u8>,
        out: FfiAppend<'_>,
    ) -> RResult<(), FfiEncodeError>;
    /// `PacketCodec::heartbeat_interval`.
    fn heartbeat_interval(&self) -> ROption<FfiDuration>;
    /// `PacketCodec::is_reserved_seq`.
    fn is_reserved_seq(&self, seq: u32) -> bool;
    /// `PacketCodec::shortlink_headers`, replacing the contents of `headers`.
    fn shortlink_headers(
        &self,
        req: FfiShortLinkRequest<'_>,
        headers: &mut RVec<Tuple2<RString, RString>>,
    );
    /// `PacketCodec::shortlink_body`, appending to `out`.
    fn shortlink_body(&self, req: FfiShortLinkRequest<'_>, out: FfiAppend<'_>);
    /// `PacketCodec::shortlink_check_response`.
    #[sabi(last_prefix_field)]
    fn shortlink_check_response(
        &self,
        status: u16,
        headers: RSlice<'_, Tuple2<RString, RString>>,
        body: RSlice<'_, u8>,
    ) -> RResult<(), FfiShortLinkReject>;
}

/// An owned, type-erased FFI codec object.
pub type FfiCodecBox = FfiPacketCodec_TO<RBox<()>>;

/// `ShortLinkRequest` across the boundary.
#[repr(C)]
#[derive(StableAbi, Clone, Copy)]
pub struct FfiShortLinkRequest<'a> {
    /// The URL path.
    pub path: RStr<'a>,
    /// The host name.
    pub host: RStr<'a>,
    /// The task's body.
    pub body: RSlice<'a, u8>,
    /// The task's own headers.
    pub task_headers: RSlice<'a, Tuple2<RString, RString>>,
}

/// Plugin side: wraps a codec into an FFI object.
///
/// # Errors
///
/// The panic message if the codec's `name()` panics.
pub fn export_codec<T: PacketCodec>(codec: T) -> Result<FfiCodecBox, String> {
    let name = catch(|| RString::from(codec.name()))?;
    Ok(FfiPacketCodec_TO::from_value(
        CodecExport {
            inner: Guarded::new(codec),
            name,
            scratch: Scratch::default(),
        },
        TD_Opaque,
    ))
}

/// Host side: turns an FFI codec object into an ordinary `Arc<dyn PacketCodec>`.
///
/// `origin` is shown by the adapter's `Debug` output (the library path, typically).
pub fn import_codec(obj: FfiCodecBox, origin: &str) -> Arc<dyn PacketCodec> {
    let name = obj.name().as_str().to_owned();
    Arc::new(ImportedCodec {
        obj,
        name,
        origin: origin.to_owned(),
    })
}

struct CodecExport<T> {
    inner: Guarded<T>,
    name: RString,
    scratch: Scratch,
}

impl<T: PacketCodec> FfiPacketCodec for CodecExport<T> {
    fn name(&self) -> RStr<'_> {
        self.name.as_rstr()
    }

    fn encode(
        &self,
        head: FfiFrameHead,
        body: RSlice<'_, u8>,
        extension: RSlice<'_, u8>,
        mut out: FfiAppend<'_>,
    ) -> RResult<(), FfiEncodeError> {
        encode_result(catch(|| {
            self.scratch.with(&mut out, |v| {
                self.inner
                    .encode(head.into(), body.as_slice(), extension.as_slice(), v)
            })
        }))
    }

    fn decode(&self, buf: RSlice<'_, u8>) -> RResult<FfiDecoded, FfiDecodeError> {
        match catch(|| self.inner.decode(buf.as_slice())) {
            Ok(Ok(d)) => RResult::ROk(decoded_to_ffi(d)),
            Ok(Err(e)) => RResult::RErr(e.into()),
            Err(_) => RResult::RErr(FfiDecodeError::Other(PLUGIN_PANICKED)),
        }
    }

    fn classify(&self, head: FfiFrameHead) -> FfiFrameKind {
        let head = FrameHead::from(head);
        match catch(|| self.inner.classify(&head)) {
            Ok(kind) => FfiFrameKind::from_kind(kind, &head),
            Err(_) => FfiFrameKind::from_kind(fallback_classify(&head), &head),
        }
    }

    fn max_frame_len(&self) -> u64 {
        let len = catch(|| self.inner.max_frame_len()).unwrap_or(DEFAULT_MAX_FRAME_LEN);
        u64::try_from(len).unwrap_or(u64::MAX)
    }

    fn encode_heartbeat(&self, mut out: FfiAppend<'_>) -> RResult<(), FfiEncodeError> {
        encode_result(catch(|| {
            self.scratch
                .with(&mut out, |v| self.inner.encode_heartbeat(v))
        }))
    }

    fn encode_identify(
        &self,
        cmd_id: u32,
        body: RSlice<'_, u8>,
        mut out: FfiAppend<'_>,
    ) -> RResult<(), FfiEncodeError> {
        encode_result(catch(|| {
            self.scratch.with(&mut out, |v| {
                self.inner
                    .encode_identify(CmdId(cmd_id), body.as_slice(), v)
            })
        }))
    }

    fn heartbeat_interval(&self) -> ROption<FfiDuration> {
        catch(|| self.inner.heartbeat_interval())
            .ok()
            .flatten()
            .map(FfiDuration::from)
            .into()
    }

    fn is_reserved_seq(&self, seq: u32) -> bool {
        catch(|| self.inner.is_reserved_seq(Seq(seq)))
            .unwrap_or_else(|_| fallback_is_reserved_seq(Seq(seq)))
    }

    fn shortlink_headers(
        &self,
        req: FfiShortLinkRequest<'_>,
        headers: &mut RVec<Tuple2<RString, RString>>,
    ) {
        let task_headers = pairs_from_ffi(req.task_headers.as_slice());
        let req = ShortLinkRequest {
            path: req.path.as_str(),
            host: req.host.as_str(),
            body: req.body.as_slice(),
            task_headers: &task_headers,
        };
        let mut out = Vec::new();
        if catch(|| self.inner.shortlink_headers(&req, &mut out)).is_err() {
            DefaultShape.shortlink_headers(&req, &mut out);
        }
        headers.clear();
        headers.extend(out.into_iter().map(|(k, v)| Tuple2(k.into(), v.into())));
    }

    fn shortlink_body(&self, req: FfiShortLinkRequest<'_>, mut out: FfiAppend<'_>) {
        let task_headers = pairs_from_ffi(req.task_headers.as_slice());
        let req = ShortLinkRequest {
            path: req.path.as_str(),
            host: req.host.as_str(),
            body: req.body.as_slice(),
            task_headers: &task_headers,
        };
        let done = catch(|| {
            self.scratch.with(&mut out, |v| {
                self.inner.shortlink_body(&req, v);
                Ok::<(), ()>(())
            })
        });
        if done.is_err() {
            out.extend(req.body);
        }
    }

    fn shortlink_check_response(
        &self,
        status: u16,
        headers: RSlice<'_, Tuple2<RString, RString>>,
        body: RSlice<'_, u8>,
    ) -> RResult<(), FfiShortLinkReject> {
        let headers = pairs_from_ffi(headers.as_slice());
        match catch(|| {
            self.inner
                .shortlink_check_response(status, &headers, body.as_slice())
        }) {
            Ok(Ok(())) => RResult::ROk(()),
            Ok(Err(e)) => RResult::RErr(e.into()),
            Err(_) => RResult::RErr(FfiShortLinkReject::Other(PLUGIN_PANICKED)),
        }
    }
}

/// The host-side adapter over a loaded codec.
struct ImportedCodec {
    obj: FfiCodecBox,
    name: String,
    origin: String,
}

impl fmt::Debug for ImportedCodec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImportedCodec")
            .field("name", &self.name)
            .field("origin", &self.origin)
            .finish()
    }
}

impl PacketCodec for ImportedCodec {
    fn name(&self) -> &str {
        &self.name
    }

    fn encode(
        &self,
        head: FrameHead,
        body: &[u8],
        extension: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        self.obj
            .encode(
                head.into(),
                body.into(),
                extension.into(),
                FfiAppend::new(out),
            )
            .into_result()
            .map_err(EncodeError::from)
    }

    fn decode(&self, buf: &[u8]) -> Result<Decoded, DecodeError> {
        match self.obj.decode(buf.into()) {
            // The frame limit is asked only for an `Incomplete` answer: a whole frame is
            // checked against the buffer, which bounds it already.
            RResult::ROk(d) => decoded_from_ffi(d, buf.len(), || self.max_frame_len())
                .ok_or(DecodeError::Other(INVALID_PLUGIN_OUTPUT)),
            RResult::RErr(e) => Err(e.into()),
        }
    }

    fn classify(&self, head: &FrameHead) -> FrameKind {
        self.obj.classify((*head).into()).into()
    }

    fn max_frame_len(&self) -> usize {
        usize::try_from(self.obj.max_frame_len()).unwrap_or(usize::MAX)
    }

    fn encode_heartbeat(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        self.obj
            .encode_heartbeat(FfiAppend::new(out))
            .into_result()
            .map_err(EncodeError::from)
    }

    fn encode_identify(
        &self,
        cmd_id: CmdId,
        body: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        self.obj
            .encode_identify(cmd_id.0, body.into(), FfiAppend::new(out))
            .into_result()
            .map_err(EncodeError::from)
    }

    fn heartbeat_interval(&self) -> Option<Duration> {
        self.obj
            .heartbeat_interval()
            .into_option()
            .map(Duration::from)
    }

    fn is_reserved_seq(&self, seq: Seq) -> bool {
        self.obj.is_reserved_seq(seq.0)
    }

    fn shortlink_headers(&self, req: &ShortLinkRequest<'_>, headers: &mut Vec<(String, String)>) {
        let task_headers = pairs_to_ffi(req.task_headers);
        let mut out = RVec::new();
        self.obj
            .shortlink_headers(request_to_ffi(req, &task_headers), &mut out);
        headers.clear();
        headers.extend(out.into_iter().map(|Tuple2(k, v)| (k.into(), v.into())));
    }

    fn shortlink_body(&self, req: &ShortLinkRequest<'_>, out: &mut Vec<u8>) {
        let task_headers = pairs_to_ffi(req.task_headers);
        self.obj
            .shortlink_body(request_to_ffi(req, &task_headers), FfiAppend::new(out));
    }

    fn shortlink_check_response(
        &self,
        status: u16,
        headers: &[(String, String)],
        body: &[u8],
    ) -> Result<(), ShortLinkReject> {
        let headers = pairs_to_ffi(headers);
        self.obj
            .shortlink_check_response(status, headers.as_slice().into(), body.into())
            .into_result()
            .map_err(ShortLinkReject::from)
    }
}

fn encode_result(r: Result<Result<(), EncodeError>, String>) -> RResult<(), FfiEncodeError> {
    match r {
        Ok(Ok(())) => RResult::ROk(()),
        Ok(Err(e)) => RResult::RErr(e.into()),
        Err(_) => RResult::RErr(FfiEncodeError::Other(PLUGIN_PANICKED)),
    }
}

fn range_to_ffi(r: &Range<usize>) -> FfiRange {
    FfiRange {
        start: r.start as u64,
        end: r.end as u64,
    }
}

fn decoded_to_ffi(d: Decoded) -> FfiDecoded {
    match d {
        Decoded::Incomplete { head, needed } => FfiDecoded::Incomplete {
            head: head.map(FfiFrameHead::from).into(),
            needed: needed as u64,
        },
        Decoded::Frame(f) => FfiDecoded::Frame {
            head: f.head.into(),
            body: range_to_ffi(&f.body),
            extension: f.extension.as_ref().map(range_to_ffi).into(),
            len: f.len as u64,
        },
    }
}

/// Converts a decode result from the other side, refusing what cannot be right: ranges that do
/// not fit `buf_len`, a zero-length frame, and a "need more" that asks for no more than is
/// already buffered (the reader would wait forever, or call again at once and spin) or for more
/// than the codec's own frame limit (`max_frame_len`; the reader would buffer without bound).
fn decoded_from_ffi(
    d: FfiDecoded,
    buf_len: usize,
    max_frame_len: impl FnOnce() -> usize,
) -> Option<Decoded> {
    match d {
        FfiDecoded::Incomplete { head, needed } => {
            let needed = usize::try_from(needed).ok()?;
            if needed <= buf_len || needed > max_frame_len() {
                return None;
            }
            Some(Decoded::Incomplete {
                head: head.into_option().map(FrameHead::from),
                needed,
            })
        }
        FfiDecoded::Frame {
            head,
            body,
            extension,
            len,
        } => {
            let len = usize::try_from(len).ok()?;
            if len == 0 || len > buf_len {
                return None;
            }
            let checked = |r: FfiRange| -> Option<Range<usize>> {
                let start = usize::try_from(r.start).ok()?;
                let end = usize::try_from(r.end).ok()?;
                (start <= end && end <= len).then_some(start..end)
            };
            let body = checked(body)?;
            let extension = match extension.into_option() {
                Some(r) => Some(checked(r)?),
                None => None,
            };
            Some(Decoded::Frame(RawFrame {
                head: head.into(),
                body,
                extension,
                len,
            }))
        }
    }
}

fn pairs_to_ffi(pairs: &[(String, String)]) -> RVec<Tuple2<RString, RString>> {
    pairs
        .iter()
        .map(|(k, v)| Tuple2(RString::from(k.as_str()), RString::from(v.as_str())))
        .collect()
}

fn pairs_from_ffi(pairs: &[Tuple2<RString, RString>]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|Tuple2(k, v)| (k.as_str().to_owned(), v.as_str().to_owned()))
        .collect()
}

fn request_to_ffi<'a>(
    req: &ShortLinkRequest<'a>,
    task_headers: &'a RVec<Tuple2<RString, RString>>,
) -> FfiShortLinkRequest<'a> {
    FfiShortLinkRequest {
        path: req.path.into(),
        host: req.host.into(),
        body: req.body.into(),
        task_headers: task_headers.as_slice().into(),
    }
}

#[cfg(test)]
mod tests;
