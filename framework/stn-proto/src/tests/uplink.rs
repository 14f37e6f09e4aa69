//! A request's clocks start when its first byte leaves (spec §6.2, §7.4 `OnSend`): the
//! engine learns what the driver still holds through [`Engine::handle_unsent`], here from a
//! simulated uplink slower than the requests pipelined over it.
//!
//! [`Engine::handle_unsent`]: crate::Engine::handle_unsent

use std::time::Duration;

use phobos_plugin_api::CmdId;

use super::harness::{secs, Answer, Sim, Uplink};
use crate::{Event, LinkError, TaskId, TaskSpec, TimeoutLevel};

/// Mars's minimum Wi-Fi rate (§6.2), the slowest uplink its first-packet formula allows for.
const WIFI_MIN_RATE: u64 = 12_288;

/// `n` requests of 20 KiB, pipelined in one pass.
fn uploads(sim: &mut Sim, n: u8) -> Vec<TaskId> {
    sim.start_batch((0..n).map(|i| TaskSpec::new(CmdId(1), vec![i; 20 * 1024])))
}

/// Runs `sim` until every task of `ids` ended (within 120 s), and checks that each
/// succeeded on its first attempt and that no connection was closed: all went over the one
/// connection.
fn all_succeed_on_one_connection(sim: &mut Sim, ids: &[TaskId]) {
    let all_ended = |s: &Sim| ids.iter().all(|id| s.ends.contains_key(id));
    assert!(sim.run_until(secs(120), all_ended));
    for id in ids {
        let (_, end) = &sim.ends[id];
        assert!(end.outcome.is_ok(), "{id}: {:?}", end.outcome);
        assert_eq!(end.profile.attempts, 1, "{id}");
    }
    assert_eq!(sim.closes(), vec![]);
}

/// `sim` connected on Wi-Fi, its uplink then taking `rate` bytes a second.
fn slow_uplink(sim: Sim, rate: u64, stop_after: Option<u64>, report: bool) -> Sim {
    slow_uplink_pausing(sim, rate, stop_after, None, report)
}

/// [`slow_uplink`] whose socket also takes nothing for a while once it has taken some bytes.
fn slow_uplink_pausing(
    mut sim: Sim,
    rate: u64,
    stop_after: Option<u64>,
    pause: Option<(u64, Duration)>,
    report: bool,
) -> Sim {
    sim.foreground(true);
    sim.run_for(secs(1));
    sim.uplink = Some(Uplink {
        rate,
        piece: 1024,
        stop_after,
        pause,
        report,
    });
    sim
}

/// Fifteen 20 KiB requests over an uplink at Mars's minimum Wi-Fi rate take 25 s to leave,
/// and each is answered soon after its last byte arrives. Each one's first-packet timeout
/// (13.67 s, plus 1.5 s per request ahead up to five) runs from its first byte, so all
/// succeed on the one connection. Timed from the dispatch pass, the thirteenth (answered
/// about 21.7 s after the pass, due 21.17 s after it) timed out, and shared fate dropped the
/// link with every request on it, again on every connection.
#[test]
fn requests_queued_behind_a_slow_uplink_are_timed_from_their_first_byte() {
    let mut sim = slow_uplink(Sim::new(), WIFI_MIN_RATE, None, true);
    let pass = sim.now;
    let ids = uploads(&mut sim, 15);
    all_succeed_on_one_connection(&mut sim, &ids);
    // The last request's clocks started when its first byte left: 14 requests of 20 KiB
    // and their heads after the pass, at 12 KiB/s.
    let (_, last) = &sim.ends[&ids[14]];
    let left = last.profile.send_end.unwrap().duration_since(pass);
    assert_eq!(
        last.profile.send_start,
        Some(pass),
        "handed to the driver in the pass"
    );
    assert!(
        left >= Duration::from_millis(23_333) && left < Duration::from_millis(23_500),
        "the last request left {left:?} after the pass"
    );
}

