//! Admission, queueing, ids, cancel, auth gating, pushes and the happy path.

use std::sync::Arc;
use std::time::Duration;

use phobos_plugin_api::{AuthCheck, AuthError, CmdId, NetKind, Seq};

use super::harness::{config_with, ms, secs, server_addr, Answer, MarsTwisted, Sim};
use crate::{
    Action, ChannelSelect, CodecFailure, ErrorKind, Event, LimitKind, LocalError, ParamError,
    TaskError, TaskSpec,
};

fn spec(cmd: u32, body: &[u8]) -> TaskSpec {
    TaskSpec::new(CmdId(cmd), body.to_vec())
}

#[test]
fn echo_task_succeeds_after_connect_and_one_round_trip() {
    let mut sim = Sim::new();
    let id = sim.start(spec(42, b"hello"));
    let (at, end) = sim.run_until_end(id, secs(5));
    let response = end.outcome.expect("success");
    assert_eq!(&response.body[..], b"hello");
    assert_eq!(response.cmd_id, CmdId(42));
    // connect 40 ms (one rtt), request 20 ms, server 5 ms, response 20 ms.
    assert_eq!(at, ms(85));
    let p = &end.profile;
    assert_eq!(p.attempts, 1);
    assert_eq!(p.addr, Some(server_addr(1)));
    assert_eq!(p.connect_start.map(|t| sim.secs(t)), Some(0.0));
    assert_eq!(p.connect_end.map(|t| sim.secs(t)), Some(0.04));
    assert_eq!(p.send_start.map(|t| sim.secs(t)), Some(0.04));
    assert_eq!(p.decoded_at.map(|t| sim.secs(t)), Some(0.085));
    assert_eq!(p.sent_bytes, 25);
    assert_eq!(p.received_bytes, 25);
    assert_eq!(p.elapsed(), ms(85));
}

#[test]
fn invalid_parameters_end_at_once_with_a_param_error() {
    let mut sim = Sim::new();
    let cases = [
        (spec(1, b"x").with_retry_count(31), ErrorKind::Param),
        (spec(1, b"x").with_server_cost(secs(121)), ErrorKind::Param),
        (
            spec(1, b"x").with_total_timeout(secs(601)),
            ErrorKind::Param,
        ),
        (
            spec(1, b"x").with_total_timeout(Duration::ZERO),
            ErrorKind::Param,
        ),
        (spec(1, b"x").with_priority(6), ErrorKind::Param),
        (spec(1, b"x").with_link("nope"), ErrorKind::Param),
        (spec(0, b"x"), ErrorKind::Local),
    ];
    for (spec, kind) in cases {
        let id = sim.start(spec);
        let (at, end) = sim.ends[&id].clone();
        assert_eq!(at, sim.t0, "ends at once");
        assert_eq!(end.outcome.unwrap_err().kind(), kind);
        assert_eq!(end.profile.attempts, 0);
    }
    assert!(sim.actions.is_empty(), "nothing connects for refused tasks");
}

#[test]
fn short_link_tasks_are_validated_then_handed_to_the_short_link() {
    let mut sim = Sim::new();
    let mut s = spec(0, b"x").with_channel(ChannelSelect::Short);
    s.path = "/cgi-bin/x".into();
    let no_host = sim.start(s.clone());
    assert_eq!(
        sim.ends[&no_host].1.outcome,
        Err(TaskError::Param(ParamError::NoShortLinkHost))
    );
    s.short_hosts = vec!["s.example".into()];
    let short = sim.start(s.clone());
    assert!(
        !sim.ends.contains_key(&short),
        "a valid short-link task runs"
    );
    let resolves_for_it = sim.actions.iter().any(|(_, a)| {
        matches!(a, Action::Resolve { link, .. } if link.as_str() == format!("short#{}", short.0))
    });
    assert!(resolves_for_it, "its host is resolved for the short link");
    let send_only = sim.start(s.send_only());
    assert_eq!(
        sim.ends[&send_only].1.outcome,
        Err(TaskError::Param(ParamError::SendOnlyOnShortLink))
    );
    // "Either" goes to the long link.
    let either = sim.start(spec(5, b"y").with_channel(ChannelSelect::Either));
    assert!(sim.run_until_end(either, secs(1)).1.outcome.is_ok());
}

