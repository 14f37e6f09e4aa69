//! Config validation: the bounds every setting must keep.

// Settings are changed one by one from the defaults, as an app changes them.
#![allow(clippy::field_reassign_with_default)]

use std::time::Duration;

use super::harness::{config_with, secs, server_addr, Answer, Sim};
use crate::{CmdId, ConfigError, Racing, Recovery, TaskSpec, Timing, MAX_DURATION_SETTING};

/// Every duration of `Timing`, `Racing` and `Recovery` set to `d`.
fn all_durations(d: Duration) -> (Timing, Racing, Recovery) {
    let mut t = Timing::default();
    t.connect_timeout = d;
    t.race_interval = d;
    t.resolve_timeout = d;
    t.retry_pause = d;
    t.first_packet = (d, d);
    t.first_packet_max = (d, d);
    t.first_packet_excellent = (d, d);
    t.queue_delay = (d, d);
    t.packet_to_packet = (d, d);
    t.heartbeat_reply_timeout = d;
    t.late_heartbeat_reply_timeout = d;
    t.late_heartbeat_threshold = d;
    t.reconnect_wake = d;
    t.inactive_after = d;
    t.zombie_min_age = d;
    t.signal_keep_period = d;
    t.signal_keep_time = d;
    t.auth_retry = d;
    t.auth_limit = d;
    t.timing_sync = (d, d, d);
    let mut r = Racing::default();
    r.stagger = d;
    r.stagger_min = d;
    r.stagger_max = d;
    let mut rec = Recovery::default();
    rec.probe_after = (d, d);
    rec.probe_timeout = (d, d);
    rec.min_attempt = d;
    rec.handshake_timeout = Some((d, d));
    (t, r, rec)
}

#[test]
fn a_duration_setting_beyond_a_year_is_refused_by_name() {
    // `Duration::MAX` (a natural "never") made the engine panic on `now + setting`.
    let mut t = Timing::default();
    t.connect_timeout = Duration::MAX;
    let e = config_with(&[server_addr(1)])
        .timing(t)
        .build()
        .unwrap_err();
    assert_eq!(e, ConfigError::TooLong("connect_timeout"));
    assert_eq!(e.to_string(), "connect_timeout must not exceed 365 days");

    let mut rec = Recovery::default();
    rec.probe_timeout.1 = MAX_DURATION_SETTING + Duration::from_nanos(1);
    let e = config_with(&[server_addr(1)])
        .recovery(rec)
        .build()
        .unwrap_err();
    assert_eq!(e, ConfigError::TooLong("recovery.probe_timeout"));

    let mut r = Racing::default();
    r.stagger_max = Duration::MAX;
    let e = config_with(&[server_addr(1)])
        .racing(r)
        .build()
        .unwrap_err();
    assert_eq!(e, ConfigError::TooLong("racing.stagger_max"));
}

#[test]
fn every_duration_at_the_longest_allowed_runs_tasks_without_overflow() {
    // Test builds check arithmetic overflow: sums and products of settings must stay in range.
    let (t, r, rec) = all_durations(MAX_DURATION_SETTING);
    let cfg = config_with(&[server_addr(1)])
        .timing(t)
        .racing(r)
        .recovery(rec)
        .build()
        .unwrap();
    let mut sim = Sim::with_config(cfg);
    let answered = sim.start(TaskSpec::new(CmdId(1), &b"x"[..]));
    let (_, end) = sim.run_until_end(answered, secs(10));
    assert!(end.outcome.is_ok(), "{:?}", end.outcome);
    sim.script.answer = Answer::Never;
    let unanswered = sim.start(TaskSpec::new(CmdId(1), &b"y"[..]));
    // Its default total timeout (Mars's formula) ends it, whatever the settings.
    let (_, end) = sim.run_until_end(unanswered, secs(120));
    assert!(end.outcome.is_err());
}
