//! [`MarsCodec`]: encode and decode of the 20-byte-header frame.

use phobos_plugin_api::codec::DEFAULT_MAX_FRAME_LEN;
use phobos_plugin_api::{
    CmdId, DecodeError, Decoded, EncodeError, FrameHead, FrameKind, PacketCodec, RawFrame, Seq,
};

use crate::config::{ConfigError, MarsCodecConfig};

/// The header length, which is also the value of the `head_length` field.
pub const HEAD_LENGTH: usize = 20;

/// Mars's limit on one frame, header included: 1 MiB. A configured limit may be lower, never
/// higher.
pub const MAX_FRAME_LEN: usize = DEFAULT_MAX_FRAME_LEN;

/// The codec of Mars's default long-link packer. See the [crate docs](crate) for the format.
///
/// Built from a validated [`MarsCodecConfig`] by [`new`](Self::new); [`Default`] gives Mars's
/// defaults (client version 0, 1 MiB limit).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MarsCodec {
    config: MarsCodecConfig,
}

impl MarsCodec {
    /// The codec's name, as [`PacketCodec::name`] reports it and the registry selects it.
    pub const NAME: &'static str = "mars";

    /// A codec for `config`.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] when `config.max_frame_len` is not between 20 and 1 MiB
    /// ([`MarsCodecConfig::validate`]).
    pub fn new(config: MarsCodecConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(MarsCodec { config })
    }