#[test]
fn network_sensitive_task_fails_fast_without_network() {
    let mut sim = Sim::new();
    sim.engine.set_network(sim.now, NetKind::None, "");
    sim.drain();
    let id = sim.start(spec(1, b"x").network_sensitive());
    assert_eq!(
        sim.ends[&id].1.outcome,
        Err(TaskError::Local(LocalError::NoNetwork))
    );
}

#[test]
fn queue_is_by_priority_then_fifo() {
    let mut sim = Sim::new();
    let a = sim.start(spec(1, b"a").with_priority(5));
    let b = sim.start(spec(1, b"b").with_priority(0));
    let c = sim.start(spec(1, b"c").with_priority(3));
    let d = sim.start(spec(1, b"d").with_priority(0));
    sim.run_for(secs(1));
    let order: Vec<u32> = sim
        .server_log
        .iter()
        .filter(|(_, _, h)| h.cmd_id == CmdId(1))
        .map(|(_, _, h)| h.seq.0)
        .collect();
    assert_eq!(order, vec![b.0, d.0, c.0, a.0]);
    assert_eq!(sim.ends.len(), 4);
}

#[test]
fn heartbeat_goes_before_queued_tasks_on_a_new_link() {
    let mut sim = Sim::new();
    sim.start(spec(1, b"a"));
    sim.run_for(secs(1));
    let first = sim.server_log.first().unwrap().2;
    assert_eq!(first.cmd_id, phobos_plugin_api::codec::HEARTBEAT_CMD);
}

#[test]
fn task_ids_skip_reserved_sequence_numbers_and_wrap() {
    let mut sim = Sim::new();
    sim.engine.set_next_task_id(0xFFFF_FFEF);
    let a = sim.start(spec(1, b"a"));
    let b = sim.start(spec(1, b"b"));
    assert_eq!(a.0, 0xFFFF_FFEF);
    assert_eq!(b.0, 0xFFFF_FFF0);
    let c = sim.start(spec(1, b"c"));
    assert_eq!(c.0, 1, "wraps to 1, never 0");
    sim.engine.set_next_task_id(0xFFFF_FFFD);
    let d = sim.start(spec(1, b"d"));
    assert_eq!(
        d.0, 2,
        "reserved values are skipped; live ids are not reused"
    );
    sim.run_for(secs(1));
    assert_eq!(sim.ends.len(), 4);
}

#[test]
fn cancel_ends_queued_and_running_tasks_once_with_canceled() {
    let mut sim = Sim::new();
    sim.script.process_delay = secs(2);
    let queued = sim.start(spec(1, b"q"));
    assert!(sim.engine.cancel_task(sim.now, queued));
    sim.drain();
    assert_eq!(sim.ends[&queued].1.outcome, Err(TaskError::Canceled));
    let running = sim.start(spec(1, b"r"));
    sim.run_for(ms(500));
    assert!(sim.engine.cancel_task(sim.now, running));
    sim.drain();
    assert!(!sim.engine.cancel_task(sim.now, running), "already gone");
    // The late response is dropped; no second end (the harness would panic).
    sim.run_for(secs(5));
    assert_eq!(sim.ends[&running].1.outcome, Err(TaskError::Canceled));
    assert_eq!(sim.engine.task_count(), 0);
}

#[test]
fn send_only_task_ends_when_handed_to_the_link() {
    let mut sim = Sim::new();
    sim.script.answer = Answer::Never;
    let id = sim.start(spec(1, b"fire").send_only());
    let (at, end) = sim.run_until_end(id, secs(1));
    assert_eq!(at, ms(40));
    assert!(end.outcome.unwrap().body.is_empty());
}

