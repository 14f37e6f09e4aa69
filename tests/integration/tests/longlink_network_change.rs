//! Environment events reach the engine through the client: a network change drops the link
//! at once and it reconnects without pacing.

use std::sync::Arc;

use phobos_codec_mars::MarsCodec;
use phobos_plugin_api::{CmdId, NetKind};
use phobos_stn::{Client, ClientConfig, LinkError, LinkStatus, TaskSpec};
use phobos_test_support::MockLongLinkServer;
use tokio::time::Instant;

#[tokio::test(start_paused = true)]
async fn a_network_change_drops_the_link_and_it_reconnects_at_once() {
    let codec = Arc::new(MarsCodec::default());
    let server = MockLongLinkServer::start_echo(codec.clone()).await.unwrap();
    let config = ClientConfig::builder(codec)
        .link_addrs("default-longlink", [server.ip_port()])
        .build()
        .unwrap();
    let client = Client::start(config).unwrap();
    let mut events = client.link_events();
    client.make_sure_connected("default-longlink");
    events
        .wait_for("default-longlink", |e| {
            matches!(e.status, LinkStatus::Connected(_))
        })
        .await
        .unwrap();

    let t0 = Instant::now();
    client.set_network(NetKind::Mobile, "mobile_test");
    let down = events
        .wait_for("default-longlink", |e| e.status == LinkStatus::Disconnected)
        .await
        .unwrap();
    assert_eq!(down.reason, Some(LinkError::NetworkChange));
    events
        .wait_for("default-longlink", |e| {
            matches!(e.status, LinkStatus::Connected(_))
        })
        .await
        .unwrap();
    assert!(
        t0.elapsed().as_secs() < 1,
        "no reconnect pacing after a network change"
    );
    assert_eq!(server.connection_count(), 2);
    let resp = client
        .start_task(TaskSpec::new(CmdId(1), &b"on mobile"[..]))
        .await
        .unwrap();
    assert_eq!(&resp.body[..], b"on mobile");
}

#[tokio::test(start_paused = true)]
async fn the_signalling_keeper_sends_keep_frames_until_its_keep_time_passes() {
    use phobos_test_support::ClientFrameKind;
    use std::time::Duration;

    let codec = Arc::new(MarsCodec::default());
    let server = MockLongLinkServer::start_echo(codec.clone()).await.unwrap();
    let config = ClientConfig::builder(codec)
        .link_addrs("default-longlink", [server.ip_port()])
        .build()
        .unwrap();
    let client = Client::start(config).unwrap();
    let mut events = client.link_events();
    client.make_sure_connected("default-longlink");
    events
        .wait_for("default-longlink", |e| {
            matches!(e.status, LinkStatus::Connected(_))
        })
        .await
        .unwrap();
    client.keep_signalling();
    tokio::time::sleep(Duration::from_secs(60)).await;
    let keeps = server.frames_of(ClientFrameKind::SignalKeep);
    // One at once, then one per 5 s of quiet, for the 20 s keep time (spec §7.11).
    assert!((4..=6).contains(&keeps.len()), "{}", keeps.len());
    let span = keeps.last().unwrap().at - keeps[0].at;
    assert!(span <= Duration::from_secs(25), "{span:?}");
    assert!(keeps.iter().all(|f| f.head.cmd_id == CmdId(243)));
    client.stop_signalling();
}

/// With many links, one network change moves them all at once: a listener sees every link's
/// change (a buffer of 32 events kept only the last links' of about 300).
#[tokio::test(start_paused = true)]
async fn a_network_change_over_many_links_reaches_a_listener_for_each_link() {
    const LINKS: usize = 100;
    let codec = Arc::new(MarsCodec::default());
    let server = MockLongLinkServer::builder(codec.clone())
        .record(false)
        .start()
        .await
        .unwrap();
    let mut builder = ClientConfig::builder(codec);
    for i in 0..LINKS {
        builder = builder.link_addrs(format!("link-{i}"), [server.ip_port()]);
    }
    let client = Client::start(builder.build().unwrap()).unwrap();
    // Paused time runs ahead while everything waits: a lost event fails this at once.
    let listened = tokio::time::timeout(std::time::Duration::from_secs(600), async {
        let mut events = client.link_events();
        for i in 0..LINKS {
            client.make_sure_connected(format!("link-{i}"));
        }
        let mut up = 0;
        while up < LINKS {
            let e = events.recv().await.expect("no event lost");
            up += usize::from(matches!(e.status, LinkStatus::Connected(_)));
        }
        let mut events = client.link_events();
        client.set_network(NetKind::Mobile, "mobile_test");
        let mut down = 0;
        while down < LINKS {
            let e = events.recv().await.expect("no event lost");
            if e.status == LinkStatus::Disconnected {
                assert_eq!(e.reason, Some(LinkError::NetworkChange));
                down += 1;
            }
        }
    })
    .await;
    assert!(listened.is_ok(), "every link's events arrived");
    client.shutdown().await;
}
