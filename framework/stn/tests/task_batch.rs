//! The batch API ([`TaskBatch`]) over a real socket against the mock server: every task
//! gets exactly one end, whatever happens to the link.

use std::collections::HashMap;
use std::sync::Arc;

use phobos_codec_mars::MarsCodec;
use phobos_plugin_api::CmdId;
use phobos_stn::{
    BatchEnd, BlockingClient, Client, ClientConfig, ErrorKind, LocalError, TaskBatch, TaskError,
    TaskKey, TaskSpec,
};
use phobos_test_support::{ConnScript, MockLongLinkServer, Reply};

fn codec() -> Arc<MarsCodec> {
    Arc::new(MarsCodec::default())
}

fn config_for(server: &MockLongLinkServer) -> ClientConfig {
    ClientConfig::builder(codec())
        .link_addrs("default-longlink", [server.ip_port()])
        .build()
        .expect("config")
}

fn client_for(server: &MockLongLinkServer) -> Client {
    let client = Client::start(config_for(server)).expect("client");
    client.set_foreground(true);
    client
}

/// A spec with a body naming it, so responses can be told apart.
fn spec(i: u32) -> TaskSpec {
    TaskSpec::new(CmdId(7), format!("task {i}").into_bytes())
}

/// Every end of `batch`, asserting that no key ends twice.
async fn all_ends(batch: &mut TaskBatch) -> HashMap<TaskKey, BatchEnd> {
    let mut got = HashMap::new();
    let mut ends = Vec::new();
    while batch.recv_many(&mut ends).await > 0 {
        for end in ends.drain(..) {
            let key = end.key;
            assert!(got.insert(key, end).is_none(), "{key:?} ended twice");
        }
    }
    assert_eq!(batch.outstanding(), 0);
    got
}

