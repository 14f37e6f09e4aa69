//! A short scenario matrix in network namespaces. Long link: a clean link, loss with added
//! latency, and a stall, for every client. Short link: a clean link and a proxy that closes
//! every connection before the request is through, for every client. Long link under
//! corruption: Phobos plain and over TLS.
//!
//! Asserts what must hold whatever the timing: every task ends exactly once, echoes are
//! never wrong (on a path that does not corrupt bytes; on one that does, never over TLS), a clean link serves every task for every client, the naive long-link client
//! cannot get past a stall, the short link opens one connection per task on a clean link
//! (the server's proxy counts the same), Phobos's short link retries a broken exchange while
//! the naive HTTP client does not, and bytes cross the wire.

use std::time::Duration;

use phobos_lab::contender::{Contender, Link};
use phobos_lab::matrix::{
    markdown_table, run_matrix, summarize, worst_cells_markdown, CellResult, Plan, Scenario,
    Workload,
};
use phobos_lab::server::ServerFaults;
use phobos_test_support::DirectionFaults;

fn upstream(faults: DirectionFaults) -> ServerFaults {
    ServerFaults {
        client_to_server: faults,
        ..Default::default()
    }
}

/// `tasks` tasks, 200 ms apart, 8 s each, 200-byte bodies.
fn small_workload(tasks: usize) -> Workload {
    Workload {
        tasks,
        interval: Duration::from_millis(200),
        task_timeout: Duration::from_secs(8),
        body_len: 200,
    }
}

/// Runs every cell once; each task ends exactly once, whatever the network did.
fn run_plan(
    scenarios: Vec<Scenario>,
    links: Vec<Link>,
    contenders: Vec<Contender>,
    workload: Workload,
) -> Vec<CellResult> {
    let plan = Plan {
        scenarios,
        links,
        contenders,
        runs: 1,
        workload,
        seed: 1,
    };
    let results: Vec<CellResult> = run_matrix(&plan, plan.cells(), &|_| {})
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(results.len(), plan.cells());
    for r in &results {
        assert_eq!(r.ends, r.tasks, "one end per task: {r:?}");
        assert!(r.successes <= r.tasks);
        assert!(r.dials >= 1, "{r:?}");
    }
    results
}

/// [`run_plan`] for the default contenders, on paths that do not damage bytes.
fn run(scenarios: Vec<Scenario>, links: Vec<Link>, workload: Workload) -> Vec<CellResult> {
    let results = run_plan(scenarios, links, Contender::ALL.to_vec(), workload);
    for r in &results {
        assert_eq!(r.wrong_bodies, 0, "{r:?}");
        assert!(
            r.wire.client_to_server > 0 && r.wire.server_to_client > 0,
            "{r:?}"
        );
    }
    results
}

fn find<'a>(
    results: &'a [CellResult],
    scenario: &Scenario,
    link: Link,
    contender: Contender,
) -> &'a CellResult {
    results
        .iter()
        .find(|r| r.scenario == *scenario && r.link == link && r.contender == contender)
        .unwrap()
}

#[test]
fn short_matrix_counts_every_task_once_and_the_faults_bite() {
    if !phobos_lab::lab_available() {
        return;
    }
    let workload = small_workload(10);
    let clean = Scenario::grid(0, Duration::ZERO);
    let lossy = Scenario::grid(15, Duration::from_millis(100));
    let stall = Scenario::fault(
        "stall after 1 kB",
        upstream(DirectionFaults {
            stall_after: Some(1_000),
            ..Default::default()
        }),
        None,
    );
    let results = run(
        vec![clean.clone(), lossy, stall.clone()],
        vec![Link::Long],
        workload,
    );
    let summaries = summarize(&results);
    println!("{}", markdown_table(&summaries, Link::Long));
    for r in results.iter().filter(|r| r.scenario == clean) {
        assert_eq!(
            r.successes, r.tasks,
            "a clean link serves everything: {r:?}"
        );
        assert_eq!(r.reconnects, 0, "{r:?}");
        assert_eq!(r.server_connections, 1, "{r:?}");
    }
    let naive_stalled = find(&results, &stall, Link::Long, Contender::Naive);
    // 10 requests of 200+ bytes cannot all pass a 1 kB stall without a new connection, and
    // the naive client only redials after its connection broke (a stall never breaks it).
    assert!(
        naive_stalled.successes < naive_stalled.tasks,
        "{naive_stalled:?}"
    );
    assert_eq!(naive_stalled.dials, 1, "{naive_stalled:?}");
}

