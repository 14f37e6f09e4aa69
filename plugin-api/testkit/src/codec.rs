//! Conformance checks for [`PacketCodec`], run by [`codec_conformance!`](crate::codec_conformance).
//!
//! Every check drives the codec only through the trait, so it applies to any protocol. What
//! the checks take as the contract:
//!
//! - `encode` appends to `out` and never touches what was there; a frame that fits decodes to
//!   the same head and body, consuming exactly the bytes appended. The `extension` is either
//!   carried (and then decodes to the same bytes) or dropped (`extension: None`).
//! - For every strict prefix of a frame, `decode` says [`Decoded::Incomplete`] with
//!   `prefix_len < needed <= frame_len` and `needed <= max_frame_len()`, and any head it reports
//!   is the frame's head. (A reader waits for `needed` bytes; a smaller value would make it
//!   spin, a larger one would make it wait for bytes that never come.)
//! - Whatever the bytes, `decode` never panics; a frame it reports has `0 < len <= buf.len()`,
//!   `len <= max_frame_len()` and body/extension ranges inside it.
//! - A frame made by `encode_heartbeat` classifies as [`FrameKind::HeartbeatReply`] and one
//!   made by `encode_identify` as [`FrameKind::IdentifyReply`] (the server echoes both).
//! - Encoding more than `max_frame_len()` fails with [`EncodeError::TooLarge`] and leaves `out`
//!   as it was.

use std::ops::Range;

use phobos_plugin_api::codec::HEARTBEAT_CMD;
use phobos_plugin_api::{
    CmdId, DecodeError, Decoded, EncodeError, FrameHead, FrameKind, PacketCodec, Seq,
    ShortLinkRequest,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use crate::rng::TestRng;

/// One frame's inputs, as generated for the checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenFrame {
    /// The head.
    pub head: FrameHead,
    /// The body.
    pub body: Vec<u8>,
    /// The extension (often empty).
    pub extension: Vec<u8>,
}

/// A frame as a reader found it in a stream: head, body bytes, extension bytes.
pub type ReadFrame = (FrameHead, Vec<u8>, Option<Vec<u8>>);

/// The command id the checks use for identify frames (anything but the heartbeat's).
pub const IDENTIFY_CMD: CmdId = CmdId(0x0000_1000);

