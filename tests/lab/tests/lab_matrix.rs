//! A short scenario matrix in network namespaces: a clean link, loss with added latency, and
//! a stall, for all three clients. Asserts what must hold whatever the timing: every task
//! ends exactly once, echoes are never wrong, a clean link serves every task for every
//! client, the naive client cannot get past a stall, and bytes cross the wire.

use std::time::Duration;

use phobos_lab::contender::Contender;
use phobos_lab::matrix::{markdown_table, run_matrix, CellResult, Scenario, Workload};
use phobos_lab::server::ServerFaults;
use phobos_test_support::DirectionFaults;

#[test]
fn short_matrix_counts_every_task_once_and_the_faults_bite() {
    if !phobos_lab::lab_available() {
        return;
    }
    let workload = Workload {
        tasks: 10,
        interval: Duration::from_millis(200),
        task_timeout: Duration::from_secs(8),
        body_len: 200,
    };
    let clean = Scenario::grid(0, Duration::ZERO);
    let lossy = Scenario::grid(15, Duration::from_millis(100));
    let stall = Scenario::fault(
        "stall after 1 kB",
        ServerFaults {
            client_to_server: DirectionFaults {
                stall_after: Some(1_000),
                ..Default::default()
            },
            ..Default::default()
        },
        None,
    );
    let scenarios = [clean.clone(), lossy, stall.clone()];
    let results: Vec<CellResult> = run_matrix(&scenarios, &Contender::ALL, workload, 9, &|_| {})
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    println!("{}", markdown_table(&results));
    assert_eq!(results.len(), 9);
    for r in &results {
        assert_eq!(r.ends, r.tasks, "one end per task: {r:?}");
        assert_eq!(r.wrong_bodies, 0, "{r:?}");
        assert!(r.successes <= r.tasks);
        assert!(
            r.wire.client_to_server > 0 && r.wire.server_to_client > 0,
            "{r:?}"
        );
        assert!(r.dials >= 1, "{r:?}");
    }
    for r in results.iter().filter(|r| r.scenario == clean) {
        assert_eq!(
            r.successes, r.tasks,
            "a clean link serves everything: {r:?}"
        );
        assert_eq!(r.reconnects, 0, "{r:?}");
    }
    let naive_stalled = results
        .iter()
        .find(|r| r.scenario == stall && r.contender == Contender::Naive)
        .unwrap();
    // 10 requests of 200+ bytes cannot all pass a 1 kB stall without a new connection, and
    // the naive client only redials after its connection broke (a stall never breaks it).
    assert!(
        naive_stalled.successes < naive_stalled.tasks,
        "{naive_stalled:?}"
    );
    assert_eq!(naive_stalled.dials, 1, "{naive_stalled:?}");
}
