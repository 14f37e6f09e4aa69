//! The default (`ConnectProfile::Phobos`) connect race, IP ranking and the IP source chain,
//! in virtual time. Mars's numbers (`ConnectProfile::MarsClassic`) are in `links.rs`.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use phobos_codec_mars::MarsCodec;
use phobos_plugin_api::{AddrSource, IpPort, NetKind, ResolvedAddr};

use super::harness::{ms, secs, server_addr, Reach, Sim};
use crate::{
    Action, AttemptOutcome, Config, ConnectProfile, ConnectReport, Event, LinkConfig, LinkError,
    LinkStatus, SourceSpec,
};

use Reach::{Accept as Live, Blackhole as Dead, Refuse as Refused};

const LINK: &str = "default-longlink";

/// A sim whose link has these fixed addresses (tried in order), each answering as given.
fn fixed(reach: &[Reach]) -> Sim {
    let addrs: Vec<IpPort> = (1..=reach.len() as u8).map(server_addr).collect();
    let mut link = LinkConfig::new(LINK).addrs(addrs.iter().copied());
    link.max_addrs = reach.len();
    let cfg = Config::builder(Arc::new(MarsCodec::default()))
        .link(link)
        .seed(42)
        .build()
        .unwrap();
    let mut sim = Sim::with_config(cfg);
    for (a, r) in addrs.iter().zip(reach) {
        sim.script.reach.insert(*a, *r);
    }
    sim
}

/// A sim whose link resolves host `h` through one source answering `addrs`.
fn resolved(addrs: &[IpPort], seed: u64) -> Sim {
    let cfg = Config::builder(Arc::new(MarsCodec::default()))
        .link(LinkConfig::new(LINK).hosts(["h"]).ports([8080]))
        .seed(seed)
        .build()
        .unwrap();
    let mut sim = Sim::with_config(cfg);
    sim.resolved = addrs
        .iter()
        .map(|a| ResolvedAddr {
            ip: a.ip,
            port: None,
            source: AddrSource::NewDns,
        })
        .collect();
    sim
}

/// Connects the link now (whatever the reconnect pacing says) and runs until it is up or
/// the cycle failed.
fn connect(sim: &mut Sim) -> bool {
    let seen = sim.events.len();
    sim.engine.connect_link(sim.now, LINK);
    sim.drain();
    sim.run_until(secs(60), |s| {
        s.engine.is_connected(LINK) || s.events[seen..].iter().any(|(_, e)| is_failed(e))
    })
}

/// The app asks to redo tasks: the link is dropped (a local cause, not held against the
/// address) and reconnects at once.
fn drop_and_reconnect(sim: &mut Sim) {
    let seen = sim.events.len();
    sim.engine.redo_tasks(sim.now);
    sim.drain();
    sim.run_until(secs(60), |s| {
        s.engine.is_connected(LINK) || s.events[seen..].iter().any(|(_, e)| is_failed(e))
    });
}

fn is_failed(e: &Event) -> bool {
    matches!(
        e,
        Event::LinkStatus {
            status: LinkStatus::ConnectFailed,
            ..
        }
    )
}

/// `(time since start, address)` of every connect attempt.
fn starts(sim: &Sim) -> Vec<(Duration, IpPort)> {
    sim.actions
        .iter()
        .filter_map(|(t, a)| match a {
            Action::Connect { addr, .. } => Some((t.duration_since(sim.t0), *addr)),
            _ => None,
        })
        .collect()
}

fn reports(sim: &Sim) -> Vec<ConnectReport> {
    sim.events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::ConnectCycle(r) => Some(r.clone()),
            _ => None,
        })
        .collect()
}

fn v6(last: u16) -> IpPort {
    IpPort::new(
        IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, last)),
        8080,
    )
}

#[test]
fn attempts_are_staggered_by_250_ms_before_any_rtt_is_known() {
    let mut sim = fixed(&[Dead, Dead, Live]);
    assert!(connect(&mut sim));
    let times: Vec<Duration> = starts(&sim).iter().map(|s| s.0).collect();
    assert_eq!(times, vec![ms(0), ms(250), ms(500)]);
    assert_eq!(sim.elapsed(), ms(540), "Mars takes 5.04 s here");
    assert_eq!(sim.engine.connected_addr(LINK), Some(server_addr(3)));
}