#[test]
fn short_link_cells_post_one_connection_per_task_and_only_phobos_retries() {
    if !phobos_lab::lab_available() {
        return;
    }
    let workload = small_workload(6);
    let clean = Scenario::grid(0, Duration::ZERO);
    // The request head alone is longer than 100 bytes: no exchange can complete.
    let cut = Scenario::fault(
        "close after 100 B",
        upstream(DirectionFaults {
            close_after: Some(100),
            ..Default::default()
        }),
        None,
    );
    let results = run(
        vec![clean.clone(), cut.clone()],
        vec![Link::Short],
        workload,
    );
    let summaries = summarize(&results);
    println!("{}", markdown_table(&summaries, Link::Short));
    println!("{}", worst_cells_markdown(&summaries, &[Link::Short], 2));
    for c in Contender::ALL {
        let r = find(&results, &clean, Link::Short, c);
        assert_eq!(
            r.successes, r.tasks,
            "a clean link serves everything: {r:?}"
        );
        // `Connection: close`: one connection per task, and both ends count the same.
        assert_eq!(r.connects as usize, r.tasks, "{r:?}");
        assert_eq!(r.dials, r.connects, "{r:?}");
        assert_eq!(r.server_connections, r.connects, "{r:?}");
        let cut = find(&results, &cut, Link::Short, c);
        assert_eq!(cut.successes, 0, "{cut:?}");
        assert!(!cut.failures.is_empty(), "{cut:?}");
    }
    // Phobos (either profile) retries a broken exchange on a new connection; the naive
    // client makes exactly one attempt per task.
    for c in [Contender::Phobos, Contender::MarsClassic] {
        let r = find(&results, &cut, Link::Short, c);
        assert!(r.dials > r.tasks as u64, "retried: {r:?}");
    }
    let naive = find(&results, &cut, Link::Short, Contender::Naive);
    assert_eq!(naive.dials, naive.tasks as u64, "{naive:?}");
}

#[test]
fn under_corruption_tls_hands_no_damaged_echo_to_the_app() {
    if !phobos_lab::lab_available() {
        return;
    }
    let workload = small_workload(10);
    // The matrix's rate: a damaged byte every 2 kB or so each way. Mars frames carry no
    // checksum.
    let corrupt = Scenario::fault(
        "corrupt 0.05 % of bytes",
        ServerFaults {
            client_to_server: DirectionFaults {
                corrupt_probability: 0.0005,
                ..Default::default()
            },
            server_to_client: DirectionFaults {
                corrupt_probability: 0.0005,
                ..Default::default()
            },
            ..Default::default()
        },
        None,
    );
    let results = run_plan(
        vec![corrupt],
        vec![Link::Long],
        vec![Contender::Phobos, Contender::PhobosTls],
        workload,
    );
    let plain = results.iter().find(|r| r.contender == Contender::Phobos);
    let tls = results.iter().find(|r| r.contender == Contender::PhobosTls);
    let (plain, tls) = (plain.unwrap(), tls.unwrap());
    // Plain Mars frames hand some damaged echoes to the app as answers; TLS turns each
    // damaged record into a broken connection, never into a wrong answer, and Phobos
    // replaces the connection at once (a broken handshake is dialled again, a damaged
    // session earns an immediate reconnect), so the task is retried in time.
    assert!(plain.wrong_bodies > 0, "{plain:?}");
    assert_eq!(tls.wrong_bodies, 0, "{tls:?}");
    assert!(tls.dials > 1, "the broken connection was replaced: {tls:?}");
    assert!(tls.successes > plain.successes, "{tls:?}\nvs {plain:?}");
}
