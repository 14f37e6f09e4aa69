//! The connect race with dead addresses first, measured in network namespaces (issue #5).
//! Asserts which addresses are tried, in which order and how each attempt ends, and that
//! both profiles connect; timings are printed, never asserted.

use std::time::Duration;

use phobos_lab::contender::Contender;
use phobos_lab::race::{markdown_table, run_race, DeadKind, RaceResult};
use phobos_lab::recording::AttemptOutcome;

/// Generous: Mars needs 10–15 s with three blackholed addresses first.
const LIMIT: Duration = Duration::from_secs(60);

fn check(r: &RaceResult, dead_outcome: AttemptOutcome) {
    let dead = r.dead;
    assert!(r.time_to_connected.is_some(), "{r:?}");
    assert!(
        r.task_ok,
        "an echo task succeeds over the raced link: {r:?}"
    );
    // Every dead address is tried once, in the given order, then the first live one, which
    // wins; nothing is tried twice.
    assert_eq!(r.tried(), r.addrs[..=dead].to_vec(), "{r:?}");
    for a in &r.attempts[..dead] {
        assert_eq!(a.outcome, dead_outcome, "{r:?}");
    }
    assert_eq!(r.attempts[dead].outcome, AttemptOutcome::Connected, "{r:?}");
    // The client's own connect-cycle report names the same attempts, the live one winning.
    let cycle = r
        .cycle
        .as_ref()
        .expect("the connected event carries its cycle");
    let reported: Vec<std::net::SocketAddr> =
        cycle.attempts.iter().map(|a| a.addr.into()).collect();
    assert_eq!(reported, r.tried(), "{r:?}");
    assert_eq!(
        cycle.attempts.last().map(|a| a.outcome),
        Some(phobos_stn_proto::AttemptOutcome::Won),
        "{r:?}"
    );
    assert!(cycle.connected_after.is_some(), "{r:?}");
    // Starts are staggered in order.
    assert!(
        r.attempts.windows(2).all(|w| w[0].started <= w[1].started),
        "{r:?}"
    );
}

fn race(contender: Contender, kind: DeadKind) -> RaceResult {
    let r = run_race(contender, kind, 3, 4, LIMIT).unwrap();
    println!("{}", markdown_table(std::slice::from_ref(&r)));
    r
}

#[test]
fn three_blackholed_addresses_then_a_live_one_connect_in_order_with_both_profiles() {
    if !phobos_lab::lab_available() {
        return;
    }
    let (phobos, mars) = std::thread::scope(|s| {
        let p = s.spawn(|| race(Contender::Phobos, DeadKind::Drop));
        let m = s.spawn(|| race(Contender::MarsClassic, DeadKind::Drop));
        (p.join().unwrap(), m.join().unwrap())
    });
    // A blackholed attempt never completes: the client abandons it (its own timeout, or
    // because another address won).
    check(&phobos, AttemptOutcome::Abandoned);
    check(&mars, AttemptOutcome::Abandoned);
}

#[test]
fn three_refusing_addresses_then_a_live_one_connect_in_order_with_both_profiles() {
    if !phobos_lab::lab_available() {
        return;
    }
    let (phobos, mars) = std::thread::scope(|s| {
        let p = s.spawn(|| race(Contender::Phobos, DeadKind::Reset));
        let m = s.spawn(|| race(Contender::MarsClassic, DeadKind::Reset));
        (p.join().unwrap(), m.join().unwrap())
    });
    check(&phobos, AttemptOutcome::Refused);
    check(&mars, AttemptOutcome::Refused);
}
