//! The batch API ([`TaskBatch`]) over a real socket against the mock server: every task
//! gets exactly one end, whatever happens to the link.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use phobos_codec_mars::MarsCodec;
use phobos_plugin_api::CmdId;
use phobos_stn::{
    BatchEnd, Client, ClientConfig, ErrorKind, LocalError, Response, TaskBatch, TaskError, TaskKey,
    TaskKeys, TaskProfile, TaskSpec,
};
use phobos_test_support::{ConnScript, MockLongLinkServer, Reply};

mod common;

use common::{cancel_ends_it, client_for, client_whose_first_requests_stall, codec};

/// A connection script that answers its first `n` requests.
fn echoes(n: usize) -> ConnScript {
    (0..n).fold(ConnScript::echo(), |script, _| script.reply(Reply::echo()))
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
        assert!(ends[&key].profile().unwrap().decoded_at.is_some());
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
    let server = MockLongLinkServer::builder(codec())
        .script(echoes(5).reply(Reply::close_mid_frame()))
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
    let (server, client) = client_whose_first_requests_stall(1).await;
    let mut batch = client.task_batch();
    let keys: Vec<TaskKey> = batch.start((0..3).map(spec)).collect();
    server.wait_for_task_frames(3).await;
    // The first request stalls; the other two are answered.
    let mut ends = Vec::new();
    while batch.outstanding() > 1 {
        batch.recv_many(&mut ends).await;
    }
    assert!(ends.iter().all(|e| e.outcome.is_ok() && e.key != keys[0]));
    cancel_ends_it(&mut batch, keys[0]).await;
}

/// A batch cancels only its own tasks: a key of another batch's task is ignored (as an end
/// handler's cancel is), and that task stays running until its own batch cancels it.
#[tokio::test(start_paused = true)]
async fn a_batch_cancels_only_its_own_tasks() {
    let (server, client) = client_whose_first_requests_stall(1).await;
    // B's task is the first request: it stalls.
    let mut b = client.task_batch();
    let b_key = b.start([spec(0)]).next().unwrap();
    server.wait_for_task_frames(1).await;
    let mut a = client.task_batch();
    let a_key = a.start([spec(1)]).next().unwrap();
    a.cancel(b_key);
    let end = a.recv().await.unwrap();
    assert_eq!(end.key, a_key);
    assert!(end.outcome.is_ok(), "{:?}", end.outcome);
    // The stats come back after the driver took the cancel: B's task still runs.
    assert_eq!(client.stats().await.unwrap().tasks_in_flight, 1);
    cancel_ends_it(&mut b, b_key).await;
    assert_eq!(client.stats().await.unwrap().tasks_in_flight, 0);
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
        assert!(end.profile().is_none());
    }
}

#[test]
fn the_blocking_facade_starts_a_batch_and_blocks_for_its_ends() {
    let (_rt, _server, client) = common::blocking_client_of_an_echo_server();
    let mut batch = client.start_tasks((0..10).map(spec));
    let mut ends = Vec::new();
    while batch.blocking_recv_many(&mut ends) > 0 {}
    assert_eq!(ends.len(), 10);
    assert!(ends.iter().all(|e| e.outcome.is_ok()));
    // The same through groups.
    let keys: Vec<TaskKey> = batch.start((10..20).map(spec)).collect();
    let mut got = Vec::new();
    while let Some(group) = batch.blocking_recv_group() {
        got.extend(group.iter().map(|e| (e.key(), e.outcome().is_ok())));
    }
    got.sort_unstable();
    assert_eq!(got, keys.into_iter().map(|k| (k, true)).collect::<Vec<_>>());
    client.shutdown();
}