#[test]
fn three_silent_addresses_delay_a_live_fourth_by_three_staggers_only() {
    let mut sim = fixed(&[Dead, Dead, Dead, Live]);
    assert!(connect(&mut sim));
    assert_eq!(sim.elapsed(), ms(790), "MarsClassic: 10.04 s (links.rs)");
    let r = &reports(&sim)[0];
    let aborted = r
        .attempts
        .iter()
        .filter(|a| a.outcome == AttemptOutcome::Aborted)
        .count();
    assert_eq!(aborted, 3);
}

#[test]
fn losers_are_aborted_and_the_cycle_report_names_every_outcome() {
    let mut sim = fixed(&[Dead, Refused, Live, Dead]);
    assert!(connect(&mut sim));
    // 0: silent; 250: refused at 290, which starts the third at once; it wins at 330.
    let times: Vec<Duration> = starts(&sim).iter().map(|s| s.0).collect();
    assert_eq!(times, vec![ms(0), ms(250), ms(290)]);
    let aborts = sim.action_times(|a| matches!(a, Action::Abort { .. }));
    assert_eq!(aborts, vec![ms(330)], "the silent first attempt is aborted");
    let r = &reports(&sim)[0];
    assert_eq!(r.profile, ConnectProfile::Phobos);
    assert_eq!(r.planned, 4);
    assert_eq!(r.connected_after, Some(ms(330)));
    let outcomes: Vec<(IpPort, AttemptOutcome)> =
        r.attempts.iter().map(|a| (a.addr, a.outcome)).collect();
    assert_eq!(
        outcomes,
        vec![
            (server_addr(1), AttemptOutcome::Aborted),
            (server_addr(2), AttemptOutcome::Refused),
            (server_addr(3), AttemptOutcome::Won),
        ]
    );
    assert_eq!(r.attempts[1].ended_after, ms(290));
    assert!(r.attempts.iter().all(|a| a.source == AddrSource::Debug));
    // The report comes just before the Connected status.
    let pos = |f: &dyn Fn(&Event) -> bool| sim.events.iter().position(|(_, e)| f(e)).unwrap();
    let cycle = pos(&|e| matches!(e, Event::ConnectCycle(_)));
    let up = pos(&|e| {
        matches!(
            e,
            Event::LinkStatus {
                status: LinkStatus::Connected(_),
                ..
            }
        )
    });
    assert_eq!(cycle + 1, up);
}

#[test]
fn at_most_four_attempts_are_in_flight_and_each_times_out_on_its_own() {
    let mut sim = fixed(&[Dead, Dead, Dead, Dead, Dead, Live]);
    assert!(connect(&mut sim));
    let times: Vec<Duration> = starts(&sim).iter().map(|s| s.0).collect();
    // Four in flight by 750 ms; the fifth waits for the first to time out at 10 s, the
    // sixth starts at once after the fifth since the second timed out at 10.25 s.
    assert_eq!(
        times,
        vec![ms(0), ms(250), ms(500), ms(750), secs(10), ms(10_250)]
    );
    assert_eq!(sim.elapsed(), ms(10_290));
    let r = &reports(&sim)[0];
    let timed_out = r
        .attempts
        .iter()
        .filter(|a| a.outcome == AttemptOutcome::TimedOut)
        .count();
    assert_eq!(timed_out, 2);
}

#[test]
fn a_single_silent_address_fails_the_cycle_after_the_connect_timeout() {
    let mut sim = fixed(&[Dead]);
    assert!(connect(&mut sim));
    assert!(!sim.engine.is_connected(LINK));
    let failed = sim.event_times(is_failed);
    assert_eq!(failed, vec![secs(10)]);
    let r = &reports(&sim)[0];
    assert_eq!(r.connected_after, None);
    assert_eq!(r.elapsed, secs(10));
    assert_eq!(r.attempts[0].outcome, AttemptOutcome::TimedOut);
}