/// The largest body `codec` encodes with an empty extension, found by bisection on
/// [`PacketCodec::encode`] (assumes a body that fits still fits when shorter).
///
/// # Panics
///
/// If even an empty body does not encode.
pub fn largest_body(codec: &dyn PacketCodec) -> usize {
    let fits = |n: usize| {
        codec
            .encode(
                FrameHead::new(CmdId(1), Seq(1)),
                &vec![0; n],
                &[],
                &mut Vec::new(),
            )
            .is_ok()
    };
    assert!(fits(0), "{}: an empty frame does not encode", codec.name());
    let (mut lo, mut hi) = (0, codec.max_frame_len());
    if fits(hi) {
        return hi;
    }
    // Invariant: fits(lo) && !fits(hi).
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if fits(mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    lo
}

/// `count` frames from `seed`: random command ids and sequences (reserved ones included), bodies
/// mostly short with some long ones up to `max_body`, a few with an extension.
pub fn generated_frames(count: usize, seed: u64, max_body: usize) -> Vec<GenFrame> {
    let mut rng = TestRng::new(seed);
    (0..count)
        .map(|i| {
            let body_len = match rng.below(10) {
                0 => 0,
                1..=6 => rng.below(300),
                7 | 8 => rng.below(5000),
                _ => rng.below(70_000),
            }
            .min(max_body);
            let seq = match i % 7 {
                0 => [0, 0xFFFF_FFFF, 0xFFFF_FFFE, 0xFFFF_FFFD][rng.below(4)],
                _ => rng.next_u32(),
            };
            let extension = if rng.below(4) == 0 && body_len + 64 <= max_body {
                let n = rng.below(32);
                rng.bytes(n)
            } else {
                Vec::new()
            };
            GenFrame {
                head: FrameHead::new(CmdId(rng.next_u32()), Seq(seq)),
                body: rng.bytes(body_len),
                extension,
            }
        })
        .collect()
}

/// Decodes `buf` once and checks the single-call contract (see the [module docs](self)).
///
/// # Panics
///
/// When the result breaks the contract.
pub fn checked_decode(codec: &dyn PacketCodec, buf: &[u8]) -> Result<Decoded, DecodeError> {
    let res = codec.decode(buf);
    let max = codec.max_frame_len();
    match &res {
        Ok(Decoded::Frame(f)) => {
            assert!(f.len > 0, "{}: a frame of length 0", codec.name());
            assert!(
                f.len <= buf.len(),
                "{}: a frame of {} bytes in a buffer of {}",
                codec.name(),
                f.len,
                buf.len()
            );
            assert!(f.len <= max, "{}: a frame above the limit", codec.name());
            assert_inside(codec, "body", &f.body, f.len);
            if let Some(ext) = &f.extension {
                assert_inside(codec, "extension", ext, f.len);
            }
        }
        Ok(Decoded::Incomplete { needed, .. }) => {
            assert!(
                *needed <= max,
                "{}: needed {needed} above the limit {max}",
                codec.name()
            );
            assert!(
                *needed > buf.len(),
                "{}: incomplete with needed {needed} though {} bytes are there",
                codec.name(),
                buf.len()
            );
        }
        Err(_) => {}
    }
    res
}

/// Reads `bytes` as a long-link reader does when they arrive `chunk` bytes at a time: append,
/// then decode and consume frames until "need more". Returns the frames and how reading ended
/// (`Ok(())` when all bytes were consumed or the rest is an incomplete frame).
///
/// # Panics
///
/// When a decode result breaks the contract, or `chunk` is 0.
pub fn read_stream(
    codec: &dyn PacketCodec,
    bytes: &[u8],
    chunk: usize,
) -> (Vec<ReadFrame>, Result<(), DecodeError>) {
    assert!(chunk > 0, "chunk must be positive");
    read_arrivals(codec, bytes.chunks(chunk))
}

/// Reads bytes arriving in the given pieces, as [`read_stream`] does.
fn read_arrivals<'a>(
    codec: &dyn PacketCodec,
    arrivals: impl IntoIterator<Item = &'a [u8]>,
) -> (Vec<ReadFrame>, Result<(), DecodeError>) {
    let mut frames = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    for piece in arrivals {
        buf.extend_from_slice(piece);
        while !buf.is_empty() {
            match checked_decode(codec, &buf) {
                Ok(Decoded::Frame(f)) => {
                    frames.push((
                        f.head,
                        buf[f.body.clone()].to_vec(),
                        f.extension.map(|r| buf[r].to_vec()),
                    ));
                    buf.drain(..f.len);
                }
                Ok(Decoded::Incomplete { .. }) => break,
                Err(e) => return (frames, Err(e)),
            }
        }
    }
    (frames, Ok(()))
}

/// Generated frames (bodies up to 64 KiB) each encode after existing bytes without touching
/// them and decode back to the same head, body and extension (or none), with trailing bytes
/// ignored.
///
/// # Panics
///
/// On any mismatch.
pub fn check_round_trip(codec: &dyn PacketCodec) {
    let max_body = largest_body(codec);
    for frame in generated_frames(300, 0x0C0D_EC01, max_body) {
        round_trip_one(codec, &frame);
    }
}

/// An empty body, a one-byte body, and the largest body the codec accepts round-trip.
///
/// # Panics
///
/// On any mismatch.
pub fn check_edge_sizes(codec: &dyn PacketCodec) {
    let max_body = largest_body(codec);
    let mut rng = TestRng::new(0xED6E);
    for len in [0, 1, max_body.saturating_sub(1), max_body] {
        for seq in [1, 0, 0xFFFF_FFFF] {
            let frame = GenFrame {
                head: FrameHead::new(CmdId(rng.next_u32()), Seq(seq)),
                body: rng.bytes(len),
                extension: Vec::new(),
            };
            let wire = round_trip_one(codec, &frame);
            if len == max_body {
                for cut in [0, 1, wire.len() / 2, wire.len() - 1] {
                    check_prefix(codec, &frame, &wire, cut);
                }
            }
        }
    }
}

