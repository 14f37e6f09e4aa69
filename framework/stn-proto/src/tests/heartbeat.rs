//! Heartbeats (§7.6, §18.1, §18.2), identify (§7.7) and the signalling keeper (§7.11).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use phobos_plugin_api::codec::{HEARTBEAT_CMD, IDENTIFY_SEQ, SIGNAL_KEEP_CMD};
use phobos_plugin_api::{
    AuthCheck, AuthError, CmdId, HeartbeatContext, HeartbeatPolicy, HeartbeatPolicyFactory,
    IdentifyRequest, IdentifyVerdict,
};

use super::harness::{config_of, config_with, ms, secs, server_addr, Answer, Sim};
use crate::{
    Action, AuthFailure, ErrorKind, Event, LinkError, LinkStatus, SocketFailure, TaskError,
    TaskSpec,
};

fn connect(sim: &mut Sim) {
    sim.engine.connect_link(sim.now, "default-longlink");
    sim.drain();
}

fn link_down_reasons(sim: &Sim) -> Vec<(Duration, LinkError)> {
    sim.events
        .iter()
        .filter_map(|(t, e)| match e {
            Event::LinkStatus {
                status: LinkStatus::Disconnected,
                reason: Some(r),
                ..
            } => Some((t.duration_since(sim.t0), r.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn first_heartbeat_right_after_connect_then_every_interval_restarted_by_writes() {
    let mut sim = Sim::new();
    connect(&mut sim);
    sim.run_for(secs(100));
    sim.start(TaskSpec::new(CmdId(1), &b"x"[..]));
    sim.run_for(secs(500));
    assert_eq!(
        sim.server_frames(HEARTBEAT_CMD),
        vec![ms(60), ms(310_020), ms(520_020)]
    );
    let acks: Vec<Duration> = sim
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::HeartbeatAcked { rtt, .. } => Some(*rtt),
            _ => None,
        })
        .collect();
    assert_eq!(acks, vec![ms(45); 3]);
}

#[test]
fn unanswered_first_heartbeat_drops_the_link_after_eight_seconds() {
    let mut sim = Sim::without_probe();
    sim.script.heartbeat_replies = false;
    sim.script.answer = Answer::Never;
    let id = sim.start(TaskSpec::new(CmdId(1), &b"x"[..]).with_retry_count(0));
    let (at, end) = sim.run_until_end(id, secs(30));
    assert_eq!(at, ms(8_040));
    assert_eq!(
        end.outcome,
        Err(TaskError::Socket(SocketFailure::HeartbeatTimeout))
    );
    assert_eq!(end.outcome.unwrap_err().mars_code(), (4, -10091));
    assert_eq!(
        link_down_reasons(&sim),
        vec![(
            ms(8_040),
            LinkError::Socket(SocketFailure::HeartbeatTimeout)
        )]
    );
}

/// §18.1: Mars never notices a lost reply to a *periodic* heartbeat; here it drops the link.
#[test]
fn unanswered_periodic_heartbeat_is_detected() {
    let mut sim = Sim::new();
    connect(&mut sim);
    sim.run_for(secs(1));
    sim.script.heartbeat_replies = false;
    sim.run_for(secs(300));
    assert_eq!(
        link_down_reasons(&sim),
        vec![(
            ms(210_040 + 8_000),
            LinkError::Socket(SocketFailure::HeartbeatTimeout)
        )]
    );
}

#[test]
fn a_heartbeat_slot_that_fires_fifteen_minutes_late_waits_only_five_seconds() {
    let mut sim = Sim::new();
    connect(&mut sim);
    sim.run_for(secs(1));
    sim.script.heartbeat_replies = false;
    // The device sleeps through the slot due at 210.04 s and wakes 16 min later.
    sim.run_for(secs(200));
    sim.now += Duration::from_secs(16 * 60);
    let woke = sim.elapsed();
    sim.run_for(secs(30));
    // (It reconnects and, with replies still off, drops again later.)
    assert_eq!(
        link_down_reasons(&sim)[0],
        (
            woke + secs(5),
            LinkError::Socket(SocketFailure::HeartbeatTimeout)
        )
    );
}

#[derive(Debug, Default)]
struct Recorder {
    log: Arc<Mutex<Vec<String>>>,
}

impl HeartbeatPolicyFactory for Recorder {
    fn name(&self) -> &str {
        "recorder"
    }

    fn build(&self, _now: Instant, ctx: &HeartbeatContext) -> Box<dyn HeartbeatPolicy> {
        self.log
            .lock()
            .unwrap()
            .push(format!("build {}", ctx.net_label));
        Box::new(RecorderPolicy {
            log: self.log.clone(),
        })
    }
}

#[derive(Debug)]
struct RecorderPolicy {
    log: Arc<Mutex<Vec<String>>>,
}

impl HeartbeatPolicy for RecorderPolicy {
    fn next_interval(&mut self, _now: Instant, _ctx: &HeartbeatContext) -> Option<Duration> {
        Some(secs(30))
    }
    fn on_ack(&mut self, _now: Instant, rtt: Duration) {
        self.log
            .lock()
            .unwrap()
            .push(format!("ack {}", rtt.as_millis()));
    }
    fn on_timeout(&mut self, _now: Instant) {
        self.log.lock().unwrap().push("timeout".into());
    }
    fn on_disconnect(&mut self, _now: Instant) {
        self.log.lock().unwrap().push("disconnect".into());
    }
    fn on_fired_late(&mut self, _now: Instant, late: Duration) {
        self.log
            .lock()
            .unwrap()
            .push(format!("slot late {}", late.as_millis()));
    }
}

#[test]
fn the_heartbeat_policy_sets_the_interval_and_hears_every_outcome() {
    let factory = Recorder::default();
    let log = factory.log.clone();
    let cfg = config_with(&[server_addr(1)])
        .heartbeat(Arc::new(factory))
        .build()
        .unwrap();
    let mut sim = Sim::with_config(cfg);
    connect(&mut sim);
    sim.run_for(secs(61));
    assert_eq!(
        sim.server_frames(HEARTBEAT_CMD),
        vec![ms(60), ms(30_060), ms(60_060)]
    );
    sim.script.heartbeat_replies = false;
    sim.run_for(secs(40));
    let log = log.lock().unwrap().clone();
    assert_eq!(
        log,
        [
            // The slot right after connect is no firing of the interval timer (§12).
            "build default",
            "ack 45",
            "slot late 0",
            "ack 45",
            "slot late 0",
            "ack 45",
            "slot late 0",
            "timeout"
        ]
    );
}

#[derive(Debug)]
struct Identifier {
    request: IdentifyRequest,
    /// Its verdict on the identify reply (a test may change it: the account repaired).
    verdict: Mutex<IdentifyVerdict>,
}

#[async_trait::async_trait]
impl AuthCheck for Identifier {
    fn name(&self) -> &str {
        "identifier"
    }
    fn is_authed(&self, _host: &str) -> bool {
        true
    }
    async fn ensure_authed(&self, _host: &str) -> Result<(), AuthError> {
        Ok(())
    }
    fn identify_request(&self, _link: &str) -> IdentifyRequest {
        self.request.clone()
    }
    fn on_identify_response(&self, _link: &str, body: &[u8], hash: &[u8]) -> IdentifyVerdict {
        assert_eq!(body, b"identified");
        assert_eq!(hash, b"h");
        *self.verdict.lock().unwrap()
    }
}

/// An [`Identifier`] sending `who` at once, with `verdict`.
fn identifier(verdict: IdentifyVerdict) -> Arc<Identifier> {
    Arc::new(Identifier {
        request: IdentifyRequest::Now {
            cmd_id: CmdId(0x99),
            body: b"who".to_vec(),
            hash: b"h".to_vec(),
        },
        verdict: Mutex::new(verdict),
    })
}

/// A sim whose auth is `auth`.
fn sim_with_auth(auth: Arc<Identifier>) -> Sim {
    let cfg = config_with(&[server_addr(1)]).auth(auth).build().unwrap();
    Sim::with_config(cfg)
}

fn identify_sim(verdict: IdentifyVerdict) -> Sim {
    sim_with_auth(identifier(verdict))
}

#[test]
fn identify_replaces_the_first_heartbeat_and_counts_as_its_reply() {
    let mut sim = identify_sim(IdentifyVerdict::Accepted);
    let id = sim.start(TaskSpec::new(CmdId(1), &b"x"[..]));
    sim.run_for(secs(300));
    assert!(
        sim.ends[&id].1.outcome.is_ok(),
        "tasks are not gated on identify"
    );
    let first = sim.server_log[0].2;
    assert_eq!((first.cmd_id, first.seq), (CmdId(0x99), IDENTIFY_SEQ));
    // After identify succeeded, periodic slots send plain heartbeats.
    assert_eq!(sim.server_frames(HEARTBEAT_CMD), vec![ms(210_060)]);
    let successes = sim
        .events
        .iter()
        .filter(|(_, e)| matches!(e, Event::AddrOutcome { success: true, .. }))
        .count();
    assert_eq!(successes, 2, "connect and identify");
    assert!(link_down_reasons(&sim).is_empty());
}

/// §7.7: a frame is an identify reply only while an identify is outstanding. One that comes
/// after the link identified (a confused or hostile server) is dropped: it used to set the
/// link back to "identify pending", so the next heartbeat slot asked the auth plugin and
/// sent an identify instead of a heartbeat.
#[test]
fn an_identify_reply_nobody_asked_for_changes_nothing() {
    let mut sim = identify_sim(IdentifyVerdict::Accepted);
    let id = sim.start(TaskSpec::new(CmdId(1), &b"x"[..]));
    sim.run_for(secs(10));
    assert!(sim.ends[&id].1.outcome.is_ok());
    let conn = sim.open_conns()[0];
    let unsolicited = sim.frame(CmdId(0x99), IDENTIFY_SEQ, b"identified");
    sim.server_send(conn, unsolicited);
    sim.run_for(secs(490));
    let identifies = sim
        .server_log
        .iter()
        .filter(|(_, _, head)| head.seq == IDENTIFY_SEQ)
        .count();
    assert_eq!(identifies, 1, "identified once");
    assert_eq!(
        sim.server_frames(HEARTBEAT_CMD),
        vec![ms(210_060), ms(420_060)],
        "the slots after it send heartbeats"
    );
    assert!(link_down_reasons(&sim).is_empty());
}

#[test]
fn rejected_identify_drops_the_link_ends_its_tasks_and_blocks_reconnects() {
    let mut sim = identify_sim(IdentifyVerdict::Rejected);
    sim.script.answer = Answer::Never;
    let id = sim.start(TaskSpec::new(CmdId(1), &b"x"[..]));
    sim.run_for(secs(1));
    assert_eq!(
        sim.ends[&id].1.outcome,
        Err(TaskError::Auth(AuthFailure::IdentifyRejected(
            "default-longlink".into()
        )))
    );
    assert_eq!(
        link_down_reasons(&sim),
        vec![(ms(85), LinkError::IdentifyRejected)]
    );
    // An account problem, not the address's: no address failure is recorded.
    assert!(!sim
        .events
        .iter()
        .any(|(_, e)| matches!(e, Event::AddrOutcome { success: false, .. })));
    let later = sim.start(TaskSpec::new(CmdId(1), &b"y"[..]));
    assert_eq!(
        sim.ends[&later].1.outcome.clone().unwrap_err().kind(),
        ErrorKind::Auth
    );
    sim.run_for(secs(600));
    assert_eq!(
        sim.action_times(|a| matches!(a, Action::Connect { .. }))
            .len(),
        1
    );
    // The app acts: the link may connect again.
    assert!(sim.engine.connect_link(sim.now, "default-longlink"));
    sim.drain();
    assert_eq!(
        sim.action_times(|a| matches!(a, Action::Connect { .. }))
            .len(),
        2
    );
}

#[test]
fn identify_later_sends_a_heartbeat_and_asks_again_next_slot() {
    let mut sim = sim_with_auth(Arc::new(Identifier {
        request: IdentifyRequest::Later,
        verdict: Mutex::new(IdentifyVerdict::Accepted),
    }));
    connect(&mut sim);
    sim.run_for(secs(500));
    assert_eq!(
        sim.server_frames(HEARTBEAT_CMD),
        vec![ms(60), ms(210_060), ms(420_060)]
    );
}

/// A connected sim whose app asked the signalling keeper to keep at 10 s.
fn keeping_from_ten_seconds() -> Sim {
    let mut sim = Sim::new();
    connect(&mut sim);
    sim.run_for(secs(10));
    sim.engine.keep_signalling(sim.now);
    sim.drain();
    sim
}

#[test]
fn signalling_keeper_sends_every_five_quiet_seconds_for_twenty_seconds() {
    let mut sim = keeping_from_ten_seconds();
    sim.run_for(secs(60));
    let keeps = sim.server_frames(SIGNAL_KEEP_CMD);
    let want: Vec<Duration> = (0..6).map(|i| ms(10_020 + i * 5_000)).collect();
    assert_eq!(keeps, want);

    // Any traffic postpones the next frame; stop cancels it.
    sim.engine.keep_signalling(sim.now);
    sim.drain();
    sim.run_for(secs(3));
    sim.start(TaskSpec::new(CmdId(1), &b"x"[..]));
    sim.run_for(secs(4));
    sim.engine.stop_signalling(sim.now);
    sim.drain();
    sim.run_for(secs(30));
    let keeps = sim.server_frames(SIGNAL_KEEP_CMD);
    assert_eq!(
        keeps.len(),
        7,
        "one at the second keep, none after stop: {keeps:?}"
    );
}

#[test]
fn a_reply_stuck_behind_a_long_response_does_not_drop_a_busy_link() {
    let mut sim = Sim::without_probe();
    connect(&mut sim);
    sim.run_for(secs(1));
    // A long response dribbles in for 60 s; the heartbeat slot falls in the middle and its
    // reply comes only after the response (in-order stream).
    sim.script.heartbeat_replies = false;
    sim.script.answer = Answer::Dribble {
        chunks: 30,
        every: secs(2),
    };
    let id = sim.start(TaskSpec::new(CmdId(1), vec![1u8; 3_000]).with_server_cost(secs(100)));
    sim.run_for(secs(5));
    assert!(sim.engine.trigger_heartbeat(sim.now, "default-longlink"));
    sim.drain();
    let (_, end) = sim.run_until_end(id, secs(120));
    assert!(end.outcome.is_ok());
    // Once the bytes stop, the missing reply is detected 8 s after the last byte.
    sim.run_for(secs(30));
    let downs = link_down_reasons(&sim);
    assert_eq!(downs.len(), 1);
    assert_eq!(
        downs[0].0,
        end.profile.last_byte.unwrap().duration_since(sim.t0) + secs(8)
    );
}

/// The core with `phobos-heartbeat`'s smart heartbeat on an inactive app: the interval grows
/// from 210 s as heartbeats keep being answered, exactly on spec §12's schedule, and the link
/// stays up.
#[test]
fn smart_heartbeat_stretches_the_interval_on_an_inactive_app() {
    let clock = phobos_heartbeat::ManualClock::new(std::time::SystemTime::UNIX_EPOCH);
    let smart = phobos_heartbeat::SmartHeartbeat::with_clock(
        phobos_heartbeat::SmartHeartbeatConfig::default(),
        Arc::new(clock),
    )
    .unwrap();
    let cfg = config_with(&[server_addr(1)])
        .heartbeat(Arc::new(smart))
        .build()
        .unwrap();
    let mut sim = Sim::with_config(cfg);
    sim.engine
        .set_network(sim.now, phobos_plugin_api::NetKind::Wifi, "wifi_home");
    sim.drain();
    sim.run_for(secs(601));
    assert!(!sim.engine.is_active());
    sim.engine.connect_link(sim.now, "default-longlink");
    sim.drain();
    sim.run_for(secs(4 * 3600));
    let beats = sim.server_frames(HEARTBEAT_CMD);
    let gaps: Vec<u64> = beats.windows(2).map(|w| (w[1] - w[0]).as_secs()).collect();
    // Spec §12's all-success schedule: 210 s ×8, then 6 heartbeats per 60 s step.
    let mut want = vec![210; 8];
    for step in [270, 330, 390, 450, 510] {
        want.extend([step; 6]);
    }
    assert_eq!(gaps[..want.len()], want[..], "{gaps:?}");
    assert!(link_down_reasons(&sim).is_empty());
}

/// A policy whose only answer is "never" written as the largest duration.
#[derive(Debug)]
struct Never;

impl HeartbeatPolicyFactory for Never {
    fn name(&self) -> &str {
        "never"
    }

    fn build(&self, _now: Instant, _ctx: &HeartbeatContext) -> Box<dyn HeartbeatPolicy> {
        Box::new(Never)
    }
}

impl HeartbeatPolicy for Never {
    fn next_interval(&mut self, _now: Instant, _ctx: &HeartbeatContext) -> Option<Duration> {
        Some(Duration::MAX)
    }
}

#[test]
fn a_policy_asking_for_the_largest_interval_gets_a_year_and_tasks_go_on() {
    // `now + Duration::MAX` overflows: the interval is cut to the longest setting.
    let cfg = config_with(&[server_addr(1)])
        .heartbeat(Arc::new(Never))
        .build()
        .unwrap();
    let mut sim = Sim::with_config(cfg);
    connect(&mut sim);
    let id = sim.start(TaskSpec::new(CmdId(1), &b"x"[..]));
    let (_, end) = sim.run_until_end(id, secs(10));
    assert!(end.outcome.is_ok(), "{:?}", end.outcome);
    sim.run_for(secs(3600));
    assert_eq!(sim.server_frames(HEARTBEAT_CMD), vec![ms(60)]);
}

/// A policy asking for the shortest interval it can write.
#[derive(Debug)]
struct Eager;

impl HeartbeatPolicyFactory for Eager {
    fn name(&self) -> &str {
        "eager"
    }

    fn build(&self, _now: Instant, _ctx: &HeartbeatContext) -> Box<dyn HeartbeatPolicy> {
        Box::new(Eager)
    }
}

impl HeartbeatPolicy for Eager {
    fn next_interval(&mut self, _now: Instant, _ctx: &HeartbeatContext) -> Option<Duration> {
        Some(Duration::from_nanos(1))
    }
}

#[test]
fn a_policy_asking_for_a_nanosecond_gets_a_heartbeat_a_second() {
    // Before the floor: thousands of heartbeats a second, as fast as the loop turned.
    let cfg = config_with(&[server_addr(1)])
        .heartbeat(Arc::new(Eager))
        .build()
        .unwrap();
    let mut sim = Sim::with_config(cfg);
    connect(&mut sim);
    sim.run_for(secs(5));
    assert_eq!(
        sim.server_frames(HEARTBEAT_CMD),
        vec![ms(60), ms(1_060), ms(2_060), ms(3_060), ms(4_060)]
    );
}

/// §7.11: the keeper listens to all of STN's traffic: a short-link request written, or
/// response bytes read, postpones the next keep frame as long-link traffic does.
#[test]
fn short_link_traffic_postpones_the_keep_frame() {
    let mut sim = keeping_from_ten_seconds();
    sim.run_for(secs(3));
    sim.start(
        TaskSpec::new(CmdId(0), &b"x"[..])
            .with_channel(crate::ChannelSelect::Short)
            .with_short_link("/cgi", ["10.0.0.3:80"]),
    );
    let attempt = sim
        .actions
        .iter()
        .find_map(|(_, a)| match a {
            Action::ShortConnect { attempt, .. } => Some(*attempt),
            _ => None,
        })
        .expect("a short-link connect");
    // Connected at 13 s: the request is written then.
    sim.engine.handle_connected(sim.now, attempt);
    sim.drain();
    assert!(sim
        .actions
        .iter()
        .any(|(_, a)| matches!(a, Action::HttpExchange { .. })));
    sim.run_for(secs(3));
    // Response bytes at 16 s.
    sim.engine.handle_http_progress(sim.now, attempt, 100);
    sim.drain();
    sim.run_for(ms(5_500));
    let keeps = sim.server_frames(SIGNAL_KEEP_CMD);
    assert_eq!(keeps, vec![ms(10_020), ms(21_020)]);
}

/// A codec's interval is used only when it is more than zero (as Mars's encoder hook's): a
/// zero leaves the schedule to the heartbeat policy, here the default 210 s. (It turned the
/// periodic heartbeats off.)
#[test]
fn a_codecs_zero_heartbeat_interval_leaves_the_schedule_to_the_policy() {
    // Mars's codec, saying its protocol imposes a heartbeat interval of zero.
    let codec = Arc::new(super::harness::MarsTwisted {
        heartbeat_interval: Some(Some(Duration::ZERO)),
        ..super::harness::MarsTwisted::plain()
    });
    let cfg = config_of(codec, &[server_addr(1)]).build().unwrap();
    let mut sim = Sim::with_config(cfg);
    connect(&mut sim);
    sim.run_for(secs(500));
    assert_eq!(
        sim.server_frames(HEARTBEAT_CMD),
        vec![ms(60), ms(210_060), ms(420_060)]
    );
}

/// A sim whose link's identify was rejected, then the account repaired (the identifier now
/// accepts).
fn rejected_then_repaired() -> Sim {
    let auth = identifier(IdentifyVerdict::Rejected);
    let mut sim = sim_with_auth(auth.clone());
    sim.engine.connect_link(sim.now, "default-longlink");
    sim.drain();
    sim.run_for(secs(1));
    assert!(
        !sim.engine.is_connected("default-longlink"),
        "identify rejected"
    );
    let refused = sim.start(TaskSpec::new(CmdId(1), &b"x"[..]));
    assert!(
        matches!(
            sim.ends[&refused].1.outcome,
            Err(TaskError::Auth(AuthFailure::IdentifyRejected(_)))
        ),
        "{:?}",
        sim.ends[&refused].1.outcome
    );
    *auth.verdict.lock().unwrap() = IdentifyVerdict::Accepted;
    sim
}

#[test]
fn redo_tasks_lifts_a_rejected_identifys_block() {
    // Before, the block outlived `redo_tasks`: the link reconnected and identified, and every
    // task was still refused as if the identify had been rejected.
    let mut sim = rejected_then_repaired();
    sim.engine.redo_tasks(sim.now);
    sim.drain();
    sim.run_for(secs(1));
    assert!(sim.engine.is_connected("default-longlink"));
    let id = sim.start(TaskSpec::new(CmdId(1), &b"x"[..]));
    let (_, end) = sim.run_until_end(id, secs(5));
    assert!(end.outcome.is_ok(), "{:?}", end.outcome);
}

#[test]
fn reset_lifts_a_rejected_identifys_block() {
    // Before, the first task after a reset was refused at once, for ever.
    let mut sim = rejected_then_repaired();
    sim.engine.reset(sim.now);
    sim.drain();
    let id = sim.start(TaskSpec::new(CmdId(1), &b"x"[..]));
    let (_, end) = sim.run_until_end(id, secs(60));
    assert!(end.outcome.is_ok(), "{:?}", end.outcome);
}

#[test]
fn a_policy_that_turned_heartbeats_off_is_asked_again_and_they_resume() {
    // Before, the policy's "off" was taken once and for the connection's life: after the app
    // put the smart heartbeat back to learning, the live link went without heartbeats.
    let smart = phobos_heartbeat::SmartHeartbeat::default();
    let cfg = config_with(&[server_addr(1)])
        .heartbeat(Arc::new(smart.clone()))
        .build()
        .unwrap();
    let mut sim = Sim::with_config(cfg);
    connect(&mut sim);
    sim.run_for(secs(1));
    smart.force_interval(Some(None)).unwrap();
    sim.run_for(secs(1_000));
    let while_off = sim.server_frames(HEARTBEAT_CMD).len();
    sim.run_for(secs(1_000));
    assert_eq!(
        sim.server_frames(HEARTBEAT_CMD).len(),
        while_off,
        "no periodic heartbeat while off"
    );
    smart.force_interval(None).unwrap();
    sim.run_for(secs(3_600));
    let after = sim.server_frames(HEARTBEAT_CMD).len() - while_off;
    assert!(
        after >= 10,
        "{after} heartbeats in the hour after they were back on"
    );
    assert!(sim.engine.is_connected("default-longlink"));
}
