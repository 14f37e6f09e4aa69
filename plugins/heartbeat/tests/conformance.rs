//! The testkit's heartbeat conformance suite against both factories.

use std::sync::Arc;
use std::time::Duration;

use phobos_heartbeat::{FixedHeartbeat, SmartHeartbeat};

phobos_plugin_testkit::heartbeat_conformance!(
    fixed_default,
    || Arc::new(FixedHeartbeat::default())
);

phobos_plugin_testkit::heartbeat_conformance!(fixed_off, || Arc::new(
    FixedHeartbeat::with_interval(None).unwrap()
));

phobos_plugin_testkit::heartbeat_conformance!(fixed_30_s, || Arc::new(
    FixedHeartbeat::with_interval(Some(Duration::from_secs(30))).unwrap()
));

phobos_plugin_testkit::heartbeat_conformance!(smart, || Arc::new(SmartHeartbeat::default()));

#[test]
fn two_smart_factories_on_the_same_clock_behave_identically() {
    use phobos_heartbeat::{ManualClock, SmartHeartbeatConfig};

    let clock = ManualClock::at_unix_secs(1_764_115_200);
    let make = || {
        SmartHeartbeat::with_clock(SmartHeartbeatConfig::default(), Arc::new(clock.clone()))
            .unwrap()
    };
    phobos_plugin_testkit::heartbeat::assert_factories_identical(&make(), &make());
}

#[test]
#[should_panic(expected = "interval at step")]
fn fixed_factories_with_different_intervals_are_told_apart() {
    phobos_plugin_testkit::heartbeat::assert_factories_identical(
        &FixedHeartbeat::default(),
        &FixedHeartbeat::with_interval(Some(Duration::from_secs(30))).unwrap(),
    );
}

/// Only zero means "no periodic heartbeats": a sub-millisecond interval is refused as too
/// short, as 999 ms is, not rounded down to zero and taken for "off".
#[test]
fn a_sub_millisecond_interval_is_refused_not_taken_for_off() {
    use phobos_heartbeat::ConfigError;
    let tiny = Duration::from_micros(500);
    assert!(matches!(
        FixedHeartbeat::with_interval(Some(tiny)),
        Err(ConfigError::Interval { .. })
    ));
    assert!(matches!(
        SmartHeartbeat::default().force_interval(Some(Some(tiny))),
        Err(ConfigError::Interval { .. })
    ));
    assert_eq!(
        FixedHeartbeat::with_interval(Some(Duration::ZERO))
            .unwrap()
            .interval(),
        None
    );
}
