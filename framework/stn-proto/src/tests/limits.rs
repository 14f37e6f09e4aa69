//! The mobile flow limit (§13.2) through the engine, and both limits on the short link. The
//! long link's frequency-limit scenario is in
//! `admission.rs`; the limiters' arithmetic is unit-tested in `engine/limits.rs`.

use std::time::{Duration, Instant};

use bytes::Bytes;
use phobos_plugin_api::{CmdId, NetKind, TaskId};

use super::harness::{config_with, server_addr};
use crate::{Action, Engine, Event, LimitKind, TaskError, TaskSpec};

/// An engine connected at `t0`, on `net`. Drives it by hand (no simulated server) so the
/// megabyte frames are dropped as soon as they are produced.
fn connected(t0: Instant, net: NetKind) -> Engine {
    let mut e = Engine::new(config_with(&[server_addr(1)]).build().unwrap(), t0).unwrap();
    e.set_network(t0, net, "label");
    connect(&mut e, t0);
    e
}

/// Connects `e`'s link at `t0` and drops what that produced.
fn connect(e: &mut Engine, t0: Instant) {
    e.connect_link(t0, "default-longlink");
    let attempt = std::iter::from_fn(|| e.poll_action())
        .find_map(|a| match a {
            Action::Connect { attempt, .. } => Some(attempt),
            _ => None,
        })
        .unwrap();
    e.handle_connected(t0, attempt);
    while e.poll_action().is_some() {}
    while e.poll_event().is_some() {}
}

/// Starts `n` one-megabyte tasks at `now`; returns the ids refused by a limit.
fn start_megabytes(e: &mut Engine, now: Instant, n: usize) -> Vec<(TaskId, u64)> {
    let body = Bytes::from(vec![0u8; 1_000_000]);
    let mut limited = Vec::new();
    for _ in 0..n {
        let id = e.start_task(
            now,
            TaskSpec::new(CmdId(1), body.clone()).with_limits(true, false),
        );
        while e.poll_action().is_some() {}
        while let Some(ev) = e.poll_event() {
            match ev {
                Event::TaskLimited {
                    id: lid,
                    kind,
                    param,
                } => {
                    assert_eq!((lid, kind), (id, LimitKind::Flow));
                    limited.push((id, param));
                }
                Event::TaskEnded(end) => {
                    assert_eq!(end.outcome, Err(TaskError::Limited(LimitKind::Flow)));
                }
                _ => {}
            }
        }
    }
    limited
}

#[test]
fn mobile_flow_limit_refuses_past_eighty_mebibytes_and_drains_over_time() {
    let t0 = crate::tests::epoch::epoch();
    let mut e = connected(t0, NetKind::Mobile);
    // 83 × 1 MB fit in 80 MiB (83 886 080 B); the 84th does not.
    let limited = start_megabytes(&mut e, t0, 84);
    assert_eq!(limited.len(), 1);
    assert_eq!(limited[0].1, 1_000_000);
    // One hour later the bucket has drained.
    let later = t0 + Duration::from_secs(3_600);
    assert!(start_megabytes(&mut e, later, 1).is_empty());
}

#[test]
fn a_reset_starts_both_limits_records_over() {
    // Mars's Reset rebuilds the core that owns its anti-avalanche records. Before, a full
    // flow bucket and a body at its frequency limit stayed refused after a reset.
    let t0 = crate::tests::epoch::epoch();
    let mut e = connected(t0, NetKind::Mobile);
    assert_eq!(start_megabytes(&mut e, t0, 84).len(), 1);
    let small = Bytes::from_static(&[9u8; 128]);
    let mut frequency_refused = 0;
    for _ in 0..106 {
        e.start_task(t0, TaskSpec::new(CmdId(1), small.clone()));
        while e.poll_action().is_some() {}
        while let Some(ev) = e.poll_event() {
            if let Event::TaskLimited { kind, .. } = ev {
                assert_eq!(kind, LimitKind::Frequency);
                frequency_refused += 1;
            }
        }
    }
    assert_eq!(frequency_refused, 1, "the 106th identical body is refused");
    e.reset(t0);
    while e.poll_action().is_some() {}
    while e.poll_event().is_some() {}
    // The limits apply as a request is sent: connect again.
    connect(&mut e, t0);
    assert!(
        start_megabytes(&mut e, t0, 1).is_empty(),
        "the flow bucket is empty"
    );
    let id = e.start_task(t0, TaskSpec::new(CmdId(1), small));
    while e.poll_action().is_some() {}
    while let Some(ev) = e.poll_event() {
        assert!(
            !matches!(ev, Event::TaskLimited { .. }),
            "task {id:?} limited after the reset"
        );
    }
}

#[test]
fn no_flow_limit_off_mobile() {
    let t0 = crate::tests::epoch::epoch();
    let mut e = connected(t0, NetKind::Wifi);
    assert!(start_megabytes(&mut e, t0, 100).is_empty());
}

/// Starts a short-link task with `body` and the given limits to a host of its own (so it
/// gets a place at once); returns the limit that refused it, if one did.
fn start_short(
    e: &mut Engine,
    now: Instant,
    i: usize,
    body: Bytes,
    flow: bool,
) -> Option<LimitKind> {
    let host = format!("10.1.{}.{}:80", i / 250, i % 250 + 1);
    let id = e.start_task(
        now,
        TaskSpec::new(CmdId(0), body)
            .with_channel(crate::ChannelSelect::Short)
            .with_short_link("/cgi", [host])
            .with_limits(flow, !flow),
    );
    while e.poll_action().is_some() {}
    let mut refused = None;
    while let Some(ev) = e.poll_event() {
        match ev {
            Event::TaskLimited { id: lid, kind, .. } => {
                assert_eq!(lid, id);
                refused = Some(kind);
            }
            Event::TaskEnded(end) => {
                assert_eq!(end.id, id);
                assert_eq!(
                    Some(end.outcome.unwrap_err()),
                    refused.map(TaskError::Limited)
                );
            }
            _ => {}
        }
    }
    refused
}

/// §13: the limits are checked after `Req2Buf` on the short link too.
#[test]
fn short_link_tasks_are_subject_to_both_limits() {
    let t0 = crate::tests::epoch::epoch();
    let mut e = Engine::new(config_with(&[server_addr(1)]).build().unwrap(), t0).unwrap();
    e.set_network(t0, NetKind::Mobile, "label");
    // Frequency: the 106th identical body within the hour is refused.
    let same = Bytes::from_static(b"the same body");
    let refused: Vec<usize> = (0..110)
        .filter(|&i| start_short(&mut e, t0, i, same.clone(), false).is_some())
        .collect();
    assert_eq!(refused, (105..110).collect::<Vec<_>>());
    // Flow, on mobile: 83 × 1 MB fit in 80 MiB, the 84th does not.
    let mb = Bytes::from(vec![0u8; 1_000_000]);
    let refused: Vec<Option<LimitKind>> = (0..84)
        .map(|i| start_short(&mut e, t0, 200 + i, mb.clone(), true))
        .collect();
    assert_eq!(refused[..83], [None; 83]);
    assert_eq!(refused[83], Some(LimitKind::Flow));
}
