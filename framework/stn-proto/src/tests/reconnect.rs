//! Reconnect pacing by app state and cause (§7.9), network change, inactivity (§2.3).

use std::time::Duration;

use phobos_plugin_api::{CmdId, NetKind};

use super::harness::{config_with, ms, secs, server_addr, Answer, Reach, Sim};
use crate::{Action, Event, LinkConfig, LinkError, LocalError, TaskError, TaskSpec};

fn connects(sim: &Sim) -> Vec<Duration> {
    sim.action_times(|a| matches!(a, Action::Connect { .. }))
}

/// Connects at the current time, lets the server close the link 1 s later, and returns the
/// time of the next connect attempt.
fn reconnect_after_server_close(sim: &mut Sim) -> Duration {
    sim.engine.connect_link(sim.now, "default-longlink");
    sim.drain();
    sim.run_for(secs(1));
    let conn = sim.open_conns()[0];
    sim.server_close(conn);
    let before = connects(sim).len();
    assert!(
        sim.run_until(secs(3_600), |s| connects(s).len() > before),
        "no reconnect within an hour"
    );
    *connects(sim).last().unwrap()
}

#[test]
fn foreground_first_minute_reconnects_fifteen_seconds_after_the_last_attempt() {
    let mut sim = Sim::new();
    sim.foreground(true);
    assert_eq!(reconnect_after_server_close(&mut sim), secs(15));
}

#[test]
fn foreground_first_ten_minutes_reconnects_after_thirty_seconds() {
    let mut sim = Sim::new();
    sim.foreground(true);
    sim.run_for(secs(100));
    assert_eq!(reconnect_after_server_close(&mut sim), secs(130));
}

#[test]
fn long_foreground_reconnects_after_120_to_139_seconds_reproducibly() {
    let run = || {
        let mut sim = Sim::new();
        sim.foreground(true);
        sim.run_for(secs(700));
        reconnect_after_server_close(&mut sim)
    };
    let at = run();
    assert!(at >= secs(820) && at < secs(840), "{at:?}");
    assert_eq!(run(), at, "jitter comes from the seeded generator");
}

#[test]
fn long_foreground_without_account_waits_two_x_plus_300() {
    let mut sim = Sim::with_config(
        config_with(&[server_addr(1)])
            .has_account(false)
            .build()
            .unwrap(),
    );
    sim.foreground(true);
    sim.run_for(secs(700));
    assert_eq!(reconnect_after_server_close(&mut sim), secs(700 + 540));
}

#[test]
fn background_active_reconnects_after_five_minutes() {
    let mut sim = Sim::new();
    assert_eq!(reconnect_after_server_close(&mut sim), secs(300));
}

#[test]
fn inactive_app_backs_off_along_the_table_once_per_attempt() {
    let mut sim = Sim::new();
    sim.run_for(secs(650));
    assert!(
        !sim.engine.is_active(),
        "inactive 10 min after start in background"
    );
    assert_eq!(reconnect_after_server_close(&mut sim), secs(710));
    // From now on the server refuses: each failed cycle moves one step along the table.
    sim.script.reach.insert(server_addr(1), Reach::Refuse);
    sim.run_for(secs(1));
    let conn = sim.open_conns()[0];
    sim.server_close(conn);
    sim.run_for(secs(1_000));
    assert_eq!(
        connects(&sim),
        vec![secs(650), secs(710), secs(830), secs(1_070), secs(1_430)]
    );
}

/// §18.12: Mars's task loop pushes the inactive back-off to 600 s within seconds.
#[test]
fn a_waiting_task_does_not_escalate_the_inactive_backoff() {
    let mut sim = Sim::new();
    sim.run_for(secs(650));
    sim.engine.connect_link(sim.now, "default-longlink");
    sim.drain();
    sim.script.process_delay = secs(5);
    sim.run_for(ms(100));
    // A 60 s server cost gives the task a 160 s budget, enough to see the reconnect.
    let id = sim.start(TaskSpec::new(CmdId(1), &b"x"[..]).with_server_cost(secs(60)));
    sim.run_for(ms(900));
    let conn = sim.open_conns()[0];
    sim.server_close(conn);
    let (_, end) = sim.run_until_end(id, secs(600));
    assert!(end.outcome.is_ok());
    assert_eq!(connects(&sim), vec![secs(650), secs(710)]);
}

#[test]
fn a_waiting_task_reconnects_on_the_task_row() {
    // Background active: task row 30 s (the automatic row would wait 300 s). The task is slow
    // (5 s) and the link delivers no response before it breaks.
    let mut sim = Sim::new();
    sim.script.answer = Answer::Delay(secs(5));
    let id = sim.start(TaskSpec::new(CmdId(1), &b"x"[..]));
    sim.run_for(secs(1));
    let conn = sim.open_conns()[0];
    sim.server_close(conn);
    let (_, end) = sim.run_until_end(id, secs(120));
    assert!(end.outcome.is_ok());
    assert_eq!(connects(&sim), vec![secs(0), secs(30)]);

    // Foreground first minute: task row 5 s; when the retry pause ends at 2.02 s the link
    // waits for 5 s since the last attempt.
    let mut sim = Sim::new();
    sim.foreground(true);
    sim.script.answer = Answer::Delay(secs(5));
    let id = sim.start(TaskSpec::new(CmdId(1), &b"x"[..]));
    sim.run_for(secs(1));
    let conn = sim.open_conns()[0];
    sim.server_close(conn);
    sim.run_until_end(id, secs(120));
    assert_eq!(connects(&sim), vec![secs(0), secs(5)]);
}