/// The same uploads from a driver that reports nothing: every request is timed from its
/// dispatch, as before the engine learnt what the driver holds. The thirteenth request's
/// first-packet timeout fires before its answer can come, and the link goes down with all
/// of them. (What the test above fixes.)
#[test]
fn without_reports_the_queued_requests_are_timed_from_their_dispatch() {
    let mut sim = slow_uplink(Sim::new(), WIFI_MIN_RATE, None, false);
    let ids = uploads(&mut sim, 15);
    sim.run_for(secs(25));
    let first = sim.closes().into_iter().next();
    assert_eq!(
        first.map(|(_, reason)| reason),
        Some(LinkError::Stalled(TimeoutLevel::FirstPacket))
    );
    assert!(ids.iter().any(|id| !sim.ends.contains_key(id)));
}

/// Half that rate, below the minimum the formula allows for: each request still leaves well
/// within its own first-packet timeout, but answers come 3.3 s apart while the stall probe
/// would ask after 2 s of quiet, and its heartbeat, queued behind what the driver holds,
/// could not be answered in time. The socket taking bytes shows the path alive, so no probe
/// goes and all ten (33 s of uplink, within their 40 s total) succeed on the one connection.
#[test]
fn a_socket_taking_bytes_keeps_the_stall_probe_quiet() {
    let mut sim = slow_uplink(Sim::new(), WIFI_MIN_RATE / 2, None, true);
    let heartbeats = sim.engine.stats().heartbeats_sent;
    let ids = uploads(&mut sim, 10);
    all_succeed_on_one_connection(&mut sim, &ids);
    assert_eq!(
        sim.engine.stats().heartbeats_sent,
        heartbeats,
        "no probe went while the socket took bytes"
    );
}

/// The uplink holds everything up for 3 s early in the first upload (acknowledgements
/// late), then goes on; the server takes 5 s over each request, so no answer comes for a
/// while. The stall probe asks after 2 s of that quiet, and its heartbeat waits behind some
/// 290 KiB the driver holds, 24 s of uplink. Once the socket takes bytes again the path is
/// alive: each report moves the heartbeat reply's deadline on, as received bytes do, and the
/// link lives until the reply comes.
#[test]
fn a_heartbeat_behind_held_bytes_waits_while_the_socket_takes_them() {
    let mut sim = Sim::new();
    sim.script.answer = Answer::Delay(secs(5));
    let mut sim = slow_uplink_pausing(sim, WIFI_MIN_RATE, None, Some((10 * 1024, secs(3))), true);
    let heartbeats = sim.engine.stats().heartbeats_sent;
    let ids = uploads(&mut sim, 15);
    all_succeed_on_one_connection(&mut sim, &ids);
    assert!(
        sim.engine.stats().heartbeats_sent > heartbeats,
        "the pause made the probe ask"
    );
}

/// An uplink that stops taking bytes (the path stopped acknowledging, the send buffer is
/// full) still brings the link down: the request whose first byte left is timed, and when its
/// first-packet timeout passes the link is dropped as stalled. The requests still held never
/// started their clocks; they fail with the link and are retried on the next connection.
/// (No stall probe: see the next test.)
#[test]
fn an_uplink_that_stops_taking_bytes_still_times_out_the_request_that_left() {
    // 64 KiB: three whole requests and the start of a fourth.
    let mut sim = slow_uplink(Sim::without_probe(), WIFI_MIN_RATE, Some(64 * 1024), true);
    let pass = sim.now;
    let ids = uploads(&mut sim, 15);
    sim.run_for(secs(30));
    let at = stalled_drop(&sim, &ids, pass);
    // The fourth request's first byte left about 5 s after the pass (three requests of
    // 20 KiB at 12 KiB/s); its first-packet timeout is 13.67 s plus 4.5 s for the three
    // ahead of it: 23.2 s after the pass, where from its dispatch it would be 18.2 s.
    assert!(
        at > Duration::from_millis(23_000) && at < Duration::from_millis(23_400),
        "dropped {at:?} after the pass"
    );
}

/// The same dead uplink with the stall probe (the default): the probe's heartbeat waits
/// behind the held bytes and its reply cannot come, and since the socket stopped taking bytes
/// nothing shows the path alive, so the probe drops the link well before the first-packet
/// timeout. (While the socket keeps taking bytes, as in the first test, that progress
/// counts as a sign of life and no probe goes.)
#[test]
fn an_uplink_that_stops_taking_bytes_is_caught_by_the_stall_probe() {
    let mut sim = slow_uplink(Sim::new(), WIFI_MIN_RATE, Some(64 * 1024), true);
    let pass = sim.now;
    let ids = uploads(&mut sim, 15);
    sim.run_for(secs(30));
    let at = stalled_drop(&sim, &ids, pass);
    // The socket took its last byte at 5.33 s; the probe goes 2 s after the last answer
    // (at about 5.4 s) and gives up on its reply after its own timeout.
    assert!(
        at > Duration::from_millis(7_000) && at < Duration::from_millis(12_000),
        "dropped {at:?} after the pass"
    );
}

