//! Long-link framing and short-link request shaping: [`PacketCodec`].
//!
//! A codec turns `(cmd id, seq, body, extension)` into bytes on the wire and finds frames in a
//! received byte stream. It is pure: no IO, no clock, no state that changes per frame, so one
//! `Arc<dyn PacketCodec>` serves every link.
//!
//! Decoding has three outcomes, and a decoder must keep them apart for **any** input:
//!
//! - [`Decoded::Incomplete`]: the buffer holds the start of a frame; read more. `needed` is the
//!   total length the frame will have (when the header says so), never more than
//!   [`PacketCodec::max_frame_len`], so a reader can size its buffer without trusting the peer.
//! - [`Decoded::Frame`]: one whole frame at the front of the buffer, given as ranges into it.
//! - `Err(`[`DecodeError`]`)`: the bytes cannot be a frame; the link must be dropped.

use std::fmt;
use std::ops::Range;
use std::time::Duration;

use crate::types::{CmdId, Seq};

/// The sequence number of a heartbeat ("noop") frame in Mars's protocol.
pub const HEARTBEAT_SEQ: Seq = Seq(0xFFFF_FFFF);
/// The sequence number of the identify ("synccheck") frame in Mars's protocol.
pub const IDENTIFY_SEQ: Seq = Seq(0xFFFF_FFFE);
/// The sequence number of a TCP signalling-keeper frame in Mars's protocol.
pub const SIGNAL_KEEP_SEQ: Seq = Seq(0xFFFF_FFFD);
/// Sequence number 0 marks a server push in Mars's protocol.
pub const PUSH_SEQ: Seq = Seq(0);
/// Mars's heartbeat command id (`NOOP_CMDID`).
pub const HEARTBEAT_CMD: CmdId = CmdId(6);
/// Mars's signalling-keeper command id (`SIGNALKEEP_CMDID`).
pub const SIGNAL_KEEP_CMD: CmdId = CmdId(243);
/// Mars's limit on one long-link frame: 1 MiB.
pub const DEFAULT_MAX_FRAME_LEN: usize = 1_048_576;

/// Frames a long link and shapes short-link requests.
///
/// Required: [`encode`](Self::encode), [`decode`](Self::decode),
/// [`classify`](Self::classify) and [`name`](Self::name). Everything else has a default that
/// matches Mars's default packers.
///
/// # Contract
///
/// - `decode` never panics and never reports `needed > max_frame_len()`.
/// - A frame produced by `encode` decodes to the same head, body and extension.
/// - `classify` depends only on the head.
pub trait PacketCodec: Send + Sync + fmt::Debug + 'static {
    /// A short name for logs and error messages (`"mars"`).
    fn name(&self) -> &str;

    /// Appends one frame to `out`.
    ///
    /// `extension` is an optional second buffer some protocols carry beside the body (Mars's
    /// `extend`); codecs that have no place for it ignore it.
    ///
    /// # Errors
    ///
    /// [`EncodeError::TooLarge`] when the frame would exceed the codec's limit. On error `out`
    /// is left as it was.
    fn encode(
        &self,
        head: FrameHead,
        body: &[u8],
        extension: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError>;

    /// Looks for one frame at the front of `buf`.
    ///
    /// # Errors
    ///
    /// A [`DecodeError`] when the bytes can never become a valid frame.
    fn decode(&self, buf: &[u8]) -> Result<Decoded, DecodeError>;

    /// Says what a received frame is for.
    fn classify(&self, head: &FrameHead) -> FrameKind;

    /// The largest frame this codec accepts, header included.
    fn max_frame_len(&self) -> usize {
        DEFAULT_MAX_FRAME_LEN
    }

    /// Appends a heartbeat frame to `out`.
    ///
    /// # Errors
    ///
    /// As [`encode`](Self::encode).
    fn encode_heartbeat(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        self.encode(FrameHead::new(HEARTBEAT_CMD, HEARTBEAT_SEQ), &[], &[], out)
    }

    /// Appends an identify frame (the first frame on a new long link, built from the
    /// [`AuthCheck`](crate::AuthCheck) plugin's buffer) to `out`.
    ///
    /// # Errors
    ///
    /// As [`encode`](Self::encode).
    fn encode_identify(
        &self,
        cmd_id: CmdId,
        body: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        self.encode(FrameHead::new(cmd_id, IDENTIFY_SEQ), body, &[], out)
    }

    /// A fixed heartbeat interval imposed by the protocol, if any. `None` (or zero) lets the
    /// [`HeartbeatPolicy`](crate::HeartbeatPolicy) decide (Mars's encoder hook of the same
    /// purpose, whose interval counts only when it is more than zero).
    fn heartbeat_interval(&self) -> Option<Duration> {
        None
    }

    /// The sequence numbers tasks must not use because the codec gives them a meaning.
    ///
    /// Reserve few, or one range at the top: the engine takes a run of 65,536 reserved
    /// numbers in a row as the end of the id space and starts again from 1, and when it
    /// finds another such run before a free number, the task ends unsent with a codec
    /// error (`CodecFailure::NoSequence` in `phobos-stn-proto`).
    fn is_reserved_seq(&self, seq: Seq) -> bool {
        crate::panics::fallback_is_reserved_seq(seq)
    }

    /// Builds the headers of a short-link request, in the order they are written.
    ///
    /// The default is Mars's shape (§8.2 of the spec): `Accept`, `Cache-Control`,
    /// `Connection`, `Content-Length`, `Content-Type`, `Host`, `User-Agent`, then the task's
    /// own headers replacing ones of the same name, all sorted by name case-insensitively.
    /// Whatever it gives, the core makes a `Content-Length` header count the body
    /// [`shortlink_body`](Self::shortlink_body) builds, and `req.host` comes with an IPv6
    /// literal in brackets.
    fn shortlink_headers(&self, req: &ShortLinkRequest<'_>, headers: &mut Vec<(String, String)>) {
        headers.clear();
        let defaults: [(&str, String); 7] = [
            ("Accept", "*/*".to_owned()),
            ("User-Agent", "MicroMessenger Client".to_owned()),
            ("Cache-Control", "no-cache".to_owned()),
            ("Content-Type", "application/octet-stream".to_owned()),
            ("Connection", "close".to_owned()),
            ("Content-Length", req.body.len().to_string()),
            ("Host", req.host.to_owned()),
        ];
        headers.extend(defaults.into_iter().map(|(k, v)| (k.to_owned(), v)));
        for (name, value) in req.task_headers {
            match headers
                .iter_mut()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
            {
                Some(slot) => slot.1.clone_from(value),
                None => headers.push((name.clone(), value.clone())),
            }
        }
        headers.sort_by_key(|a| a.0.to_ascii_lowercase());
    }

    /// Appends the short-link request body to `out`. The default copies the task's body.
    fn shortlink_body(&self, req: &ShortLinkRequest<'_>, out: &mut Vec<u8>) {
        out.extend_from_slice(req.body);
    }

    /// Judges a complete short-link response before its body goes to the app.
    ///
    /// # Errors
    ///
    /// The default accepts status 200 only and returns [`ShortLinkReject::Status`] otherwise.
    fn shortlink_check_response(
        &self,
        status: u16,
        _headers: &[(String, String)],
        _body: &[u8],
    ) -> Result<(), ShortLinkReject> {
        if status == 200 {
            Ok(())
        } else {
            Err(ShortLinkReject::Status(status))
        }
    }
}