/// Every strict prefix of small frames (and the first and last 64 prefixes of larger ones) is
/// reported incomplete with a sane `needed` and the right head, and a stream cut in two at any
/// position reads back the same frames.
///
/// # Panics
///
/// On any mismatch.
pub fn check_incremental(codec: &dyn PacketCodec) {
    let max_body = largest_body(codec).min(4000);
    let frames = generated_frames(60, 0x1C2E, max_body);
    for frame in &frames {
        let wire = encode(codec, frame);
        let cuts: Vec<usize> = if wire.len() <= 400 {
            (0..wire.len()).collect()
        } else {
            (0..64).chain(wire.len() - 64..wire.len()).collect()
        };
        for cut in cuts {
            check_prefix(codec, frame, &wire, cut);
        }
    }
    // A short stream of several frames, split into two arrivals at every position.
    let stream_frames = generated_frames(6, 0x5717, largest_body(codec).min(200));
    let stream: Vec<u8> = stream_frames
        .iter()
        .flat_map(|f| encode(codec, f))
        .collect();
    let expected = expected_reads(&stream_frames);
    for cut in 0..=stream.len() {
        let (found, end) = read_arrivals(codec, [&stream[..cut], &stream[cut..]]);
        assert_eq!(end, Ok(()), "{}: split at {cut}", codec.name());
        assert_frames_match(codec, &found, &expected);
    }
}

/// A stream of frames (heartbeat and identify included) read one byte at a time, and in a few
/// other chunk sizes, gives every frame back in order.
///
/// # Panics
///
/// On any mismatch.
pub fn check_byte_at_a_time(codec: &dyn PacketCodec) {
    let max_body = largest_body(codec).min(2000);
    let frames = generated_frames(40, 0xB17E, max_body);
    let mut stream = Vec::new();
    for f in &frames {
        stream.extend_from_slice(&encode(codec, f));
    }
    codec
        .encode_heartbeat(&mut stream)
        .expect("heartbeat encodes");
    codec
        .encode_identify(IDENTIFY_CMD, b"identify", &mut stream)
        .expect("identify encodes");
    for chunk in [1, 2, 3, 7, 19, 20, 21, 64, 4096, stream.len()] {
        let (found, end) = read_stream(codec, &stream, chunk);
        assert_eq!(end, Ok(()), "{}: chunk {chunk}", codec.name());
        assert_eq!(
            found.len(),
            frames.len() + 2,
            "{}: chunk {chunk}",
            codec.name()
        );
        let expected = expected_reads(&frames);
        assert_frames_match(codec, &found[..frames.len()], &expected);
        assert_eq!(
            codec.classify(&found[frames.len()].0),
            FrameKind::HeartbeatReply
        );
        assert_eq!(found[frames.len() + 1].1, b"identify");
    }
}

/// Random byte strings (proptest, [`proptest_cases`](crate::proptest_cases) cases), read whole
/// and in small chunks, never make decode panic or break the contract, and both readings agree.
///
/// # Panics
///
/// On a contract violation (proptest shrinks and reports the input).
pub fn check_random_bytes(codec: &dyn PacketCodec) {
    let mut runner = TestRunner::new(Config::with_cases(crate::proptest_cases()));
    runner
        .run(
            &(proptest::collection::vec(any::<u8>(), 0..1024), 1usize..64),
            |(bytes, chunk)| {
                let whole = read_stream(codec, &bytes, bytes.len().max(1));
                let split = read_stream(codec, &bytes, chunk);
                prop_assert_eq!(whole, split);
                Ok(())
            },
        )
        .unwrap();
}

/// Valid frames with random bytes overwritten, random truncation and random trailing bytes
/// (proptest) never make decode panic or break the contract.
///
/// # Panics
///
/// On a contract violation (proptest shrinks and reports the input).
pub fn check_damaged_frames(codec: &dyn PacketCodec) {
    let max_body = largest_body(codec).min(300);
    let mut runner = TestRunner::new(Config::with_cases(crate::proptest_cases()));
    let strategy = (
        any::<u64>(),
        proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        any::<Option<prop::sample::Index>>(),
        proptest::collection::vec(any::<u8>(), 0..64),
        1usize..32,
    );
    runner
        .run(&strategy, |(seed, edits, cut, tail, chunk)| {
            let mut bytes = Vec::new();
            for f in generated_frames(3, seed, max_body) {
                bytes.extend_from_slice(&encode(codec, &f));
            }
            for (at, value) in edits {
                let i = at.index(bytes.len());
                bytes[i] = value;
            }
            if let Some(cut) = cut {
                bytes.truncate(cut.index(bytes.len() + 1));
            }
            bytes.extend_from_slice(&tail);
            let whole = read_stream(codec, &bytes, bytes.len().max(1));
            let split = read_stream(codec, &bytes, chunk);
            prop_assert_eq!(whole, split);
            Ok(())
        })
        .unwrap();
}

