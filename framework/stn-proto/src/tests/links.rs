//! The connect race (§9), resolution, link status reports and several named links.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use phobos_codec_mars::MarsCodec;
use phobos_plugin_api::{AddrSource, CmdId, IpPort, ResolvedAddr, Seq};

use super::harness::{config_with, ms, secs, server_addr, Reach, Sim};
use crate::{
    Action, Config, ConnectProfile, DialFailure, Event, LinkConfig, LinkError, LinkStatus,
    TaskError, TaskSpec,
};

fn connected_at(sim: &mut Sim) -> Option<Duration> {
    sim.engine.connect_link(sim.now, "default-longlink");
    sim.drain();
    let ok = sim.run_until(secs(60), |s| s.engine.is_connected("default-longlink"));
    ok.then(|| sim.elapsed())
}

fn race(reach: &[Reach], max_addrs: usize) -> (Sim, Option<Duration>) {
    let addrs: Vec<IpPort> = (1..=reach.len() as u8).map(server_addr).collect();
    let mut link = LinkConfig::new("default-longlink").addrs(addrs.iter().copied());
    link.max_addrs = max_addrs;
    let cfg = Config::builder(Arc::new(MarsCodec::default()))
        .link(link)
        .connect_profile(ConnectProfile::MarsClassic)
        .build()
        .unwrap();
    let mut sim = Sim::with_config(cfg);
    for (a, r) in addrs.iter().zip(reach) {
        sim.script.reach.insert(*a, *r);
    }
    let at = connected_at(&mut sim);
    (sim, at)
}

use Reach::{Accept as Live, Blackhole as Dead, Refuse as Refused};

#[test]
fn race_reaches_a_live_third_address_at_five_seconds() {
    let (sim, at) = race(&[Dead, Dead, Live], 5);
    assert_eq!(at, Some(ms(5_040)));
    assert_eq!(
        sim.engine.connected_addr("default-longlink"),
        Some(server_addr(3))
    );
    // The two silent attempts are aborted when the third wins.
    let aborts = sim.action_times(|a| matches!(a, Action::Abort { .. }));
    assert_eq!(aborts, vec![ms(5_040), ms(5_040)]);
}

#[test]
fn refused_addresses_do_not_cost_a_race_step() {
    let (_, at) = race(&[Refused, Refused, Live], 5);
    assert_eq!(at, Some(ms(120)), "Mars takes 5.0 s here");
}

#[test]
fn three_silent_addresses_delay_the_fourth_until_the_first_times_out() {
    let (_, at) = race(&[Dead, Dead, Dead, Live], 5);
    assert_eq!(at, Some(ms(10_040)), "Mars: 15.0 s (late expiry quirk)");
    let (_, at) = race(&[Dead, Dead, Dead, Dead, Dead, Live], 6);
    assert_eq!(at, Some(ms(15_040)), "Mars: 20.0 s");
}

