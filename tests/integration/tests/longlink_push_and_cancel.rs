//! Server pushes reach subscribers; canceled tasks end with `Canceled`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use phobos_plugin_api::{CmdId, IpPort};
use phobos_stn::{
    Client, ClientConfig, ErrorKind, TaskBatch, TaskError, TaskKey, TaskSpec, MAX_DURATION_SETTING,
};
use phobos_stn_proto::{Racing, Recovery, Timing};
use phobos_test_support::{ConnScript, MockLongLinkServer, Reply, Step};

mod common;
use common::{client_for, codec, ends_once, Blackhole};

#[tokio::test(start_paused = true)]
async fn pushes_on_connect_and_on_demand_reach_every_subscriber() {
    let server = MockLongLinkServer::builder(codec())
        .script(ConnScript::echo().on_connect(vec![Step::Push {
            cmd: CmdId(100),
            body: b"welcome".to_vec(),
        }]))
        .start()
        .await
        .unwrap();
    let client = client_for(&server);
    let mut a = client.subscribe_pushes();
    let mut b = client.subscribe_pushes();
    client.make_sure_connected("default-longlink");
    let p = a.recv().await.unwrap();
    assert_eq!((p.cmd_id, &p.body[..]), (CmdId(100), &b"welcome"[..]));
    assert_eq!(&*p.link, "default-longlink");
    assert_eq!(b.recv().await.unwrap(), p);

    server.wait_for_connections(1).await;
    assert_eq!(server.push(CmdId(101), b"news"), 1);
    let p = a.recv().await.unwrap();
    assert_eq!((p.cmd_id, &p.body[..]), (CmdId(101), &b"news"[..]));
}

#[tokio::test(start_paused = true)]
async fn a_push_between_responses_does_not_disturb_them() {
    let server = MockLongLinkServer::builder(codec())
        .script(ConnScript::echo().reply(Reply::steps(vec![
            Step::Push {
                cmd: CmdId(50),
                body: b"interleaved".to_vec(),
            },
            Step::Respond(None),
        ])))
        .start()
        .await
        .unwrap();
    let client = client_for(&server);
    let mut pushes = client.subscribe_pushes();
    let resp = client
        .start_task(TaskSpec::new(CmdId(1), &b"req"[..]))
        .await
        .unwrap();
    assert_eq!(&resp.body[..], b"req");
    assert_eq!(&pushes.recv().await.unwrap().body[..], b"interleaved");
}

#[tokio::test(start_paused = true)]
async fn canceling_a_running_task_ends_it_with_canceled_and_others_go_on() {
    let server = MockLongLinkServer::builder(codec())
        .script(ConnScript::echo().reply(Reply::stall()))
        .start()
        .await
        .unwrap();
    let client = client_for(&server);
    let stalled = client.start_task(TaskSpec::new(CmdId(1), &b"stalled"[..]));
    server.wait_for_task_frames(1).await;
    let other = client.start_task(TaskSpec::new(CmdId(1), &b"other"[..]));
    let t0 = tokio::time::Instant::now();
    stalled.cancel();
    assert_eq!(stalled.await.unwrap_err(), TaskError::Canceled);
    assert!(t0.elapsed() < Duration::from_secs(1));
    assert_eq!(&other.await.unwrap().body[..], b"other");
    assert_eq!(server.connection_count(), 1);
}

#[tokio::test(start_paused = true)]
async fn canceling_a_queued_task_before_the_link_is_up_ends_it_at_once() {
    let server = MockLongLinkServer::start_echo(codec()).await.unwrap();
    let client = client_for(&server);
    let h = client.start_task(TaskSpec::new(CmdId(1), &b"never sent"[..]));
    client.cancel(h.key());
    let err = h.await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Canceled);
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(server.task_frames().is_empty());
}

#[tokio::test(start_paused = true)]
async fn canceling_an_ended_task_changes_nothing() {
    let server = MockLongLinkServer::start_echo(codec()).await.unwrap();
    let client = client_for(&server);
    let h = client.start_task(TaskSpec::new(CmdId(1), &b"done"[..]));
    let key = h.key();
    let end = h.end().await.unwrap();
    assert_eq!(&end.outcome.unwrap().body[..], b"done");
    assert_eq!(end.profile.attempts, 1);
    client.cancel(key);
    let stats = client.stats().await.unwrap();
    assert_eq!(stats.tasks_in_flight, 0);
}

/// Cancels every task of `keys` (`what` kind, for the printout) in an order shuffled by `seed`, then collects the batch's
/// ends: how many of them were `Canceled`, after checking each key ended exactly once.
async fn cancel_all_shuffled(
    what: &str,
    batch: &mut TaskBatch,
    mut keys: Vec<TaskKey>,
    seed: u64,
) -> usize {
    let mut x = seed;
    for i in (1..keys.len()).rev() {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        keys.swap(i, (x >> 33) as usize % (i + 1));
    }
    let started = std::time::Instant::now();
    for key in &keys {
        batch.cancel(*key);
    }
    let canceled = ends_once(batch, keys.len())
        .await
        .iter()
        .filter(|end| end.outcome.as_ref().err() == Some(&TaskError::Canceled))
        .count();
    // Shown, not asserted (wall clock): with a scan per cancel, 100,000 took seconds.
    eprintln!(
        "{} {what} cancels answered in {:?}",
        keys.len(),
        started.elapsed()
    );
    canceled
}

