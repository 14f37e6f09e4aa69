//! Property tests for `MarsCodec`. Case count: `PROPTEST_CASES` (default 64 here).

use phobos_codec_mars::fuzzing::{self, StreamEnd};
use phobos_codec_mars::{MarsCodec, MarsCodecConfig, HEAD_LENGTH};
use phobos_plugin_api::{CmdId, Decoded, FrameHead, PacketCodec, Seq};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    ProptestConfig::with_cases(cases)
}

fn codec_strategy() -> impl Strategy<Value = MarsCodec> {
    (any::<u32>(), prop_oneof![Just(1usize << 20), 20usize..4096]).prop_map(
        |(client_version, max_frame_len)| {
            MarsCodec::new(MarsCodecConfig {
                client_version,
                max_frame_len,
            })
            .unwrap()
        },
    )
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn encode_then_decode_round_trips(
        codec in codec_strategy(),
        cmd in any::<u32>(),
        seq in any::<u32>(),
        body in proptest::collection::vec(any::<u8>(), 0..2048),
        trailing in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let head = FrameHead::new(CmdId(cmd), Seq(seq));
        let mut wire = Vec::new();
        let fits = HEAD_LENGTH + body.len() <= codec.max_frame_len();
        let res = codec.encode(head, &body, &[], &mut wire);
        prop_assert_eq!(res.is_ok(), fits);
        if !fits {
            prop_assert!(wire.is_empty());
            return Ok(());
        }
        prop_assert_eq!(wire.len(), HEAD_LENGTH + body.len());
        let frame_len = wire.len();
        wire.extend_from_slice(&trailing);
        match codec.decode(&wire).unwrap() {
            Decoded::Frame(f) => {
                prop_assert_eq!(f.head, head);
                prop_assert_eq!(&wire[f.body.clone()], &body[..]);
                prop_assert_eq!(f.len, frame_len);
                prop_assert_eq!(f.extension, None);
            }
            other => prop_assert!(false, "expected a frame, got {:?}", other),
        }
        // Every strict prefix is incomplete, with the head once 20 bytes are there.
        for cut in [0, 1, 19, 20, frame_len - 1] {
            if cut >= frame_len { continue; }
            let expected = Decoded::Incomplete {
                head: (cut >= HEAD_LENGTH).then_some(head),
                needed: if cut >= HEAD_LENGTH { frame_len } else { HEAD_LENGTH },
            };
            prop_assert_eq!(codec.decode(&wire[..cut]).unwrap(), expected);
        }
    }

    #[test]
    fn decoding_arbitrary_bytes_keeps_the_contract(
        codec in codec_strategy(),
        bytes in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        // Panics inside on a zero-length frame, needed > max, or chunking differences.
        let out = fuzzing::decode_stream_checked(&codec, &bytes);
        if let StreamEnd::Incomplete { needed, .. } = out.end {
            prop_assert!(needed <= codec.max_frame_len());
        }
        for (_, body) in &out.frames {
            prop_assert!(body.end <= out.consumed);
        }
        fuzzing::decode_stream(&bytes);
    }

    #[test]
    fn plausible_headers_with_random_fields_never_break_the_contract(
        fields in proptest::array::uniform5(prop_oneof![
            Just(0u32), Just(20), Just(6), Just(0xFFFF_FFFE), Just(u32::MAX), any::<u32>(),
            0u32..64, (1u32 << 20) - 24..(1u32 << 20) + 4,
        ]),
        tail in proptest::collection::vec(any::<u8>(), 0..128),
    ) {
        let mut bytes: Vec<u8> = fields.iter().flat_map(|f| f.to_be_bytes()).collect();
        bytes.extend_from_slice(&tail);
        for codec in [MarsCodec::default(), MarsCodec::with_client_version(fields[1])] {
            let out = fuzzing::decode_stream_checked(&codec, &bytes);
            prop_assert!(out.consumed <= bytes.len());
        }
    }

    #[test]
    fn many_frames_back_to_back_decode_in_order(
        frames in proptest::collection::vec(
            (any::<u32>(), 1u32..u32::MAX, proptest::collection::vec(any::<u8>(), 0..64)),
            0..16,
        ),
    ) {
        let codec = MarsCodec::default();
        let mut wire = Vec::new();
        for (cmd, seq, body) in &frames {
            codec.encode(FrameHead::new(CmdId(*cmd), Seq(*seq)), body, &[], &mut wire).unwrap();
        }
        let out = fuzzing::decode_stream_checked(&codec, &wire);
        prop_assert_eq!(out.end, StreamEnd::Exhausted);
        prop_assert_eq!(out.frames.len(), frames.len());
        for ((head, body), (cmd, seq, expected)) in out.frames.iter().zip(&frames) {
            prop_assert_eq!(*head, FrameHead::new(CmdId(*cmd), Seq(*seq)));
            prop_assert_eq!(&wire[body.clone()], &expected[..]);
        }
    }
}