#[test]
fn the_stagger_follows_measured_connect_times_within_bounds() {
    // First cycle: address 1 answers in 40 ms.
    let mut sim = fixed(&[Live, Dead, Live]);
    assert!(connect(&mut sim));
    // Then it goes silent and the link drops: the next cycle staggers by 2 × 40 ms, raised
    // to the 100 ms floor.
    sim.script.reach.insert(server_addr(1), Dead);
    let before = starts(&sim).len();
    drop_and_reconnect(&mut sim);
    let again: Vec<Duration> = starts(&sim)[before..].iter().map(|s| s.0).collect();
    let d = again[0];
    assert_eq!(again, vec![d, d + ms(100), d + ms(200)]);

    // A slow network (1.5 s one way): 2 × 3 s is capped at 2 s.
    let mut sim = fixed(&[Live, Dead, Dead]);
    sim.latency = ms(1_500);
    assert!(connect(&mut sim));
    sim.script.reach.insert(server_addr(1), Dead);
    let before = starts(&sim).len();
    drop_and_reconnect(&mut sim);
    let again: Vec<Duration> = starts(&sim)[before..].iter().map(|s| s.0).collect();
    assert_eq!(again[1] - again[0], secs(2));
}

#[test]
fn resolved_ipv6_and_ipv4_addresses_are_interleaved() {
    let addrs = [v6(1), v6(2), v6(3), server_addr(1), server_addr(2)];
    for seed in 0..10 {
        let mut sim = resolved(&addrs, seed);
        for a in addrs {
            sim.script.reach.insert(a, Dead);
        }
        connect(&mut sim);
        let families: Vec<bool> = starts(&sim).iter().map(|s| s.1.is_ipv6()).collect();
        assert_eq!(families.len(), 5);
        let first = families[0];
        let expect: Vec<bool> = if first {
            vec![true, false, true, false, true]
        } else {
            vec![false, true, false, true, true]
        };
        assert_eq!(families, expect, "seed {seed}");
    }
}

#[test]
fn equally_ranked_addresses_are_spread_at_random_but_replay_with_the_seed() {
    let addrs: Vec<IpPort> = (1..=4).map(server_addr).collect();
    let order = |seed| {
        let mut sim = resolved(&addrs, seed);
        for a in &addrs {
            sim.script.reach.insert(*a, Dead);
        }
        connect(&mut sim);
        starts(&sim).iter().map(|s| s.1).collect::<Vec<_>>()
    };
    assert_eq!(order(5), order(5));
    let firsts: BTreeSet<IpPort> = (0..30).map(|s| order(s)[0]).collect();
    assert!(firsts.len() >= 3, "first choices: {firsts:?}");
}

#[test]
fn a_failed_address_ranks_after_a_good_one_on_the_next_cycle() {
    let (bad, good) = (server_addr(1), server_addr(2));
    for seed in 0..10 {
        let mut sim = resolved(&[bad, good], seed);
        sim.script.reach.insert(bad, Refused);
        assert!(connect(&mut sim));
        let before = starts(&sim).len();
        drop_and_reconnect(&mut sim);
        assert_eq!(starts(&sim)[before].1, good, "seed {seed}");
    }
}

/// A sim whose two resolved addresses refused three connect cycles in a row: both banned.
fn both_banned() -> (Sim, IpPort, IpPort) {
    let (a, b) = (server_addr(1), server_addr(2));
    let mut sim = resolved(&[a, b], 1);
    sim.script.reach.insert(a, Refused);
    sim.script.reach.insert(b, Refused);
    // Three failed cycles, 11 s apart (a failure is recorded at most once per 10 s).
    for _ in 0..3 {
        connect(&mut sim);
        sim.run_for(secs(11));
    }
    assert!(sim.engine.is_banned(sim.now, a));
    assert!(sim.engine.is_banned(sim.now, b));
    (sim, a, b)
}

