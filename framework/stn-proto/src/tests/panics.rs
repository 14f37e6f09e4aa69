//! Plugins that panic: each panic is caught where the engine calls the plugin, answered with
//! the fallback `phobos_plugin_api::panics` documents, reported as
//! [`Event::PluginPanicked`], and the engine carries on (every task gets exactly one end —
//! the harness panics on a second — and a later task succeeds).

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use phobos_codec_mars::MarsCodec;
use phobos_plugin_api::codec::{HEARTBEAT_CMD, IDENTIFY_SEQ};
use phobos_plugin_api::panics::PLUGIN_PANICKED;
use phobos_plugin_api::{
    AuthCheck, AuthError, CmdId, DecodeError, Decoded, EncodeError, FrameHead, FrameKind,
    HeartbeatContext, HeartbeatPolicy, HeartbeatPolicyFactory, IdentifyRequest, IdentifyVerdict,
    PacketCodec, Seq, TaskId,
};

use super::harness::{config_of, config_with, ms, secs, server_addr, Sim};
use crate::{
    Action, CodecFailure, Event, LinkError, LinkStatus, PluginKind, PluginPanic, TaskError,
    TaskSpec,
};

/// Mars's codec, made to panic on demand.
#[derive(Debug)]
struct Shaky {
    inner: MarsCodec,
    /// `decode` panics on a whole frame with this command id.
    decode_cmd: AtomicU32,
    /// Whether `decode` panics only once (`decode_cmd` is then cleared).
    decode_once: AtomicBool,
    /// `encode` panics (after writing some bytes) for this command id.
    encode_cmd: AtomicU32,
    classify: AtomicBool,
    reserved: AtomicBool,
}

const NEVER: u32 = u32::MAX;

impl Shaky {
    fn new() -> Arc<Self> {
        Arc::new(Shaky {
            inner: MarsCodec::default(),
            decode_cmd: AtomicU32::new(NEVER),
            decode_once: AtomicBool::new(false),
            encode_cmd: AtomicU32::new(NEVER),
            classify: AtomicBool::new(false),
            reserved: AtomicBool::new(false),
        })
    }
}

impl PacketCodec for Shaky {
    fn name(&self) -> &str {
        "shaky"
    }
    fn encode(
        &self,
        head: FrameHead,
        body: &[u8],
        ext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        if head.cmd_id.0 == self.encode_cmd.load(Ordering::Relaxed) {
            out.extend_from_slice(b"half a frame");
            panic!("encode exploded on cmd {}", head.cmd_id.0);
        }
        self.inner.encode(head, body, ext, out)
    }
    fn decode(&self, buf: &[u8]) -> Result<Decoded, DecodeError> {
        let decoded = self.inner.decode(buf);
        if let Ok(Decoded::Frame(f)) = &decoded {
            if f.head.cmd_id.0 == self.decode_cmd.load(Ordering::Relaxed) {
                if self.decode_once.load(Ordering::Relaxed) {
                    self.decode_cmd.store(NEVER, Ordering::Relaxed);
                }
                panic!("decode exploded on cmd {}", f.head.cmd_id.0);
            }
        }
        decoded
    }
    fn classify(&self, head: &FrameHead) -> FrameKind {
        if self.classify.load(Ordering::Relaxed) {
            panic!("classify exploded");
        }
        self.inner.classify(head)
    }
    fn is_reserved_seq(&self, seq: Seq) -> bool {
        if self.reserved.load(Ordering::Relaxed) {
            panic!("is_reserved_seq exploded");
        }
        self.inner.is_reserved_seq(seq)
    }
}

fn shaky_sim(codec: &Arc<Shaky>) -> Sim {
    Sim::with_config(config_of(codec.clone(), &[server_addr(1)]).build().unwrap())
}

fn spec(cmd: u32) -> TaskSpec {
    TaskSpec::new(CmdId(cmd), &b"x"[..])
}

fn panics(sim: &Sim) -> Vec<PluginPanic> {
    sim.events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::PluginPanicked(p) => Some(p.clone()),
            _ => None,
        })
        .collect()
}

