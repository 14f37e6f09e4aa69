//! Conformance checks for [`HeartbeatPolicyFactory`], run by
//! [`heartbeat_conformance!`](crate::heartbeat_conformance).
//!
//! Policies are driven in virtual time: each check starts from one `Instant` and adds the
//! intervals the policy asks for, so no check sleeps. What the checks take as the contract:
//!
//! - Every interval a policy asks for is `None` (periodic heartbeats off) or within
//!   `(0, `[`MAX_REASONABLE_INTERVAL`]`]`, whatever happens: acks, timeouts, late timer
//!   firings, network changes, app activity changes.
//! - Fresh policies are independent: the first interval of a newly built policy does not
//!   depend on what other policies of the same factory went through (learnt state may change
//!   later intervals; Mars starts every connection at its minimum), and driving one policy
//!   does not change the next interval of another that has seen nothing.
//! - `export_state` → `import_state` into a fresh factory succeeds, exports the same text
//!   again, and policies built from both factories then ask for the same intervals.
//! - Importing corrupt state (garbage, truncations, damaged exports) never panics and leaves
//!   a factory whose policies still keep the interval bounds.

use std::time::{Duration, Instant};

use phobos_plugin_api::{HeartbeatContext, HeartbeatPolicy, HeartbeatPolicyFactory, NetKind};

use crate::rng::TestRng;

/// The longest interval the checks accept: one hour. (Mars's longest is 580 s.)
pub const MAX_REASONABLE_INTERVAL: Duration = Duration::from_secs(3600);

/// The contexts the checks use: inactive and active app, Wi-Fi, mobile, no network.
pub fn contexts() -> Vec<HeartbeatContext> {
    vec![
        ctx(NetKind::Wifi, "wifi_home", false),
        ctx(NetKind::Mobile, "mobile_46000", false),
        ctx(NetKind::Wifi, "wifi_home", true),
        ctx(NetKind::Other, "default", false),
        ctx(NetKind::None, "", false),
    ]
}

/// Every interval is `None` or within `(0, MAX_REASONABLE_INTERVAL]` over long runs of mixed
/// events, in every context of [`contexts`].
///
/// # Panics
///
/// On an interval out of bounds.
pub fn check_intervals_bounded(factory: &dyn HeartbeatPolicyFactory) {
    let t0 = Instant::now();
    for (i, c) in contexts().iter().enumerate() {
        drive(factory, t0, c, 400, i as u64, true);
    }
}

/// A fresh policy's first interval does not depend on other policies' history, and driving
/// one policy leaves another (untouched) policy's next interval as it was.
///
/// # Panics
///
/// On a difference.
pub fn check_fresh_policies_independent(factory: &dyn HeartbeatPolicyFactory) {
    let t0 = Instant::now();
    for c in contexts() {
        let mut idle = factory.build(t0, &c);
        let first = idle.next_interval(t0, &c);
        let later = drive(factory, t0, &c, 300, 11, false);
        let mut fresh = factory.build(later, &c);
        assert_eq!(
            fresh.next_interval(later, &c),
            first,
            "{}: first interval of a fresh policy changed after another policy ran ({c:?})",
            factory.name()
        );
        assert_eq!(
            idle.next_interval(later, &c),
            first,
            "{}: an idle policy's interval changed when another policy ran ({c:?})",
            factory.name()
        );
    }
}

/// State exported by `a` (after learning on two networks) imports into the fresh factory `b`,
/// exports back to the same text, and policies from `a` and `b` then ask for the same intervals.
/// A factory exporting nothing passes when `b` exports nothing too.
///
/// # Panics
///
/// On a difference.
pub fn check_state_round_trip(a: &dyn HeartbeatPolicyFactory, b: &dyn HeartbeatPolicyFactory) {
    let t0 = Instant::now();
    let cs = contexts();
    let mut t = t0;
    for (i, c) in cs.iter().enumerate() {
        t = drive(a, t, c, 120, 100 + i as u64, false);
    }
    let Some(state) = a.export_state() else {
        assert_eq!(b.export_state(), None, "{}: export differs", b.name());
        return;
    };
    assert!(
        b.import_state(&state),
        "{}: its own export was refused:\n{state}",
        b.name()
    );
    assert_eq!(
        b.export_state().as_deref(),
        Some(state.as_str()),
        "{}: re-export differs",
        b.name()
    );
    for c in &cs {
        let mut pa = a.build(t, c);
        let mut pb = b.build(t, c);
        let mut now = t;
        for step in 0..40 {
            let (ia, ib) = (pa.next_interval(now, c), pb.next_interval(now, c));
            assert_eq!(
                ia,
                ib,
                "{}: interval {step} differs after import ({c:?})",
                a.name()
            );
            now += ia.unwrap_or(Duration::from_secs(60));
            pa.on_ack(now, Duration::from_millis(80));
            pb.on_ack(now, Duration::from_millis(80));
        }
    }
}

