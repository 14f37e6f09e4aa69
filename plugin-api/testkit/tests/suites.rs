//! The suites pass well-behaved toy implementations and catch broken ones.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use phobos_plugin_api::cipher::HEADER_KEY_LEN;
use phobos_plugin_api::codec::{HEARTBEAT_CMD, IDENTIFY_SEQ, PUSH_SEQ};
use phobos_plugin_api::{
    AddrSource, BlockDecryptor, BlockEncryptor, CipherError, CipherKind, CmdId, DecodeError,
    Decoded, EncodeError, FrameHead, FrameKind, HeartbeatContext, HeartbeatPolicy,
    HeartbeatPolicyFactory, IpSource, LinkPurpose, LogCipher, PacketCodec, RawFrame, ResolveError,
    ResolvedAddr, Seq,
};
use phobos_plugin_testkit::{cipher, codec, heartbeat};

// ---- A toy codec: cmd u32, seq u32, len u16, body; with switchable bugs. ----

#[derive(Debug, Default, Clone, Copy, PartialEq)]
enum Bug {
    #[default]
    None,
    /// Reports `needed` one byte too many.
    NeededPlusOne,
    /// Writes the header before checking the size.
    DirtyOnError,
    /// Accepts a zero-length "frame" on a zero byte.
    ZeroLength,
    /// Classifies everything as a response.
    NoClassify,
    /// Body off by one.
    BodyOffByOne,
}

#[derive(Debug, Default)]
struct Toy(Bug);

const TOY_HEAD: usize = 10;

impl PacketCodec for Toy {
    fn name(&self) -> &str {
        "toy"
    }
    fn encode(
        &self,
        head: FrameHead,
        body: &[u8],
        _: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        let len = TOY_HEAD + body.len();
        if self.0 == Bug::DirtyOnError {
            out.extend_from_slice(&head.cmd_id.0.to_be_bytes());
        }
        if len > self.max_frame_len() {
            return Err(EncodeError::TooLarge {
                len: len as u64,
                max: self.max_frame_len() as u64,
            });
        }
        if self.0 != Bug::DirtyOnError {
            out.extend_from_slice(&head.cmd_id.0.to_be_bytes());
        }
        out.extend_from_slice(&head.seq.0.to_be_bytes());
        out.extend_from_slice(&(body.len() as u16).to_be_bytes());
        out.extend_from_slice(body);
        Ok(())
    }
    fn decode(&self, b: &[u8]) -> Result<Decoded, DecodeError> {
        if self.0 == Bug::ZeroLength && b.first() == Some(&0) {
            return Ok(Decoded::Frame(RawFrame {
                head: FrameHead::new(CmdId(0), Seq(0)),
                body: 0..0,
                extension: None,
                len: 0,
            }));
        }
        let Some(h) = b.first_chunk::<TOY_HEAD>() else {
            return Ok(Decoded::Incomplete {
                head: None,
                needed: TOY_HEAD,
            });
        };
        let cmd = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
        let seq = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
        let len = TOY_HEAD + u16::from_be_bytes([h[8], h[9]]) as usize;
        if len > self.max_frame_len() {
            return Err(DecodeError::TooLarge {
                len: len as u64,
                max: self.max_frame_len() as u64,
            });
        }
        let head = FrameHead::new(CmdId(cmd), Seq(seq));
        if b.len() < len {
            let needed = if self.0 == Bug::NeededPlusOne {
                len + 1
            } else {
                len
            };
            return Ok(Decoded::Incomplete {
                head: Some(head),
                needed,
            });
        }
        let start = if self.0 == Bug::BodyOffByOne {
            TOY_HEAD - 1
        } else {
            TOY_HEAD
        };
        Ok(Decoded::Frame(RawFrame {
            head,
            body: start..len,
            extension: None,
            len,
        }))
    }
    fn classify(&self, h: &FrameHead) -> FrameKind {
        if self.0 == Bug::NoClassify {
            return FrameKind::Response(h.seq);
        }
        if h.cmd_id == HEARTBEAT_CMD {
            FrameKind::HeartbeatReply
        } else if h.seq == IDENTIFY_SEQ {
            FrameKind::IdentifyReply
        } else if h.seq == PUSH_SEQ {
            FrameKind::Push
        } else {
            FrameKind::Response(h.seq)
        }
    }
    fn max_frame_len(&self) -> usize {
        5000
    }
}

phobos_plugin_testkit::codec_conformance!(toy_codec, || Arc::new(Toy::default()));