#[test]
fn pushes_are_surfaced_with_their_link() {
    let mut sim = Sim::new();
    sim.engine.connect_link(sim.now, "default-longlink");
    sim.drain();
    sim.run_for(ms(100));
    let conn = sim.open_conns()[0];
    let push = sim.frame(CmdId(77), Seq(0), b"news");
    sim.server_send(conn, push);
    sim.run_for(ms(100));
    let pushes: Vec<_> = sim
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Push { link, cmd_id, body } => Some((link.to_string(), *cmd_id, body.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        pushes,
        vec![("default-longlink".into(), CmdId(77), b"news"[..].into())]
    );
}

/// A push body is the app's, held as long as its subscriber lags: it owns its bytes instead
/// of sharing the read block it came in. As a slice, each of the 128 pushes a lagging
/// subscriber's channel keeps held a whole read block (8 MiB for 128 pushes of 64 bytes,
/// in an audit's measurement) and a large push the frame buffer grown to twice its size.
#[test]
fn a_push_body_owns_its_bytes() {
    let mut sim = Sim::new();
    sim.engine.connect_link(sim.now, "default-longlink");
    sim.drain();
    sim.run_for(ms(100));
    let conn = sim.open_conns()[0];
    // Two pushes in one read: as slices, they would share one block.
    let mut both = sim.frame(CmdId(77), Seq(0), b"first");
    both.extend(sim.frame(CmdId(77), Seq(0), b"second"));
    sim.server_send(conn, both);
    sim.run_for(ms(100));
    let mut bodies: Vec<bytes::Bytes> = sim
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Push { body, .. } => Some(body.clone()),
            _ => None,
        })
        .collect();
    sim.events.clear();
    assert_eq!(bodies, [&b"first"[..], &b"second"[..]]);
    for body in &mut bodies {
        assert!(body.is_unique(), "a push body shares its read block");
    }
}

#[test]
fn pipelined_tasks_are_matched_by_sequence_in_any_order() {
    let mut sim = Sim::new();
    sim.script.answer_by_cmd.insert(CmdId(1), Answer::Never);
    let slow = sim.start(spec(1, b"slow"));
    let fast: Vec<_> = (0..20).map(|i| sim.start(spec(2, &[i]))).collect();
    sim.run_for(secs(1));
    for id in &fast {
        assert!(sim.ends[id].1.outcome.is_ok());
    }
    // Answer the slow one by hand, out of order.
    let conn = sim.open_conns()[0];
    let frame = sim.frame(CmdId(1), Seq(slow.0), b"late");
    sim.server_send(conn, frame);
    let (_, end) = sim.run_until_end(slow, secs(1));
    assert_eq!(&end.outcome.unwrap().body[..], b"late");
}

