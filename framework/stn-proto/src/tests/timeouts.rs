//! Every timeout level, retries and shared fate, with the spec's numbers (§6, §20).

use phobos_plugin_api::CmdId;

use super::harness::{config_with, ms, secs, server_addr, Answer, Reach, Sim};
use crate::{
    Action, CodecFailure, ErrorKind, Event, LinkError, ResponseCheck, ResponseVerdict,
    SocketFailure, TaskError, TaskSpec, TimeoutLevel,
};

fn spec(cmd: u32, body: &[u8]) -> TaskSpec {
    TaskSpec::new(CmdId(cmd), body.to_vec())
}

/// §20 "server accepts, never answers (defaults)": Mars ends (6, −500) at 27.0 s (timeout
/// 13.0 s, reconnect 14.0 s, retry times out 27.0 s). Exact deadlines: the first-packet
/// timeout of a 1-byte body is 12 000 ms after the send at 40 ms; the retry goes after the
/// 1 s pause over a new connection and times out 12 000 ms after its own send.
#[test]
fn silent_server_first_packet_timeout_reconnects_and_retries_once() {
    let mut sim = Sim::without_probe();
    sim.foreground(true);
    sim.script.answer = Answer::Never;
    let id = sim.start(spec(1, b"x"));
    let (at, end) = sim.run_until_end(id, secs(60));
    assert_eq!(
        end.outcome,
        Err(TaskError::Timeout(TimeoutLevel::FirstPacket))
    );
    assert_eq!(end.outcome.as_ref().unwrap_err().mars_code(), (6, -500));
    assert_eq!(end.profile.attempts, 2);
    assert_eq!(end.profile.first_packet_timeout, Some(ms(12_000)));
    // First attempt fails at 12.04 s: the link is silent (only the heartbeat reply at
    // 85 ms), so it is dropped as stalled.
    // The retry's link is silent too and is dropped the same way.
    assert_eq!(
        sim.closes(),
        vec![
            (ms(12_040), LinkError::Stalled(TimeoutLevel::FirstPacket)),
            (ms(25_080), LinkError::Stalled(TimeoutLevel::FirstPacket)),
        ]
    );
    // Reconnect when the retry pause ends (task-driven, FG_1MIN interval 5 s already past).
    let connects = sim.action_times(|a| matches!(a, Action::Connect { .. }));
    assert_eq!(connects, vec![ms(0), ms(13_040)]);
    assert_eq!(at, ms(13_080 + 12_000));
}

#[test]
fn silent_server_with_retry_zero_ends_at_the_first_packet_timeout() {
    let mut sim = Sim::new();
    sim.script.answer = Answer::Never;
    let id = sim.start(spec(1, b"x").with_retry_count(0));
    let (at, end) = sim.run_until_end(id, secs(60));
    assert_eq!(at, ms(12_040));
    assert_eq!(
        end.outcome,
        Err(TaskError::Timeout(TimeoutLevel::FirstPacket))
    );
    assert_eq!(end.profile.attempts, 1);
}

#[test]
fn silent_server_with_total_timeout_five_seconds_ends_at_five_seconds() {
    let mut sim = Sim::new();
    sim.script.answer = Answer::Never;
    let id = sim.start(spec(1, b"x").with_total_timeout(secs(5)));
    let (at, end) = sim.run_until_end(id, secs(60));
    assert_eq!(at, secs(5));
    assert_eq!(end.outcome, Err(TaskError::Timeout(TimeoutLevel::Total)));
    assert_eq!(end.outcome.unwrap_err().mars_code(), (9, -1));
    // The total timeout of one task does not drop the link (§18.7).
    assert!(sim.closes().is_empty());
    assert!(sim.engine.is_connected("default-longlink"));
}