fn assert_reported(sim: &Sim, kind: PluginKind, name: &str, call: &str, message: &str) {
    let all = panics(sim);
    assert!(
        all.iter().any(|p| p.kind == kind
            && p.name == name
            && p.call == call
            && p.message.contains(message)),
        "no {kind} panic of {name:?} in {call} with {message:?}: {all:?}"
    );
}

/// A connected link with the batch lane on, and ten tasks started in one call, the seventh
/// with command 66; their answers arrive in one read, so the lane's run takes the frames
/// after the first and meets the seventh's.
fn ten_in_the_lane(codec: &Arc<Shaky>) -> (Sim, Vec<TaskId>) {
    let mut sim = shaky_sim(codec);
    sim.coalesce_reads = true;
    sim.engine.set_batch_lane(true);
    sim.engine.set_end_batches(true);
    sim.foreground(true);
    sim.engine.connect_link(sim.now, "default-longlink");
    sim.drain();
    sim.run_for(ms(200));
    let requests = (0..10u8).map(|i| {
        let cmd = if i == 6 { CmdId(66) } else { CmdId(1) };
        (cmd, vec![i])
    });
    let ids = sim.start_batch_like(&spec(1), requests);
    (sim, ids)
}

const PANICKED_FRAME: LinkError = LinkError::Decode(DecodeError::Other(PLUGIN_PANICKED));

#[test]
fn a_codec_panicking_in_decode_drops_the_link_like_a_malformed_frame() {
    let codec = Shaky::new();
    codec.decode_cmd.store(66, Ordering::Relaxed);
    let mut sim = shaky_sim(&codec);
    let bad = sim.start(spec(66));
    // Shares the dropped links' fate (each drop costs it an attempt); with retries enough
    // for the bad task's two attempts, it gets through.
    let good = sim.start(spec(1).with_retry_count(3));
    let (_, end) = sim.run_until_end(bad, secs(60));
    // Retried as for a malformed frame, then ended with the same typed error.
    assert_eq!(
        end.outcome,
        Err(TaskError::Codec(CodecFailure::Decode(DecodeError::Other(
            PLUGIN_PANICKED
        ))))
    );
    assert_eq!(end.profile.attempts, 2);
    assert!(sim.closes().iter().all(|(_, e)| *e == PANICKED_FRAME));
    assert!(!sim.closes().is_empty());
    assert_reported(
        &sim,
        PluginKind::Codec,
        "shaky",
        "decode",
        "exploded on cmd 66",
    );
    sim.run_for(secs(5));
    assert!(
        sim.ends[&good].1.outcome.is_ok(),
        "the other task got through"
    );
    // The engine goes on: a later task succeeds on a new connection.
    let later = sim.start(spec(2));
    let (_, end) = sim.run_until_end(later, secs(60));
    assert!(end.outcome.is_ok(), "{:?}", end.outcome);
}

#[test]
fn a_codec_panicking_in_decode_in_the_batch_lane_drops_the_link_and_the_rest_retry() {
    let codec = Shaky::new();
    codec.decode_cmd.store(66, Ordering::Relaxed);
    let (mut sim, ids) = ten_in_the_lane(&codec);
    sim.run_for(secs(120));
    // Every member ends once: the panicking one with the typed error after its retry, the
    // others answered, or (answered after it on a link it dropped, per the usual retry
    // rules) with the same error.
    let dropped = Err(TaskError::Codec(CodecFailure::Decode(DecodeError::Other(
        PLUGIN_PANICKED,
    ))));
    assert_eq!(sim.ends[&ids[6]].1.outcome, dropped);
    assert_eq!(sim.ends[&ids[6]].1.profile.attempts, 2);
    for id in &ids {
        let outcome = &sim.ends[id].1.outcome;
        assert!(outcome.is_ok() || *outcome == dropped, "{id}: {outcome:?}");
    }
    assert!(ids[..6].iter().all(|id| sim.ends[id].1.outcome.is_ok()));
    assert_eq!(sim.ends.len(), 10);
    assert!(sim.closes().iter().any(|(_, e)| *e == PANICKED_FRAME));
    assert_reported(
        &sim,
        PluginKind::Codec,
        "shaky",
        "decode",
        "exploded on cmd 66",
    );
    let later = sim.start(spec(2));
    let (_, end) = sim.run_until_end(later, secs(60));
    assert!(end.outcome.is_ok());
}