/// The heartbeat frame decodes to an empty-bodied [`FrameKind::HeartbeatReply`], the identify
/// frame (command [`IDENTIFY_CMD`]) to an [`FrameKind::IdentifyReply`] with its body, and
/// `classify` gives the same answer every time.
///
/// # Panics
///
/// On any mismatch.
pub fn check_reserved_frames(codec: &dyn PacketCodec) {
    let mut wire = Vec::new();
    codec
        .encode_heartbeat(&mut wire)
        .expect("heartbeat encodes");
    let (frames, end) = read_stream(codec, &wire, wire.len().max(1));
    assert_eq!(end, Ok(()));
    assert_eq!(frames.len(), 1, "{}: heartbeat is one frame", codec.name());
    assert_eq!(
        codec.classify(&frames[0].0),
        FrameKind::HeartbeatReply,
        "{}: heartbeat frame {:?}",
        codec.name(),
        frames[0].0
    );
    assert_eq!(
        codec.classify(&FrameHead::new(HEARTBEAT_CMD, Seq(0xFFFF_FFFF))),
        FrameKind::HeartbeatReply
    );

    let largest = largest_body(codec);
    let long = vec![0xAB; largest.min(300)];
    for body in [&b""[..], &b"\x00\x01token"[..largest.min(7)], &long] {
        let mut wire = Vec::new();
        codec
            .encode_identify(IDENTIFY_CMD, body, &mut wire)
            .expect("identify encodes");
        let (frames, end) = read_stream(codec, &wire, wire.len().max(1));
        assert_eq!(end, Ok(()));
        assert_eq!(frames.len(), 1, "{}: identify is one frame", codec.name());
        assert_eq!(frames[0].1, body, "{}: identify body", codec.name());
        assert_eq!(frames[0].0.cmd_id, IDENTIFY_CMD);
        assert_eq!(
            codec.classify(&frames[0].0),
            FrameKind::IdentifyReply,
            "{}: identify frame {:?}",
            codec.name(),
            frames[0].0
        );
    }

    let mut rng = TestRng::new(0xC1A5);
    for _ in 0..1000 {
        let head = FrameHead::new(CmdId(rng.next_u32()), Seq(rng.next_u32()));
        assert_eq!(codec.classify(&head), codec.classify(&head));
    }
}

/// Encoding a body one byte longer than the largest that fits, or longer than the whole
/// limit, fails with [`EncodeError::TooLarge`] (limit = `max_frame_len()`) and leaves `out`
/// unchanged; so does an oversize identify frame.
///
/// # Panics
///
/// On any mismatch.
pub fn check_oversize_encode(codec: &dyn PacketCodec) {
    let max = codec.max_frame_len();
    let largest = largest_body(codec);
    let prefix = b"already queued bytes".to_vec();
    for len in [largest + 1, max + 1] {
        let mut out = prefix.clone();
        let res = codec.encode(
            FrameHead::new(CmdId(1), Seq(1)),
            &vec![1; len],
            &[],
            &mut out,
        );
        match res {
            Err(EncodeError::TooLarge {
                len: got,
                max: limit,
            }) => {
                assert_eq!(limit, max as u64, "{}: reported limit", codec.name());
                assert!(got > limit, "{}: reported length {got}", codec.name());
            }
            other => panic!("{}: {len}-byte body gave {other:?}", codec.name()),
        }
        assert_eq!(out, prefix, "{}: out changed on error", codec.name());

        let mut out = prefix.clone();
        assert!(codec
            .encode_identify(IDENTIFY_CMD, &vec![1; len], &mut out)
            .is_err());
        assert_eq!(out, prefix, "{}: out changed on error", codec.name());
    }
}

