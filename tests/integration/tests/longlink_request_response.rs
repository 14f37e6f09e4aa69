//! Requests and responses over one long link, through the driver, against the mock server.

use std::sync::Arc;
use std::time::Duration;

use phobos_plugin_api::codec::IDENTIFY_SEQ;
use phobos_plugin_api::CmdId;
use phobos_stn::{Client, ClientConfig, LinkStatus, TaskSpec};
use phobos_test_support::{
    ClientFrameKind, ConnScript, IdentifyMode, MockLongLinkServer, Reply, TestAuth,
};

mod common;
use common::{client_for, codec, one_worker_runtime};

#[tokio::test(start_paused = true)]
async fn a_task_gets_the_servers_response() {
    let server = MockLongLinkServer::start_echo(codec()).await.unwrap();
    let client = client_for(&server);
    let resp = client
        .start_task(TaskSpec::new(CmdId(7), &b"hello"[..]))
        .await
        .unwrap();
    assert_eq!(&resp.body[..], b"hello");
    assert_eq!(resp.cmd_id, CmdId(7));
    let tasks = server.task_frames();
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0].head.cmd_id, CmdId(7));
    assert_eq!(server.connection_count(), 1);
    assert!(matches!(
        client.link_status("default-longlink"),
        Some(LinkStatus::Connected(a)) if a == server.ip_port()
    ));
    client.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_scripted_body_is_returned_as_is() {
    let server = MockLongLinkServer::builder(codec())
        .script(ConnScript::echo().reply(Reply::body(b"scripted".to_vec())))
        .start()
        .await
        .unwrap();
    let client = client_for(&server);
    let resp = client
        .start_task(TaskSpec::new(CmdId(1), &b"x"[..]))
        .await
        .unwrap();
    assert_eq!(&resp.body[..], b"scripted");
}

#[tokio::test(start_paused = true)]
async fn many_pipelined_tasks_all_end_with_their_own_response_on_one_connection() {
    let server = MockLongLinkServer::start_echo(codec()).await.unwrap();
    let client = client_for(&server);
    let handles: Vec<_> = (0..500u32)
        .map(|i| client.start_task(TaskSpec::new(CmdId(3), i.to_be_bytes().to_vec())))
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        let resp = h.await.unwrap();
        assert_eq!(&resp.body[..], &(i as u32).to_be_bytes());
    }
    assert_eq!(server.connection_count(), 1);
    assert_eq!(server.task_frames().len(), 500);
    // Each task used its own sequence number.
    let mut seqs: Vec<u32> = server.task_frames().iter().map(|f| f.head.seq.0).collect();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), 500);
}

#[tokio::test(start_paused = true)]
async fn a_delayed_response_arrives_in_virtual_time() {
    let server = MockLongLinkServer::builder(codec())
        .script(ConnScript::echo().reply(Reply::delayed(Duration::from_secs(5), Reply::echo())))
        .start()
        .await
        .unwrap();
    let client = client_for(&server);
    let t0 = tokio::time::Instant::now();
    let resp = client
        .start_task(TaskSpec::new(CmdId(1), &b"late"[..]))
        .await
        .unwrap();
    assert_eq!(&resp.body[..], b"late");
    assert!(t0.elapsed() >= Duration::from_secs(5));
    assert_eq!(
        server.connection_count(),
        1,
        "no retry: 5 s is within the first-packet timeout"
    );
}

#[tokio::test(start_paused = true)]
async fn the_identify_frame_is_the_first_frame_on_a_new_link() {
    let server = MockLongLinkServer::builder(codec())
        .default_script(ConnScript::echo().identify(IdentifyMode::Answer(b"welcome".to_vec())))
        .start()
        .await
        .unwrap();
    let config = ClientConfig::builder(codec())
        .link_addrs("default-longlink", [server.ip_port()])
        .auth(Arc::new(TestAuth::new().with_identify(
            CmdId(205),
            b"token",
            b"welcome",
        )))
        .build()
        .unwrap();
    let client = Client::start(config).unwrap();
    let resp = client
        .start_task(TaskSpec::new(CmdId(9), &b"after"[..]))
        .await
        .unwrap();
    assert_eq!(&resp.body[..], b"after");
    let frames = server.frames();
    assert_eq!(frames[0].kind, ClientFrameKind::Identify, "{frames:?}");
    assert_eq!(frames[0].head.seq, IDENTIFY_SEQ);
    assert_eq!(frames[0].head.cmd_id, CmdId(205));
    assert_eq!(frames[0].body, b"token");
    assert_eq!(server.connection_count(), 1);
}