/// A codec that panics once, inside the batch lane's run: the run ends there and the
/// regular pass decodes the frame again, now without a panic, so every member is answered
/// and the link stays up; the panic is still reported, once.
#[test]
fn a_codec_panicking_once_in_the_batch_lanes_run_is_reported_and_costs_nothing_else() {
    let codec = Shaky::new();
    codec.decode_cmd.store(66, Ordering::Relaxed);
    codec.decode_once.store(true, Ordering::Relaxed);
    let (mut sim, ids) = ten_in_the_lane(&codec);
    sim.run_for(secs(60));
    for id in &ids {
        let end = &sim.ends[id].1;
        assert!(end.outcome.is_ok(), "{id}: {:?}", end.outcome);
        assert_eq!(end.profile.attempts, 1, "{id}");
    }
    assert!(sim.closes().is_empty(), "{:?}", sim.closes());
    let all = panics(&sim);
    assert_eq!(all.len(), 1, "{all:?}");
    assert_reported(
        &sim,
        PluginKind::Codec,
        "shaky",
        "decode or classify",
        "exploded on cmd 66",
    );
}

#[test]
fn a_codec_panicking_in_encode_ends_that_task_only() {
    let codec = Shaky::new();
    codec.encode_cmd.store(77, Ordering::Relaxed);
    let mut sim = shaky_sim(&codec);
    let first = sim.start(spec(1));
    let bad = sim.start(spec(77));
    let after = sim.start(spec(2));
    sim.run_for(secs(5));
    assert_eq!(
        sim.ends[&bad].1.outcome,
        Err(TaskError::Codec(CodecFailure::Encode(EncodeError::Other(
            PLUGIN_PANICKED
        ))))
    );
    // The half frame the codec wrote before panicking never reached the wire: the tasks
    // framed before and after it were answered, and the link stayed up.
    assert!(sim.ends[&first].1.outcome.is_ok());
    assert!(sim.ends[&after].1.outcome.is_ok());
    assert!(sim.closes().is_empty(), "{:?}", sim.closes());
    assert_reported(
        &sim,
        PluginKind::Codec,
        "shaky",
        "encode",
        "exploded on cmd 77",
    );
}

#[test]
fn a_codec_panicking_in_encode_in_the_batch_lane_ends_that_member_only() {
    let codec = Shaky::new();
    codec.encode_cmd.store(77, Ordering::Relaxed);
    let mut sim = shaky_sim(&codec);
    sim.engine.set_batch_lane(true);
    sim.engine.connect_link(sim.now, "default-longlink");
    sim.drain();
    sim.run_for(ms(200));
    let params = spec(1);
    let requests = (0..10u8).map(|i| {
        let cmd = if i == 3 { CmdId(77) } else { CmdId(1) };
        (cmd, vec![i])
    });
    let ids = sim.start_batch_like(&params, requests);
    sim.run_for(secs(5));
    for (i, id) in ids.iter().enumerate() {
        let outcome = &sim.ends[id].1.outcome;
        if i == 3 {
            assert_eq!(
                *outcome,
                Err(TaskError::Codec(CodecFailure::Encode(EncodeError::Other(
                    PLUGIN_PANICKED
                ))))
            );
        } else {
            assert!(outcome.is_ok(), "task {i}: {outcome:?}");
        }
    }
    assert!(sim.closes().is_empty(), "{:?}", sim.closes());
    assert_reported(
        &sim,
        PluginKind::Codec,
        "shaky",
        "encode",
        "exploded on cmd 77",
    );
}

