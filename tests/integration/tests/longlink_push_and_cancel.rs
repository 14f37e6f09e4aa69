//! Server pushes reach subscribers; canceled tasks end with `Canceled`.

use std::time::Duration;

use phobos_plugin_api::CmdId;
use phobos_stn::{ErrorKind, TaskError, TaskSpec};
use phobos_test_support::{ConnScript, MockLongLinkServer, Reply, Step};

mod common;
use common::{client_for, codec};

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
