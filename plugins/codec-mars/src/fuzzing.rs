//! Entry points for fuzz targets and property tests.
//!
//! Each function drives [`MarsCodec`] over arbitrary bytes the way a long-link reader does
//! (decode, consume the frame, decode again, stop at "need more" or an error) and **panics if
//! the codec breaks the [`PacketCodec`] contract**: a frame of length 0 or longer than the
//! bytes it was found in, a body outside the frame, `needed` above the limit or not above
//! what was available, or a different result when the same bytes arrive in pieces. A panic
//! is therefore a finding; ordinary malformed input just ends the stream with an error.
//!
//! A `tests/fuzz` target is one line:
//!
//! ```
//! # let data: &[u8] = b"\x00\x00\x00\x14";
//! phobos_codec_mars::fuzzing::decode_stream(data);
//! ```

use std::ops::Range;

use phobos_plugin_api::{DecodeError, Decoded, FrameHead, PacketCodec};

use crate::codec::MarsCodec;
use crate::config::MarsCodecConfig;

/// What a reader made of a byte stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamOutcome {
    /// The frames found, in order, with their body's position in the whole stream.
    pub frames: Vec<(FrameHead, Range<usize>)>,
    /// Bytes consumed by those frames.
    pub consumed: usize,
    /// Why reading stopped.
    pub end: StreamEnd,
}

/// Why [`decode_stream_with`] stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamEnd {
    /// Every byte was consumed by whole frames.
    Exhausted,
    /// The rest is the start of a frame that needs `needed` bytes in total.
    Incomplete {
        /// The head, if the header was complete.
        head: Option<FrameHead>,
        /// Total bytes the frame needs.
        needed: usize,
    },
    /// The rest is malformed; a reader drops the link.
    Malformed(DecodeError),
}

/// Decodes `bytes` as one received stream with the default codec, and again with a codec
/// whose client version and frame limit are taken from the first 8 bytes (so fuzzers reach the
/// version check and small limits), checking the contract at every step.
///
/// # Panics
///
/// Only when the codec breaks its contract (see the [module docs](self)).
pub fn decode_stream(bytes: &[u8]) -> StreamOutcome {
    if let Some(prefix) = bytes.first_chunk::<8>() {
        let client_version = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
        let limit = u32::from_be_bytes([prefix[4], prefix[5], prefix[6], prefix[7]]) as usize;
        let max_frame_len = 20 + limit % (crate::MAX_FRAME_LEN - 19);
        let config = MarsCodecConfig {
            client_version,
            max_frame_len,
        };
        // In range by construction: 20 ..= MAX_FRAME_LEN.
        if let Ok(codec) = MarsCodec::new(config) {
            decode_stream_checked(&codec, &bytes[8..]);
        }
    }
    decode_stream_checked(&MarsCodec::default(), bytes)
}

/// Decodes `bytes` with `codec` as a reader would, checking the [`PacketCodec`] contract at
/// every step, then checks that delivering the same bytes in pieces (1 byte, then a few odd
/// sizes) gives the same outcome.
///
/// # Panics
///
/// Only when `codec` breaks its contract (see the [module docs](self)).
pub fn decode_stream_checked(codec: &dyn PacketCodec, bytes: &[u8]) -> StreamOutcome {
    let whole = decode_stream_with(codec, bytes);
    for chunk in [1, 3, 20, 64] {
        let split = decode_split(codec, bytes, chunk);
        assert_eq!(split, whole, "chunked by {chunk} differs from whole");
    }
    whole
}

/// Decodes `bytes` with `codec` as a reader holding all of them would, checking the
/// [`PacketCodec`] contract at every step.
///
/// # Panics
///
/// Only when `codec` breaks its contract (see the [module docs](self)).
pub fn decode_stream_with(codec: &dyn PacketCodec, bytes: &[u8]) -> StreamOutcome {
    let mut frames = Vec::new();
    let mut consumed = 0;
    loop {
        let rest = &bytes[consumed..];
        if rest.is_empty() {
            return StreamOutcome {
                frames,
                consumed,
                end: StreamEnd::Exhausted,
            };
        }
        match codec.decode(rest) {
            Ok(Decoded::Frame(frame)) => {
                check_frame(codec, rest.len(), &frame.body, frame.len);
                frames.push((
                    frame.head,
                    consumed + frame.body.start..consumed + frame.body.end,
                ));
                let _ = codec.classify(&frame.head);
                consumed += frame.len;
            }
            Ok(Decoded::Incomplete { head, needed }) => {
                check_needed(codec, rest.len(), needed);
                return StreamOutcome {
                    frames,
                    consumed,
                    end: StreamEnd::Incomplete { head, needed },
                };
            }
            Err(e) => {
                return StreamOutcome {
                    frames,
                    consumed,
                    end: StreamEnd::Malformed(e),
                }
            }
        }
    }
}