/// Checks that the first three of `ids` succeeded, that the link then went down as stalled
/// with every other task failed and retried, and returns when (after `pass`).
fn stalled_drop(sim: &Sim, ids: &[TaskId], pass: std::time::Instant) -> Duration {
    for id in &ids[..3] {
        assert!(
            matches!(sim.ends.get(id), Some((_, e)) if e.outcome.is_ok()),
            "{id}"
        );
    }
    let (at, reason) = sim.closes().first().expect("the link was dropped").clone();
    assert_eq!(reason, LinkError::Stalled(TimeoutLevel::FirstPacket));
    let at_instant = sim.t0 + at;
    let retried: Vec<TaskId> = sim
        .events
        .iter()
        .filter_map(|(t, e)| match e {
            Event::TaskRetrying { id, .. } if *t == at_instant => Some(*id),
            _ => None,
        })
        .collect();
    assert_eq!(retried, ids[3..].to_vec());
    at_instant.duration_since(pass)
}

#[test]
fn a_socket_that_takes_nothing_more_is_found_out_while_the_app_keeps_writing() {
    // The socket stops taking bytes part way through a send-only frame; the app goes on
    // starting a task every 30 s. Before, each hand-off restarted the heartbeat interval, so
    // no heartbeat ever went and the link was never dropped: six minutes later it was still
    // "connected", every task ending with a bare total timeout after its one attempt. Now
    // the interval counts from the last byte the socket took: the heartbeat goes, its reply
    // never comes, and the link is dropped.
    let mut sim = Sim::new();
    sim.foreground(true);
    sim.run_for(secs(1));
    sim.uplink = Some(Uplink {
        rate: 12_288,
        piece: 1024,
        stop_after: Some(8 * 1024),
        pause: None,
        report: true,
    });
    let start = sim.now - sim.t0;
    sim.start(TaskSpec::new(CmdId(2), vec![0u8; 20 * 1024]).send_only());
    for _ in 0..12 {
        sim.start(TaskSpec::new(CmdId(1), b"x".to_vec()));
        sim.run_for(secs(30));
    }
    let closes = sim.closes();
    assert!(!closes.is_empty(), "never dropped");
    let (at, _) = &closes[0];
    // The last byte left within a second of the start; the heartbeat is due 210 s later and
    // its reply 8 s after that (the transport's view may add a grace).
    assert!(*at - start < secs(240), "dropped after {:?}", *at - start);
}

/// A task with a 15 s budget and one retry against a server that never answers, its request
/// held by the driver behind `held_kib` KiB of send-only data at 12 KiB/s: its end.
fn retry_room_run(held_kib: usize) -> crate::TaskEnd {
    let mut sim = Sim::without_probe();
    sim.script.answer = Answer::Never;
    sim.foreground(true);
    sim.run_for(secs(1));
    sim.uplink = Some(Uplink {
        rate: 12_288,
        piece: 1024,
        stop_after: None,
        pause: None,
        report: true,
    });
    if held_kib > 0 {
        sim.start(TaskSpec::new(CmdId(2), vec![0u8; held_kib * 1024]).send_only());
    }
    let id = sim.start(
        TaskSpec::new(CmdId(1), b"x".to_vec())
            .with_retry_count(1)
            .with_total_timeout(secs(15)),
    );
    sim.run_until_end(id, secs(60)).1
}

#[test]
fn a_request_held_behind_a_slow_uplink_keeps_its_retry_room() {
    // The room was applied at dispatch only: a request held 4 s had its first-packet
    // deadline moved 4 s past the room, and ended with one attempt.
    assert_eq!(retry_room_run(0).profile.attempts, 2, "not held");
    assert_eq!(retry_room_run(48).profile.attempts, 2, "held 4 s");
}
