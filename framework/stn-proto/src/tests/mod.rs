//! Virtual-time scenario tests of the engine: a fake server over a simulated link, time
//! jumping from deadline to deadline. The numbers are the spec's (§6, §7.9, §9, §13, §14,
//! §20); where Mars is late because of its 1 s loop, these tests expect the exact deadline.

#[path = "../../testutil/epoch.rs"]
pub(crate) mod epoch;
mod harness;

mod admission;
mod batch;
mod config;
mod faults;
mod heartbeat;
mod lane;
mod limits;
mod links;
mod matrix;
mod panics;
mod props;
mod racing;
mod reconnect;
mod recovery;
mod short;
mod timeouts;
mod uplink;
mod zombies;

/// A proptest config of `cases` cases, or of `PHOBOS_PROPTEST_CASES` when it is set (for
/// longer runs by hand).
pub(crate) fn proptest_config(cases: u32) -> proptest::prelude::ProptestConfig {
    let cases = std::env::var("PHOBOS_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    proptest::prelude::ProptestConfig::with_cases(cases)
}