#[test]
fn classify_and_is_reserved_seq_panics_fall_back_to_the_default_rules() {
    let codec = Shaky::new();
    let mut sim = shaky_sim(&codec);
    sim.engine.set_batch_lane(true);
    codec.classify.store(true, Ordering::Relaxed);
    codec.reserved.store(true, Ordering::Relaxed);
    // The default rule gives the task its usual id; the fallback kind of its response is
    // "the response to the task whose id is the sequence".
    let id = sim.start(spec(1));
    let (_, end) = sim.run_until_end(id, secs(60));
    assert!(end.outcome.is_ok(), "{:?}", end.outcome);
    assert_eq!(id, crate::TaskId(1));
    assert_reported(
        &sim,
        PluginKind::Codec,
        "shaky",
        "classify",
        "classify exploded",
    );
    assert_reported(
        &sim,
        PluginKind::Codec,
        "shaky",
        "is_reserved_seq",
        "exploded",
    );
    // A batch: its block of ids is asked under one guard, then one by one.
    let ids = sim.start_batch_like(&spec(1), (0..4u8).map(|i| (CmdId(1), vec![i])));
    sim.run_for(secs(5));
    for id in ids {
        assert!(sim.ends[&id].1.outcome.is_ok());
    }
}

/// Panics in every call it gets, `build` included when `in_build`.
#[derive(Debug)]
struct Bomb {
    in_build: bool,
}

impl HeartbeatPolicyFactory for Bomb {
    fn name(&self) -> &str {
        "bomb"
    }
    fn build(&self, _now: Instant, _ctx: &HeartbeatContext) -> Box<dyn HeartbeatPolicy> {
        if self.in_build {
            panic!("build exploded");
        }
        Box::new(BombPolicy)
    }
}

#[derive(Debug)]
struct BombPolicy;

impl HeartbeatPolicy for BombPolicy {
    fn next_interval(&mut self, _now: Instant, _ctx: &HeartbeatContext) -> Option<Duration> {
        panic!("next_interval exploded");
    }
    fn on_ack(&mut self, _now: Instant, _rtt: Duration) {
        panic!("on_ack exploded");
    }
    fn on_disconnect(&mut self, _now: Instant) {
        panic!("on_disconnect exploded");
    }
}

impl Drop for BombPolicy {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic!("drop exploded");
        }
    }
}

fn heartbeat_sim(in_build: bool) -> Sim {
    let cfg = config_with(&[server_addr(1)])
        .heartbeat(Arc::new(Bomb { in_build }))
        .build()
        .unwrap();
    Sim::with_config(cfg)
}

#[test]
fn a_panicking_heartbeat_policy_falls_back_to_the_fixed_interval_and_the_link_stays_up() {
    for in_build in [false, true] {
        let mut sim = heartbeat_sim(in_build);
        let id = sim.start(spec(1));
        sim.run_for(secs(500));
        assert!(sim.ends[&id].1.outcome.is_ok());
        // The first heartbeat right after connect, then one every 210 s.
        assert_eq!(
            sim.server_frames(HEARTBEAT_CMD),
            vec![ms(60), ms(210_060), ms(420_060)],
            "in_build: {in_build}"
        );
        assert!(sim.closes().is_empty());
        let call = if in_build { "build" } else { "next_interval" };
        assert_reported(&sim, PluginKind::Heartbeat, "bomb", call, "exploded");
        if !in_build {
            assert_reported(&sim, PluginKind::Heartbeat, "bomb", "on_ack", "exploded");
        }
        // Going down calls `on_disconnect` and drops the policy: both panic, neither
        // escapes, and the link comes back for the next task.
        sim.engine.redo_tasks(sim.now);
        sim.drain();
        let later = sim.start(spec(2));
        let (_, end) = sim.run_until_end(later, secs(60));
        assert!(end.outcome.is_ok());
    }
}

/// An auth plugin that panics in the calls flagged.
#[derive(Debug, Default)]
struct ShakyAuth {
    is_authed: bool,
    identify_request: bool,
    on_identify_response: bool,
}