#[test]
fn three_failures_ban_an_address_until_the_ban_expires_or_the_network_changes() {
    let (mut sim, a, b) = both_banned();
    // Both banned and no backup: Phobos still tries them (Mars would fail with no address,
    // see `mars_classic_fails_with_no_address_when_every_address_is_banned`).
    let before = starts(&sim).len();
    connect(&mut sim);
    assert_eq!(
        starts(&sim).len(),
        before + 2,
        "last resort: the banned ones"
    );
    // That was a's 4th failure in a row: banned for 12 min from it (6 min per failure from
    // the 3rd on), and not a moment longer.
    let last_fail = sim
        .events
        .iter()
        .filter(|(_, e)| matches!(e, Event::AddrOutcome { addr, success: false, .. } if *addr == a))
        .map(|(t, _)| *t)
        .last()
        .unwrap();
    let ends = last_fail + secs(12 * 60);
    assert!(sim.engine.is_banned(ends - ms(1), a));
    assert!(!sim.engine.is_banned(ends, a));

    // Banned again; a network change lifts the bans and reconnects at once.
    sim.script.reach.insert(b, Live);
    for _ in 0..3 {
        sim.run_for(secs(11));
        sim.engine.connect_link(sim.now, LINK);
        sim.drain();
        sim.run_for(ms(500));
        if let Some(c) = sim.open_conns().first().copied() {
            sim.server_close(c);
            sim.run_for(ms(100));
        }
    }
    sim.engine
        .set_network(sim.now, NetKind::Mobile, "mobile_46000");
    sim.drain();
    assert!(!sim.engine.is_banned(sim.now, a));
    let t = sim.elapsed();
    sim.run_for(ms(100));
    // Resolution takes 10 ms in this sim; then both addresses race again.
    let after: Vec<Duration> = starts(&sim)
        .into_iter()
        .filter(|s| s.0 >= t)
        .map(|s| s.0)
        .collect();
    assert_eq!(after.first(), Some(&(t + ms(10))), "re-raced at once");
}

/// Mars's `RedoTasks` runs `ClearCache` (§3.3, §11.6): the app calls it after changing or
/// repairing its servers, and bans of up to 30 min must not outlive that.
#[test]
fn redo_tasks_lifts_address_and_server_bans() {
    let (mut sim, a, b) = both_banned();
    let c = server_addr(3);
    sim.engine.ban_server(sim.now, c.ip);
    assert!(sim.engine.is_banned(sim.now, c));
    sim.engine.redo_tasks(sim.now);
    sim.drain();
    assert!(!sim.engine.is_banned(sim.now, a));
    assert!(!sim.engine.is_banned(sim.now, b));
    assert!(!sim.engine.is_banned(sim.now, c));
}

#[test]
fn mars_classic_fails_with_no_address_when_every_address_is_banned() {
    let (a, b) = (server_addr(1), server_addr(2));
    let cfg = Config::builder(Arc::new(MarsCodec::default()))
        .link(LinkConfig::new(LINK).hosts(["h"]).ports([8080]))
        .connect_profile(ConnectProfile::MarsClassic)
        .build()
        .unwrap();
    let mut sim = Sim::with_config(cfg);
    sim.resolved = [a, b]
        .iter()
        .map(|x| ResolvedAddr {
            ip: x.ip,
            port: None,
            source: AddrSource::NewDns,
        })
        .collect();
    sim.script.reach.insert(a, Refused);
    sim.script.reach.insert(b, Refused);
    for _ in 0..3 {
        connect(&mut sim);
        sim.run_for(secs(11));
    }
    let before = starts(&sim).len();
    sim.events.clear();
    connect(&mut sim);
    assert_eq!(starts(&sim).len(), before);
    let reason = sim.events.iter().find_map(|(_, e)| match e {
        Event::LinkStatus {
            status: LinkStatus::ConnectFailed,
            reason,
            ..
        } => reason.clone(),
        _ => None,
    });
    assert_eq!(reason, Some(LinkError::NoAddress));
}

#[test]
fn the_source_chain_falls_through_on_timeout_and_appends_backups() {
    let backup = server_addr(9);
    let dns = server_addr(1);
    let cfg = Config::builder(Arc::new(MarsCodec::default()))
        .link(LinkConfig::new(LINK).hosts(["h"]).ports([8080]))
        .ip_source(SourceSpec::primary(secs(2)))
        .ip_source(SourceSpec::primary(secs(2)))
        .ip_source(SourceSpec::backup(secs(2)))
        .build()
        .unwrap();
    let mut sim = Sim::with_config(cfg);
    let tag = |a: IpPort, source| ResolvedAddr {
        ip: a.ip,
        port: None,
        source,
    };
    sim.source_answers.insert(0, None); // app DNS never answers
    sim.source_answers
        .insert(1, Some(vec![tag(dns, AddrSource::SystemDns)]));
    sim.source_answers
        .insert(2, Some(vec![tag(backup, AddrSource::Backup)]));
    sim.script.reach.insert(dns, Refused);
    assert!(connect(&mut sim));
    let asked: Vec<(Duration, usize)> = sim
        .actions
        .iter()
        .filter_map(|(t, a)| match a {
            Action::Resolve { source, .. } => Some((t.duration_since(sim.t0), *source)),
            _ => None,
        })
        .collect();
    assert_eq!(asked, vec![(ms(0), 0), (secs(2), 1), (ms(2_010), 2)]);
    let tried: Vec<IpPort> = starts(&sim).iter().map(|s| s.1).collect();
    assert_eq!(tried, vec![dns, backup], "backups go last");
    assert_eq!(sim.engine.connected_addr(LINK), Some(backup));
    let r = &reports(&sim)[0];
    assert_eq!(r.attempts[1].source, AddrSource::Backup);
    assert_eq!(r.connected_after, Some(ms(2_020 + 40 + 40)));
}