#[test]
fn a_runtime_dropped_mid_batch_still_ends_every_task_with_reset() {
    let (_server_rt, server, client_rt) = common::stalling_server_and_client_runtime();
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

/// A client of `server` whose link is up (one task answered first, which the server's
/// script must allow), and a batch of it: the batch's tasks go the lane's way and end
/// together.
async fn connected_batch(server: &MockLongLinkServer) -> (Client, TaskBatch) {
    let client = client_for(server);
    assert!(client.start_task(spec(0)).await.is_ok());
    let batch = client.task_batch();
    (client, batch)
}

/// `start_like`: one set of parameters, a command id and body per task.
fn like(batch: &mut TaskBatch, params: &TaskSpec, range: std::ops::Range<u32>) -> TaskKeys {
    let requests = range.map(|i| (CmdId(8), Bytes::from(format!("like {i}").into_bytes())));
    batch.start_like(params, requests)
}

#[tokio::test(start_paused = true)]
async fn like_tasks_each_get_their_own_response_once_with_the_shared_parameters() {
    let server = MockLongLinkServer::start_echo(codec()).await.unwrap();
    let client = client_for(&server);
    let mut batch = client.task_batch();
    // The first call finds the link down (regular tasks); the later ones find it up.
    let params = TaskSpec::new(CmdId(0), &b"ignored"[..]).with_retry_count(0);
    let mut all = Vec::new();
    for round in 0..3u32 {
        let keys = like(&mut batch, &params, round * 50..round * 50 + 50);
        assert_eq!(keys.len(), 50);
        all.push(keys);
        let ends = all_ends(&mut batch).await;
        assert_eq!(ends.len(), 50);
        for (i, key) in keys.enumerate() {
            let end = &ends[&key];
            let response = end.outcome.as_ref().expect("echoed");
            assert_eq!(response.cmd_id, CmdId(8));
            assert_eq!(
                &response.body[..],
                format!("like {}", round * 50 + i as u32).as_bytes()
            );
            let profile = end.profile().unwrap();
            assert_eq!(profile.attempts, 1);
            assert!(profile.send_start.is_some() && profile.decoded_at.is_some());
            assert_eq!(profile.link.as_ref().unwrap().as_str(), "default-longlink");
            // Its own frames' lengths (20-byte heads), though its end may have come with
            // others' in one event.
            assert_eq!(profile.sent_bytes, 20 + response.body.len());
            assert_eq!(profile.received_bytes, 20 + response.body.len());
            assert!(profile.first_packet_timeout.is_some());
        }
    }
    // The parameters' body was not sent: every frame carries its own.
    let frames = server.task_frames();
    assert_eq!(frames.len(), 150);
    assert!(frames.iter().all(|f| f.head.cmd_id == CmdId(8)));
    assert!(frames.iter().all(|f| !f.body.starts_with(b"ignored")));
    assert!(batch.start_like(&params, Vec::new()).is_empty());
    assert_eq!(client.stats().await.unwrap().tasks_in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn like_tasks_refused_by_their_parameters_all_end_with_the_parameter_error() {
    let server = MockLongLinkServer::start_echo(codec()).await.unwrap();
    let client = client_for(&server);
    let mut batch = client.task_batch();
    let bad = TaskSpec::new(CmdId(0), Bytes::new()).with_priority(9);
    let keys = like(&mut batch, &bad, 0..5);
    let ends = all_ends(&mut batch).await;
    for key in keys {
        assert_eq!(
            ends[&key].outcome.as_ref().unwrap_err().kind(),
            ErrorKind::Param
        );
    }
    assert_eq!(server.task_frames().len(), 0);
}

#[tokio::test(start_paused = true)]
async fn like_tasks_survive_the_link_dying_and_a_cancel_exactly_once() {
    // The first connection answers a warm-up task and five more, then stalls the rest until
    // the server closes it after the cancel; the next connection answers everything.
    let server = MockLongLinkServer::builder(codec())
        .script(echoes(6).default_reply(Reply::stall()))
        .default_script(ConnScript::echo())
        .start()
        .await
        .unwrap();
    let client = client_for(&server);
    // Connected before the batch, so its tasks go the lane's way.
    let warm_up = client.start_task(spec(0)).await;
    assert!(warm_up.is_ok());
    let mut batch = client.task_batch();
    let params = TaskSpec::new(CmdId(0), Bytes::new()).with_retry_count(2);
    let keys: Vec<TaskKey> = like(&mut batch, &params, 0..20).collect();
    server.wait_for_task_frames(20).await;
    let mut ends = Vec::new();
    while ends.len() < 5 {
        batch.recv_many(&mut ends).await;
    }
    batch.cancel(keys[19]);
    assert!(server.close(0));
    let mut rest = all_ends(&mut batch).await;
    for end in ends {
        assert!(rest.insert(end.key, end).is_none(), "ended twice");
    }
    assert_eq!(rest.len(), 20);
    assert_eq!(
        rest[&keys[19]].outcome.as_ref().unwrap_err(),
        &TaskError::Canceled
    );
    let ok = rest.values().filter(|e| e.outcome.is_ok()).count();
    assert_eq!(
        ok, 19,
        "the others succeed, on the second connection if need be"
    );
    assert!(server.connection_count() >= 2);
}

#[tokio::test(start_paused = true)]
async fn like_tasks_started_after_shutdown_end_with_reset() {
    let server = MockLongLinkServer::start_echo(codec()).await.unwrap();
    let client = client_for(&server);
    let mut batch = client.task_batch();
    client.shutdown().await;
    let params = TaskSpec::new(CmdId(0), Bytes::new());
    let keys = like(&mut batch, &params, 0..4);
    let ends = all_ends(&mut batch).await;
    assert_eq!(ends.len(), 4);
    for key in keys {
        assert_eq!(
            ends[&key].outcome.as_ref().unwrap_err(),
            &TaskError::Local(LocalError::Reset)
        );
    }
}

/// Tasks started one by one that reach the driver in one turn share a group, and their
/// responses, read together, end together: each caller still gets its own response and its
/// own profile (its own frames' lengths).
#[tokio::test(start_paused = true)]
async fn tasks_started_together_one_by_one_end_with_their_own_profiles() {
    let server = MockLongLinkServer::start_echo(codec()).await.unwrap();
    let client = client_for(&server);
    // Connects the link, so the next tasks find it up.
    client.start_task(spec(0)).await.expect("first");
    let handles: Vec<_> = (1..=40u32).map(|i| client.start_task(spec(i))).collect();
    for (i, handle) in (1..=40u32).zip(handles) {
        let end = handle.end().await.expect("an end");
        let response = end.outcome.expect("echoed");
        let body = format!("task {i}");
        assert_eq!(&response.body[..], body.as_bytes());
        assert_eq!(end.profile.attempts, 1);
        assert_eq!(end.profile.sent_bytes, 20 + body.len());
        assert_eq!(end.profile.received_bytes, 20 + body.len());
        assert!(end.profile.decoded_at.is_some());
        assert_eq!(end.elapsed, end.profile.elapsed());
    }
}

/// Two batches whose tasks the driver admits in one iteration, with the same parameters:
/// the core keeps them in one group and ends their tasks together (one event for all of
/// them when their responses come in one read), and each batch still gets exactly its own
/// ends, in order: the driver passes ends on in bulk only to the batch they are owed to.
#[tokio::test(start_paused = true)]
async fn batches_admitted_together_each_get_only_their_own_ends() {
    let server = MockLongLinkServer::start_echo(codec()).await.unwrap();
    let client = client_for(&server);
    // Connects the link, so the batches' tasks find it up and join the lane.
    client.start_task(spec(0)).await.expect("first");
    let params = TaskSpec::new(CmdId(0), Bytes::new()).with_retry_count(0);
    for round in 0..3u32 {
        let (mut a, mut b) = (client.task_batch(), client.task_batch());
        // No await in between: one driver iteration takes all three commands.
        let from = round * 100;
        let keys_a = like(&mut a, &params, from..from + 30);
        let keys_b = like(&mut b, &params, from + 30..from + 60);
        let keys_a2 = like(&mut a, &params, from + 60..from + 70);
        let calls_a = vec![(keys_a, from), (keys_a2, from + 60)];
        let calls_b = vec![(keys_b, from + 30)];
        for (batch, calls) in [(&mut a, calls_a), (&mut b, calls_b)] {
            let mut got = Vec::new();
            let mut ends = Vec::new();
            let owed: usize = calls.iter().map(|(keys, _)| keys.len()).sum();
            while got.len() < owed {
                assert!(batch.recv_many(&mut ends).await > 0);
                got.append(&mut ends);
            }
            assert_eq!(got.len(), owed, "only its own ends");
            let expected = calls.into_iter().flat_map(|(keys, first)| {
                keys.enumerate()
                    .map(move |(i, key)| (key, first + i as u32))
            });
            for ((key, n), end) in expected.zip(&got) {
                assert_eq!(end.key, key, "in the order they were answered");
                let response = end.outcome.as_ref().expect("echoed");
                let body = format!("like {n}");
                assert_eq!(&response.body[..], body.as_bytes());
                assert_eq!(end.profile().unwrap().sent_bytes, 20 + body.len());
            }
        }
    }
    assert_eq!(client.stats().await.unwrap().tasks_in_flight, 0);
}

/// `recv_group` reads ends in place, mixed with `recv` and `recv_many`: every task ends once
/// through one of them, ends the core made together come as one group with the shared
/// profile, and the group's view of an end is what its `BatchEnd` holds.
#[tokio::test(start_paused = true)]
async fn groups_read_in_place_end_every_task_once_mixed_with_the_other_receives() {
    let server = MockLongLinkServer::start_echo(codec()).await.unwrap();
    let (_client, mut batch) = connected_batch(&server).await;
    assert!(batch.recv_group().await.is_none(), "nothing outstanding");
    let params = TaskSpec::new(CmdId(0), Bytes::new()).with_retry_count(0);
    let mut seen: HashMap<TaskKey, Vec<u8>> = HashMap::new();
    fn note(seen: &mut HashMap<TaskKey, Vec<u8>>, key: TaskKey, body: &[u8]) {
        assert!(
            seen.insert(key, body.to_vec()).is_none(),
            "{key:?} ended twice"
        );
    }
    let keys: Vec<TaskKey> = like(&mut batch, &params, 0..60).collect();
    // One end by `recv`: the rest of its delivery waits for the next receive.
    let first = batch.recv().await.expect("an end");
    note(
        &mut seen,
        first.key,
        &first.outcome.as_ref().expect("echoed").body,
    );
    let mut groups = 0;
    let mut shared = 0;
    while let Some(group) = batch.recv_group().await {
        assert!(!group.is_empty());
        groups += 1;
        for end in &group {
            let response = end.outcome().expect("echoed");
            assert_eq!(response.cmd_id, CmdId(8));
            let profile = end.profile().expect("a profile");
            assert_eq!(profile.sent_bytes, 20 + response.body.len());
            assert!(profile.decoded_at.is_some());
            note(&mut seen, end.key(), &response.body);
        }
        let views: Vec<(TaskKey, usize)> = group
            .iter()
            .map(|e| (e.key(), e.profile().unwrap().received_bytes))
            .collect();
        let owned = group.into_ends();
        shared = shared.max(owned.len());
        let owned: Vec<(TaskKey, usize)> = owned
            .iter()
            .map(|e| (e.key, e.profile().unwrap().received_bytes))
            .collect();
        assert_eq!(views, owned);
        if seen.len() >= 30 {
            // The next batch of tasks comes through `recv_many`.
            break;
        }
    }
    assert!(groups >= 1 && shared >= 2, "ends came together");
    let more: Vec<TaskKey> = like(&mut batch, &params, 60..80).collect();
    let mut ends = Vec::new();
    while batch.outstanding() > 0 {
        ends.clear();
        batch.recv_many(&mut ends).await;
        for end in &ends {
            note(
                &mut seen,
                end.key,
                &end.outcome.as_ref().expect("echoed").body,
            );
        }
    }
    assert!(batch.recv_group().await.is_none());
    assert_eq!(seen.len(), 80);
    for (i, key) in keys.iter().chain(&more).enumerate() {
        assert_eq!(seen[key], format!("like {i}").into_bytes());
    }
}

/// Calls of one batch with other parameters each get their own: the batch shares the
/// last call's parameters with the driver only while they are the same.
#[tokio::test(start_paused = true)]
async fn like_calls_with_other_parameters_each_get_theirs() {
    let server = MockLongLinkServer::start_echo(codec()).await.unwrap();
    let (_client, mut batch) = connected_batch(&server).await;
    let good = TaskSpec::new(CmdId(0), Bytes::new()).with_retry_count(1);
    let unknown = good.clone().with_link("no-such-link");
    let calls = [
        (&good, true),
        (&good, true),
        (&unknown, false),
        (&good, true),
    ];
    for (round, (params, ok)) in calls.into_iter().enumerate() {
        let from = round as u32 * 10;
        let keys = like(&mut batch, params, from..from + 10);
        let ends = all_ends(&mut batch).await;
        for key in keys {
            let outcome = ends[&key].outcome.as_ref();
            match ok {
                true => assert!(outcome.is_ok(), "round {round}: {outcome:?}"),
                false => assert_eq!(outcome.unwrap_err().kind(), ErrorKind::Param),
            }
        }
    }
    assert_eq!(server.task_frames().len(), 1 + 30);
}

/// Through `recv_group` too, a driver that stops ends every unfinished like task once with a
/// reset, and tasks started after it stopped as well; then nothing is outstanding.
#[tokio::test(start_paused = true)]
async fn groups_bring_the_resets_of_a_driver_that_stopped() {
    let server = MockLongLinkServer::builder(codec())
        .script(echoes(1).default_reply(Reply::stall()))
        .start()
        .await
        .unwrap();
    let (client, mut batch) = connected_batch(&server).await;
    let params = TaskSpec::new(CmdId(0), Bytes::new());
    let mut keys: Vec<TaskKey> = like(&mut batch, &params, 0..20).collect();
    server.wait_for_task_frames(21).await;
    client.shutdown().await;
    keys.extend(like(&mut batch, &params, 20..25));
    let mut seen = Vec::new();
    while let Some(group) = batch.recv_group().await {
        for end in &group {
            assert_eq!(
                end.outcome().unwrap_err(),
                &TaskError::Local(LocalError::Reset)
            );
            assert!(end.profile().is_none());
            seen.push(end.key());
        }
    }
    assert_eq!(batch.outstanding(), 0);
    seen.sort_unstable();
    keys.sort_unstable();
    assert_eq!(seen, keys, "each task once");
}

/// The ends of one group share one profile, which the driver fills again in place for a
/// later group once the app has let go of the last one: a group the app still holds keeps
/// its own times, and every group shows its own.
#[tokio::test(start_paused = true)]
async fn every_group_shows_its_own_profile_whether_the_last_is_held_or_let_go() {
    let server = MockLongLinkServer::start_echo(codec()).await.unwrap();
    let (_client, mut batch) = connected_batch(&server).await;
    let params = TaskSpec::new(CmdId(0), Bytes::new()).with_retry_count(0);
    let mut held = Vec::new();
    for round in 0..4u32 {
        tokio::time::advance(Duration::from_secs(1)).await;
        let started = tokio::time::Instant::now().into_std();
        let n = 10;
        let _keys: Vec<TaskKey> = like(&mut batch, &params, round * n..(round + 1) * n).collect();
        let mut got = 0;
        while got < n as usize {
            let group = batch.recv_group().await.expect("the round's ends");
            for end in &group {
                let profile = end.profile().expect("a profile");
                assert_eq!(
                    profile.queued_at, started,
                    "round {round}: its own queue time"
                );
                assert!(profile.ended_at >= started);
                got += 1;
            }
            // The first two rounds' groups stay held; the later ones are let go at once.
            if round < 2 {
                held.push((started, group));
            }
        }
    }
    for (started, group) in &held {
        for end in group {
            assert_eq!(
                end.profile().unwrap().queued_at,
                *started,
                "a held group kept its times"
            );
        }
    }
}

/// One batch task at a time: each end comes alone, and reaches the app as the ends of a
/// batch do (sharing the driver's profile) with every field of its own profile, through
/// each way of receiving.
#[tokio::test(start_paused = true)]
async fn lone_ends_of_a_batch_keep_their_own_profiles() {
    let server = MockLongLinkServer::start_echo(codec()).await.unwrap();
    let (_client, mut batch) = connected_batch(&server).await;
    let params = TaskSpec::new(CmdId(0), Bytes::new()).with_retry_count(0);
    for i in 0..9u32 {
        tokio::time::advance(Duration::from_millis(10)).await;
        let started = tokio::time::Instant::now().into_std();
        let key = like(&mut batch, &params, i..i + 1).next().expect("a key");
        let body = format!("like {i}");
        let check = |k: TaskKey, response: &Response, p: &TaskProfile| {
            assert_eq!(k, key);
            assert_eq!(&response.body[..], body.as_bytes());
            assert_eq!(p.queued_at, started);
            assert_eq!(p.attempts, 1);
            assert_eq!(p.sent_bytes, 20 + body.len());
            assert_eq!(p.received_bytes, 20 + body.len());
            assert!(p.first_packet_timeout.is_some_and(|t| t > Duration::ZERO));
            assert!(p.decoded_at.is_some() && p.send_start.is_some());
        };
        match i % 3 {
            0 => {
                let end = batch.recv().await.expect("an end");
                check(
                    end.key,
                    end.outcome.as_ref().unwrap(),
                    &end.profile().unwrap(),
                );
            }
            1 => {
                let mut ends = Vec::new();
                batch.recv_many(&mut ends).await;
                assert_eq!(ends.len(), 1);
                let end = &ends[0];
                check(
                    end.key,
                    end.outcome.as_ref().unwrap(),
                    &end.profile().unwrap(),
                );
            }
            _ => {
                let group = batch.recv_group().await.expect("an end");
                assert_eq!(group.len(), 1);
                let end = group.iter().next().unwrap();
                check(end.key(), end.outcome().unwrap(), &end.profile().unwrap());
            }
        }
    }
}

/// The Mars codec, which panics in `is_reserved_seq` once armed: an in-process plugin with
/// a bug, called while the driver admits a command's tasks.
#[derive(Debug, Default)]
struct PanicsWhenArmed(MarsCodec, std::sync::atomic::AtomicBool);

impl phobos_plugin_api::codec::PacketCodec for PanicsWhenArmed {
    fn name(&self) -> &str {
        "mars-panics-when-armed"
    }

    fn encode(
        &self,
        head: phobos_plugin_api::codec::FrameHead,
        body: &[u8],
        extension: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), phobos_plugin_api::codec::EncodeError> {
        self.0.encode(head, body, extension, out)
    }

    fn decode(
        &self,
        buf: &[u8],
    ) -> Result<phobos_plugin_api::codec::Decoded, phobos_plugin_api::DecodeError> {
        self.0.decode(buf)
    }

    fn classify(
        &self,
        head: &phobos_plugin_api::codec::FrameHead,
    ) -> phobos_plugin_api::codec::FrameKind {
        self.0.classify(head)
    }

    fn max_frame_len(&self) -> usize {
        self.0.max_frame_len()
    }

    fn is_reserved_seq(&self, seq: phobos_plugin_api::Seq) -> bool {
        assert!(
            !self.1.load(std::sync::atomic::Ordering::Relaxed),
            "a plugin bug"
        );
        self.0.is_reserved_seq(seq)
    }
}

/// A plugin panicking while the driver admits a batch's tasks (before the engine has given
/// them ids): the panic is caught, the call answered with its fallback (the trait's default
/// rule for reserved sequences), and every task of the batch ends, answered. (Before panics
/// were caught, this killed the driver and the tasks ended with a reset; before that, they
/// got no end and the batch waited for ever.)
#[tokio::test(start_paused = true)]
async fn a_plugin_panicking_while_a_batch_is_admitted_still_ends_its_tasks() {
    let server = MockLongLinkServer::start_echo(codec()).await.unwrap();
    let codec = Arc::new(PanicsWhenArmed::default());
    for like_tasks in [false, true] {
        let config = ClientConfig::builder(codec.clone())
            .link_addrs("default-longlink", [server.ip_port()])
            .build()
            .expect("config");
        codec.1.store(false, std::sync::atomic::Ordering::Relaxed);
        let client = Client::start(config).expect("client");
        assert!(client.start_task(spec(0)).await.is_ok());
        codec.1.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut batch = client.task_batch();
        if like_tasks {
            like(&mut batch, &TaskSpec::new(CmdId(7), Bytes::new()), 1..4);
        } else {
            batch.start((1..4).map(spec));
        }
        let ends = tokio::time::timeout(Duration::from_secs(600), all_ends(&mut batch))
            .await
            .expect("every task ends");
        assert_eq!(ends.len(), 3, "like tasks: {like_tasks}");
        for end in ends.values() {
            assert!(end.outcome.is_ok(), "{:?}", end.outcome);
        }
        let stats = client.stats().await.expect("the driver is alive");
        assert!(stats.plugin_panics >= 1, "{stats:?}");
        client.shutdown().await;
    }
}

/// One end among a thousand held tasks: its list is cut to size. Before, it came with room
/// for every task the batch held (about 120 KB kept by an app keeping the end).
#[tokio::test(start_paused = true)]
async fn a_lone_end_is_not_delivered_in_a_list_sized_for_every_task_held() {
    let server = MockLongLinkServer::builder(codec())
        .default_script(ConnScript::echo().default_reply(Reply::stall()))
        .start()
        .await
        .unwrap();
    let client = client_for(&server);
    let mut batch = client.task_batch();
    let keys: Vec<_> = batch.start((0..1000).map(spec)).collect();
    server.wait_for_task_frames(1).await;
    batch.cancel(keys[0]);
    let ends = batch.recv_group().await.unwrap().into_ends();
    assert_eq!(ends.len(), 1);
    assert!(ends.capacity() <= 4, "room for {} ends", ends.capacity());
    let mut out = Vec::new();
    batch.cancel(keys[1]);
    assert_eq!(batch.recv_many(&mut out).await, 1);
    assert!(out.capacity() <= 4, "room for {} ends", out.capacity());
}