/// Mars's classification by the reserved values, for codecs that keep Mars's conventions.
///
/// In this order: command id [`HEARTBEAT_CMD`] → heartbeat reply, whatever the sequence (Mars's
/// test looks at the command id only); sequence [`IDENTIFY_SEQ`] → identify reply; sequence
/// [`PUSH_SEQ`] → push; anything else → the response to the task whose id is the sequence.
///
/// ```
/// use phobos_plugin_api::codec::{classify_mars, FrameHead, FrameKind, HEARTBEAT_CMD, PUSH_SEQ};
/// use phobos_plugin_api::{CmdId, Seq};
///
/// assert_eq!(classify_mars(&FrameHead::new(HEARTBEAT_CMD, Seq(5))), FrameKind::HeartbeatReply);
/// assert_eq!(classify_mars(&FrameHead::new(CmdId(9), PUSH_SEQ)), FrameKind::Push);
/// assert_eq!(classify_mars(&FrameHead::new(CmdId(9), Seq(5))), FrameKind::Response(Seq(5)));
/// ```
pub fn classify_mars(head: &FrameHead) -> FrameKind {
    if head.cmd_id == HEARTBEAT_CMD {
        FrameKind::HeartbeatReply
    } else if head.seq == IDENTIFY_SEQ {
        FrameKind::IdentifyReply
    } else if head.seq == PUSH_SEQ {
        FrameKind::Push
    } else {
        FrameKind::Response(head.seq)
    }
}

/// The routing fields of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FrameHead {
    /// What the frame asks for.
    pub cmd_id: CmdId,
    /// Which task (or reserved purpose) the frame belongs to.
    pub seq: Seq,
}

impl FrameHead {
    /// A head from its two fields.
    pub fn new(cmd_id: CmdId, seq: Seq) -> Self {
        FrameHead { cmd_id, seq }
    }
}

/// The outcome of a successful [`PacketCodec::decode`] call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Not enough bytes yet.
    Incomplete {
        /// The frame's head, once the header is complete (lets the core see progress for a
        /// sequence before the whole body arrived).
        head: Option<FrameHead>,
        /// Total bytes the frame needs, as far as known (at least the header length). Never
        /// more than [`PacketCodec::max_frame_len`].
        needed: usize,
    },
    /// One complete frame at the front of the buffer.
    Frame(RawFrame),
}

/// A complete frame found by [`PacketCodec::decode`], as ranges into the decoded buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawFrame {
    /// The routing fields.
    pub head: FrameHead,
    /// Where the body is in the buffer.
    pub body: Range<usize>,
    /// Where the extension is in the buffer, for codecs that carry one.
    pub extension: Option<Range<usize>>,
    /// How many bytes the frame occupies from the front of the buffer (> 0).
    pub len: usize,
}

