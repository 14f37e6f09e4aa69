//! The long link through the fault-injecting proxy: sliced and delayed bytes still frame
//! correctly; a half-open path is caught by timeouts and the link recovers.

use std::time::Duration;

use phobos_plugin_api::CmdId;
use phobos_stn::{Client, ClientConfig, ErrorKind, TaskSpec};
use phobos_test_support::{DirectionFaults, FaultProxy, MockLongLinkServer, ProxyConfig};

mod common;
use common::codec;

async fn client_via(proxy: &FaultProxy) -> Client {
    let config = ClientConfig::builder(codec())
        .link_addrs("default-longlink", [proxy.ip_port()])
        .build()
        .unwrap();
    let client = Client::start(config).unwrap();
    client.set_foreground(true);
    client
}

#[tokio::test(start_paused = true)]
async fn responses_sliced_into_single_bytes_with_latency_still_match_their_tasks() {
    let server = MockLongLinkServer::start_echo(codec()).await.unwrap();
    let down = DirectionFaults {
        slice: Some(1),
        latency: Duration::from_millis(50),
        jitter: Duration::from_millis(30),
        ..Default::default()
    };
    let up = DirectionFaults {
        slice: Some(3),
        ..Default::default()
    };
    let proxy = FaultProxy::start(
        ProxyConfig::new(server.addr(), 11)
            .server_to_client(down)
            .client_to_server(up),
    )
    .await
    .unwrap();
    let client = client_via(&proxy).await;
    let handles: Vec<_> = (0..20u8)
        .map(|i| client.start_task(TaskSpec::new(CmdId(2), vec![i; 100])))
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        assert_eq!(&h.await.unwrap().body[..], &[i as u8; 100]);
    }
    assert_eq!(server.connection_count(), 1);
}

#[tokio::test(start_paused = true)]
async fn corrupted_bytes_fail_the_link_not_the_engine() {
    let server = MockLongLinkServer::start_echo(codec()).await.unwrap();
    let proxy = FaultProxy::start(ProxyConfig::new(server.addr(), 5).server_to_client(
        DirectionFaults {
            corrupt_probability: 0.02,
            ..Default::default()
        },
    ))
    .await
    .unwrap();
    let client = client_via(&proxy).await;
    for i in 0..20u8 {
        let spec = TaskSpec::new(CmdId(2), vec![i; 64]).with_retry_count(0);
        match client.start_task(spec).await {
            // A flipped body byte is not detectable by the Mars format (no checksum).
            Ok(resp) => {
                assert_eq!(resp.body.len(), 64);
            }
            Err(e) => assert!(
                matches!(
                    e.kind(),
                    ErrorKind::Codec | ErrorKind::Socket | ErrorKind::Timeout(_)
                ),
                "{e:?}"
            ),
        }
    }
    assert!(proxy.bytes_corrupted() > 0);
    assert!(client.stats().await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_half_open_path_is_detected_and_the_link_recovers_when_it_heals() {
    let server = MockLongLinkServer::start_echo(codec()).await.unwrap();
    let proxy = FaultProxy::start(ProxyConfig::new(server.addr(), 3))
        .await
        .unwrap();
    let client = client_via(&proxy).await;
    let first = client
        .start_task(TaskSpec::new(CmdId(1), &b"before"[..]))
        .await
        .unwrap();
    assert_eq!(&first.body[..], b"before");

    proxy.set_half_open(true);
    let err = client
        .start_task(TaskSpec::new(CmdId(1), &b"lost"[..]).with_retry_count(0))
        .await
        .unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::Timeout(phobos_stn::TimeoutLevel::FirstPacket),
        "{err:?}"
    );

    proxy.set_half_open(false);
    let after = client
        .start_task(TaskSpec::new(CmdId(1), &b"after"[..]))
        .await
        .unwrap();
    assert_eq!(&after.body[..], b"after");
    assert!(
        proxy.connection_count() >= 2,
        "the dead connection was replaced"
    );
}