#[derive(Debug)]
struct Gate {
    authed: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl AuthCheck for Gate {
    fn name(&self) -> &str {
        "gate"
    }

    fn is_authed(&self, _host: &str) -> bool {
        self.authed.load(std::sync::atomic::Ordering::SeqCst)
    }

    async fn ensure_authed(&self, _host: &str) -> Result<(), AuthError> {
        Ok(())
    }
}

fn gated_sim(answer: Option<Result<(), AuthError>>) -> (Sim, Arc<Gate>) {
    let gate = Arc::new(Gate {
        authed: false.into(),
    });
    let cfg = config_with(&[server_addr(1)])
        .auth(gate.clone())
        .build()
        .unwrap();
    let mut sim = Sim::with_config(cfg);
    sim.auth_answer = answer;
    (sim, gate)
}

#[test]
fn auth_gated_task_waits_for_ensure_auth_then_goes() {
    let (mut sim, _gate) = gated_sim(Some(Ok(())));
    let gated = sim.start(spec(1, b"gated").needs_auth());
    let open = sim.start(spec(1, b"open"));
    let (t_open, _) = sim.run_until_end(open, secs(1));
    let (t_gated, end) = sim.run_until_end(gated, secs(1));
    assert!(end.outcome.is_ok());
    assert_eq!(t_open, ms(85));
    // EnsureAuth at 0, answered at 50 ms, sent on the link (up since 40 ms) at once.
    assert_eq!(t_gated, ms(95));
    assert_eq!(
        sim.action_times(|a| matches!(a, Action::EnsureAuth { .. })),
        vec![ms(0)]
    );
}

/// §4: `MakesureAuthed` is asked for every attempt not yet sent: a task that went out once
/// on the plugin's word checks again before its retry (the session may be what failed).
#[test]
fn a_retried_auth_gated_task_checks_auth_again() {
    let (mut sim, _gate) = gated_sim(Some(Ok(())));
    sim.script.answer_by_cmd.insert(CmdId(1), Answer::Close);
    let id = sim.start(spec(1, b"gated").needs_auth().with_retry_count(1));
    let (_, end) = sim.run_until_end(id, secs(60));
    assert!(end.outcome.is_err());
    assert_eq!(end.profile.attempts, 2);
    let asks = sim.action_times(|a| matches!(a, Action::EnsureAuth { .. }));
    let sends = sim.server_frames(CmdId(1));
    assert_eq!(sends.len(), 2);
    assert_eq!(
        asks.len(),
        2,
        "asked before each attempt: {asks:?}, sent {sends:?}"
    );
    assert!(asks[1] > sends[0] && asks[1] < sends[1]);
}

#[test]
fn rejected_auth_ends_waiting_tasks_and_transient_failure_asks_again() {
    let (mut sim, _) = gated_sim(Some(Err(AuthError::Rejected("bad token".into()))));
    let id = sim.start(spec(1, b"g").needs_auth());
    let (_, end) = sim.run_until_end(id, secs(1));
    assert_eq!(end.outcome.unwrap_err().kind(), ErrorKind::Auth);

    let (mut sim, gate) = gated_sim(Some(Err(AuthError::Transient("busy".into()))));
    let id = sim.start(spec(1, b"g").needs_auth());
    sim.run_for(ms(2_200));
    let asks = sim.action_times(|a| matches!(a, Action::EnsureAuth { .. }));
    assert_eq!(
        asks,
        vec![ms(0), ms(1_050), ms(2_100)],
        "re-asked 1 s after each failure"
    );
    gate.authed.store(true, std::sync::atomic::Ordering::SeqCst);
    let (_, end) = sim.run_until_end(id, secs(2));
    assert!(end.outcome.is_ok());
}

#[test]
fn a_login_that_never_answers_is_asked_again_after_its_limit() {
    // Before the limit: one EnsureAuth, then nothing; the task waited out its own budget.
    let (mut sim, _gate) = gated_sim(None);
    let id = sim.start(spec(1, b"g").needs_auth().with_total_timeout(secs(120)));
    sim.run_for(ms(31_010));
    assert_eq!(
        sim.action_times(|a| matches!(a, Action::EnsureAuth { .. })),
        vec![ms(0), ms(31_000)],
        "30 s limit, then 1 s before asking again"
    );
    assert!(!sim.ends.contains_key(&id));
    // The second call answers (50 ms after it was made): the task goes.
    sim.auth_answer = Some(Ok(()));
    let (t, end) = sim.run_until_end(id, secs(5));
    assert!(end.outcome.is_ok(), "{:?}", end.outcome);
    assert!(t < ms(32_000), "{t:?}");
}

#[test]
fn frequency_limit_refuses_the_106th_identical_body() {
    let mut sim = Sim::new();
    let ids: Vec<_> = (0..106).map(|_| sim.start(spec(1, &[9; 128]))).collect();
    sim.run_for(secs(2));
    for id in &ids[..105] {
        assert!(sim.ends[id].1.outcome.is_ok());
    }
    let last = ids[105];
    assert_eq!(
        sim.ends[&last].1.outcome,
        Err(TaskError::Limited(LimitKind::Frequency))
    );
    assert!(sim
        .events
        .iter()
        .any(|(_, e)| matches!(e, Event::TaskLimited { id, kind: LimitKind::Frequency, .. } if *id == last)));
    // Limits can be switched off per task.
    let free = sim.start(spec(1, &[9; 128]).with_limits(true, false));
    assert!(sim.run_until_end(free, secs(1)).1.outcome.is_ok());
}

#[test]
fn reset_ends_every_task_and_zombie_once_and_closes_links() {
    let mut sim = Sim::new();
    sim.script.answer = Answer::Never;
    let running = sim.start(spec(1, b"r"));
    sim.run_for(ms(500));
    sim.engine.set_network(sim.now, NetKind::None, "");
    sim.drain();
    let queued = sim.start(spec(2, b"q"));
    sim.engine.reset(sim.now);
    sim.drain();
    for id in [running, queued] {
        assert_eq!(
            sim.ends[&id].1.outcome,
            Err(TaskError::Local(LocalError::Reset))
        );
    }
    assert_eq!(sim.engine.task_count(), 0);
    sim.run_for(secs(3_600));
    let connects = sim.action_times(|a| matches!(a, Action::Connect { .. }));
    assert_eq!(connects.len(), 1, "nothing reconnects after a reset");
    assert_eq!(sim.engine.stats().tasks_failed, 2);
}

#[test]
fn trigger_heartbeat_sends_one_now() {
    let mut sim = Sim::new();
    assert!(
        !sim.engine.trigger_heartbeat(sim.now, "default-longlink"),
        "not connected"
    );
    sim.engine.connect_link(sim.now, "default-longlink");
    sim.drain();
    sim.run_for(secs(10));
    assert!(sim.engine.trigger_heartbeat(sim.now, "default-longlink"));
    sim.drain();
    sim.run_for(secs(1));
    assert_eq!(
        sim.server_frames(phobos_plugin_api::codec::HEARTBEAT_CMD),
        vec![ms(60), ms(10_020)]
    );
}

#[test]
fn a_body_that_fits_the_frame_limit_only_without_the_head_is_refused_at_once() {
    // The Mars codec's frames hold at most 1 MiB, its 20-byte head included.
    let max = 1_048_576 - 20;
    let mut sim = Sim::new();
    let id = sim.start(spec(42, &vec![7; max + 1]).with_limits(false, false));
    let (at, end) = sim.ends[&id].clone();
    assert_eq!(at, sim.t0, "ends at once, before any connect");
    assert_eq!(
        end.outcome.unwrap_err(),
        TaskError::Param(ParamError::BodyTooLarge { len: max + 1, max })
    );
    let fits = sim.start(spec(42, &vec![7; max]).with_limits(false, false));
    let (_, end) = sim.run_until_end(fits, secs(30));
    assert_eq!(end.outcome.expect("sent and answered").body.len(), max);
}

/// The calls a test encoder received: (task, attempt, where).
type EncoderCalls = Arc<std::sync::Mutex<Vec<(phobos_plugin_api::TaskId, u32, String)>>>;

/// An encoder whose body names the attempt, recording each call.
fn attempt_encoder(calls: &EncoderCalls) -> crate::RequestEncoder {
    let calls = calls.clone();
    crate::RequestEncoder::new(move |cx| {
        let via = match cx.via {
            crate::EncodeVia::LongLink(link) => link.as_str().to_owned(),
            crate::EncodeVia::ShortLink { host } => host.to_owned(),
        };
        calls.lock().unwrap().push((cx.task, cx.attempt, via));
        Ok(crate::EncodedRequest::body(format!(
            "attempt {}",
            cx.attempt
        )))
    })
}

#[test]
fn a_request_encoder_builds_each_attempts_request_as_it_goes_out() {
    let mut sim = Sim::new();
    sim.script.process_delay = secs(2);
    let calls = EncoderCalls::default();
    let id = sim.start(spec(1, b"").with_encoder(attempt_encoder(&calls)));
    // Nothing is built while the link is still connecting (Mars built and threw it away).
    assert!(calls.lock().unwrap().is_empty());
    sim.run_for(secs(1));
    // A network change interrupts the first attempt; the retry is built anew.
    sim.engine.set_network(sim.now, NetKind::Mobile, "mobile_1");
    sim.drain();
    let (_, end) = sim.run_until_end(id, secs(60));
    assert_eq!(end.profile.attempts, 2);
    assert_eq!(&end.outcome.expect("success").body[..], b"attempt 2");
    let link = "default-longlink".to_owned();
    assert_eq!(
        *calls.lock().unwrap(),
        [(id, 1, link.clone()), (id, 2, link)]
    );
}

#[test]
fn a_request_encoder_that_refuses_ends_the_task_at_once_without_a_retry() {
    let mut sim = Sim::new();
    let refuse = crate::RequestEncoder::new(|_| Err(77));
    let id = sim.start(spec(1, b"").with_retry_count(3).with_encoder(refuse));
    let (at, end) = sim.run_until_end(id, secs(10));
    // At the first dispatch, once connected (40 ms).
    assert_eq!(at, ms(40));
    assert_eq!(
        end.outcome,
        Err(TaskError::Codec(crate::CodecFailure::Encode(
            phobos_plugin_api::EncodeError::Other(77)
        )))
    );
    assert!(
        sim.server_log.iter().all(|(_, _, h)| h.cmd_id != CmdId(1)),
        "nothing was sent"
    );
}

#[test]
fn the_limits_check_the_body_a_request_encoder_built() {
    let mut sim = Sim::new();
    // Identical bodies built by the encoder: the frequency limit (105 within its window)
    // refuses the 106th, though every spec's own body is empty and different tasks'.
    let same = crate::RequestEncoder::new(|_| Ok(crate::EncodedRequest::body("same")));
    let ids: Vec<_> = (0..106)
        .map(|i| sim.start(spec(1, &[i as u8]).with_encoder(same.clone())))
        .collect();
    sim.run_for(secs(5));
    let limited: Vec<_> = ids
        .iter()
        .filter(|id| {
            matches!(
                sim.ends.get(id).map(|e| &e.1.outcome),
                Some(Err(TaskError::Limited(LimitKind::Frequency)))
            )
        })
        .collect();
    assert_eq!(limited, [&ids[105]]);
}

/// A sim whose codec reserves, besides Mars's own, the sequence numbers `reserves` picks.
fn reserving_sim(reserves: fn(u32) -> bool, lane: bool) -> Sim {
    let codec = MarsTwisted::new(false, reserves);
    let cfg = crate::Config::builder(Arc::new(codec))
        .link(
            crate::LinkConfig::new("default-longlink")
                .addrs([server_addr(1)])
                .main(),
        )
        .seed(42)
        .build()
        .unwrap();
    let mut sim = Sim::with_config(cfg);
    sim.engine.set_batch_lane(lane);
    sim
}

#[test]
fn a_codec_that_reserves_every_sequence_number_ends_each_task_with_a_codec_error() {
    for lane in [false, true] {
        let mut sim = reserving_sim(|_| true, lane);
        let one = sim.start(spec(1, b"a"));
        let like = sim.start_batch_like(&spec(1, b""), (0..3).map(|i| (CmdId(2), vec![i])));
        let two = sim.start(spec(1, b"b"));
        sim.run_for(secs(1));
        let mut ids = vec![one, two];
        ids.extend(&like);
        for id in &ids {
            assert_eq!(
                sim.ends[id].1.outcome,
                Err(TaskError::Codec(CodecFailure::NoSequence)),
                "lane {lane}"
            );
        }
        assert_eq!(sim.ends.len(), 5, "one end each, lane {lane}");
        let mut distinct = ids.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), 5, "ids stay distinct: {ids:?}");
        assert!(
            sim.server_log
                .iter()
                .all(|(_, _, h)| h.cmd_id != CmdId(1) && h.cmd_id != CmdId(2)),
            "nothing was sent"
        );
    }
}