/// How many tasks the cancel-burst tests start: 20,000, or `PHOBOS_CANCEL_BURST` (the
/// figures in `docs/ARCHITECTURE.md` come from 100,000, `--release`).
fn burst_size() -> usize {
    std::env::var("PHOBOS_CANCEL_BURST")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

/// Many tasks started at once, for the cancel-burst tests.
fn burst(n: usize) -> impl Iterator<Item = TaskSpec> {
    (0..n).map(|i| TaskSpec::new(CmdId(1), i.to_be_bytes().to_vec()).with_limits(false, false))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canceling_every_task_of_a_large_burst_in_flight_ends_each_once_and_the_link_goes_on() {
    let n = burst_size();
    let server = MockLongLinkServer::builder(codec())
        .script(ConnScript::echo().replies(n, Reply::stall()))
        .start()
        .await
        .unwrap();
    // Real sockets in real time, so two of the engine's timers can race the test on a loaded
    // machine, and both are turned off here (this test is about cancels):
    // - dial hedging: a connect still pending after the 250 ms stagger gets a second dial
    //   to the same address. The server gives its first accepted connection the stalling
    //   script and later ones the echoing default; when the hedge won, the 20,000 tasks
    //   were echoed at once and none was left in flight to cancel.
    // - the stall probe: 2 s after the first task went out unanswered it sends a heartbeat
    //   and drops the link if no byte came back 2 s later. The server answers it only after
    //   decoding the 20,000 frames ahead of it, which took longer under load: the link was
    //   dropped and a second connection made.
    // The tasks' own deadlines are pushed out of reach too (first packet 12 s + 5 × 1.5 s
    // queue allowance, 40 s in all): sending and canceling 20,000 tasks in a debug build on
    // a loaded machine must not race them.
    let timing = Timing {
        first_packet: (MAX_DURATION_SETTING, MAX_DURATION_SETTING),
        first_packet_max: (MAX_DURATION_SETTING, MAX_DURATION_SETTING),
        queue_delay: (MAX_DURATION_SETTING, MAX_DURATION_SETTING),
        ..Timing::default()
    };
    let config = ClientConfig::builder(codec())
        .link_addrs("default-longlink", [server.ip_port()])
        .core(|c| {
            c.racing(Racing {
                hedges: 0,
                ..Racing::default()
            })
            .recovery(Recovery {
                stall_probe: false,
                ..Recovery::default()
            })
            .timing(timing)
        })
        .build()
        .unwrap();
    let client = Client::start(config).unwrap();
    client.set_foreground(true);
    let mut batch = client.task_batch();
    let keys: Vec<TaskKey> = batch
        .start(burst(n).map(|t| t.with_total_timeout(Duration::from_secs(600))))
        .collect();
    server.wait_for_task_frames(n).await;
    assert_eq!(client.stats().await.unwrap().tasks_in_flight, n);

    assert_eq!(
        cancel_all_shuffled("in-flight", &mut batch, keys, 7).await,
        n
    );
    assert_eq!(client.stats().await.unwrap().tasks_in_flight, 0);
    // The link was not dropped for it, and answers the next task.
    let next = client.start_task(TaskSpec::new(CmdId(1), &b"after"[..]));
    assert_eq!(&next.await.unwrap().body[..], b"after");
    assert_eq!(server.connection_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canceling_every_task_of_a_large_queued_burst_in_any_order_ends_each_once() {
    let n = burst_size();
    // Every task waits in the queue for a connection that never comes, and nothing but the
    // cancels can end it in real time on a loaded machine: the connect never finishes, its
    // timeout and the tasks' own are far away. (With a refused address the failed connect
    // cycles ended the tasks with dial errors after about 5 s; on a loaded machine the
    // cancels took up to 3.4 s.)
    let timing = Timing {
        connect_timeout: MAX_DURATION_SETTING,
        ..Timing::default()
    };
    // The link's only address, whose connects never finish (and never touch the network).
    let never: IpPort = "127.0.0.1:9".parse::<SocketAddr>().unwrap().into();
    let config = phobos_stn::ClientConfig::builder(codec())
        .link_addrs("default-longlink", [never])
        .connector(Arc::new(Blackhole::new([never])))
        .core(|c| c.timing(timing))
        .build()
        .unwrap();
    let client = phobos_stn::Client::start(config).unwrap();
    client.set_foreground(true);
    let mut batch = client.task_batch();
    let keys: Vec<TaskKey> = batch
        .start(burst(n).map(|t| t.with_total_timeout(Duration::from_secs(600))))
        .collect();
    assert_eq!(client.stats().await.unwrap().tasks_in_flight, n);

    assert_eq!(cancel_all_shuffled("queued", &mut batch, keys, 11).await, n);
    assert_eq!(client.stats().await.unwrap().tasks_in_flight, 0);
}