/// Importing garbage, truncated and damaged exports never panics, and the factory's policies
/// keep the interval bounds afterwards.
///
/// # Panics
///
/// On a panic inside the factory or an interval out of bounds.
pub fn check_corrupt_state(factory: &dyn HeartbeatPolicyFactory) {
    let t0 = Instant::now();
    let mut t = t0;
    for (i, c) in contexts().iter().enumerate() {
        t = drive(factory, t, c, 60, 200 + i as u64, false);
    }
    let good = factory.export_state().unwrap_or_default();
    let mut inputs: Vec<String> = [
        "",
        "\0\0\0\0",
        "garbage",
        "[",
        "[]",
        "[wifi_x]\ncurHeart=\nstable=maybe",
        "[wifi_x]\ncurHeart=-1\nmodifyTime=99999999999999999999",
        "[wifi_x]\ncurHeart=18446744073709551615\nmodifyTime=0",
        "{\"json\": true}",
        "=\n==\n[=]\n",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    inputs.push("[a]\n".repeat(1000));
    inputs.push("x".repeat(100_000));
    let mut rng = TestRng::new(0xC0FF);
    for _ in 0..40 {
        let mut bytes = good.clone().into_bytes();
        if !bytes.is_empty() {
            bytes.truncate(rng.below(bytes.len() + 1));
            for _ in 0..rng.below(4) {
                if bytes.is_empty() {
                    break;
                }
                let at = rng.below(bytes.len());
                bytes[at] = b"0123456789=[]\n-xA\xFF"[rng.below(18)];
            }
        }
        inputs.push(String::from_utf8_lossy(&bytes).into_owned());
    }
    for input in &inputs {
        let _ = factory.import_state(input);
        let _ = factory.export_state();
        for c in contexts() {
            let mut p = factory.build(t, &c);
            let mut now = t;
            for _ in 0..10 {
                let interval = p.next_interval(now, &c);
                check_bounds(factory, interval, &c);
                now += interval.unwrap_or(Duration::from_secs(60));
                p.on_ack(now, Duration::from_millis(50));
            }
        }
    }
}

/// Runs `links` heartbeats through policies of `factory` starting at `start`, checking bounds;
/// with `mixed`, also injects timeouts (with a rebuilt policy), late firings, network and
/// activity changes. Returns the virtual time reached.
fn drive(
    factory: &dyn HeartbeatPolicyFactory,
    start: Instant,
    c: &HeartbeatContext,
    beats: usize,
    seed: u64,
    mixed: bool,
) -> Instant {
    let mut rng = TestRng::new(seed);
    let mut now = start;
    let mut c = c.clone();
    let mut policy: Box<dyn HeartbeatPolicy> = factory.build(now, &c);
    for _ in 0..beats {
        let interval = policy.next_interval(now, &c);
        check_bounds(factory, interval, &c);
        let Some(interval) = interval else {
            now += Duration::from_secs(60);
            continue;
        };
        now += interval;
        if !mixed {
            policy.on_ack(now, Duration::from_millis(100));
            continue;
        }
        match rng.below(20) {
            0 => {
                policy.on_timeout(now);
                policy = factory.build(now, &c);
            }
            1 => {
                let late = Duration::from_secs(rng.below(3600) as u64);
                now += late;
                policy.on_fired_late(now, late);
                policy.on_ack(now, Duration::from_millis(300));
            }
            2 => {
                c.app_active = !c.app_active;
                policy.on_network_change(now, &c);
            }
            3 => {
                policy.on_disconnect(now);
                policy = factory.build(now, &c);
            }
            _ => policy.on_ack(now, Duration::from_millis(rng.below(2000) as u64)),
        }
    }
    policy.on_disconnect(now);
    now
}

fn check_bounds(
    factory: &dyn HeartbeatPolicyFactory,
    interval: Option<Duration>,
    c: &HeartbeatContext,
) {
    if let Some(d) = interval {
        assert!(
            !d.is_zero() && d <= MAX_REASONABLE_INTERVAL,
            "{}: interval {d:?} out of bounds ({c:?})",
            factory.name()
        );
    }
}

fn ctx(net: NetKind, label: &str, app_active: bool) -> HeartbeatContext {
    HeartbeatContext {
        net,
        net_label: label.to_owned(),
        app_active,
    }
}

/// Asserts that two factories (fresh, with no learnt state) behave identically: the same
/// name, the same interval at every step of the same event script in every context of
/// [`contexts`], and the same exported state afterwards.
///
/// Meant for comparing a plugin used in-process with the same plugin loaded from its library.
/// Factories that read a wall clock should be given clocks showing the same time.
///
/// # Panics
///
/// At the first difference, naming it.
pub fn assert_factories_identical(a: &dyn HeartbeatPolicyFactory, b: &dyn HeartbeatPolicyFactory) {
    assert_eq!(a.name(), b.name(), "name");
    let t0 = Instant::now();
    for (i, c) in contexts().iter().enumerate() {
        let mut rng = TestRng::new(0x1D00 + i as u64);
        let mut c = c.clone();
        let mut now = t0;
        let (mut pa, mut pb) = (a.build(now, &c), b.build(now, &c));
        for step in 0..200 {
            let (ia, ib) = (pa.next_interval(now, &c), pb.next_interval(now, &c));
            assert_eq!(ia, ib, "interval at step {step} in {c:?}");
            now += ia.unwrap_or(Duration::from_secs(60));
            match rng.below(16) {
                0 => {
                    pa.on_timeout(now);
                    pb.on_timeout(now);
                    pa = a.build(now, &c);
                    pb = b.build(now, &c);
                }
                1 => {
                    let late = Duration::from_secs(rng.below(1800) as u64);
                    pa.on_fired_late(now, late);
                    pb.on_fired_late(now, late);
                }
                2 => {
                    c.app_active = !c.app_active;
                    pa.on_network_change(now, &c);
                    pb.on_network_change(now, &c);
                }
                3 => {
                    pa.on_disconnect(now);
                    pb.on_disconnect(now);
                    pa = a.build(now, &c);
                    pb = b.build(now, &c);
                }
                _ => {
                    let rtt = Duration::from_millis(rng.below(900) as u64);
                    pa.on_ack(now, rtt);
                    pb.on_ack(now, rtt);
                }
            }
        }
    }
    assert_eq!(a.export_state(), b.export_state(), "exported state");
}