#[test]
fn going_to_foreground_brings_a_pending_reconnect_forward() {
    let mut sim = Sim::new();
    sim.engine.connect_link(sim.now, "default-longlink");
    sim.drain();
    sim.run_for(secs(1));
    let conn = sim.open_conns()[0];
    sim.server_close(conn);
    sim.run_for(secs(4));
    sim.foreground(true);
    sim.run_for(secs(20));
    assert_eq!(connects(&sim), vec![secs(0), secs(15)]);
}

#[test]
fn network_change_reconnects_at_once_and_retries_interrupted_tasks_without_pause() {
    let mut sim = Sim::new();
    sim.script.process_delay = secs(2);
    let id = sim.start(TaskSpec::new(CmdId(1), &b"x"[..]));
    sim.run_for(secs(1));
    sim.engine
        .set_network(sim.now, NetKind::Mobile, "mobile_46000");
    sim.drain();
    let (at, end) = sim.run_until_end(id, secs(60));
    assert!(end.outcome.is_ok());
    assert_eq!(end.profile.attempts, 2);
    assert_eq!(connects(&sim), vec![secs(0), secs(1)]);
    // Sent again on the new link at 1.04 s, answered 2.04 s later.
    assert_eq!(at, ms(1_040 + 2_040));
    let retry = sim.events.iter().find_map(|(_, e)| match e {
        Event::TaskRetrying { error, .. } => Some(error.clone()),
        _ => None,
    });
    assert_eq!(retry, Some(TaskError::Local(LocalError::Interrupted)));
    let closes: Vec<_> = sim
        .actions
        .iter()
        .filter_map(|(_, a)| match a {
            Action::Close { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(closes, vec![LinkError::NetworkChange]);
    let blamed = sim
        .events
        .iter()
        .any(|(_, e)| matches!(e, Event::AddrOutcome { success: false, .. }));
    assert!(
        !blamed,
        "a local disconnect is not the address's fault (§18.8)"
    );
    // Same kind and label: nothing happens.
    sim.engine
        .set_network(sim.now, NetKind::Mobile, "mobile_46000");
    sim.drain();
    assert_eq!(connects(&sim).len(), 2);
}

#[test]
fn a_link_that_is_not_keep_alive_reconnects_only_for_tasks() {
    let cfg = crate::Config::builder(std::sync::Arc::new(phobos_codec_mars::MarsCodec::default()))
        .link(
            LinkConfig::new("default-longlink")
                .addrs([server_addr(1)])
                .keep_alive(false),
        )
        .build()
        .unwrap();
    let mut sim = Sim::with_config(cfg);
    sim.engine.connect_link(sim.now, "default-longlink");
    sim.drain();
    sim.run_for(secs(1));
    let conn = sim.open_conns()[0];
    sim.server_close(conn);
    sim.run_for(secs(1_000));
    assert_eq!(connects(&sim), vec![secs(0)]);
    let id = sim.start(TaskSpec::new(CmdId(1), &b"x"[..]));
    assert!(sim.run_until_end(id, secs(1)).1.outcome.is_ok());
}

#[test]
fn redo_tasks_reconnects_at_once() {
    let mut sim = Sim::new();
    sim.script.answer = Answer::Never;
    let id = sim.start(TaskSpec::new(CmdId(1), &b"x"[..]));
    sim.run_for(secs(2));
    sim.script.answer = Answer::Echo;
    sim.engine.redo_tasks(sim.now);
    sim.drain();
    let (at, end) = sim.run_until_end(id, secs(10));
    assert!(end.outcome.is_ok());
    assert_eq!(connects(&sim), vec![secs(0), secs(2)]);
    assert_eq!(at, ms(2_085));
}

#[test]
fn timing_sync_asks_the_app_to_poll_while_the_main_link_is_down() {
    let syncs = |s: &Sim| s.event_times(|e| matches!(e, Event::RequestSync));
    let mut sim = Sim::new();
    sim.run_for(secs(200));
    assert_eq!(syncs(&sim), vec![secs(90), secs(180)]);
    // Connected: no more syncs; down again: 90 s later.
    sim.engine.connect_link(sim.now, "default-longlink");
    sim.drain();
    sim.run_for(secs(100));
    assert_eq!(syncs(&sim).len(), 2);
    let conn = sim.open_conns()[0];
    sim.server_close(conn);
    sim.run_for(secs(91));
    assert_eq!(syncs(&sim).last(), Some(&(secs(300) + ms(20) + secs(90))));

    // Without network the period triples and nothing is asked; the network coming back
    // restarts the period (foreground, so the app stays active; the server is unreachable
    // so the reconnect the network change triggers does not succeed).
    let mut sim = Sim::new();
    sim.foreground(true);
    sim.script.reach.insert(server_addr(1), Reach::Blackhole);
    sim.engine.set_network(sim.now, NetKind::None, "");
    sim.drain();
    sim.run_for(secs(600));
    assert!(syncs(&sim).is_empty());
    sim.engine.set_network(sim.now, NetKind::Wifi, "wifi_home");
    sim.drain();
    sim.run_for(secs(100));
    assert_eq!(syncs(&sim), vec![secs(690)]);
}

#[test]
fn without_network_tasks_wait_and_the_link_connects_when_it_returns() {
    let mut sim = Sim::new();
    sim.engine.set_network(sim.now, NetKind::None, "");
    sim.drain();
    let id = sim.start(TaskSpec::new(CmdId(1), &b"x"[..]));
    sim.run_for(secs(20));
    assert!(connects(&sim).is_empty(), "nothing to connect over");
    assert!(!sim.ends.contains_key(&id));
    sim.engine.set_network(sim.now, NetKind::Wifi, "wifi_home");
    sim.drain();
    let (at, end) = sim.run_until_end(id, secs(5));
    assert!(end.outcome.is_ok());
    assert_eq!(connects(&sim), vec![secs(20)]);
    assert_eq!(at, secs(20) + ms(85));
}