/// Asserts that two codecs behave identically: same name, limits and reserved sequences; the
/// same bytes (or the same error) for every generated frame, heartbeat, identify and oversize
/// frame; the same decode result for every frame, many prefixes and damaged variants; the same
/// classification; the same short-link request shaping and response checks.
///
/// Meant for comparing a plugin used in-process with the same plugin loaded from its library.
///
/// # Panics
///
/// At the first difference, naming it.
pub fn assert_codecs_identical(a: &dyn PacketCodec, b: &dyn PacketCodec) {
    assert_eq!(a.name(), b.name(), "name");
    assert_eq!(a.max_frame_len(), b.max_frame_len(), "max_frame_len");
    assert_eq!(
        a.heartbeat_interval(),
        b.heartbeat_interval(),
        "heartbeat_interval"
    );
    let mut rng = TestRng::new(0x1D3A);
    let seqs = [
        0,
        1,
        2,
        0x7FFF_FFFF,
        0xFFFF_FFFC,
        0xFFFF_FFFD,
        0xFFFF_FFFE,
        0xFFFF_FFFF,
    ];
    let random_seqs: Vec<u32> = (0..64).map(|_| rng.next_u32()).collect();
    for seq in seqs.into_iter().chain(random_seqs) {
        assert_eq!(
            a.is_reserved_seq(Seq(seq)),
            b.is_reserved_seq(Seq(seq)),
            "is_reserved_seq({seq:#x})"
        );
        for cmd in [0, 1, 6, 243, rng.next_u32()] {
            let head = FrameHead::new(CmdId(cmd), Seq(seq));
            assert_eq!(a.classify(&head), b.classify(&head), "classify({head:?})");
        }
    }

    let max_body = largest_body(a);
    assert_eq!(max_body, largest_body(b), "largest body");
    let mut frames = generated_frames(200, 0x1DE7, max_body);
    frames.push(GenFrame {
        head: FrameHead::new(CmdId(9), Seq(9)),
        body: rng.bytes(max_body),
        extension: Vec::new(),
    });
    frames.push(GenFrame {
        head: FrameHead::new(CmdId(9), Seq(10)),
        body: vec![0; max_body + 1],
        extension: Vec::new(),
    });
    for (i, f) in frames.iter().enumerate() {
        let (mut out_a, mut out_b) = (b"pre".to_vec(), b"pre".to_vec());
        let ra = a.encode(f.head, &f.body, &f.extension, &mut out_a);
        let rb = b.encode(f.head, &f.body, &f.extension, &mut out_b);
        assert_eq!(ra, rb, "encode result of frame {i}");
        assert!(out_a == out_b, "encoded bytes of frame {i} differ");
        let wire = &out_a[3..];
        let cuts: Vec<usize> = if wire.len() <= 128 {
            (0..=wire.len()).collect()
        } else {
            vec![
                0,
                1,
                8,
                12,
                16,
                19,
                20,
                21,
                24,
                32,
                wire.len() - 1,
                wire.len(),
            ]
        };
        for cut in cuts {
            assert_eq!(
                a.decode(&wire[..cut]),
                b.decode(&wire[..cut]),
                "decode of frame {i} cut at {cut}"
            );
        }
        if !wire.is_empty() && wire.len() <= 4096 {
            for _ in 0..8 {
                let mut damaged = wire.to_vec();
                let at = rng.below(damaged.len().min(64));
                damaged[at] ^= 1 << rng.below(8);
                assert_eq!(
                    a.decode(&damaged),
                    b.decode(&damaged),
                    "decode of damaged frame {i}"
                );
            }
        }
    }
    for len in [0, 1, 37, 1024] {
        let junk = rng.bytes(len);
        assert_eq!(
            a.decode(&junk),
            b.decode(&junk),
            "decode of {len} random bytes"
        );
    }

    let (mut out_a, mut out_b) = (Vec::new(), Vec::new());
    assert_eq!(
        a.encode_heartbeat(&mut out_a),
        b.encode_heartbeat(&mut out_b),
        "heartbeat result"
    );
    assert_eq!(out_a, out_b, "heartbeat bytes");
    for body in [&b""[..], b"token", &vec![7; max_body + 1]] {
        let (mut out_a, mut out_b) = (Vec::new(), Vec::new());
        assert_eq!(
            a.encode_identify(IDENTIFY_CMD, body, &mut out_a),
            b.encode_identify(IDENTIFY_CMD, body, &mut out_b),
            "identify result"
        );
        assert_eq!(out_a, out_b, "identify bytes");
    }

    let task_headers = [
        ("user-agent".to_owned(), "Phobos".to_owned()),
        ("X-Trace".to_owned(), "1".to_owned()),
    ];
    for (path, host, body, extra) in [
        ("/cgi-bin/x", "s.example", &b"hello"[..], &task_headers[..]),
        ("/", "", &b""[..], &[][..]),
    ] {
        let req = ShortLinkRequest {
            path,
            host,
            body,
            task_headers: extra,
        };
        let (mut ha, mut hb) = (Vec::new(), Vec::new());
        a.shortlink_headers(&req, &mut ha);
        b.shortlink_headers(&req, &mut hb);
        assert_eq!(ha, hb, "shortlink headers");
        let (mut ba, mut bb) = (Vec::new(), Vec::new());
        a.shortlink_body(&req, &mut ba);
        b.shortlink_body(&req, &mut bb);
        assert_eq!(ba, bb, "shortlink body");
    }
    let headers = vec![("Content-Length".to_owned(), "2".to_owned())];
    for status in [200, 204, 301, 404, 500, 0, u16::MAX] {
        assert_eq!(
            a.shortlink_check_response(status, &headers, b"ok"),
            b.shortlink_check_response(status, &headers, b"ok"),
            "shortlink_check_response({status})"
        );
    }
}

