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

/// Lets the server close the link (up, or brought up now), waits for the automatic
/// reconnect, lets the server close that connection 1 s later, and returns the time
/// between the two reconnect attempts: the pacing interval of the app's state.
fn reconnect_interval(sim: &mut Sim) -> Duration {
    let first = reconnect_after_server_close(sim);
    sim.run_until(secs(60), |s| s.engine.is_connected("default-longlink"));
    let second = reconnect_after_server_close(sim);
    second - first
}

/// §7.9: going to the foreground re-evaluates the automatic reconnect of keep-alive links;
/// a link never tried counts as tried long ago and connects at once.
#[test]
fn going_to_the_foreground_connects_a_keep_alive_link_never_tried() {
    let mut sim = Sim::new();
    sim.run_for(secs(3));
    assert!(connects(&sim).is_empty(), "nothing asked for it yet");
    sim.foreground(true);
    assert_eq!(connects(&sim), vec![secs(3)]);
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
    assert_eq!(reconnect_interval(&mut sim), secs(30));
}

#[test]
fn long_foreground_reconnects_after_120_to_139_seconds_reproducibly() {
    let run = || {
        let mut sim = Sim::new();
        sim.foreground(true);
        sim.run_for(secs(700));
        reconnect_interval(&mut sim)
    };
    let after = run();
    assert!(after >= secs(120) && after < secs(140), "{after:?}");
    assert_eq!(run(), after, "jitter comes from the seeded generator");
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
    assert_eq!(reconnect_interval(&mut sim), secs(540));
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

/// A sim whose one link is not keep-alive: only tasks ask for it.
fn on_demand_link() -> Sim {
    let link = LinkConfig::new("default-longlink")
        .addrs([server_addr(1)])
        .main()
        .keep_alive(false);
    Sim::with_config(
        crate::Config::builder(std::sync::Arc::new(phobos_codec_mars::MarsCodec::default()))
            .link(link)
            .seed(42)
            .build()
            .unwrap(),
    )
}

fn either_task() -> TaskSpec {
    TaskSpec::new(CmdId(9), &b"x"[..])
        .with_channel(crate::ChannelSelect::Either)
        .with_short_link("/cgi", ["10.0.0.3:80"])
}

/// §3.2 step 6: a task that may use the long link, started in the foreground within 15 min
/// of going there while the link is down, asks for the link (task row), though it goes short
/// itself; later in the foreground, or in the background, it does not.
#[test]
fn a_task_that_goes_short_in_the_foreground_asks_for_the_long_link() {
    let long_connects = |sim: &Sim| {
        sim.actions
            .iter()
            .filter(|(_, a)| matches!(a, Action::Connect { addr, .. } if *addr == server_addr(1)))
            .count()
    };
    let mut sim = on_demand_link();
    sim.foreground(true);
    sim.run_for(secs(2));
    assert_eq!(long_connects(&sim), 0, "not keep-alive: nothing asked yet");
    sim.start(either_task());
    assert_eq!(long_connects(&sim), 1, "asked at once");
    assert_eq!(connects(&sim)[0], secs(2));

    for (fg, after, asks) in [(true, secs(15 * 60 + 1), false), (false, secs(1), false)] {
        let mut sim = on_demand_link();
        sim.foreground(fg);
        sim.run_for(after);
        sim.start(either_task());
        sim.run_for(secs(30));
        assert_eq!(
            long_connects(&sim) > 0,
            asks,
            "foreground {fg}, after {after:?}"
        );
    }
}

fn gaps(v: &[Duration]) -> Vec<u64> {
    v.windows(2).map(|w| (w[1] - w[0]).as_secs()).collect()
}

#[test]
fn the_inactive_backoff_holds_at_its_top_while_attempts_keep_failing() {
    // Before, the rebuild timer's cycle recomputed the index from a posttime that had reached
    // 600 s and stepped it down: the top of the table alternated 480 s and 600 s.
    let mut sim = Sim::new();
    sim.run_for(secs(650));
    assert!(!sim.engine.is_active());
    sim.engine.connect_link(sim.now, "default-longlink");
    sim.drain();
    sim.script.reach.insert(server_addr(1), Reach::Refuse);
    sim.run_for(secs(1));
    let conn = sim.open_conns()[0];
    sim.server_close(conn);
    sim.run_for(secs(6_000));
    assert_eq!(
        gaps(&connects(&sim))[..9],
        [60, 120, 240, 360, 480, 600, 600, 600, 600]
    );
}

#[test]
fn a_network_change_restarts_the_inactive_backoff_from_the_table_start() {
    // §7.9: a network change resets the back-off index. Before, the change's connect moved
    // the index up, and when it failed the next attempt waited 360 s, not 60 s.
    let mut sim = Sim::new();
    sim.script.reach.insert(server_addr(1), Reach::Refuse);
    sim.run_for(secs(650));
    assert!(!sim.engine.is_active());
    sim.engine.connect_link(sim.now, "default-longlink");
    sim.drain();
    sim.run_for(secs(250));
    assert_eq!(connects(&sim), vec![secs(650), secs(710), secs(830)]);
    sim.engine
        .set_network(sim.now, NetKind::Mobile, "mobile_46000");
    sim.drain();
    sim.run_for(secs(700));
    let c = connects(&sim);
    assert_eq!(c[3], secs(900), "the network change connects at once");
    assert_eq!(gaps(&c[3..]), [60, 120, 240]);
}

#[test]
fn the_first_task_after_a_reset_connects_at_once() {
    // Mars's Reset rebuilds the connect monitor. Before, the first task after a reset in the
    // background waited out the task row's 30 s from the previous cycle.
    let mut sim = Sim::new();
    let id = sim.start(TaskSpec::new(CmdId(1), &b"x"[..]));
    sim.run_until_end(id, secs(5));
    sim.run_for(secs(5));
    sim.engine.reset(sim.now);
    sim.drain();
    let t_reset = sim.now - sim.t0;
    let id = sim.start(TaskSpec::new(CmdId(1), &b"y"[..]));
    let (_, end) = sim.run_until_end(id, secs(60));
    assert!(end.outcome.is_ok(), "{:?}", end.outcome);
    assert_eq!(connects(&sim), vec![Duration::ZERO, t_reset]);
}
