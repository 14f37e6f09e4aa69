//! Phobos's recovery on weak links ([`Recovery`], [`Racing::hedges`]): resend window after a
//! drop, reconnect after progress, stall probe, dial hedging. Each scenario also runs on
//! [`ConnectProfile::MarsClassic`], which must keep Mars's behaviour (and does worse).

use std::time::Duration;

use phobos_plugin_api::codec::HEARTBEAT_CMD;
use phobos_plugin_api::{CmdId, Seq};

use super::harness::{config_with, ms, secs, server_addr, Answer, Sim, TransportAnswer};
use crate::{
    Action, ConnectProfile, Event, LinkError, LinkStatus, TaskEnd, TaskError, TaskSpec,
    TimeoutLevel, TransportFacts,
};

/// The lab's workload: 40 echo tasks of 200 bytes, one every 250 ms, 15 s total timeout
/// each, in the foreground. Returns how many succeeded.
fn workload(sim: &mut Sim) -> usize {
    sim.foreground(true);
    let mut ids = Vec::new();
    for i in 0..40u8 {
        let spec = TaskSpec::new(CmdId(1), vec![i; 200]).with_total_timeout(secs(15));
        ids.push(sim.start(spec));
        sim.run_for(ms(250));
    }
    sim.run_for(secs(20));
    ids.iter()
        .filter(|id| sim.ends.get(id).is_some_and(|(_, e)| e.outcome.is_ok()))
        .count()
}

fn sim(profile: ConnectProfile) -> Sim {
    Sim::with_config(
        config_with(&[server_addr(1)])
            .connect_profile(profile)
            .build()
            .unwrap(),
    )
}

/// A foreground app on the Phobos profile (tasks answered after 100 ms) whose link delivered
/// a response and then broke: it is down, with a resend window for when it is back. Returns
/// the connection that broke too.
fn dropped_after_a_response() -> (Sim, crate::ConnId) {
    let mut sim = sim(ConnectProfile::Phobos);
    sim.foreground(true);
    sim.script.answer = Answer::Delay(ms(100));
    let first = sim.start(TaskSpec::new(CmdId(1), &b"a"[..]));
    sim.run_until_end(first, secs(5));
    let conn = sim.open_conns()[0];
    sim.server_close(conn);
    sim.run_for(ms(30));
    assert!(!sim.engine.is_connected("default-longlink"));
    (sim, conn)
}

fn heartbeat_len(sim: &Sim) -> usize {
    sim.frame(HEARTBEAT_CMD, Seq(0), &[]).len()
}

fn connects(sim: &Sim) -> Vec<Duration> {
    sim.action_times(|a| matches!(a, Action::Connect { .. }))
}