#[test]
fn default_task_total_timeout_is_forty_seconds_and_is_never_retried() {
    let mut sim = Sim::new();
    // The server never answers; a 30 s server cost makes the first packet timeout 30 s.
    sim.script.answer = Answer::Never;
    let id = sim.start(spec(1, b"x").with_server_cost(secs(30)));
    let (at, end) = sim.run_until_end(id, secs(200));
    // (30 s + 15 s + 5 s) × 2 tries = 100 s budget, but the first-packet timeouts come
    // first: 30 s after the send at 40 ms, and the retry's 30 s after 31.08 s.
    assert_eq!(
        end.outcome,
        Err(TaskError::Timeout(TimeoutLevel::FirstPacket))
    );
    assert_eq!(at, ms(31_080 + 30_000));

    let mut sim = Sim::new();
    sim.script.process_delay = secs(100);
    let id = sim.start(
        spec(1, b"x")
            .with_server_cost(secs(30))
            .with_total_timeout(secs(40)),
    );
    let (at, end) = sim.run_until_end(id, secs(200));
    assert_eq!(at, secs(40));
    assert_eq!(end.outcome, Err(TaskError::Timeout(TimeoutLevel::Total)));
    assert_eq!(
        end.profile.attempts, 2,
        "retried once, then the budget ran out"
    );
}

#[test]
fn packet_to_packet_timeout_when_the_response_stops_midway() {
    let mut sim = Sim::without_probe();
    // 80-byte frame in 2 pieces, the second 30 s later: the header arrives at 85 ms.
    sim.script.answer = Answer::Dribble {
        chunks: 2,
        every: secs(30),
    };
    let id = sim.start(spec(1, &[7; 60]).with_retry_count(0));
    let (at, end) = sim.run_until_end(id, secs(60));
    assert_eq!(
        end.outcome,
        Err(TaskError::Timeout(TimeoutLevel::PacketToPacket))
    );
    assert_eq!(end.outcome.unwrap_err().mars_code(), (6, -501));
    assert_eq!(at, ms(85 + 8_000));
    assert_eq!(end.profile.first_byte.map(|t| sim.secs(t)), Some(0.085));
    // A stalled stream is the link's problem: it is dropped.
    assert_eq!(
        sim.closes(),
        vec![(ms(8_085), LinkError::Stalled(TimeoutLevel::PacketToPacket))]
    );
}

#[test]
fn read_write_timeout_when_the_server_dribbles_but_the_link_is_spared() {
    let mut sim = Sim::without_probe();
    // Mars's test: the server sends 16 bytes every 4 s. A 220-byte frame takes 14 pieces.
    sim.script.answer = Answer::Dribble {
        chunks: 14,
        every: secs(4),
    };
    let id = sim.start(spec(1, &[3; 200]).with_retry_count(0));
    let (at, end) = sim.run_until_end(id, secs(120));
    // first packet = 12 000 + 1000·200/12288 = 12 016 ms; rw = first + 5 333 ms.
    assert_eq!(end.profile.first_packet_timeout, Some(ms(12_016)));
    assert_eq!(
        end.outcome,
        Err(TaskError::Timeout(TimeoutLevel::ReadWrite))
    );
    assert_eq!(at, ms(40 + 12_016 + 5_333));
    // The link was delivering bytes: only the task failed.
    assert!(sim.closes().is_empty());
    // Let the rest of the old response arrive (it is dropped), then use the link again.
    sim.run_for(secs(40));
    sim.script.answer_by_cmd.insert(CmdId(2), Answer::Echo);
    let next = sim.start(spec(2, b"after"));
    assert!(sim.run_until_end(next, secs(60)).1.outcome.is_ok());
}