    /// A codec with the default 1 MiB limit that writes and requires `client_version`.
    pub fn with_client_version(client_version: u32) -> Self {
        MarsCodec {
            config: MarsCodecConfig {
                client_version,
                ..MarsCodecConfig::default()
            },
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &MarsCodecConfig {
        &self.config
    }
}

impl PacketCodec for MarsCodec {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn encode(
        &self,
        head: FrameHead,
        body: &[u8],
        _extension: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        let len = HEAD_LENGTH.saturating_add(body.len());
        if len > self.config.max_frame_len {
            return Err(EncodeError::TooLarge {
                len: len as u64,
                max: self.config.max_frame_len as u64,
            });
        }
        // `len <= max_frame_len <= 1 MiB`, so the body length fits in the u32 field.
        let body_length = body.len() as u32;
        // The header is put together on the stack and appended in one copy (five appends,
        // each checking the room, cost more than the frame's other work).
        let mut header = [0u8; HEAD_LENGTH];
        let fields = [
            HEAD_LENGTH as u32,
            self.config.client_version,
            head.cmd_id.0,
            head.seq.0,
            body_length,
        ];
        for (slot, field) in header.chunks_exact_mut(4).zip(fields) {
            slot.copy_from_slice(&field.to_be_bytes());
        }
        out.reserve(len);
        out.extend_from_slice(&header);
        out.extend_from_slice(body);
        Ok(())
    }

    fn decode(&self, buf: &[u8]) -> Result<Decoded, DecodeError> {
        let Some(header) = buf.first_chunk::<HEAD_LENGTH>() else {
            return Ok(Decoded::Incomplete {
                head: None,
                needed: HEAD_LENGTH,
            });
        };
        let field = |i: usize| {
            u32::from_be_bytes([
                header[4 * i],
                header[4 * i + 1],
                header[4 * i + 2],
                header[4 * i + 3],
            ])
        };
        let (head_length, client_version, cmd_id, seq, body_length) =
            (field(0), field(1), field(2), field(3), field(4));

        // Design: Mars locates the body with `head_length`; anything but 20 is either a
        // different protocol or an attack (0 makes Mars's reader spin), so it is malformed.
        if head_length as usize != HEAD_LENGTH {
            return Err(DecodeError::HeadLength {
                expected: HEAD_LENGTH as u32,
                got: head_length,
            });
        }
        if client_version != self.config.client_version {
            return Err(DecodeError::Version {
                expected: self.config.client_version,
                got: client_version,
            });
        }
        let len = HEAD_LENGTH as u64 + u64::from(body_length);
        if len > self.config.max_frame_len as u64 {
            return Err(DecodeError::TooLarge {
                len,
                max: self.config.max_frame_len as u64,
            });
        }
        // `len <= max_frame_len`, a usize.
        let len = len as usize;
        let head = FrameHead::new(CmdId(cmd_id), Seq(seq));
        if buf.len() < len {
            return Ok(Decoded::Incomplete {
                head: Some(head),
                needed: len,
            });
        }
        Ok(Decoded::Frame(RawFrame {
            head,
            body: HEAD_LENGTH..len,
            extension: None,
            len,
        }))
    }

    fn classify(&self, head: &FrameHead) -> FrameKind {
        phobos_plugin_api::codec::classify_mars(head)
    }

    fn max_frame_len(&self) -> usize {
        self.config.max_frame_len
    }
}

#[cfg(test)]
mod tests {
    use phobos_plugin_api::codec::{
        HEARTBEAT_SEQ, IDENTIFY_SEQ, PUSH_SEQ, SIGNAL_KEEP_CMD, SIGNAL_KEEP_SEQ,
    };

    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn unhex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn codec(client_version: u32, max_frame_len: usize) -> MarsCodec {
        MarsCodec::new(MarsCodecConfig {
            client_version,
            max_frame_len,
        })
        .unwrap()
    }

    #[test]
    fn heartbeat_frame_is_exactly_the_mars_noop() {
        let mut out = Vec::new();
        MarsCodec::with_client_version(0x0102_0304)
            .encode_heartbeat(&mut out)
            .unwrap();
        assert_eq!(
            hex(&out),
            "00000014".to_owned() + "01020304" + "00000006" + "ffffffff" + "00000000"
        );
        let mut default = Vec::new();
        MarsCodec::default().encode_heartbeat(&mut default).unwrap();
        assert_eq!(
            default,
            unhex("00000014 00000000 00000006 ffffffff 00000000")
        );
    }

    #[test]
    fn identify_frame_carries_seq_fffffffe() {
        let mut out = Vec::new();
        MarsCodec::default()
            .encode_identify(CmdId(0x1234), b"\x01\x02", &mut out)
            .unwrap();
        assert_eq!(
            out,
            unhex("00000014 00000000 00001234 fffffffe 00000002 0102")
        );
    }

    #[test]
    fn signalling_keep_datagram_matches_spec_16_3() {
        let mut out = Vec::new();
        MarsCodec::with_client_version(9)
            .encode(
                FrameHead::new(SIGNAL_KEEP_CMD, PUSH_SEQ),
                &[],
                &[],
                &mut out,
            )
            .unwrap();
        assert_eq!(out, unhex("00000014 00000009 000000f3 00000000 00000000"));
    }

    #[test]
    fn task_frame_golden_bytes_and_decode() {
        let c = MarsCodec::with_client_version(200);
        let mut out = vec![0xAA]; // encode appends, never clears
        c.encode(
            FrameHead::new(CmdId(1001), Seq(77)),
            b"abc",
            b"ignored",
            &mut out,
        )
        .unwrap();
        assert_eq!(
            out,
            unhex("aa 00000014 000000c8 000003e9 0000004d 00000003 616263")
        );
        assert_eq!(
            c.decode(&out[1..]).unwrap(),
            Decoded::Frame(RawFrame {
                head: FrameHead::new(CmdId(1001), Seq(77)),
                body: 20..23,
                extension: None,
                len: 23,
            })
        );
    }

    #[test]
    fn decode_reports_header_first_then_total_length() {
        let c = MarsCodec::default();
        let wire = unhex("00000014 00000000 00000009 00000005 00000004 01020304");
        for cut in 0..20 {
            assert_eq!(
                c.decode(&wire[..cut]).unwrap(),
                Decoded::Incomplete {
                    head: None,
                    needed: 20
                },
                "cut at {cut}"
            );
        }
        for cut in 20..24 {
            assert_eq!(
                c.decode(&wire[..cut]).unwrap(),
                Decoded::Incomplete {
                    head: Some(FrameHead::new(CmdId(9), Seq(5))),
                    needed: 24
                },
                "cut at {cut}"
            );
        }
        let mut two = wire.clone();
        two.extend_from_slice(&wire);
        let Decoded::Frame(f) = c.decode(&two).unwrap() else {
            panic!("expected a frame")
        };
        assert_eq!((f.len, f.body), (24, 20..24));
    }

    #[test]
    fn head_length_other_than_20_is_malformed_including_zero() {
        let c = MarsCodec::default();
        for (hl, body_len) in [(0u32, 0u32), (16, 0), (19, 4), (21, 0), (u32::MAX, 0)] {
            let mut wire = Vec::new();
            for f in [hl, 0, 1, 1, body_len] {
                wire.extend_from_slice(&f.to_be_bytes());
            }
            assert_eq!(
                c.decode(&wire),
                Err(DecodeError::HeadLength {
                    expected: 20,
                    got: hl
                })
            );
        }
    }

    #[test]
    fn client_version_mismatch_is_malformed() {
        let wire = unhex("00000014 00000001 00000009 00000005 00000000");
        assert_eq!(
            MarsCodec::with_client_version(2).decode(&wire),
            Err(DecodeError::Version {
                expected: 2,
                got: 1
            })
        );
        assert!(matches!(
            MarsCodec::with_client_version(1).decode(&wire),
            Ok(Decoded::Frame(_))
        ));
    }

    #[test]
    fn oversize_body_length_is_too_large_as_soon_as_the_header_is_complete() {
        let c = MarsCodec::default();
        // 20 + (1 MiB - 20) is exactly the limit: fine, just incomplete.
        let at_limit = unhex("00000014 00000000 00000001 00000001 000fffec");
        assert_eq!(
            c.decode(&at_limit).unwrap(),
            Decoded::Incomplete {
                head: Some(FrameHead::new(CmdId(1), Seq(1))),
                needed: 1 << 20
            }
        );
        let over = unhex("00000014 00000000 00000001 00000001 000fffed");
        assert_eq!(
            c.decode(&over),
            Err(DecodeError::TooLarge {
                len: (1 << 20) + 1,
                max: 1 << 20
            })
        );
        let huge = unhex("00000014 00000000 00000001 00000001 ffffffff");
        assert_eq!(
            c.decode(&huge),
            Err(DecodeError::TooLarge {
                len: 20 + u64::from(u32::MAX),
                max: 1 << 20
            })
        );
        // A lower configured limit is honoured.
        assert_eq!(
            codec(0, 64).decode(&unhex("00000014 00000000 00000001 00000001 0000002d")),
            Err(DecodeError::TooLarge { len: 65, max: 64 })
        );
    }

    #[test]
    fn encode_refuses_oversize_and_leaves_out_untouched() {
        let c = codec(0, 100);
        let mut out = b"keep".to_vec();
        assert_eq!(
            c.encode(FrameHead::new(CmdId(1), Seq(1)), &[0; 81], &[], &mut out),
            Err(EncodeError::TooLarge { len: 101, max: 100 })
        );
        assert_eq!(out, b"keep");
        c.encode(FrameHead::new(CmdId(1), Seq(1)), &[0; 80], &[], &mut out)
            .unwrap();
        assert_eq!(out.len(), 4 + 100);
        let max_body = vec![7u8; MAX_FRAME_LEN - HEAD_LENGTH];
        let mut out = Vec::new();
        MarsCodec::default()
            .encode(FrameHead::new(CmdId(1), Seq(1)), &max_body, &[], &mut out)
            .unwrap();
        assert_eq!(out.len(), MAX_FRAME_LEN);
        assert!(MarsCodec::default()
            .encode(FrameHead::new(CmdId(1), Seq(1)), &out, &[], &mut Vec::new())
            .is_err());
    }

    #[test]
    fn classify_follows_mars_order() {
        let c = MarsCodec::default();
        let k = |cmd: u32, seq: u32| c.classify(&FrameHead::new(CmdId(cmd), Seq(seq)));
        assert_eq!(k(6, HEARTBEAT_SEQ.0), FrameKind::HeartbeatReply);
        assert_eq!(k(6, 0), FrameKind::HeartbeatReply);
        assert_eq!(k(6, 12), FrameKind::HeartbeatReply);
        assert_eq!(k(6, IDENTIFY_SEQ.0), FrameKind::HeartbeatReply);
        assert_eq!(k(99, IDENTIFY_SEQ.0), FrameKind::IdentifyReply);
        assert_eq!(k(99, 0), FrameKind::Push);
        assert_eq!(k(99, 12), FrameKind::Response(Seq(12)));
        assert_eq!(
            k(SIGNAL_KEEP_CMD.0, SIGNAL_KEEP_SEQ.0),
            FrameKind::Response(SIGNAL_KEEP_SEQ)
        );
    }

    #[test]
    fn reserved_seqs_and_limits_are_mars_defaults() {
        let c = MarsCodec::default();
        assert_eq!(c.name(), "mars");
        assert_eq!(c.max_frame_len(), 1_048_576);
        assert_eq!(codec(0, 4096).max_frame_len(), 4096);
        assert_eq!(c.heartbeat_interval(), None);
        for seq in [0, 0xFFFF_FFFD, 0xFFFF_FFFE, 0xFFFF_FFFF] {
            assert!(c.is_reserved_seq(Seq(seq)));
        }
        assert!(!c.is_reserved_seq(Seq(1)));
    }

    #[test]
    fn new_rejects_limits_outside_the_protocol_range() {
        assert!(MarsCodec::new(MarsCodecConfig {
            client_version: 0,
            max_frame_len: MAX_FRAME_LEN + 1
        })
        .is_err());
        assert!(MarsCodec::new(MarsCodecConfig {
            client_version: 0,
            max_frame_len: 19
        })
        .is_err());
        // The smallest limit still carries empty frames.
        let c = codec(3, 20);
        let mut out = Vec::new();
        c.encode_heartbeat(&mut out).unwrap();
        assert!(matches!(c.decode(&out), Ok(Decoded::Frame(f)) if f.len == 20));
    }
}
