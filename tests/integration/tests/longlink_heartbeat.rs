//! Heartbeats: the first goes out right after connect; an unanswered one drops the link and
//! the link comes back.

use std::time::Duration;

use phobos_plugin_api::codec::HEARTBEAT_SEQ;
use phobos_plugin_api::CmdId;
use phobos_stn::{Client, ClientConfig, LinkError, LinkStatus, TaskSpec};
use phobos_stn_proto::SocketFailure;
use phobos_test_support::{ClientFrameKind, ConnScript, MockLongLinkServer};
use tokio::time::Instant;

mod common;
use common::codec;

#[tokio::test(start_paused = true)]
async fn an_unanswered_heartbeat_drops_the_link_and_it_reconnects() {
    let server = MockLongLinkServer::builder(codec())
        .script(ConnScript::echo().drop_heartbeats())
        .start()
        .await
        .unwrap();
    let config = ClientConfig::builder(codec())
        .link_addrs("default-longlink", [server.ip_port()])
        .build()
        .unwrap();
    let client = Client::start(config).unwrap();
    let mut events = client.link_events();
    client.set_foreground(true);
    client.make_sure_connected("default-longlink");

    events
        .wait_for("default-longlink", |e| {
            matches!(e.status, LinkStatus::Connected(_))
        })
        .await
        .unwrap();
    let up = Instant::now();
    let down = events
        .wait_for("default-longlink", |e| e.status == LinkStatus::Disconnected)
        .await
        .unwrap();
    assert_eq!(
        down.reason,
        Some(LinkError::Socket(SocketFailure::HeartbeatTimeout))
    );
    // Mars's reply timeout: 8 s after the heartbeat sent right after connect.
    assert_eq!(up.elapsed(), Duration::from_secs(8));
    let hb = server.frames_of(ClientFrameKind::Heartbeat);
    assert_eq!(hb[0].head.seq, HEARTBEAT_SEQ);
    assert_eq!(hb[0].conn, 0);

    // The keep-alive link reconnects by itself (the second connection answers heartbeats).
    events
        .wait_for("default-longlink", |e| {
            matches!(e.status, LinkStatus::Connected(_))
        })
        .await
        .unwrap();
    assert_eq!(server.connection_count(), 2);
    let resp = client
        .start_task(TaskSpec::new(CmdId(2), &b"alive"[..]))
        .await
        .unwrap();
    assert_eq!(&resp.body[..], b"alive");
    assert_eq!(server.task_frames()[0].conn, 1);
}

#[tokio::test(start_paused = true)]
async fn answered_heartbeats_keep_one_connection_for_an_hour() {
    let server = MockLongLinkServer::start_echo(codec()).await.unwrap();
    let config = ClientConfig::builder(codec())
        .link_addrs("default-longlink", [server.ip_port()])
        .build()
        .unwrap();
    let client = Client::start(config).unwrap();
    client.make_sure_connected("default-longlink");
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(server.connection_count(), 1);
    // One right after connect, then one per 210 s (Mars's MinHeartInterval).
    let n = server.frames_of(ClientFrameKind::Heartbeat).len();
    assert_eq!(n, 1 + 3600 / 210, "{n}");
    assert!(matches!(
        client.link_status("default-longlink"),
        Some(LinkStatus::Connected(_))
    ));
}