/// Feeds `bytes` to a reader `chunk` bytes at a time, decoding after each arrival.
fn decode_split(codec: &dyn PacketCodec, bytes: &[u8], chunk: usize) -> StreamOutcome {
    let mut frames = Vec::new();
    let mut consumed = 0;
    let mut received = 0;
    let mut last_incomplete = None;
    while received < bytes.len() {
        received = (received + chunk).min(bytes.len());
        loop {
            let rest = &bytes[consumed..received];
            if rest.is_empty() {
                last_incomplete = None;
                break;
            }
            match codec.decode(rest) {
                Ok(Decoded::Frame(frame)) => {
                    check_frame(codec, rest.len(), &frame.body, frame.len);
                    frames.push((
                        frame.head,
                        consumed + frame.body.start..consumed + frame.body.end,
                    ));
                    consumed += frame.len;
                }
                Ok(Decoded::Incomplete { head, needed }) => {
                    check_needed(codec, rest.len(), needed);
                    last_incomplete = Some(StreamEnd::Incomplete { head, needed });
                    break;
                }
                Err(e) => {
                    return StreamOutcome {
                        frames,
                        consumed,
                        end: StreamEnd::Malformed(e),
                    }
                }
            }
        }
    }
    StreamOutcome {
        frames,
        consumed,
        end: last_incomplete.unwrap_or(StreamEnd::Exhausted),
    }
}

fn check_frame(codec: &dyn PacketCodec, available: usize, body: &Range<usize>, len: usize) {
    assert!(len > 0, "zero-length frame would make a reader spin");
    assert!(
        len <= available,
        "frame of {len} bytes found in {available}"
    );
    assert!(
        len <= codec.max_frame_len(),
        "frame of {len} bytes above the limit"
    );
    assert!(
        body.start <= body.end && body.end <= len,
        "body {body:?} outside a frame of {len} bytes"
    );
}

fn check_needed(codec: &dyn PacketCodec, available: usize, needed: usize) {
    assert!(
        needed <= codec.max_frame_len(),
        "needed {needed} above the limit {}",
        codec.max_frame_len()
    );
    assert!(
        needed > available,
        "incomplete although {available} bytes of the {needed} needed are there"
    );
}

#[cfg(test)]
mod tests {
    use phobos_plugin_api::{CmdId, Seq};

    use super::*;

    #[test]
    fn a_stream_of_frames_then_a_partial_one() {
        let codec = MarsCodec::default();
        let mut wire = Vec::new();
        codec
            .encode(FrameHead::new(CmdId(1), Seq(1)), b"one", &[], &mut wire)
            .unwrap();
        codec.encode_heartbeat(&mut wire).unwrap();
        codec
            .encode(FrameHead::new(CmdId(2), Seq(2)), b"partial", &[], &mut wire)
            .unwrap();
        wire.pop();
        let out = decode_stream(&wire);
        assert_eq!(out.frames.len(), 2);
        assert_eq!(&wire[out.frames[0].1.clone()], b"one");
        assert_eq!(out.frames[1].1, 43..43);
        assert_eq!(out.consumed, 43);
        assert_eq!(
            out.end,
            StreamEnd::Incomplete {
                head: Some(FrameHead::new(CmdId(2), Seq(2))),
                needed: 27
            }
        );
    }

    #[test]
    fn garbage_ends_malformed_without_panicking() {
        let out = decode_stream(&[0xFF; 40]);
        assert!(out.frames.is_empty());
        assert!(matches!(out.end, StreamEnd::Malformed(_)));
        assert_eq!(decode_stream(&[]).end, StreamEnd::Exhausted);
    }

    #[derive(Debug)]
    struct ZeroLen;
    impl PacketCodec for ZeroLen {
        fn name(&self) -> &str {
            "zero"
        }
        fn encode(
            &self,
            _: FrameHead,
            _: &[u8],
            _: &[u8],
            _: &mut Vec<u8>,
        ) -> Result<(), phobos_plugin_api::EncodeError> {
            Ok(())
        }
        fn decode(&self, _: &[u8]) -> Result<Decoded, DecodeError> {
            Ok(Decoded::Frame(phobos_plugin_api::RawFrame {
                head: FrameHead::new(CmdId(0), Seq(0)),
                body: 0..0,
                extension: None,
                len: 0,
            }))
        }
        fn classify(&self, h: &FrameHead) -> phobos_plugin_api::FrameKind {
            phobos_plugin_api::FrameKind::Response(h.seq)
        }
    }

    #[test]
    #[should_panic(expected = "zero-length frame")]
    fn a_codec_consuming_nothing_is_caught() {
        decode_stream_with(&ZeroLen, b"x");
    }
}