#[test]
fn mars_classic_keeps_mars_numbers_for_the_same_addresses() {
    let addrs: Vec<IpPort> = (1..=3).map(server_addr).collect();
    let cfg = Config::builder(Arc::new(MarsCodec::default()))
        .link(LinkConfig::new(LINK).addrs(addrs.iter().copied()))
        .connect_profile(ConnectProfile::MarsClassic)
        .build()
        .unwrap();
    let mut sim = Sim::with_config(cfg);
    sim.script.reach.insert(addrs[0], Dead);
    sim.script.reach.insert(addrs[1], Refused);
    assert!(connect(&mut sim));
    let times: Vec<Duration> = starts(&sim).iter().map(|s| s.0).collect();
    // A refusal does not start the next address while another attempt is in flight.
    assert_eq!(times, vec![ms(0), ms(2_500), ms(5_000)]);
    assert_eq!(reports(&sim)[0].profile, ConnectProfile::MarsClassic);
}

#[test]
fn a_repeated_fixed_address_is_dialled_once_a_cycle() {
    // Before, each repeat was dialled again in the same cycle, a stagger later, and took a
    // place the next address should have had.
    let (a, b) = (server_addr(1), server_addr(2));
    let mut link = LinkConfig::new(LINK).addrs([a, a, a, b]).main();
    link.max_addrs = 2;
    let cfg = Config::builder(Arc::new(MarsCodec::default()))
        .link(link)
        .seed(42)
        .build()
        .unwrap();
    let mut sim = Sim::with_config(cfg);
    sim.script.reach.insert(a, Dead);
    sim.script.reach.insert(b, Live);
    assert!(connect(&mut sim));
    let dialled: Vec<IpPort> = sim
        .actions
        .iter()
        .filter_map(|(_, act)| match act {
            Action::Connect { addr, .. } => Some(*addr),
            _ => None,
        })
        .collect();
    assert_eq!(dialled, [a, b]);
}

#[test]
fn a_fixed_address_no_connection_can_be_made_to_is_refused_by_the_config() {
    // Before, `0.0.0.0:p` (which Linux connects to this host) and `ip:0` were dialled.
    for bad in [
        IpPort::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 8080),
        IpPort::new(server_addr(1).ip, 0),
        IpPort::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 8080),
        IpPort::new("::ffff:0.0.0.0".parse().unwrap(), 8080),
    ] {
        let err = Config::builder(Arc::new(MarsCodec::default()))
            .link(LinkConfig::new(LINK).addrs([server_addr(2), bad]))
            .build()
            .unwrap_err();
        assert_eq!(err, crate::ConfigError::Undialable(LINK.to_owned(), bad));
        assert!(err.to_string().contains(&bad.to_string()), "{err}");
    }
}

#[test]
fn a_connect_reported_after_its_deadline_does_not_win() {
    // A driver that wakes late finds the connect and the deadline ready together. Before,
    // the connect won when the driver took it first.
    let cfg = super::harness::config_with(&[server_addr(1)])
        .build()
        .unwrap();
    let t0 = crate::tests::epoch::epoch();
    let mut engine = crate::Engine::new(cfg, t0).unwrap();
    engine.connect_link(t0, LINK);
    let attempt = std::iter::from_fn(|| engine.poll_action())
        .find_map(|a| match a {
            Action::Connect { attempt, .. } => Some(attempt),
            _ => None,
        })
        .unwrap();
    let late = t0 + secs(11);
    engine.handle_connected(late, attempt);
    engine.handle_timeout(late);
    assert!(!engine.is_connected(LINK));
    let aborted = std::iter::from_fn(|| engine.poll_action())
        .any(|a| matches!(a, Action::Abort { attempt: a } if a == attempt));
    assert!(aborted, "the late connection is closed");
}