/// Starts 8 requests of 750,000 bytes each (6 MB, more than the socket buffers hold), the
/// `i`th filled with `i`, without retries or limits.
fn large_requests(client: &phobos_stn::Client) -> Vec<phobos_stn::TaskHandle> {
    (0..8u8)
        .map(|i| {
            client.start_task(
                TaskSpec::new(CmdId(5), vec![i; 750_000])
                    .with_limits(false, false)
                    .with_retry_count(0),
            )
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn large_requests_wait_for_a_server_that_is_slow_to_read_then_go_out() {
    use phobos_test_support::Step;

    // The server reads nothing for 3 s, never answers heartbeats and answers only the last
    // of 8 requests (6 MB in all, more than the socket buffers hold). Nothing but the socket
    // becoming writable again can move the later frames out of the driver before the
    // heartbeat reply deadline (8 s).
    let script = ConnScript::echo()
        .drop_heartbeats()
        .on_connect(vec![Step::Wait(Duration::from_secs(3))])
        .replies(7, Reply::stall());
    let server = MockLongLinkServer::builder(codec())
        .script(script)
        .start()
        .await
        .unwrap();
    let client = client_for(&server);
    let t0 = tokio::time::Instant::now();
    let mut handles = large_requests(&client);
    let last = handles.pop().unwrap().await.unwrap();
    assert_eq!(last.body.len(), 750_000);
    assert!(last.body.iter().all(|b| *b == 7));
    assert!(t0.elapsed() >= Duration::from_secs(3));
    assert!(t0.elapsed() < Duration::from_secs(8), "{:?}", t0.elapsed());
    assert_eq!(server.connection_count(), 1);
    assert_eq!(server.task_frames().len(), 8);
    assert!(
        client.stats().await.unwrap().write_waits >= 1,
        "the socket was full"
    );
}

/// `write_waits` counts waits for a full socket, not the driver iterations a wait lasts:
/// while the server reads nothing, the driver's other work (here, stats asked for a hundred
/// times) adds none. (Each iteration counted every connection still holding bytes.)
#[tokio::test(start_paused = true)]
async fn a_wait_for_a_full_socket_is_counted_once_however_long_it_lasts() {
    use phobos_test_support::Step;

    let script = ConnScript::echo()
        .drop_heartbeats()
        .on_connect(vec![Step::Wait(Duration::from_secs(3))]);
    let server = MockLongLinkServer::builder(codec())
        .script(script)
        .start()
        .await
        .unwrap();
    let client = client_for(&server);
    let handles = large_requests(&client);
    // Until the socket is full and the driver holds bytes.
    let mut waits = 0;
    while waits == 0 {
        tokio::task::yield_now().await;
        waits = client.stats().await.unwrap().write_waits;
    }
    for _ in 0..100 {
        client.stats().await.unwrap();
    }
    let stats = client.stats().await.unwrap();
    assert_eq!(stats.open_connections, 1);
    assert_eq!(stats.write_waits, waits, "one wait, counted once");
    for h in handles {
        h.await.unwrap();
    }
}

/// Many callers, each awaiting one task at a time, on a runtime with one worker: the frames
/// of the tasks they start after each round of responses leave together, not one write each.
///
/// The old driver took one command per wake-up here (each caller's command put the driver in
/// the worker's next slot, ahead of the other callers) and made about one write per task.
#[test]
fn the_tasks_of_many_callers_leave_in_few_writes() {
    const CALLERS: usize = 50;
    const ROUNDS: usize = 20;
    // The server on its own runtime, so the client's one worker runs only the client.
    let server_rt = one_worker_runtime();
    let server = server_rt
        .block_on(MockLongLinkServer::start_echo(codec()))
        .unwrap();
    // The client on a runtime of one worker, where the callers take turns with the driver.
    let stats = one_worker_runtime().block_on(async {
        let client = client_for(&server);
        client
            .start_task(TaskSpec::new(CmdId(7), &b"warm"[..]))
            .await
            .unwrap();
        let callers: Vec<_> = (0..CALLERS)
            .map(|c| {
                let client = client.clone();
                tokio::spawn(async move {
                    for r in 0..ROUNDS {
                        let body = format!("{c}/{r}").into_bytes();
                        let resp = client
                            .start_task(TaskSpec::new(CmdId(7), body.clone()))
                            .await
                            .unwrap();
                        assert_eq!(resp.body, body);
                    }
                })
            })
            .collect();
        for c in callers {
            c.await.unwrap();
        }
        let stats = client.stats().await.unwrap();
        client.shutdown().await;
        stats
    });
    let tasks = (CALLERS * ROUNDS) as u64;
    assert!(
        stats.writes <= tasks / 5,
        "{} writes for {tasks} tasks",
        stats.writes
    );
}

/// Two batches started in one driver iteration leave in one write, in the order they were
/// started, and every task ends with its own response.
#[tokio::test(start_paused = true)]
async fn batches_started_in_one_iteration_leave_in_one_write_in_order() {
    let server = MockLongLinkServer::start_echo(codec()).await.unwrap();
    let client = client_for(&server);
    client
        .start_task(TaskSpec::new(CmdId(7), &b"warm"[..]))
        .await
        .unwrap();
    let before = client.stats().await.unwrap().writes;
    let body = |i: u32| i.to_be_bytes().to_vec();
    let mut batch = client.task_batch();
    // Both commands are queued before the driver runs (one thread): one iteration.
    let first = batch.start((0..100).map(|i| TaskSpec::new(CmdId(3), body(i))));
    let second = batch.start((100..200).map(|i| TaskSpec::new(CmdId(3), body(i))));
    let mut ends = Vec::new();
    while batch.recv_many(&mut ends).await > 0 {}
    assert_eq!(ends.len(), 200);
    for end in &ends {
        let i = match (first.position(end.key), second.position(end.key)) {
            (Some(i), None) => i as u32,
            (None, Some(i)) => 100 + i as u32,
            other => panic!("{:?} in {other:?}", end.key),
        };
        assert_eq!(end.outcome.as_ref().unwrap().body[..], body(i));
    }
    let writes = client.stats().await.unwrap().writes - before;
    assert_eq!(writes, 1, "both batches in the iteration's one write");
    let sent: Vec<Vec<u8>> = server
        .task_frames()
        .iter()
        .filter(|f| f.head.cmd_id == CmdId(3))
        .map(|f| f.body.to_vec())
        .collect();
    assert_eq!(sent, (0..200).map(body).collect::<Vec<_>>());
    client.shutdown().await;
}