#[test]
fn five_silent_addresses_fail_the_cycle_at_22_5_seconds() {
    let (sim, at) = race(&[Dead; 5], 5);
    assert_eq!(at, None);
    let failed: Vec<_> = sim
        .events
        .iter()
        .filter_map(|(t, e)| match e {
            Event::LinkStatus {
                status: LinkStatus::ConnectFailed,
                reason,
                ..
            } => Some((t.duration_since(sim.t0), reason.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(failed[0], (ms(22_500), Some(LinkError::ConnectTimeout)));
    let fails = sim
        .events
        .iter()
        .filter(|(_, e)| matches!(e, Event::AddrOutcome { success: false, .. }))
        .count();
    assert!(fails >= 5, "every silent address is reported failed");
}

#[test]
fn hosts_are_resolved_and_combined_with_every_port() {
    let cfg = Config::builder(Arc::new(MarsCodec::default()))
        .link(
            LinkConfig::new("default-longlink")
                .hosts(["long.example"])
                .ports([8080, 443]),
        )
        .build()
        .unwrap();
    let mut sim = Sim::with_config(cfg);
    let ip = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    sim.script
        .reach
        .insert(IpPort::new(ip, 8080), Reach::Refuse);
    let id = sim.start(TaskSpec::new(CmdId(1), &b"x"[..]));
    let (at, end) = sim.run_until_end(id, secs(5));
    assert!(end.outcome.is_ok());
    assert_eq!(end.profile.addr, Some(IpPort::new(ip, 443)));
    // The two ports of one IP are equally ranked, so either goes first (seeded).
    let first = sim.actions.iter().find_map(|(_, a)| match a {
        Action::Connect { addr, .. } => Some(*addr),
        _ => None,
    });
    if first == Some(IpPort::new(ip, 8080)) {
        // resolve 10 ms, refused 40 ms, second port 40 ms, request 45 ms.
        assert_eq!(at, ms(135));
    } else {
        assert_eq!(at, ms(95));
    }
    let resolves: Vec<_> = sim
        .actions
        .iter()
        .filter_map(|(_, a)| match a {
            Action::Resolve { host, source, .. } => Some((host.clone(), *source)),
            _ => None,
        })
        .collect();
    assert_eq!(resolves, vec![("long.example".to_owned(), 0)]);
}

#[test]
fn no_address_or_a_silent_resolver_fails_the_cycle_with_no_address() {
    let cfg = || {
        Config::builder(Arc::new(MarsCodec::default()))
            .link(LinkConfig::new("default-longlink").hosts(["h"]).ports([1]))
            .build()
            .unwrap()
    };
    let mut sim = Sim::with_config(cfg());
    sim.resolved.clear();
    let id = sim.start(TaskSpec::new(CmdId(1), &b"x"[..]).with_retry_count(0));
    let (at, end) = sim.run_until_end(id, secs(10));
    assert_eq!(at, ms(10));
    assert_eq!(end.outcome, Err(TaskError::Dial(DialFailure::NoAddress)));
    assert_eq!(end.outcome.unwrap_err().mars_code(), (3, -10606));

    let mut sim = Sim::with_config(cfg());
    sim.resolve_silent = true;
    let id = sim.start(TaskSpec::new(CmdId(1), &b"x"[..]).with_retry_count(0));
    let (at, _) = sim.run_until_end(id, secs(10));
    assert_eq!(
        at,
        secs(2),
        "one implicit source, limited by the resolve timeout"
    );
    // The core tells the driver to stop the call it no longer waits for.
    let cancels: Vec<_> = sim
        .actions
        .iter()
        .filter_map(|(t, a)| match a {
            Action::CancelResolve { host, source, .. } => Some((*t, host.clone(), *source)),
            _ => None,
        })
        .collect();
    assert_eq!(cancels.len(), 1, "{cancels:?}");
    assert_eq!(cancels[0].0, sim.t0 + secs(2));
    assert_eq!(cancels[0].2, 0);
}

#[test]
fn link_status_reports_each_transition_with_its_reason() {
    let mut sim = Sim::new();
    sim.engine.connect_link(sim.now, "default-longlink");
    sim.drain();
    sim.run_for(secs(1));
    let conn = sim.open_conns()[0];
    sim.server_close(conn);
    sim.run_for(secs(1));
    let statuses: Vec<_> = sim
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::LinkStatus { status, reason, .. } => Some((*status, reason.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        statuses,
        vec![
            (LinkStatus::Connecting, None),
            (LinkStatus::Connected(server_addr(1)), None),
            (
                LinkStatus::Disconnected,
                Some(LinkError::Socket(crate::SocketFailure::RemoteClosed))
            ),
        ]
    );
}

#[test]
fn several_named_links_run_side_by_side() {
    let cfg = config_with(&[server_addr(1)])
        .link(LinkConfig::new("extra").addrs([server_addr(2)]))
        .build()
        .unwrap();
    let mut sim = Sim::with_config(cfg);
    let a = sim.start(TaskSpec::new(CmdId(1), &b"a"[..]));
    let b = sim.start(TaskSpec::new(CmdId(1), &b"b"[..]).with_link("extra"));
    sim.run_for(secs(1));
    assert_eq!(sim.ends[&a].1.profile.addr, Some(server_addr(1)));
    assert_eq!(sim.ends[&b].1.profile.addr, Some(server_addr(2)));
    assert_eq!(
        sim.ends[&b].1.profile.link.as_deref(),
        Some("extra"),
        "profile names the link"
    );
    // Dropping one link leaves the other alone.
    let extra_conn = sim.open_conns()[1];
    sim.server_close(extra_conn);
    sim.run_for(secs(1));
    assert!(sim.engine.is_connected("default-longlink"));
    assert!(!sim.engine.is_connected("extra"));
    let push = sim.frame(CmdId(5), Seq(0), b"p");
    let main_conn = sim.open_conns()[0];
    sim.server_send(main_conn, push);
    sim.run_for(secs(1));
    assert!(sim.events.iter().any(|(_, e)| matches!(
        e,
        Event::Push { link, .. } if link.as_str() == "default-longlink"
    )));
}

#[test]
fn late_input_from_an_old_connection_is_ignored() {
    let mut sim = Sim::new();
    sim.engine.connect_link(sim.now, "default-longlink");
    sim.drain();
    sim.run_for(secs(1));
    let old = sim.open_conns()[0];
    sim.engine.redo_tasks(sim.now);
    sim.drain();
    sim.run_for(secs(1));
    // Garbage on the dropped connection must not reach the new one.
    sim.engine.handle_bytes(sim.now, old, &[0xFF; 40]);
    sim.engine
        .handle_closed(sim.now, old, crate::CloseCause::RemoteClosed);
    sim.drain();
    assert!(sim.engine.is_connected("default-longlink"));
    // A connect success for an attempt the core gave up is answered with an abort.
    sim.engine.handle_connected(sim.now, old);
    assert_eq!(
        sim.engine.poll_action(),
        Some(Action::Abort { attempt: old })
    );
}

#[test]
fn resolved_addresses_with_their_own_port_keep_it() {
    let cfg = Config::builder(Arc::new(MarsCodec::default()))
        .link(LinkConfig::new("default-longlink").hosts(["h"]).ports([1]))
        .build()
        .unwrap();
    let mut sim = Sim::with_config(cfg);
    sim.resolved = vec![ResolvedAddr {
        ip: server_addr(9).ip,
        port: Some(8080),
        source: AddrSource::Debug,
    }];
    assert_eq!(connected_at(&mut sim), Some(ms(50)));
    assert_eq!(
        sim.engine.connected_addr("default-longlink"),
        Some(server_addr(9))
    );
}

#[test]
fn weak_network_is_flagged_after_a_fallback_address_and_lapses() {
    let (mut sim, at) = race(&[Dead, Live], 5);
    assert_eq!(at, Some(ms(2_540)));
    // Background: the detector only runs in the foreground.
    let bg = sim.start(TaskSpec::new(CmdId(1), &b"a"[..]));
    sim.run_for(secs(1));
    assert!(!sim.ends[&bg].1.profile.weak_network);

    let (mut sim, _) = {
        let addrs: Vec<IpPort> = (1..=2).map(server_addr).collect();
        let cfg = Config::builder(Arc::new(MarsCodec::default()))
            .link(LinkConfig::new("default-longlink").addrs(addrs.iter().copied()))
            .build()
            .unwrap();
        let mut sim = Sim::with_config(cfg);
        sim.script.reach.insert(server_addr(1), Reach::Blackhole);
        sim.foreground(true);
        let at = connected_at(&mut sim);
        (sim, at)
    };
    // Won by the second address: weak.
    let a = sim.start(TaskSpec::new(CmdId(1), &b"a"[..]));
    sim.run_for(secs(1));
    assert!(sim.ends[&a].1.profile.weak_network);
    // A fast task 8 s after the mark relieves it.
    sim.run_for(secs(8));
    let b = sim.start(TaskSpec::new(CmdId(1), &b"b"[..]));
    sim.run_for(secs(1));
    assert!(!sim.ends[&b].1.profile.weak_network);
}

/// A codec that never finds a frame: the receive buffer must not grow past the frame limit.
#[derive(Debug)]
struct Bottomless;

impl phobos_plugin_api::PacketCodec for Bottomless {
    fn name(&self) -> &str {
        "bottomless"
    }
    fn encode(
        &self,
        head: phobos_plugin_api::FrameHead,
        body: &[u8],
        ext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), phobos_plugin_api::EncodeError> {
        MarsCodec::default().encode(head, body, ext, out)
    }
    fn decode(
        &self,
        _buf: &[u8],
    ) -> Result<phobos_plugin_api::Decoded, phobos_plugin_api::DecodeError> {
        Ok(phobos_plugin_api::Decoded::Incomplete {
            head: None,
            needed: 20,
        })
    }
    fn classify(&self, h: &phobos_plugin_api::FrameHead) -> phobos_plugin_api::FrameKind {
        phobos_plugin_api::FrameKind::Response(h.seq)
    }
    fn max_frame_len(&self) -> usize {
        1_000
    }
}

#[test]
fn a_codec_that_never_completes_cannot_grow_the_buffer_past_its_limit() {
    let cfg = Config::builder(Arc::new(Bottomless))
        .link(LinkConfig::new("default-longlink").addrs([server_addr(1)]))
        .build()
        .unwrap();
    let mut sim = Sim::with_config(cfg);
    sim.engine.connect_link(sim.now, "default-longlink");
    sim.drain();
    sim.run_for(ms(100));
    let conn = sim.open_conns()[0];
    for _ in 0..3 {
        sim.server_send(conn, vec![0; 400]);
    }
    sim.run_for(ms(100));
    assert!(sim.events.iter().any(|(_, e)| matches!(
        e,
        Event::LinkStatus {
            reason: Some(LinkError::Decode(
                phobos_plugin_api::DecodeError::TooLarge { .. }
            )),
            ..
        }
    )));
}