#[async_trait::async_trait]
impl AuthCheck for ShakyAuth {
    fn name(&self) -> &str {
        "shaky-auth"
    }
    fn is_authed(&self, _host: &str) -> bool {
        if self.is_authed {
            panic!("is_authed exploded");
        }
        true
    }
    async fn ensure_authed(&self, _host: &str) -> Result<(), AuthError> {
        Ok(())
    }
    fn identify_request(&self, _link: &str) -> IdentifyRequest {
        if self.identify_request {
            panic!("identify_request exploded");
        }
        IdentifyRequest::Now {
            cmd_id: CmdId(0x99),
            body: b"who".to_vec(),
            hash: b"h".to_vec(),
        }
    }
    fn on_identify_response(&self, _link: &str, _body: &[u8], _hash: &[u8]) -> IdentifyVerdict {
        if self.on_identify_response {
            panic!("on_identify_response exploded");
        }
        IdentifyVerdict::Accepted
    }
}

fn auth_sim(auth: ShakyAuth) -> Sim {
    let cfg = config_with(&[server_addr(1)])
        .auth(Arc::new(auth))
        .build()
        .unwrap();
    Sim::with_config(cfg)
}

fn identifies(sim: &Sim) -> usize {
    sim.server_log
        .iter()
        .filter(|(_, _, head)| head.seq == IDENTIFY_SEQ)
        .count()
}

#[test]
fn a_panicking_identify_request_sends_a_heartbeat_and_asks_again_later() {
    let mut sim = auth_sim(ShakyAuth {
        identify_request: true,
        ..ShakyAuth::default()
    });
    let id = sim.start(spec(1));
    sim.run_for(secs(300));
    assert!(sim.ends[&id].1.outcome.is_ok());
    assert_eq!(identifies(&sim), 0);
    // `Later`: a heartbeat in the identify's place at each slot.
    assert_eq!(sim.server_frames(HEARTBEAT_CMD), vec![ms(60), ms(210_060)]);
    assert_eq!(panics(&sim).len(), 2, "asked at each slot");
    assert_reported(
        &sim,
        PluginKind::Auth,
        "shaky-auth",
        "identify_request",
        "exploded",
    );
    assert!(sim.closes().is_empty());
}

#[test]
fn a_panicking_identify_verdict_is_retry() {
    let mut sim = auth_sim(ShakyAuth {
        on_identify_response: true,
        ..ShakyAuth::default()
    });
    let id = sim.start(spec(1));
    sim.run_for(secs(300));
    assert!(sim.ends[&id].1.outcome.is_ok());
    // `Retry`: the identify goes again at the next slot; the link stays up.
    assert_eq!(identifies(&sim), 2);
    assert!(sim.closes().is_empty());
    assert_reported(
        &sim,
        PluginKind::Auth,
        "shaky-auth",
        "on_identify_response",
        "exploded",
    );
}

#[test]
fn a_panicking_is_authed_counts_as_not_authenticated_and_asks_for_a_login() {
    let mut sim = auth_sim(ShakyAuth {
        is_authed: true,
        identify_request: false,
        on_identify_response: false,
    });
    let id = sim.start(spec(1).needs_auth());
    let (_, end) = sim.run_until_end(id, secs(60));
    assert!(
        sim.actions
            .iter()
            .any(|(_, a)| matches!(a, Action::EnsureAuth { .. })),
        "a login was asked for"
    );
    // The login succeeded (the sim's answer), which clears the waiting task.
    assert!(end.outcome.is_ok(), "{:?}", end.outcome);
    assert_reported(
        &sim,
        PluginKind::Auth,
        "shaky-auth",
        "is_authed",
        "exploded",
    );
    let links_up = sim
        .events
        .iter()
        .filter(|(_, e)| {
            matches!(
                e,
                Event::LinkStatus {
                    status: LinkStatus::Connected(_),
                    ..
                }
            )
        })
        .count();
    assert_eq!(links_up, 1);
}
