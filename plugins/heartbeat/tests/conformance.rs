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