#[tokio::test(start_paused = true)]
async fn every_task_of_a_batch_gets_its_own_response_once() {
    let server = MockLongLinkServer::start_echo(codec()).await.unwrap();
    let client = client_for(&server);
    let mut batch = client.task_batch();
    let keys = batch.start((0..40).map(spec));
    // A refused spec (priority out of range) ends at once with its parameter error; a
    // second call adds tasks to the same batch.
    let more = batch.start([spec(40).with_priority(9), spec(41)]);
    assert_eq!((keys.len(), more.len()), (40, 2));
    assert_eq!(batch.outstanding(), 42);
    let ends = all_ends(&mut batch).await;
    assert_eq!(ends.len(), 42);
    for (i, key) in keys.enumerate() {
        assert_eq!(keys.position(key), Some(i));
        let body = &ends[&key].outcome.as_ref().expect("echoed").body;
        assert_eq!(&body[..], format!("task {i}").as_bytes());
        assert!(ends[&key].profile.as_ref().unwrap().decoded_at.is_some());
    }
    let refused = more.first().unwrap();
    assert_eq!(
        ends[&refused].outcome.as_ref().unwrap_err().kind(),
        ErrorKind::Param
    );
    let last = more.last().unwrap();
    assert_eq!(&ends[&last].outcome.as_ref().unwrap().body[..], b"task 41");
    // All forty went out on one connection, once each.
    assert_eq!(server.connection_count(), 1);
    assert_eq!(server.task_frames().len(), 41);
    assert_eq!(client.stats().await.unwrap().tasks_in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn recv_hands_out_ends_one_by_one_and_an_empty_start_is_a_no_op() {
    let server = MockLongLinkServer::start_echo(codec()).await.unwrap();
    let client = client_for(&server);
    let mut batch = client.start_tasks((0..3).map(spec));
    assert!(batch.start(Vec::new()).is_empty());
    let mut seen = Vec::new();
    while let Some(end) = batch.recv().await {
        assert!(end.outcome.is_ok());
        seen.push(end.key);
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 3);
    assert_eq!(batch.recv_many(&mut Vec::new()).await, 0);
}

#[tokio::test(start_paused = true)]
async fn the_link_dying_mid_batch_still_ends_every_task_exactly_once() {
    // The first connection answers five requests, then cuts the sixth response in half and
    // closes; every later connection is refused, so the rest fail after their retries.
    let mut first = ConnScript::echo();
    for _ in 0..5 {
        first = first.reply(Reply::echo());
    }
    let server = MockLongLinkServer::builder(codec())
        .script(first.reply(Reply::close_mid_frame()))
        .default_script(ConnScript::refuse())
        .start()
        .await
        .unwrap();
    let client = client_for(&server);
    let mut batch = client.start_tasks((0..30).map(spec));
    let ends = all_ends(&mut batch).await;
    assert_eq!(ends.len(), 30);
    let ok = ends.values().filter(|e| e.outcome.is_ok()).count();
    assert_eq!(ok, 5, "only the five answered tasks succeed");
    for end in ends.values().filter(|e| e.outcome.is_err()) {
        let kind = end.outcome.as_ref().unwrap_err().kind();
        assert!(
            matches!(
                kind,
                ErrorKind::Socket | ErrorKind::Dial | ErrorKind::Timeout(_)
            ),
            "{kind:?}"
        );
    }
    assert_eq!(client.stats().await.unwrap().tasks_in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn canceling_tasks_of_a_batch_ends_them_with_canceled() {
    let server = MockLongLinkServer::builder(codec())
        .script(ConnScript::echo().reply(Reply::stall()))
        .start()
        .await
        .unwrap();
    let client = client_for(&server);
    let mut batch = client.task_batch();
    let keys: Vec<TaskKey> = batch.start((0..3).map(spec)).collect();
    server.wait_for_task_frames(3).await;
    // The first request stalls; the other two are answered.
    let mut ends = Vec::new();
    while batch.outstanding() > 1 {
        batch.recv_many(&mut ends).await;
    }
    assert!(ends.iter().all(|e| e.outcome.is_ok() && e.key != keys[0]));
    batch.cancel(keys[0]);
    let end = batch.recv().await.unwrap();
    assert_eq!(end.key, keys[0]);
    assert_eq!(end.outcome.unwrap_err(), TaskError::Canceled);
}

#[tokio::test(start_paused = true)]
async fn shutdown_mid_batch_ends_every_unfinished_task_with_reset() {
    let server = MockLongLinkServer::builder(codec())
        .script(ConnScript::echo().default_reply(Reply::stall()))
        .start()
        .await
        .unwrap();
    let client = client_for(&server);
    let mut batch = client.start_tasks((0..20).map(spec));
    server.wait_for_task_frames(20).await;
    client.shutdown().await;
    // Started after the driver stopped: these end with a reset too.
    batch.start((20..25).map(spec));
    let ends = all_ends(&mut batch).await;
    assert_eq!(ends.len(), 25);
    for end in ends.values() {
        assert_eq!(
            end.outcome.as_ref().unwrap_err(),
            &TaskError::Local(LocalError::Reset)
        );
        assert!(end.profile.is_none());
    }
}

#[test]
fn the_blocking_facade_starts_a_batch_and_blocks_for_its_ends() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let server = rt
        .block_on(MockLongLinkServer::start_echo(codec()))
        .unwrap();
    let client = BlockingClient::start(config_for(&server)).unwrap();
    let mut batch = client.start_tasks((0..10).map(spec));
    let mut ends = Vec::new();
    while batch.blocking_recv_many(&mut ends) > 0 {}
    assert_eq!(ends.len(), 10);
    assert!(ends.iter().all(|e| e.outcome.is_ok()));
    client.shutdown();
}

#[test]
fn a_runtime_dropped_mid_batch_still_ends_every_task_with_reset() {
    // The mock server runs on its own runtime, which outlives the client's. Real time: every
    // connection stalls (`default_script`), since a connect seen late under load gets a
    // hedge, a second connection the client may keep.
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let server = server_rt
        .block_on(
            MockLongLinkServer::builder(codec())
                .default_script(ConnScript::echo().default_reply(Reply::stall()))
                .start(),
        )
        .unwrap();
    let client_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut batch = client_rt.block_on(async {
        let client = client_for(&server);
        let batch = client.start_tasks((0..10).map(spec));
        server.wait_for_task_frames(10).await;
        batch
    });
    // The driver never gets to its teardown: it is dropped with the runtime.
    drop(client_rt);
    let mut ends = Vec::new();
    while batch.blocking_recv_many(&mut ends) > 0 {}
    assert_eq!(ends.len(), 10);
    for end in &ends {
        assert_eq!(
            end.outcome.as_ref().unwrap_err(),
            &TaskError::Local(LocalError::Reset)
        );
    }
    let mut keys: Vec<u64> = ends.iter().map(|e| e.key.get()).collect();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(keys.len(), 10, "one end per task");
}