/// Encodes one generated frame, panicking if it does not fit.
fn encode(codec: &dyn PacketCodec, frame: &GenFrame) -> Vec<u8> {
    let mut out = Vec::new();
    codec
        .encode(frame.head, &frame.body, &frame.extension, &mut out)
        .unwrap_or_else(|e| panic!("{}: {frame:?} does not encode: {e}", codec.name()));
    out
}

fn round_trip_one(codec: &dyn PacketCodec, frame: &GenFrame) -> Vec<u8> {
    let prefix = b"\x00earlier bytes\xFF";
    let mut out = prefix.to_vec();
    codec
        .encode(frame.head, &frame.body, &frame.extension, &mut out)
        .unwrap_or_else(|e| {
            panic!(
                "{}: {} body bytes do not encode: {e}",
                codec.name(),
                frame.body.len()
            )
        });
    assert_eq!(
        &out[..prefix.len()],
        prefix,
        "{}: encode changed earlier bytes",
        codec.name()
    );
    let wire = out[prefix.len()..].to_vec();
    let mut with_tail = wire.clone();
    with_tail.extend_from_slice(b"\x00\x00\x00\x14trailing");
    for buf in [&wire[..], &with_tail[..]] {
        match checked_decode(codec, buf) {
            Ok(Decoded::Frame(f)) => {
                assert_eq!(f.head, frame.head, "{}: head", codec.name());
                assert!(
                    buf[f.body.clone()] == frame.body[..],
                    "{}: body of {:?}",
                    codec.name(),
                    frame.head
                );
                assert_eq!(f.len, wire.len(), "{}: frame length", codec.name());
                if let Some(ext) = f.extension {
                    assert_eq!(buf[ext], frame.extension[..], "{}: extension", codec.name());
                }
                let _ = codec.classify(&f.head);
            }
            other => panic!("{}: {:?} decoded as {other:?}", codec.name(), frame.head),
        }
    }
    wire
}

fn check_prefix(codec: &dyn PacketCodec, frame: &GenFrame, wire: &[u8], cut: usize) {
    match checked_decode(codec, &wire[..cut]) {
        Ok(Decoded::Incomplete { head, needed }) => {
            assert!(
                needed <= wire.len(),
                "{}: {cut}-byte prefix of a {}-byte frame needs {needed}",
                codec.name(),
                wire.len()
            );
            if let Some(head) = head {
                assert_eq!(
                    head,
                    frame.head,
                    "{}: head of a {cut}-byte prefix",
                    codec.name()
                );
            }
        }
        other => panic!(
            "{}: {cut}-byte prefix of a {}-byte frame gave {other:?}",
            codec.name(),
            wire.len()
        ),
    }
}

/// What a reader should find for `frames`; the extension is compared only where the codec
/// carries one.
fn expected_reads(frames: &[GenFrame]) -> Vec<ReadFrame> {
    frames
        .iter()
        .map(|f| (f.head, f.body.clone(), Some(f.extension.clone())))
        .collect()
}

fn assert_frames_match(codec: &dyn PacketCodec, found: &[ReadFrame], expected: &[ReadFrame]) {
    assert_eq!(found.len(), expected.len(), "{}: frame count", codec.name());
    for (i, (f, e)) in found.iter().zip(expected).enumerate() {
        assert_eq!(f.0, e.0, "{}: head of frame {i}", codec.name());
        assert!(f.1 == e.1, "{}: body of frame {i}", codec.name());
        if let (Some(got), Some(want)) = (&f.2, &e.2) {
            assert_eq!(got, want, "{}: extension of frame {i}", codec.name());
        }
    }
}

fn assert_inside(codec: &dyn PacketCodec, what: &str, range: &Range<usize>, len: usize) {
    assert!(
        range.start <= range.end && range.end <= len,
        "{}: {what} {range:?} outside a frame of {len} bytes",
        codec.name()
    );
}