#[test]
#[should_panic(expected = "needs")]
fn needed_beyond_the_frame_is_caught() {
    codec::check_incremental(&Toy(Bug::NeededPlusOne));
}

#[test]
#[should_panic(expected = "out changed on error")]
fn dirty_out_on_error_is_caught() {
    codec::check_oversize_encode(&Toy(Bug::DirtyOnError));
}

#[test]
#[should_panic(expected = "length 0")]
fn zero_length_frames_are_caught() {
    // The heartbeat frame starts with a zero byte.
    codec::check_reserved_frames(&Toy(Bug::ZeroLength));
}

#[test]
#[should_panic(expected = "heartbeat frame")]
fn wrong_classification_is_caught() {
    codec::check_reserved_frames(&Toy(Bug::NoClassify));
}

#[test]
#[should_panic(expected = "body")]
fn wrong_body_is_caught() {
    codec::check_round_trip(&Toy(Bug::BodyOffByOne));
}

#[test]
#[should_panic(expected = "decode of frame")]
fn differing_codecs_are_caught() {
    codec::assert_codecs_identical(&Toy::default(), &Toy(Bug::NeededPlusOne));
}

// ---- A toy heartbeat: fixed interval, or one that learns through shared state. ----

#[derive(Debug, Default)]
struct Learning {
    learnt: Arc<Mutex<u64>>,
    zero_after: Option<u32>,
    skip_export: bool,
}

#[derive(Debug)]
struct LearningPolicy {
    learnt: Arc<Mutex<u64>>,
    acks: u32,
    zero_after: Option<u32>,
}

impl HeartbeatPolicyFactory for Learning {
    fn name(&self) -> &str {
        "learning"
    }
    fn build(&self, _: Instant, _: &HeartbeatContext) -> Box<dyn HeartbeatPolicy> {
        Box::new(LearningPolicy {
            learnt: self.learnt.clone(),
            acks: 0,
            zero_after: self.zero_after,
        })
    }
    fn export_state(&self) -> Option<String> {
        if self.skip_export {
            return Some("0".to_owned());
        }
        Some(self.learnt.lock().unwrap().to_string())
    }
    fn import_state(&self, state: &str) -> bool {
        match state.trim().parse::<u64>() {
            Ok(v) => {
                *self.learnt.lock().unwrap() = v.min(300);
                true
            }
            Err(_) => false,
        }
    }
}

impl HeartbeatPolicy for LearningPolicy {
    fn next_interval(&mut self, _: Instant, ctx: &HeartbeatContext) -> Option<Duration> {
        if self.zero_after.is_some_and(|n| self.acks >= n) {
            return Some(Duration::ZERO);
        }
        if ctx.app_active || self.acks < 3 {
            return Some(Duration::from_secs(210));
        }
        Some(Duration::from_secs(210 + *self.learnt.lock().unwrap()))
    }
    fn on_ack(&mut self, _: Instant, _: Duration) {
        self.acks += 1;
        let mut l = self.learnt.lock().unwrap();
        *l = (*l + 10).min(300);
    }
}

phobos_plugin_testkit::heartbeat_conformance!(learning_heartbeat, || Arc::new(Learning::default()));

#[test]
#[should_panic(expected = "out of bounds")]
fn zero_interval_is_caught() {
    heartbeat::check_intervals_bounded(&Learning {
        zero_after: Some(5),
        ..Default::default()
    });
}

#[test]
#[should_panic(expected = "re-export differs")]
fn lossy_export_is_caught() {
    heartbeat::check_state_round_trip(
        &Learning::default(),
        &Learning {
            skip_export: true,
            ..Default::default()
        },
    );
}

// ---- A toy cipher: XOR with a key stream from a 64-byte "public key". ----

#[derive(Debug)]
struct Xor {
    key: u8,
    leak: bool,
}

#[derive(Debug)]
struct XorSession {
    key: u8,
    counter: u8,
}

impl LogCipher for Xor {
    fn name(&self) -> &str {
        "xor"
    }
    fn kind(&self) -> CipherKind {
        CipherKind::Authenticated
    }
    fn new_encryptor(&self) -> Result<Box<dyn BlockEncryptor>, CipherError> {
        Ok(Box::new(XorSession {
            key: self.key,
            counter: 0,
        }))
    }
    fn new_decryptor(
        &self,
        header_key: &[u8; HEADER_KEY_LEN],
    ) -> Result<Box<dyn BlockDecryptor>, CipherError> {
        if header_key[1..] != [0xA5; HEADER_KEY_LEN - 1] {
            return Err(CipherError::BadHeaderKey);
        }
        // A leaky cipher ignores its own key and uses the header's.
        let key = if self.leak { header_key[0] } else { self.key };
        Ok(Box::new(XorSession { key, counter: 0 }))
    }
}