#[test]
fn a_long_run_of_reserved_numbers_counts_as_the_end_of_the_id_space() {
    // The codec reserves the upper half: past it ids start again from 1 (those still in use
    // skipped), and tasks go on succeeding.
    for lane in [false, true] {
        let mut sim = reserving_sim(|s| s >= 1 << 31, lane);
        sim.engine.set_next_task_id((1 << 31) - 2);
        let held = sim.start(spec(1, b"held"));
        let ids = sim.start_batch_like(&spec(1, b""), (0..4).map(|i| (CmdId(2), vec![i])));
        assert_eq!(held.0, (1 << 31) - 2);
        assert_eq!(ids[0].0, (1 << 31) - 1);
        assert_eq!(ids[1].0, 1, "lane {lane}: {ids:?}");
        assert_eq!(ids[2].0, 2);
        sim.run_for(secs(1));
        assert_eq!(sim.ends.len(), 5);
        assert!(
            sim.ends.values().all(|(_, e)| e.outcome.is_ok()),
            "lane {lane}"
        );
    }
}

#[test]
fn a_short_run_of_reserved_numbers_is_skipped() {
    // A run shorter than the search's bound is skipped as reserved numbers always were.
    const RUN: u32 = crate::engine::MAX_RESERVED_RUN - 1;
    let mut sim = reserving_sim(|s| (1000..1000 + RUN).contains(&s), false);
    sim.engine.set_next_task_id(999);
    let a = sim.start(spec(1, b"a"));
    let b = sim.start(spec(1, b"b"));
    assert_eq!((a.0, b.0), (999, 1000 + RUN));
    sim.run_for(secs(1));
    assert!(sim.ends.values().all(|(_, e)| e.outcome.is_ok()));
}