/// Design check (shared fate): one silent request on a busy, healthy link fails alone.
#[test]
fn a_timed_out_task_on_a_healthy_link_fails_alone_and_is_retried_on_the_same_link() {
    let mut sim = Sim::new();
    sim.script.answer_by_cmd.insert(CmdId(1), Answer::Never);
    let silent = sim.start(spec(1, b"silent"));
    let mut others = Vec::new();
    for i in 0..15u8 {
        others.push(sim.start(spec(2, &[i])));
        sim.run_for(secs(2));
    }
    let (at, end) = sim.run_until_end(silent, secs(60));
    assert_eq!(
        end.outcome,
        Err(TaskError::Timeout(TimeoutLevel::FirstPacket))
    );
    assert_eq!(at, ms(40 + 12_000 + 1_000 + 12_000));
    assert!(sim.closes().is_empty(), "the link survives");
    assert_eq!(
        sim.action_times(|a| matches!(a, Action::Connect { .. }))
            .len(),
        1
    );
    for id in others {
        assert!(sim.ends[&id].1.outcome.is_ok());
    }
    let retried: Vec<_> = sim
        .events
        .iter()
        .filter_map(|(t, e)| match e {
            Event::TaskRetrying { id, attempt, error } if *id == silent => {
                Some((t.duration_since(sim.t0), *attempt, error.clone()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        retried,
        vec![(ms(12_040), 1, TaskError::Timeout(TimeoutLevel::FirstPacket))]
    );
}

/// Design check (shared fate): when nothing at all arrives, every running task fails with
/// the timeout that detected the stall and the link is dropped.
#[test]
fn a_stalled_link_fails_every_running_task_and_reconnects() {
    let mut sim = Sim::without_probe();
    sim.script.answer = Answer::Never;
    let a = sim.start(spec(1, b"a").with_retry_count(0));
    let b = sim.start(spec(1, b"b").with_retry_count(0));
    sim.run_for(secs(20));
    let (ta, ea) = sim.ends[&a].clone();
    let (tb, eb) = sim.ends[&b].clone();
    assert_eq!(ta, tb, "shared fate");
    assert_eq!(ta.duration_since(sim.t0), ms(12_040));
    assert_eq!(
        ea.outcome,
        Err(TaskError::Timeout(TimeoutLevel::FirstPacket))
    );
    assert_eq!(
        eb.outcome,
        Err(TaskError::Timeout(TimeoutLevel::FirstPacket))
    );
    assert_eq!(
        eb.profile.first_packet_timeout,
        Some(ms(12_000 + 1_500)),
        "queue position 1"
    );
}

#[test]
fn malformed_bytes_drop_the_link_and_the_task_is_retried_then_ends_with_a_codec_error() {
    let mut sim = Sim::new();
    sim.script.answer = Answer::Garbage;
    let id = sim.start(spec(1, b"x"));
    let (_, end) = sim.run_until_end(id, secs(60));
    assert!(matches!(
        end.outcome,
        Err(TaskError::Codec(CodecFailure::Decode(_)))
    ));
    assert_eq!(end.profile.attempts, 2);
    assert!(matches!(sim.closes()[0].1, LinkError::Decode(_)));
}

#[test]
fn server_closing_mid_task_fails_it_with_remote_closed_after_retries() {
    let mut sim = Sim::new();
    sim.script.answer = Answer::Close;
    let id = sim.start(spec(1, b"x"));
    let (_, end) = sim.run_until_end(id, secs(60));
    assert_eq!(
        end.outcome,
        Err(TaskError::Socket(SocketFailure::RemoteClosed))
    );
    assert_eq!(end.outcome.unwrap_err().mars_code(), (4, -10090));
    assert_eq!(end.profile.attempts, 2);
}

#[test]
fn connect_timeout_level_when_every_address_is_blackholed() {
    let addrs = [server_addr(1), server_addr(2)];
    let cfg = config_with(&addrs)
        .connect_profile(crate::ConnectProfile::MarsClassic)
        .build()
        .unwrap();
    let mut sim = Sim::with_config(cfg);
    for a in addrs {
        sim.script.reach.insert(a, Reach::Blackhole);
    }
    let id = sim.start(spec(1, b"x").with_retry_count(0));
    let (at, end) = sim.run_until_end(id, secs(60));
    // MarsClassic: attempts at 0 and 2.5 s, each times out after 10 s: the cycle fails at
    // 12.5 s (the exact-deadline column of §9; Mars notices at 15 s). Phobos starts the
    // second address 250 ms in and fails at 10.25 s (`tests::racing`).
    assert_eq!(at, ms(12_500));
    assert_eq!(end.outcome, Err(TaskError::Timeout(TimeoutLevel::Connect)));
    assert_eq!(
        end.outcome.unwrap_err().kind(),
        ErrorKind::Timeout(TimeoutLevel::Connect)
    );
}

#[test]
fn refused_everywhere_is_a_dial_error() {
    let mut sim = Sim::new();
    sim.script.reach.insert(server_addr(1), Reach::Refuse);
    let id = sim.start(spec(1, b"x").with_retry_count(0));
    let (at, end) = sim.run_until_end(id, secs(60));
    assert_eq!(at, ms(40));
    assert_eq!(end.outcome.unwrap_err().kind(), ErrorKind::Dial);
}

#[derive(Debug)]
struct Judge;

impl ResponseCheck for Judge {
    fn check(&self, _id: crate::TaskId, cmd_id: CmdId, _body: &[u8]) -> ResponseVerdict {
        match cmd_id.0 {
            1 => ResponseVerdict::Retry { code: -1 },
            2 => ResponseVerdict::End { code: 403 },
            _ => ResponseVerdict::Accept,
        }
    }
}

/// A sim whose responses [`Judge`] checks.
fn judged() -> Sim {
    let cfg = config_with(&[server_addr(1)])
        .response_check(std::sync::Arc::new(Judge))
        .build()
        .unwrap();
    Sim::with_config(cfg)
}

#[test]
fn response_check_can_end_with_a_server_error_and_accept() {
    let mut sim = judged();
    let end_now = sim.start(spec(2, b"e"));
    let ok = sim.start(spec(3, b"o"));
    sim.run_for(secs(5));
    let e = &sim.ends[&end_now].1;
    assert_eq!(e.outcome, Err(TaskError::Server { code: 403 }));
    assert_eq!(e.profile.attempts, 1);
    assert!(sim.ends[&ok].1.outcome.is_ok());
    assert!(
        sim.closes().is_empty(),
        "a server error is not a link failure"
    );
}

/// §4: Mars's default fail handle (`Buf2Resp` → −1) on the long link fails every running
/// task of the link with the check's code and drops the connection (10007); the tasks are
/// retried on the next one.
#[test]
fn a_retry_verdict_drops_the_long_link_and_retries_every_running_task() {
    let mut sim = judged();
    sim.foreground(true);
    sim.script
        .answer_by_cmd
        .insert(CmdId(3), Answer::Delay(secs(1)));
    let slow = sim.start(spec(3, b"o").with_retry_count(2));
    let retry = sim.start(spec(1, b"r"));
    sim.run_for(secs(60));
    let r = &sim.ends[&retry].1;
    assert_eq!(
        r.outcome,
        Err(TaskError::Codec(CodecFailure::Response { code: -1 }))
    );
    assert_eq!(r.profile.attempts, 2);
    let dropped: Vec<_> = sim.closes().into_iter().map(|(_, why)| why).collect();
    assert_eq!(
        dropped,
        vec![LinkError::ResponseRefused { code: -1 }; 2],
        "each refused response drops its connection"
    );
    assert_eq!(LinkError::ResponseRefused { code: -1 }.mars_code(), 10007);
    // The task running beside it failed an attempt with each drop, and was retried.
    let o = &sim.ends[&slow].1;
    assert!(o.outcome.is_ok(), "{:?}", o.outcome);
    assert_eq!(o.profile.attempts, 3);
    assert_eq!(sim.server_frames(CmdId(1)).len(), 2);
}

#[test]
fn lossy_link_still_delivers_with_retransmission_delays() {
    let mut sim = Sim::new();
    sim.loss = 0.2;
    let ids: Vec<_> = (0..50u8).map(|i| sim.start(spec(1, &[i]))).collect();
    sim.run_for(secs(30));
    for id in ids {
        assert!(sim.ends[&id].1.outcome.is_ok());
    }
}

#[test]
fn long_polling_task_waits_its_polling_time_for_the_first_packet() {
    let mut sim = Sim::new();
    sim.script
        .answer_by_cmd
        .insert(CmdId(1), Answer::Delay(secs(25)));
    let poll = sim.start(
        spec(1, b"poll")
            .with_long_polling(secs(30))
            .with_retry_count(0),
    );
    let (at, end) = sim.run_until_end(poll, secs(60));
    assert!(end.outcome.is_ok());
    assert_eq!(end.profile.first_packet_timeout, Some(secs(30)));
    assert_eq!(at, ms(25_080));

    // The same wait without long polling hits the first-packet timeout.
    let plain = sim.start(spec(1, b"plain").with_retry_count(0));
    let (_, end) = sim.run_until_end(plain, secs(60));
    assert_eq!(
        end.outcome,
        Err(TaskError::Timeout(TimeoutLevel::FirstPacket))
    );

    // The whole budget of a long poll is its polling time + 5 s.
    let mut sim = Sim::new();
    sim.script.answer = Answer::Never;
    let poll = sim.start(spec(1, b"poll").with_long_polling(secs(30)));
    let (at, end) = sim.run_until_end(poll, secs(60));
    assert_eq!(end.outcome, Err(TaskError::Timeout(TimeoutLevel::Total)));
    assert_eq!(at, secs(35));
}

/// §6.3 through the engine: ten quick small exchanges and one quick mid-size one make the
/// network "excellent", which shortens the first-packet timeout of tasks without a server
/// cost to 7 s.
#[test]
fn an_excellent_network_shortens_the_first_packet_timeout() {
    let mut sim = Sim::new();
    let sent = |sim: &Sim| -> Vec<std::time::Duration> {
        sim.events
            .iter()
            .filter_map(|(_, e)| match e {
                Event::TaskSent {
                    first_packet_timeout,
                    ..
                } => Some(*first_packet_timeout),
                _ => None,
            })
            .collect()
    };
    for i in 0..10u8 {
        let id = sim.start(spec(1, &[i; 100]));
        sim.run_until_end(id, secs(1));
    }
    let big = sim.start(spec(1, &[9; 4_000]));
    sim.run_until_end(big, secs(1));
    let next = sim.start(spec(1, b"next"));
    sim.run_until_end(next, secs(1));
    let with_cost = sim.start(spec(1, b"cost").with_server_cost(secs(3)));
    sim.run_until_end(with_cost, secs(5));
    let timeouts = sent(&sim);
    assert_eq!(timeouts[..10], [ms(12_008); 10]);
    assert_eq!(timeouts[10], ms(12_325));
    assert_eq!(timeouts[11], ms(7_000), "excellent");
    assert_eq!(timeouts[12], ms(3_000), "a server cost is not shortened");
}

/// §6.3: the long link reports only successes to the estimator; a first-packet timeout on
/// it leaves an excellent network excellent (short-link timeouts and failed connects count).
#[test]
fn a_long_link_timeout_leaves_the_estimator_as_it_was() {
    let mut sim = Sim::without_probe();
    sim.script.answer_by_cmd.insert(CmdId(7), Answer::Never);
    let big = sim.start(spec(1, &[1; 4_000]).with_limits(false, false));
    sim.run_until_end(big, secs(5));
    for i in 0..12u8 {
        let id = sim.start(spec(1, &[i; 10]).with_limits(false, false));
        sim.run_until_end(id, secs(5));
    }
    assert_eq!(format!("{:?}", sim.engine.net_quality()), "Excellent");
    let stuck = sim.start(spec(7, b"z").with_retry_count(0));
    let (_, end) = sim.run_until_end(stuck, secs(60));
    assert_eq!(
        end.outcome.unwrap_err(),
        TaskError::Timeout(TimeoutLevel::FirstPacket)
    );
    assert_eq!(format!("{:?}", sim.engine.net_quality()), "Excellent");
}