impl BlockEncryptor for XorSession {
    fn header_key(&self) -> [u8; HEADER_KEY_LEN] {
        let mut k = [0xA5; HEADER_KEY_LEN];
        k[0] = self.key;
        k
    }
    fn encrypt(&mut self, plain: &[u8], out: &mut Vec<u8>) -> Result<usize, CipherError> {
        // Works in 4-byte units, leaving the rest to the caller.
        let n = plain.len() / 4 * 4;
        out.extend(plain[..n].iter().map(|b| b ^ self.key ^ self.counter));
        Ok(n)
    }
    fn finish_block(&mut self, rest: &[u8], out: &mut Vec<u8>) -> Result<(), CipherError> {
        out.extend(rest.iter().map(|b| b ^ self.key ^ self.counter));
        self.counter = self.counter.wrapping_add(1);
        Ok(())
    }
}

impl BlockDecryptor for XorSession {
    fn decrypt_block(&mut self, body: &[u8], out: &mut Vec<u8>) -> Result<(), CipherError> {
        out.extend(body.iter().map(|b| b ^ self.key ^ self.counter));
        self.counter = self.counter.wrapping_add(1);
        Ok(())
    }
}

phobos_plugin_testkit::cipher_conformance!(
    xor_cipher,
    || Arc::new(Xor {
        key: 0x3C,
        leak: false
    }),
    || Arc::new(Xor {
        key: 0x77,
        leak: false
    }),
);

#[test]
#[should_panic(expected = "with another key")]
fn a_cipher_that_ignores_its_key_is_caught() {
    cipher::check_wrong_key(
        &Xor {
            key: 0x3C,
            leak: false,
        },
        &Xor {
            key: 0x77,
            leak: true,
        },
    );
}

// ---- A toy IP source. ----

#[derive(Debug)]
struct Fixed {
    tag: AddrSource,
    port: Option<u16>,
    calls: AtomicU32,
}

#[async_trait]
impl IpSource for Fixed {
    fn name(&self) -> &str {
        "fixed"
    }
    async fn resolve(&self, host: &str, _: LinkPurpose) -> Result<Vec<ResolvedAddr>, ResolveError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if host.is_empty() {
            return Err(ResolveError::NoSuchHost);
        }
        tokio::task::yield_now().await;
        Ok(vec![ResolvedAddr {
            ip: "10.0.0.1".parse().unwrap(),
            port: self.port,
            source: self.tag,
        }])
    }
}

phobos_plugin_testkit::ipsource_conformance!(
    fixed_source,
    || Arc::new(Fixed {
        tag: AddrSource::Debug,
        port: Some(443),
        calls: AtomicU32::new(0)
    }),
    AddrSource::Debug,
    ["localhost", "a.example"],
);

#[test]
#[should_panic(expected = "wrong tag")]
fn a_wrong_tag_is_caught() {
    phobos_plugin_testkit::ipsource::check_resolve(
        &Fixed {
            tag: AddrSource::Backup,
            port: None,
            calls: AtomicU32::new(0),
        },
        AddrSource::Debug,
        &["h"],
    );
}

#[test]
#[should_panic(expected = "port 0")]
fn port_zero_is_caught() {
    phobos_plugin_testkit::ipsource::check_resolve(
        &Fixed {
            tag: AddrSource::Debug,
            port: Some(0),
            calls: AtomicU32::new(0),
        },
        AddrSource::Debug,
        &["h"],
    );
}

#[test]
fn every_host_and_purpose_is_resolved() {
    let src = Fixed {
        tag: AddrSource::Debug,
        port: None,
        calls: AtomicU32::new(0),
    };
    phobos_plugin_testkit::ipsource::check_resolve(&src, AddrSource::Debug, &["a", "b", "c"]);
    assert_eq!(src.calls.load(Ordering::Relaxed), 6);
}

#[test]
#[should_panic(expected = "interval at step")]
fn differing_heartbeat_factories_are_caught() {
    heartbeat::assert_factories_identical(
        &Learning::default(),
        &Learning {
            zero_after: Some(3),
            ..Default::default()
        },
    );
}