fn link_downs(sim: &Sim) -> Vec<(Duration, LinkError)> {
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
fn a_connection_closed_after_two_kilobytes_still_completes_every_task() {
    let mut phobos = sim(ConnectProfile::Phobos);
    phobos.script.close_after = Some(2_000);
    assert_eq!(workload(&mut phobos), 40);

    // Mars pipelines the whole backlog on each new connection (which dies before answering
    // it) and waits 5 s between reconnects.
    let mut mars = sim(ConnectProfile::MarsClassic);
    mars.script.close_after = Some(2_000);
    let done = workload(&mut mars);
    assert!(done < 20, "mars-classic completed {done}");
}

#[test]
fn a_stall_after_two_kilobytes_is_probed_and_the_tasks_move_to_a_new_connection() {
    let mut phobos = sim(ConnectProfile::Phobos);
    phobos.script.stall_after = Some(2_000);
    let done = workload(&mut phobos);
    assert_eq!(done, 40);
    // Every drop is a probe that went unanswered, a few seconds after the stall.
    let downs = link_downs(&phobos);
    assert!(downs.len() >= 3, "{downs:?}");
    assert!(downs
        .iter()
        .all(|(_, r)| *r == LinkError::Stalled(TimeoutLevel::FirstPacket)));

    let mut mars = sim(ConnectProfile::MarsClassic);
    mars.script.stall_after = Some(2_000);
    let done = workload(&mut mars);
    assert!(done < 25, "mars-classic completed {done}");
}

#[test]
fn after_a_drop_the_backlog_goes_out_under_a_window_that_grows_per_response() {
    // The link breaks, then ten tasks queue while it is down.
    let (mut sim, conn) = dropped_after_a_response();
    for i in 0..10u8 {
        sim.engine
            .start_task(sim.now, TaskSpec::new(CmdId(2), vec![i; 10]));
    }
    sim.drain();
    let ok = sim.run_until(secs(10), |s| {
        s.ends.values().filter(|(_, e)| e.outcome.is_ok()).count() == 11
    });
    assert!(ok, "every task succeeds");
    // Requests on the new connection, grouped by arrival instant: 2, then one more per
    // response (the server answers each after 100 ms), so the window doubles per round
    // trip: 2, 4, and the last 4.
    let mut bursts: Vec<(Duration, usize)> = Vec::new();
    for (t, c, h) in &sim.server_log {
        if *c == conn || h.cmd_id != CmdId(2) {
            continue;
        }
        let t = t.duration_since(sim.t0);
        match bursts.last_mut() {
            Some((at, n)) if *at == t => *n += 1,
            _ => bursts.push((t, 1)),
        }
    }
    let sizes: Vec<usize> = bursts.iter().map(|b| b.1).collect();
    assert_eq!(sizes, vec![2, 4, 4], "{bursts:?}");

    // Mars sends the whole backlog at once.
    let mut mars = super::recovery::sim(ConnectProfile::MarsClassic);
    mars.foreground(true);
    let first = mars.start(TaskSpec::new(CmdId(1), &b"a"[..]));
    mars.run_until_end(first, secs(5));
    let conn = mars.open_conns()[0];
    mars.server_close(conn);
    mars.run_for(ms(30));
    for i in 0..10u8 {
        mars.engine
            .start_task(mars.now, TaskSpec::new(CmdId(2), vec![i; 10]));
    }
    mars.drain();
    mars.run_for(secs(10));
    let times: Vec<Duration> = mars
        .server_log
        .iter()
        .filter(|(_, c, h)| *c != conn && h.cmd_id == CmdId(2))
        .map(|(t, _, _)| t.duration_since(mars.t0))
        .collect();
    assert_eq!(times.len(), 10);
    assert!(times.iter().all(|t| *t == times[0]), "{times:?}");
}

#[test]
fn a_link_that_delivered_a_response_reconnects_at_once_one_that_did_not_is_paced() {
    // Productive: a response came back before the server closed.
    let mut sim = sim(ConnectProfile::Phobos);
    sim.foreground(true);
    let first = sim.start(TaskSpec::new(CmdId(1), &b"a"[..]));
    sim.run_until_end(first, secs(5));
    sim.run_for(secs(1));
    let conn = sim.open_conns()[0];
    sim.server_close(conn);
    sim.run_for(ms(100));
    let second = sim.start(TaskSpec::new(CmdId(1), &b"b"[..]));
    let (at, end) = sim.run_until_end(second, secs(10));
    assert!(end.outcome.is_ok());
    let c = connects(&sim);
    assert_eq!(c.len(), 2);
    // The task started 100 ms after the close connects right away.
    assert_eq!(c[1], ms(1_085 + 100));
    assert!(at < c[1] + ms(200));

    // Unproductive: the server closed before answering anything; the task row (5 s since
    // the last cycle start) applies, as in Mars.
    let mut sim = super::recovery::sim(ConnectProfile::Phobos);
    sim.foreground(true);
    sim.script.answer = Answer::Close;
    let id = sim.start(TaskSpec::new(CmdId(1), &b"a"[..]).with_retry_count(1));
    sim.run_until_end(id, secs(30));
    assert_eq!(connects(&sim)[..2], [ms(0), secs(5)]);

    // Mars: the task row even after a productive link.
    let mut mars = super::recovery::sim(ConnectProfile::MarsClassic);
    mars.foreground(true);
    let first = mars.start(TaskSpec::new(CmdId(1), &b"a"[..]));
    mars.run_until_end(first, secs(5));
    mars.run_for(secs(1));
    let conn = mars.open_conns()[0];
    mars.server_close(conn);
    mars.run_for(ms(100));
    let second = mars.start(TaskSpec::new(CmdId(1), &b"b"[..]));
    mars.run_until_end(second, secs(10));
    assert_eq!(connects(&mars)[1], secs(5));
}

#[test]
fn a_slow_task_on_a_live_link_is_probed_but_spared() {
    let mut sim = sim(ConnectProfile::Phobos);
    sim.script.answer = Answer::Delay(secs(9));
    let id = sim.start(TaskSpec::new(CmdId(1), &b"slow"[..]));
    let (at, end) = sim.run_until_end(id, secs(30));
    assert!(end.outcome.is_ok());
    assert_eq!(
        at,
        ms(40 + 9_000 + 40 + 5 - 5),
        "answered on the first connection"
    );
    assert!(link_downs(&sim).is_empty());
    // Probes after 2 s of quiet, then 4 s after the answer (the next would be due after
    // 8 s more): 2 probes besides the heartbeat at connect.
    assert_eq!(sim.engine.stats().stall_probes, 2);
    assert_eq!(connects(&sim).len(), 1);
}

#[test]
fn a_silent_link_is_dropped_by_the_probe_and_the_task_retried_on_a_new_one() {
    let mut sim = sim(ConnectProfile::Phobos);
    sim.foreground(true);
    // A middlebox passes the heartbeat and one request per connection, then nothing.
    let per_conn = heartbeat_len(&sim) + sim.frame(CmdId(1), Seq(1), b"warm").len();
    sim.script.stall_after = Some(per_conn);
    let warm = sim.start(TaskSpec::new(CmdId(1), &b"warm"[..]));
    sim.run_until_end(warm, secs(5));
    let id = sim.start(TaskSpec::new(CmdId(1), &b"x"[..]));
    let sent = sim.elapsed();
    let (at, end) = sim.run_until_end(id, secs(30));
    assert!(end.outcome.is_ok());
    // Quiet for 2 s (4 × the 40 ms round trip is below the floor), then 2 s for the
    // probe's reply.
    assert_eq!(
        link_downs(&sim),
        vec![(
            sent + secs(4),
            LinkError::Stalled(TimeoutLevel::FirstPacket)
        )]
    );
    assert!(
        at < sent + secs(5),
        "retried well within the first-packet timeout"
    );

    // Mars notices only at the first-packet timeout (12 s).
    let mut mars = super::recovery::sim(ConnectProfile::MarsClassic);
    mars.foreground(true);
    mars.script.stall_after = Some(per_conn);
    let warm = mars.start(TaskSpec::new(CmdId(1), &b"warm"[..]));
    mars.run_until_end(warm, secs(5));
    let id = mars.start(TaskSpec::new(CmdId(1), &b"x"[..]));
    let (at, _) = mars.run_until_end(id, secs(60));
    assert!(at > secs(12), "{at:?}");
}

#[test]
fn a_lost_syn_is_hedged_with_a_fresh_attempt_to_the_same_address() {
    let mut sim = sim(ConnectProfile::Phobos);
    sim.script.lost_connects = 1;
    let id = sim.start(TaskSpec::new(CmdId(1), &b"x"[..]));
    let (at, end) = sim.run_until_end(id, secs(30));
    assert!(end.outcome.is_ok());
    // The hedge goes after the 250 ms stagger and connects one round trip later.
    assert_eq!(connects(&sim), vec![ms(0), ms(250)]);
    assert_eq!(at, ms(250 + 40 + 45));
    let cycle = sim
        .events
        .iter()
        .find_map(|(_, e)| match e {
            Event::ConnectCycle(r) => Some(r.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(cycle.attempts.len(), 2);
    assert_eq!(cycle.attempts[0].addr, cycle.attempts[1].addr);

    // Mars waits for the connect timeout (10 s) and starts a new cycle.
    let mut mars = super::recovery::sim(ConnectProfile::MarsClassic);
    mars.script.lost_connects = 1;
    let id = mars.start(TaskSpec::new(CmdId(1), &b"x"[..]));
    let (at, _) = mars.run_until_end(id, secs(60));
    assert!(at > secs(10), "{at:?}");
}

#[test]
fn hedges_share_the_connect_timeout_of_the_attempt_they_repeat() {
    let mut sim = sim(ConnectProfile::Phobos);
    sim.script.lost_connects = 100;
    let id = sim.start(TaskSpec::new(CmdId(1), &b"x"[..]).with_retry_count(0));
    let (at, end) = sim.run_until_end(id, secs(60));
    assert_eq!(end.outcome, Err(TaskError::Timeout(TimeoutLevel::Connect)));
    assert_eq!(at, secs(10), "the cycle still ends at the connect timeout");
    // One attempt and three hedges, a stagger apart.
    assert_eq!(connects(&sim), vec![ms(0), ms(250), ms(500), ms(750)]);
}

#[test]
fn no_hedge_once_another_address_answered_with_a_refusal() {
    let dead = server_addr(1);
    let refusing = server_addr(2);
    let mut sim = Sim::with_config(config_with(&[dead, refusing]).build().unwrap());
    sim.script
        .reach
        .insert(dead, super::harness::Reach::Blackhole);
    sim.script
        .reach
        .insert(refusing, super::harness::Reach::Refuse);
    let id = sim.start(TaskSpec::new(CmdId(1), &b"x"[..]).with_retry_count(0));
    sim.run_until_end(id, secs(60));
    assert_eq!(connects(&sim), vec![ms(0), ms(250)]);
}

#[test]
fn a_server_that_answers_probes_but_not_the_task_still_costs_the_link() {
    // The probe's replies prove the connection alive, not that the server serves it: at the
    // first-packet timeout the link is dropped and the retry goes on a new connection.
    let mut sim = sim(ConnectProfile::Phobos);
    sim.foreground(true);
    sim.script.answer = Answer::Never;
    let id = sim.start(TaskSpec::new(CmdId(1), &b"x"[..]));
    sim.run_until_end(id, secs(60));
    let downs = link_downs(&sim);
    assert_eq!(
        downs[0],
        (ms(12_040), LinkError::Stalled(TimeoutLevel::FirstPacket))
    );
    assert!(sim.engine.stats().stall_probes >= 2);
    assert_eq!(connects(&sim).len(), 2);
}

// ----- transport patience -------------------------------------------------------------------

/// A Phobos sim whose server answers tasks after `answer_after` and never answers a
/// heartbeat, its transport inspections answered with `transport`; runs one task to its end.
fn silent_heartbeats(transport: TransportAnswer, answer_after: Duration) -> (Sim, TaskEnd) {
    let mut sim = sim(ConnectProfile::Phobos);
    sim.transport = transport;
    sim.script.answer = Answer::Delay(answer_after);
    sim.script.heartbeat_replies = false;
    let id = sim.start(TaskSpec::new(CmdId(1), &b"x"[..]));
    let (_, end) = sim.run_until_end(id, secs(60));
    (sim, end)
}

fn inspections(sim: &Sim) -> Vec<Duration> {
    sim.action_times(|a| matches!(a, Action::InspectTransport { .. }))
}

#[test]
fn an_overdue_reply_on_a_path_that_still_acknowledges_waits_while_our_bytes_are_retransmitted() {
    // Our bytes are being retransmitted (backoff 1, one segment unacknowledged) and the peer
    // acknowledged something 10 ms ago: a lossy path, not a dead one.
    let lossy = TransportFacts::new(ms(800), 1, 1, ms(10));
    let (sim, end) = silent_heartbeats(TransportAnswer::Fixed(lossy), secs(8));
    assert!(end.outcome.is_ok());
    assert!(link_downs(&sim).is_empty());
    assert_eq!(connects(&sim).len(), 1);
    // The probe's deadline (2 s of quiet, then 2 s) is past the patience (7 × 400 ms + the
    // trip from the connect-time heartbeat): from there one current timeout (800 ms) at a
    // time until the answer arrives.
    assert_eq!(
        inspections(&sim),
        [4_040, 4_840, 5_640, 6_440, 7_240, 8_040].map(ms)
    );
    assert_eq!(sim.engine.stats().transport_waits, 6);

    // A transport that cannot tell: the same silence drops the link at the deadline.
    let (sim, _) = silent_heartbeats(TransportAnswer::Unknown, secs(8));
    let downs = link_downs(&sim);
    assert_eq!(downs[0].0, ms(4_040));
    assert_eq!(connects(&sim).len(), 2);
}

#[test]
fn a_transport_reporting_timeouts_past_any_instant_is_not_waited_for() {
    // A transport of the app's that says anything: a retransmission timeout no instant can
    // be added to (the engine overflowed and panicked). No wait: the link goes at the
    // deadline, as with a transport that cannot tell.
    for facts in [
        TransportFacts::new(Duration::MAX, 0, 0, ms(10)),
        TransportFacts::new(Duration::MAX, 1, 1, ms(10)),
    ] {
        let (sim, _) = silent_heartbeats(TransportAnswer::Fixed(facts), secs(8));
        assert_eq!(link_downs(&sim)[0].0, ms(4_040), "{facts:?}");
        assert_eq!(sim.engine.stats().transport_waits, 0);
    }
}

#[test]
fn silence_is_given_seven_base_timeouts_and_a_round_trip_from_the_heartbeat() {
    // Everything acknowledged, nothing retransmitting: only the patience applies. A base
    // timeout of 1 s makes it 0.04 s (the heartbeat) + 7 s + the 40 ms round trip.
    let acked = TransportFacts::new(secs(1), 0, 0, ms(10));
    let (sim, end) = silent_heartbeats(TransportAnswer::Fixed(acked), secs(6));
    assert!(end.outcome.is_ok(), "answered within the patience");
    assert!(link_downs(&sim).is_empty());
    assert_eq!(inspections(&sim), vec![ms(4_040)]);

    let (sim, _) = silent_heartbeats(TransportAnswer::Fixed(acked), secs(9));
    assert_eq!(inspections(&sim)[..2], [ms(4_040), ms(7_080)]);
    assert_eq!(
        link_downs(&sim)[0].0,
        ms(7_080),
        "the server stays silent past it"
    );
}

#[test]
fn a_server_whose_tcp_acknowledges_everything_but_answers_nothing_is_dropped_at_the_deadline() {
    // The simulated network delivered every byte (so they were acknowledged) and the server
    // sends nothing: half-open. The patience (7 × 240 ms + 40 ms) is below the probe's
    // 2 s, so the link goes exactly when it went before the transport was asked.
    let (modelled, _) = silent_heartbeats(TransportAnswer::Modelled, secs(8));
    let (unknown, _) = silent_heartbeats(TransportAnswer::Unknown, secs(8));
    assert_eq!(link_downs(&modelled)[0].0, ms(4_040));
    assert_eq!(link_downs(&modelled), link_downs(&unknown));
    assert_eq!(modelled.engine.stats().transport_waits, 0);
}

#[test]
fn a_dead_path_is_found_as_fast_as_without_the_transport() {
    let run = |transport| {
        let mut sim = sim(ConnectProfile::Phobos);
        sim.transport = transport;
        let warm = sim.start(TaskSpec::new(CmdId(1), &b"warm"[..]));
        sim.run_until_end(warm, secs(5));
        // Nothing gets through any more, and nothing says so (no RST, no FIN).
        sim.script.path_dead = true;
        let sent = sim.elapsed();
        let id = sim.start(TaskSpec::new(CmdId(1), &b"x"[..]));
        sim.run_until(secs(10), |s| !link_downs(s).is_empty());
        let first = sim.actions.iter().find_map(|(_, a)| match a {
            Action::Connect { attempt, .. } => Some(*attempt),
            _ => None,
        });
        let facts = sim.transport_facts(first.unwrap());
        (sim.elapsed() - sent, link_downs(&sim), facts, id)
    };
    let (after, downs, facts, _) = run(TransportAnswer::Modelled);
    // Quiet 2 s, the probe's 2 s: the task and the probe are unacknowledged and nothing was
    // acknowledged since the probe went out.
    assert_eq!(after, secs(4));
    assert_eq!(downs[0].1, LinkError::Stalled(TimeoutLevel::FirstPacket));
    assert_eq!(facts.unacked, 2);
    assert!(facts.backoff >= 2, "{facts:?}");
    let (unknown_after, unknown_downs, _, _) = run(TransportAnswer::Unknown);
    assert_eq!((after, &downs), (unknown_after, &unknown_downs));
}

#[test]
fn a_driver_that_never_answers_gets_the_link_judged_after_the_grace() {
    let (sim, _) = silent_heartbeats(TransportAnswer::Silent, secs(8));
    assert_eq!(inspections(&sim)[0], ms(4_040));
    assert_eq!(
        link_downs(&sim)[0].0,
        ms(4_040) + crate::INSPECT_GRACE,
        "no answer is no excuse"
    );
}

#[test]
fn an_overdue_heartbeat_of_the_policy_gets_the_same_patience() {
    // No probe here: the fixed heartbeat's own reply is overdue on a lossy path.
    let run = |transport| {
        let mut sim = Sim::without_probe();
        sim.transport = transport;
        sim.script.heartbeat_replies = false;
        let id = sim.start(TaskSpec::new(CmdId(1), &b"x"[..]));
        sim.run_until_end(id, secs(5));
        sim.run_for(secs(60));
        sim
    };
    let sim = run(TransportAnswer::Fixed(TransportFacts::new(
        ms(800),
        1,
        1,
        ms(10),
    )));
    assert!(link_downs(&sim).is_empty());
    assert!(sim.engine.stats().transport_waits > 0);
    assert_eq!(sim.engine.stats().heartbeat_timeouts, 0);

    let sim = run(TransportAnswer::Unknown);
    assert_eq!(sim.engine.stats().heartbeat_timeouts, 1);
}

#[test]
fn mars_classic_never_asks_the_transport() {
    let mut mars = sim(ConnectProfile::MarsClassic);
    mars.transport = TransportAnswer::Fixed(TransportFacts::new(ms(800), 1, 1, ms(10)));
    mars.script.heartbeat_replies = false;
    mars.script.answer = Answer::Never;
    let id = mars.start(TaskSpec::new(CmdId(1), &b"x"[..]));
    mars.run_until_end(id, secs(60));
    assert!(inspections(&mars).is_empty());
    assert!(!link_downs(&mars).is_empty());
}

#[test]
fn on_a_very_lossy_path_asking_the_transport_costs_no_task_and_no_link() {
    // The simulated loss delays each delivery by doubling retransmission timeouts; over
    // seeded runs of the lab's workload, the transport's facts may spare a link the probe
    // alone would drop, but never at the cost of a task (patience ends where a retry of the
    // owed tasks would no longer fit: `patience_never_outlasts_the_owed_tasks_budget`).
    let runs = |transport| {
        (0..16u64)
            .map(|seed| {
                let mut sim = sim(ConnectProfile::Phobos);
                sim.reseed(seed);
                sim.transport = transport;
                sim.latency = ms(150);
                sim.loss = 0.5;
                let done = workload(&mut sim);
                (done, link_downs(&sim).len())
            })
            .fold((0, 0), |(d, l), (done, drops)| (d + done, l + drops))
    };
    let (done_with, drops_with) = runs(TransportAnswer::Modelled);
    let (done_without, drops_without) = runs(TransportAnswer::Unknown);
    assert!(
        done_with >= done_without && drops_with <= drops_without,
        "with the facts: {done_with} done, {drops_with} drops; \
         without: {done_without} done, {drops_without} drops"
    );
}

// ----- after damaged bytes --------------------------------------------------------------------

#[test]
fn damaged_bytes_earn_a_few_reconnects_at_once_then_the_table_paces() {
    // Every answer is garbage: each connection breaks on a malformed frame before any
    // response. Three reconnects go at once, then the foreground table's 5 s paces again.
    let run = |profile| {
        let mut sim = sim(profile);
        sim.foreground(true);
        sim.script.answer = Answer::Garbage;
        let spec = TaskSpec::new(CmdId(1), &b"x"[..])
            .with_retry_count(10)
            .with_total_timeout(secs(30));
        let id = sim.start(spec);
        sim.run_until_end(id, secs(40));
        sim
    };
    let phobos = run(ConnectProfile::Phobos);
    let at = connects(&phobos);
    assert!(at.len() >= 5, "{at:?}");
    assert!(at[3] < ms(1_000), "three at once: {at:?}");
    assert!(at[4] - at[3] >= secs(4), "then paced: {at:?}");
    assert!(link_downs(&phobos)
        .iter()
        .all(|(_, e)| matches!(e, LinkError::Decode(_))));

    let mars = run(ConnectProfile::MarsClassic);
    let at = connects(&mars);
    assert!(at[1] >= secs(4), "Mars paces from the first: {at:?}");
}

#[test]
fn a_connection_the_transport_found_damaged_is_replaced_at_once() {
    let mut sim = sim(ConnectProfile::Phobos);
    sim.foreground(true);
    sim.script.answer = Answer::Never;
    let id = sim.start(TaskSpec::new(CmdId(1), &b"x"[..]));
    sim.run_for(ms(100));
    let conn = sim.open_conns()[0];
    // The driver's TLS layer found a record damaged.
    sim.engine
        .handle_closed(sim.now, conn, crate::CloseCause::Damaged);
    sim.drain();
    sim.script.answer = Answer::Echo;
    let (_, end) = sim.run_until_end(id, secs(30));
    assert!(end.outcome.is_ok());
    assert_eq!(
        link_downs(&sim),
        vec![(ms(100), LinkError::Socket(crate::SocketFailure::Damaged))]
    );
    assert_eq!(connects(&sim), vec![ms(0), ms(100)], "at once");
    assert_eq!(
        LinkError::Socket(crate::SocketFailure::Damaged).mars_code(),
        10004
    );
}

#[test]
fn a_path_that_has_been_losing_segments_is_not_judged_dead_on_silence_alone() {
    // Nothing acknowledged since the heartbeat, our bytes in their third backoff: on a
    // clean history that is a dead path; on a connection that retransmitted 30 % of its
    // segments it is the loss it has shown all along.
    let silent = TransportFacts::new(ms(1_600), 3, 2, secs(5));
    let (sim, end) = silent_heartbeats(
        TransportAnswer::Fixed(silent.with_history(100, 30)),
        secs(8),
    );
    assert!(end.outcome.is_ok());
    assert!(link_downs(&sim).is_empty());
    assert!(sim.engine.stats().transport_waits > 0);

    let (sim, _) = silent_heartbeats(TransportAnswer::Fixed(silent.with_history(100, 5)), secs(8));
    assert_eq!(
        link_downs(&sim)[0].0,
        ms(4_040),
        "5 % is not a lossy history"
    );
    assert!(!silent.lossy_history(), "no history, no verdict");
    assert!(silent.with_history(10, 1).lossy_history());
}

#[test]
fn patience_never_outlasts_the_owed_tasks_budget() {
    // The lab's 30 % loss, seen once in a few dozen runs: the connection stalls and its TCP
    // has backed off (a 10.7 s retransmission timeout, half its segments retransmitted), so
    // the transport reads "lossy", while a fresh connection would get through.
    let backed_off = TransportFacts::new(ms(10_656), 2, 6, secs(12)).with_history(21, 11);
    let mut phobos = sim(ConnectProfile::Phobos);
    phobos.transport = TransportAnswer::Fixed(backed_off);
    phobos.script.stall_after = Some(2_000);
    let done = workload(&mut phobos);
    let downs = link_downs(&phobos);
    assert_eq!(done, 40, "link downs {downs:?}");
    // Each stalled connection goes at its first inspection, the probe's deadline: waiting
    // one retransmission timeout more would leave the owed task no time for a retry.
    assert_eq!(
        inspections(&phobos),
        downs.iter().map(|d| d.0).collect::<Vec<_>>()
    );
    assert_eq!(phobos.engine.stats().transport_waits, 0);
}

/// The lab's uplink capped at 12 KiB/s with fifteen 20 KiB uploads in flight: the stall
/// probe's heartbeat waited behind them, and when its reply was overdue the transport said
/// the peer had acknowledged 92 ms before, with ten segments in flight and a 6.5 s
/// retransmission timeout (bufferbloat, not back-off). The patience that timeout gives
/// (seven of them) runs past the tasks' budget, and the link used to be dropped at once,
/// every upload going again. A path the peer acknowledges on is given the wait up to the
/// last instant the owed tasks could still be retried; the answer comes meanwhile.
#[test]
fn an_acknowledging_path_is_given_the_wait_up_to_the_owed_tasks_retry() {
    // A connected sim whose transport always tells `facts`, whose server gives `answer` and
    // never answers a heartbeat.
    let connected = |facts, answer| {
        let mut phobos = sim(ConnectProfile::Phobos);
        phobos.transport = TransportAnswer::Fixed(facts);
        phobos.foreground(true);
        phobos.run_for(secs(1));
        phobos.script.answer = answer;
        phobos.script.heartbeat_replies = false;
        phobos
    };
    let acking = TransportFacts::new(ms(6_500), 0, 10, ms(92));
    // Answered after 9 s: the probe asks after 2 s of quiet and gives its reply 2 s.
    let mut phobos = connected(acking, Answer::Delay(secs(9)));
    let id = phobos.start(TaskSpec::new(CmdId(1), vec![1; 200]));
    let (_, end) = phobos.run_until_end(id, secs(60));
    assert!(end.outcome.is_ok(), "{:?}", end.outcome);
    assert_eq!(end.profile.attempts, 1);
    assert_eq!(link_downs(&phobos), vec![]);
    assert_eq!(inspections(&phobos).len(), 1);
    assert_eq!(phobos.engine.stats().transport_waits, 1);

    // Never answered, with a 14 s budget: the wait is cut at the last instant the task could
    // still be retried (10 s after its start, its budget less `min_attempt`), and the task's
    // own first-packet timeout, which the retry room puts at 9 s for the same reason, drops
    // the link first; the retry runs on a new connection.
    let mut phobos = connected(acking, Answer::Never);
    let start = phobos.elapsed();
    let id = phobos.start(TaskSpec::new(CmdId(1), vec![1; 200]).with_total_timeout(secs(14)));
    let (_, end) = phobos.run_until_end(id, secs(60));
    let downs = link_downs(&phobos);
    assert_eq!(
        downs[0],
        (
            start + secs(9),
            LinkError::Stalled(TimeoutLevel::FirstPacket)
        )
    );
    assert_eq!(inspections(&phobos), vec![start + secs(4)]);
    assert_eq!(end.profile.attempts, 2);

    // The same base timeout with our bytes being retransmitted (back-off 1, so 13 s now):
    // loss, not queueing, and the link goes at the inspection, as at 30 % loss
    // (`patience_never_outlasts_the_owed_tasks_budget`).
    let retransmitting = TransportFacts::new(ms(13_000), 1, 10, ms(92));
    let mut phobos = connected(retransmitting, Answer::Delay(secs(9)));
    let start = phobos.elapsed();
    let id = phobos.start(TaskSpec::new(CmdId(1), vec![1; 200]));
    let (_, end) = phobos.run_until_end(id, secs(60));
    assert_eq!(link_downs(&phobos)[0].0, inspections(&phobos)[0]);
    assert_eq!(inspections(&phobos)[0], start + secs(4));
    assert_eq!(end.profile.attempts, 2);
}

#[test]
fn tasks_saved_as_zombies_by_a_drop_bring_the_link_back_like_queued_ones() {
    // A connection answers a few tasks, then stalls; the task on it has no retry left, so
    // the drop saves it as a zombie (§14), to be restarted when the main link connects.
    let run = |profile| {
        let mut sim = sim(profile);
        sim.foreground(true);
        sim.script.stall_after = Some(400);
        for i in 0..3u8 {
            let warm = sim.start(TaskSpec::new(CmdId(1), vec![i; 60]));
            sim.run_until_end(warm, secs(5));
        }
        let spec = TaskSpec::new(CmdId(1), vec![9; 200])
            .with_retry_count(0)
            .with_total_timeout(secs(12));
        let id = sim.start(spec);
        let (_, end) = sim.run_until_end(id, secs(20));
        (sim, end)
    };
    let (phobos, end) = run(ConnectProfile::Phobos);
    assert!(end.outcome.is_ok(), "{:?}", end.outcome);
    assert_eq!(end.profile.zombie_rounds, 1);
    // Dropped by the probe, reconnected at once (that connection had delivered responses),
    // and the zombie went out on the new one.
    let downs = link_downs(&phobos);
    assert_eq!(downs.len(), 1);
    assert_eq!(connects(&phobos)[1], downs[0].0);

    // Mars's zombie waits for the automatic reconnect (15 s in the first foreground minute),
    // past its 12 s budget.
    let (_, end) = run(ConnectProfile::MarsClassic);
    assert_eq!(end.outcome, Err(TaskError::Timeout(TimeoutLevel::Total)));
}

/// Shared fate: the answer to a request sent *before* a timed-out task does not spare the
/// link. Here a middlebox passes one request per connection: the first task's request gets
/// through (answered late), the second's never does. When the second task's first-packet
/// timeout comes, the link's last answer is the first task's, which the connection would
/// deliver even if it were stuck behind a lost segment: the link is dropped and the task
/// retried on a new connection, where it is answered. (Sparing the link, as an answer to
/// any request did before, retried the task on the same connection, where it never got
/// through.)
#[test]
fn an_answer_to_an_earlier_request_does_not_spare_the_link_of_a_later_one() {
    let mut sim = Sim::without_probe();
    sim.script
        .answer_by_cmd
        .insert(CmdId(1), Answer::Delay(secs(10)));
    let per_conn = heartbeat_len(&sim) + sim.frame(CmdId(1), Seq(1), b"a").len();
    sim.script.stall_after = Some(per_conn);
    let first = sim.start(TaskSpec::new(CmdId(1), &b"a"[..]));
    sim.run_for(secs(1));
    let second = sim.start(TaskSpec::new(CmdId(2), &b"b"[..]));
    let sent = sim.elapsed();
    let (_, end) = sim.run_until_end(first, secs(30));
    assert!(
        end.outcome.is_ok(),
        "the first task is answered on the first connection"
    );
    let (at, end) = sim.run_until_end(second, secs(60));
    assert!(end.outcome.is_ok(), "{:?}", end.outcome);
    // The second task's first attempt: 12 s (a 1-byte body adds nothing) and 1.5 s for the
    // one task running ahead of it; the first task's answer came 3.5 s before.
    let timeout = sent + ms(13_500);
    assert_eq!(
        link_downs(&sim),
        vec![(timeout, LinkError::Stalled(TimeoutLevel::FirstPacket))],
        "dropped at the second task's first-packet timeout"
    );
    assert_eq!(end.profile.attempts, 2);
    assert!(
        at < timeout + secs(1),
        "answered on the new connection: {at:?}"
    );
    assert_eq!(connects(&sim).len(), 2);
}

/// Long-link retry room: a task whose total timeout leaves room for two attempts does not
/// spend it on one. The 15 s task of the lab gets a first-packet timeout of 10 s (15 s less
/// the retry pause and `min_attempt`), so its retry on a new connection, answered in 3.5 s,
/// ends before the total timeout; with Mars's 12 s it could not. Mars-classic keeps the 12 s.
/// (The stall probe is off: in the lab it was late, its timing inflated by a slow connect,
/// and the first-packet timeout is what found the stall.)
#[test]
fn a_task_with_a_retry_left_keeps_room_for_it_before_its_total_timeout() {
    let run = |profile: ConnectProfile| {
        let mut sim = Sim::with_config(
            config_with(&[server_addr(1)])
                .connect_profile(profile)
                .recovery(crate::Recovery {
                    stall_probe: false,
                    ..crate::Recovery::default()
                })
                .build()
                .unwrap(),
        );
        sim.foreground(true);
        // The first connection swallows the request; every answer takes 3.5 s.
        let per_conn = heartbeat_len(&sim) + sim.frame(CmdId(1), Seq(1), &[7; 200]).len();
        sim.script.stall_after = Some(per_conn);
        sim.script.process_delay = ms(3_500);
        let warm = sim.start(TaskSpec::new(CmdId(1), vec![7; 200]));
        sim.run_until_end(warm, secs(10));
        // The warm-up used the first connection's allowance: break it with a second one
        // and then the task, so that the task's request is swallowed.
        let id = sim.start(TaskSpec::new(CmdId(1), vec![7; 200]).with_total_timeout(secs(15)));
        let started = sim.elapsed();
        let (at, end) = sim.run_until_end(id, secs(30));
        (at - started, end)
    };
    let (took, end) = run(ConnectProfile::Phobos);
    assert!(end.outcome.is_ok(), "{:?}", end.outcome);
    assert_eq!(end.profile.attempts, 2);
    assert!(took < secs(15), "{took:?}");
    // The retry's own budget had no room for a third attempt: the formula's timeout.
    assert!(end.profile.first_packet_timeout.unwrap() > secs(4));

    let (took, end) = run(ConnectProfile::MarsClassic);
    assert_eq!(end.outcome, Err(TaskError::Timeout(TimeoutLevel::Total)));
    assert_eq!(took, secs(15));
    assert!(end.profile.first_packet_timeout.unwrap() > secs(12));
}

/// The stall probe's timings follow the link's round trip from its first heartbeat reply:
/// a slow connect (a lost SYN, a long handshake) no longer holds them high. Here the connect
/// takes 1.2 s and the heartbeat's round trip 625 ms (600 ms there, the server's 5 ms, 20 ms
/// back); when the path then dies, the probe goes after 2.5 s of quiet (4 × 625 ms) and the
/// link is dropped 3.75 s later (6 × 625 ms), where averaging the connect time in at 1/8
/// gave 4 s and 6.8 s.
#[test]
fn the_first_heartbeat_reply_replaces_the_connect_time_as_the_links_round_trip() {
    let mut sim = sim(ConnectProfile::Phobos);
    // A transport that cannot tell: the probe's own deadline decides.
    sim.transport = super::harness::TransportAnswer::Unknown;
    sim.latency = ms(600);
    let warm = sim.start(TaskSpec::new(CmdId(1), &b"warm"[..]));
    // Connected after 1.2 s; the heartbeat sent then reaches the server 600 ms later, and
    // its reply (like everything after) takes 20 ms.
    sim.run_for(ms(1_210));
    assert!(sim.engine.is_connected("default-longlink"));
    sim.latency = ms(20);
    sim.run_until_end(warm, secs(10));
    sim.run_for(secs(1));
    sim.script.path_dead = true;
    let id = sim.start(TaskSpec::new(CmdId(1), &b"x"[..]));
    let sent = sim.elapsed();
    sim.run_until_end(id, secs(60));
    let downs = link_downs(&sim);
    assert_eq!(
        downs.first(),
        Some(&(
            sent + ms(2_500 + 3_750),
            LinkError::Stalled(TimeoutLevel::FirstPacket)
        )),
        "{downs:?}"
    );
}

/// The connect cycle reports of `sim`, in order.
fn cycles(sim: &Sim) -> Vec<(Duration, crate::ConnectReport)> {
    sim.events
        .iter()
        .filter_map(|(t, e)| match e {
            Event::ConnectCycle(r) => Some((t.duration_since(sim.t0), r.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn a_handshake_that_stalls_is_dialed_again_after_its_own_timeout() {
    // A TLS link: the transport comes up after a round trip (40 ms), the handshake takes
    // another. The first handshake stalls, as on a path where an outage swallowed it. No
    // hedge follows an attempt whose transport is up (its SYN was not lost; before, three
    // hedges a stagger apart each opened another TCP and TLS handshake).
    let mut sim = sim(ConnectProfile::Phobos);
    sim.script.handshake = true;
    sim.script.stalled_handshakes = 1;
    let id = sim.start(TaskSpec::new(CmdId(1), &b"x"[..]).with_retry_count(0));
    let (at, end) = sim.run_until_end(id, secs(30));
    assert!(end.outcome.is_ok(), "{:?}", end.outcome);
    // The first handshake runs out at 40 ms + 3 s (the floor: 6 × 40 ms is less); its
    // address is dialed again at once, and that handshake completes.
    assert_eq!(connects(&sim), vec![ms(0), ms(3_040)]);
    let (_, cycle) = &cycles(&sim)[0];
    let outcomes: Vec<_> = cycle.attempts.iter().map(|a| a.outcome).collect();
    use crate::AttemptOutcome::*;
    assert_eq!(outcomes, vec![HandshakeTimedOut, Won]);
    assert!(at < secs(4), "{at:?}");
    // The winner's timer is gone: the link stays up.
    let more = sim.start(TaskSpec::new(CmdId(1), &b"y"[..]));
    sim.run_until_end(more, secs(5));
    sim.run_for(secs(60));
    assert!(link_downs(&sim).is_empty(), "{:?}", link_downs(&sim));

    // Mars has no handshake timeout: the link waits out the connect timeout (10 s), so a
    // task with an 8 s budget ends without a link.
    let mut mars = super::recovery::sim(ConnectProfile::MarsClassic);
    mars.script.handshake = true;
    mars.script.stalled_handshakes = 1;
    let spec = TaskSpec::new(CmdId(1), &b"x"[..]).with_total_timeout(secs(8));
    let id = mars.start(spec);
    let (_, end) = mars.run_until_end(id, secs(30));
    assert!(end.outcome.is_err());
}

#[test]
fn a_slow_tcp_connect_gives_its_handshake_six_times_as_long_up_to_the_bound() {
    // Hedges off, so only the handshake timeout frees the link: the TCP connect takes a
    // round trip (2 × latency), its handshake gets 6 × that within [3 s, 8 s].
    for (latency, timeout) in [(ms(20), secs(3)), (ms(400), ms(4_800)), (ms(800), secs(8))] {
        let mut sim = Sim::without_hedges();
        sim.latency = latency;
        sim.script.handshake = true;
        sim.script.stalled_handshakes = 1;
        let id = sim.start(TaskSpec::new(CmdId(1), &b"x"[..]).with_total_timeout(secs(60)));
        let (_, end) = sim.run_until_end(id, secs(60));
        assert!(end.outcome.is_ok());
        let rtt = latency * 2;
        assert_eq!(
            connects(&sim),
            vec![ms(0), rtt + timeout],
            "latency {latency:?}"
        );
    }
}

#[test]
fn no_hedge_follows_an_attempt_whose_transport_is_up() {
    // 150 ms each way: the transport is up at 300 ms, the TLS handshake done at 600 ms.
    // Before, the 250 ms stagger (no round trip measured yet, as after a network change)
    // started a hedge at 250 ms (fair: no SYN-ACK yet) and another at 500 ms, into a
    // connection already up: a second full TCP and TLS handshake for the server.
    let mut sim = sim(ConnectProfile::Phobos);
    sim.latency = ms(150);
    sim.script.handshake = true;
    let id = sim.start(TaskSpec::new(CmdId(1), &b"x"[..]));
    let (_, end) = sim.run_until_end(id, secs(10));
    assert!(end.outcome.is_ok(), "{:?}", end.outcome);
    assert_eq!(connects(&sim), vec![ms(0), ms(250)]);
}

#[test]
fn stalled_handshakes_are_dialed_again_twice_per_cycle_then_the_cycle_fails() {
    let mut sim = sim(ConnectProfile::Phobos);
    sim.script.handshake = true;
    sim.script.stalled_handshakes = 1_000;
    let id = sim.start(TaskSpec::new(CmdId(1), &b"x"[..]).with_total_timeout(secs(60)));
    sim.run_for(secs(12));
    // One attempt (no hedge: its transport came up) and two redials, each at the handshake
    // timeout before it; the second redial's own handshake runs out at 6.08 + 3.04 s, and
    // the cycle ends there, before the 10 s connect timeout.
    assert_eq!(connects(&sim), vec![ms(0), ms(3_040), ms(6_080)]);
    let (at, cycle) = &cycles(&sim)[0];
    assert_eq!(*at, ms(9_120));
    assert!(cycle.connected_after.is_none());
    assert_eq!(
        cycle
            .attempts
            .iter()
            .filter(|a| a.outcome == crate::AttemptOutcome::HandshakeTimedOut)
            .count(),
        3
    );
    assert!(
        !sim.ends.contains_key(&id),
        "the task waits for the next cycle"
    );
}

#[test]
fn a_large_request_still_leaving_is_not_probed_as_a_stall() {
    // 900 KB takes 73 s to leave at Wi-Fi's minimum rate of 12 KiB/s: the link is not
    // judged quiet meanwhile. Heartbeats go unanswered, as they would queued behind the
    // upload; the answer comes after 6 s.
    let mut sim = sim(ConnectProfile::Phobos);
    sim.script.heartbeat_replies = false;
    sim.script.answer = Answer::Delay(secs(6));
    let id = sim.start(TaskSpec::new(CmdId(1), vec![7; 900_000]).with_retry_count(0));
    let (_, end) = sim.run_until_end(id, secs(30));
    assert!(end.outcome.is_ok(), "{:?}", end.outcome);
    assert!(link_downs(&sim).is_empty(), "{:?}", link_downs(&sim));
    assert_eq!(sim.engine.stats().stall_probes, 0);

    // A small request is probed as before: the link is dropped after 2 s of quiet and 2 s
    // for the reply (to the heartbeat already unanswered, which serves as the probe).
    let mut sim = super::recovery::sim(ConnectProfile::Phobos);
    sim.script.heartbeat_replies = false;
    sim.script.answer = Answer::Delay(secs(6));
    let id = sim.start(TaskSpec::new(CmdId(1), vec![7; 100]).with_retry_count(0));
    sim.run_until_end(id, secs(30));
    assert_eq!(
        link_downs(&sim).first().map(|(at, _)| *at),
        Some(ms(40) + secs(4))
    );
}

#[test]
fn a_busy_link_that_goes_silent_is_still_probed_at_once() {
    // 2 MB of echoes first: counted at the minimum rate that would be 170 s of upload, but
    // each was answered, so none is owed.
    let mut sim = sim(ConnectProfile::Phobos);
    sim.foreground(true);
    let ids: Vec<_> = (0..2_000)
        .map(|_| sim.start(TaskSpec::new(CmdId(1), vec![7; 1_000]).with_limits(false, false)))
        .collect();
    for id in ids {
        assert!(sim.run_until_end(id, secs(60)).1.outcome.is_ok());
    }
    sim.script.answer = Answer::Never;
    sim.script.heartbeat_replies = false;
    let id = sim.start(TaskSpec::new(CmdId(1), vec![7; 100]).with_retry_count(0));
    let sent = sim.elapsed();
    sim.run_until_end(id, secs(60));
    let first_down = link_downs(&sim).first().map(|(at, _)| *at);
    assert!(
        first_down.is_some_and(|at| at <= sent + secs(5)),
        "{first_down:?} after sending at {sent:?}"
    );
}

/// A link that reconnected after a drop (Phobos's profile) with a resend window of 2, two
/// tasks running on it and a third queued behind them: when the two end without a response
/// (canceled, or by their own total timeout), the room they free sends the third. (Only a
/// response or a failed attempt made the link look again, and the third task waited out its
/// whole budget unsent on an idle connection.)
#[test]
fn room_in_the_resend_window_freed_by_a_cancel_or_a_total_timeout_sends_the_queued_task() {
    let sent = |sim: &Sim, id| {
        sim.events
            .iter()
            .any(|(_, e)| matches!(e, Event::TaskSent { id: i, .. } if *i == id))
    };
    for cancel in [true, false] {
        let (mut sim, _) = dropped_after_a_response();
        // Command 2 is never answered.
        sim.script.answer_by_cmd.insert(CmdId(2), Answer::Never);
        let stuck = |body: &'static [u8]| TaskSpec::new(CmdId(2), body).with_total_timeout(secs(3));
        let a = sim.start(stuck(b"x1"));
        let b = sim.start(stuck(b"x2"));
        let c = sim.start(TaskSpec::new(CmdId(3), &b"x3"[..]));
        sim.run_for(ms(500));
        assert!(sim.engine.is_connected("default-longlink"), "reconnected");
        assert!(sent(&sim, a) && sent(&sim, b));
        assert!(!sent(&sim, c), "held back by the window of 2");
        if cancel {
            assert!(sim.engine.cancel_task(sim.now, a));
            assert!(sim.engine.cancel_task(sim.now, b));
            sim.drain();
        } else {
            sim.run_until_end(a, secs(10));
            sim.run_until_end(b, secs(10));
        }
        let (_, end) = sim.run_until_end(c, secs(60));
        assert!(
            sent(&sim, c),
            "cancel {cancel}: never sent: {:?}",
            end.outcome
        );
        assert!(end.outcome.is_ok(), "cancel {cancel}: {:?}", end.outcome);
    }
}