/// What a received frame is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FrameKind {
    /// The response to the task whose id equals this sequence number.
    Response(Seq),
    /// An unsolicited server push.
    Push,
    /// The reply to a heartbeat.
    HeartbeatReply,
    /// The reply to the identify frame.
    IdentifyReply,
}

/// Why bytes from the network are not a valid frame. Small and `Copy` on purpose.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The header's own length field is not what the protocol allows.
    #[error("header length {got} is not the protocol's {expected}")]
    HeadLength {
        /// What the protocol requires.
        expected: u32,
        /// What the frame said.
        got: u32,
    },
    /// The frame was made for another protocol version.
    #[error("client version {got} does not match the configured {expected}")]
    Version {
        /// The configured version.
        expected: u32,
        /// What the frame said.
        got: u32,
    },
    /// The frame announces more bytes than the codec accepts.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// The announced length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// A magic number or marker is wrong.
    #[error("bad magic {got:#x}")]
    Magic {
        /// The value found.
        got: u32,
    },
    /// A checksum over the frame does not match.
    #[error("checksum mismatch")]
    Checksum,
    /// A codec-specific reason, as a code the codec documents.
    #[error("malformed frame ({})", Reason(*.0))]
    Other(u32),
}

/// Why a frame cannot be encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The frame would exceed the codec's limit.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// The frame length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// A codec-specific reason, as a code the codec documents.
    #[error("cannot encode frame ({})", Reason(*.0))]
    Other(u32),
}

/// What a short-link request is made from.
#[derive(Clone, Copy, Debug)]
pub struct ShortLinkRequest<'a> {
    /// The URL path (Mars's `cgi`), e.g. `/cgi-bin/x`.
    pub path: &'a str,
    /// The host name for the `Host` header.
    pub host: &'a str,
    /// The task's body.
    pub body: &'a [u8],
    /// Headers the task adds; a name already present replaces the default.
    pub task_headers: &'a [(String, String)],
}

/// Why a complete short-link response is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum ShortLinkReject {
    /// A status other than the ones the codec accepts.
    #[error("HTTP status {0}")]
    Status(u16),
    /// A codec-specific reason.
    #[error("response refused by the codec ({})", Reason(*.0))]
    Other(u32),
}

/// A codec-specific reason code as text: [`PLUGIN_PANICKED`](crate::panics::PLUGIN_PANICKED)
/// says so in words.
struct Reason(u32);

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == crate::panics::PLUGIN_PANICKED {
            f.write_str("the codec plugin panicked")
        } else {
            write!(f, "codec reason {}", self.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(dead_code)]
    fn object_safe(_: Box<dyn PacketCodec>) {}

    #[derive(Debug)]
    struct Nop;
    impl PacketCodec for Nop {
        fn name(&self) -> &str {
            "nop"
        }
        fn encode(
            &self,
            _: FrameHead,
            _: &[u8],
            _: &[u8],
            _: &mut Vec<u8>,
        ) -> Result<(), EncodeError> {
            Ok(())
        }
        fn decode(&self, _: &[u8]) -> Result<Decoded, DecodeError> {
            Ok(Decoded::Incomplete {
                head: None,
                needed: 1,
            })
        }
        fn classify(&self, h: &FrameHead) -> FrameKind {
            FrameKind::Response(h.seq)
        }
    }

    #[test]
    fn default_shortlink_headers_are_mars_shape_sorted_with_overrides() {
        let extra = vec![
            ("user-agent".to_owned(), "Phobos".to_owned()),
            ("X-Trace".to_owned(), "1".to_owned()),
        ];
        let req = ShortLinkRequest {
            path: "/cgi-bin/x",
            host: "s.example",
            body: b"hello",
            task_headers: &extra,
        };
        let mut h = Vec::new();
        Nop.shortlink_headers(&req, &mut h);
        let names: Vec<&str> = h.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "Accept",
                "Cache-Control",
                "Connection",
                "Content-Length",
                "Content-Type",
                "Host",
                "User-Agent",
                "X-Trace"
            ]
        );
        assert_eq!(h[3].1, "5");
        assert_eq!(h[6].1, "Phobos");
    }

    #[test]
    fn a_panic_reads_as_one() {
        let e = DecodeError::Other(crate::panics::PLUGIN_PANICKED).to_string();
        assert_eq!(e, "malformed frame (the codec plugin panicked)");
        assert_eq!(
            EncodeError::Other(7).to_string(),
            "cannot encode frame (codec reason 7)"
        );
    }

    #[test]
    fn reserved_seqs_are_push_and_the_top_three() {
        assert!(Nop.is_reserved_seq(Seq(0)));
        assert!(Nop.is_reserved_seq(HEARTBEAT_SEQ));
        assert!(Nop.is_reserved_seq(IDENTIFY_SEQ));
        assert!(Nop.is_reserved_seq(SIGNAL_KEEP_SEQ));
        assert!(!Nop.is_reserved_seq(Seq(1)));
        assert!(!Nop.is_reserved_seq(Seq(0xFFFF_FFFC)));
    }
}