#[test]
fn identical_heartbeat_factories_pass() {
    heartbeat::assert_factories_identical(&Learning::default(), &Learning::default());
}

#[test]
fn ciphers_with_the_same_key_interoperate() {
    cipher::assert_ciphers_interoperate(
        &Xor {
            key: 0x3C,
            leak: false,
        },
        &Xor {
            key: 0x3C,
            leak: false,
        },
    );
}

#[test]
#[should_panic(expected = "differs")]
fn ciphers_with_different_keys_are_caught() {
    cipher::assert_ciphers_interoperate(
        &Xor {
            key: 0x3C,
            leak: false,
        },
        &Xor {
            key: 0x3D,
            leak: false,
        },
    );
}

#[test]
#[should_panic(expected = "for LongLink")]
fn differing_sources_are_caught() {
    let a = Fixed {
        tag: AddrSource::Debug,
        port: None,
        calls: AtomicU32::new(0),
    };
    let b = Fixed {
        tag: AddrSource::Debug,
        port: Some(1),
        calls: AtomicU32::new(0),
    };
    phobos_plugin_testkit::ipsource::assert_sources_identical(&a, &b, &["x"]);
}

/// The positive control of `differing_sources_are_caught`, on its own (inside a
/// `should_panic` test a false report here would pass unnoticed): two sources that answer
/// alike pass.
#[test]
fn sources_answering_alike_pass() {
    let make = || Fixed {
        tag: AddrSource::Debug,
        port: Some(1),
        calls: AtomicU32::new(0),
    };
    phobos_plugin_testkit::ipsource::assert_sources_identical(&make(), &make(), &["x", "y"]);
}

// ---- A toy auth: a token checked by the first reply byte; switchable bugs. ----

#[derive(Debug, Default)]
struct ToyAuth {
    rejected: std::sync::atomic::AtomicBool,
    heartbeat_cmd: bool,
    inconsistent: bool,
}

#[async_trait]
impl phobos_plugin_api::AuthCheck for ToyAuth {
    fn name(&self) -> &str {
        "toy-auth"
    }
    fn is_authed(&self, _: &str) -> bool {
        !self.rejected.load(Ordering::Relaxed)
    }
    async fn ensure_authed(&self, _: &str) -> Result<(), phobos_plugin_api::AuthError> {
        if self.inconsistent || self.rejected.load(Ordering::Relaxed) {
            return Err(phobos_plugin_api::AuthError::Transient("no".into()));
        }
        Ok(())
    }
    fn identify_request(&self, _: &str) -> phobos_plugin_api::IdentifyRequest {
        phobos_plugin_api::IdentifyRequest::Now {
            cmd_id: if self.heartbeat_cmd {
                HEARTBEAT_CMD
            } else {
                CmdId(99)
            },
            body: b"tok".to_vec(),
            hash: b"h".to_vec(),
        }
    }
    fn on_identify_response(
        &self,
        _: &str,
        body: &[u8],
        hash: &[u8],
    ) -> phobos_plugin_api::IdentifyVerdict {
        use phobos_plugin_api::IdentifyVerdict;
        match (body.first(), hash == b"h") {
            (Some(0), true) => IdentifyVerdict::Accepted,
            (Some(1), true) => {
                self.rejected.store(true, Ordering::Relaxed);
                IdentifyVerdict::Rejected
            }
            _ => IdentifyVerdict::Retry,
        }
    }
}

phobos_plugin_testkit::auth_conformance!(toy_auth, || Arc::new(ToyAuth::default()));

#[test]
#[should_panic(expected = "heartbeat's command id")]
fn identify_with_the_heartbeat_command_is_caught() {
    phobos_plugin_testkit::auth::check_identify_exchange(&ToyAuth {
        heartbeat_cmd: true,
        ..Default::default()
    });
}

#[test]
#[should_panic(expected = "ensure_authed failed")]
fn an_inconsistent_gate_is_caught() {
    phobos_plugin_testkit::auth::check_gate_consistent(&ToyAuth {
        inconsistent: true,
        ..Default::default()
    });
}

#[test]
#[should_panic(expected = "ensure_authed")]
fn differing_auth_plugins_are_caught() {
    phobos_plugin_testkit::auth::assert_auth_identical(
        &ToyAuth::default(),
        &ToyAuth {
            inconsistent: true,
            ..Default::default()
        },
    );
}
