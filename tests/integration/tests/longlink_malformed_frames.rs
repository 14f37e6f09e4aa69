//! Malformed frames and broken connections: the link drops with a typed error, the engine
//! stays responsive and the next task succeeds on a new connection.

use phobos_plugin_api::{CmdId, DecodeError};
use phobos_stn::{ErrorKind, LinkError, LinkStatus, TaskError, TaskSpec};
use phobos_stn_proto::{CodecFailure, SocketFailure};
use phobos_test_support::{ConnScript, Malformation, MockLongLinkServer, Reply};

mod common;
use common::{client_for, codec};

fn no_retry(body: &'static [u8]) -> TaskSpec {
    TaskSpec::new(CmdId(1), body).with_retry_count(0)
}

fn decode_error_matches(kind: Malformation, e: &DecodeError) -> bool {
    match kind {
        Malformation::BadHeadLength | Malformation::ZeroHeadLength => {
            matches!(e, DecodeError::HeadLength { .. })
        }
        Malformation::WrongVersion => matches!(e, DecodeError::Version { .. }),
        Malformation::Oversize => matches!(e, DecodeError::TooLarge { .. }),
    }
}

#[tokio::test(start_paused = true)]
async fn each_malformed_frame_kind_drops_the_link_with_a_codec_error_and_the_next_task_succeeds() {
    for kind in Malformation::ALL {
        let server = MockLongLinkServer::builder(codec())
            .script(ConnScript::echo().reply(Reply::malformed(kind)))
            .start()
            .await
            .unwrap();
        let client = client_for(&server);
        let mut events = client.link_events();
        let err = client.start_task(no_retry(b"bad")).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Codec, "{kind:?}: {err}");
        let TaskError::Codec(CodecFailure::Decode(e)) = &err else {
            panic!("{kind:?}: {err:?}");
        };
        assert!(decode_error_matches(kind, e), "{kind:?}: {e:?}");
        let down = events
            .wait_for("default-longlink", |ev| {
                ev.status == LinkStatus::Disconnected
            })
            .await
            .unwrap();
        assert!(
            matches!(down.reason, Some(LinkError::Decode(d)) if decode_error_matches(kind, &d)),
            "{kind:?}: {down:?}"
        );
        // The engine is still responsive: the next task reconnects and succeeds.
        let ok = client.start_task(no_retry(b"good")).await.unwrap();
        assert_eq!(&ok.body[..], b"good", "{kind:?}");
        assert_eq!(server.connection_count(), 2, "{kind:?}");
        client.shutdown().await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_malformed_frame_is_retried_on_a_new_connection_when_the_task_has_retries() {
    let server = MockLongLinkServer::builder(codec())
        .script(ConnScript::echo().reply(Reply::malformed(Malformation::ZeroHeadLength)))
        .start()
        .await
        .unwrap();
    let client = client_for(&server);
    let resp = client
        .start_task(TaskSpec::new(CmdId(1), &b"again"[..]).with_retry_count(1))
        .await
        .unwrap();
    assert_eq!(&resp.body[..], b"again");
    assert_eq!(server.connection_count(), 2);
    assert_eq!(server.task_frames().len(), 2);
    assert_eq!(server.task_frames()[1].conn, 1);
}

#[tokio::test(start_paused = true)]
async fn a_close_in_the_middle_of_a_frame_is_a_remote_close() {
    let server = MockLongLinkServer::builder(codec())
        .script(ConnScript::echo().reply(Reply::close_mid_frame()))
        .start()
        .await
        .unwrap();
    let client = client_for(&server);
    let err = client.start_task(no_retry(b"half")).await.unwrap_err();
    assert_eq!(err, TaskError::Socket(SocketFailure::RemoteClosed));
    assert_eq!(err.kind(), ErrorKind::Socket);
    let ok = client.start_task(no_retry(b"whole")).await.unwrap();
    assert_eq!(&ok.body[..], b"whole");
}

#[tokio::test(start_paused = true)]
async fn a_server_close_fails_every_running_task_together() {
    let server = MockLongLinkServer::builder(codec())
        .script(
            ConnScript::echo()
                .reply(Reply::stall())
                .reply(Reply::stall())
                .reply(Reply::close()),
        )
        .start()
        .await
        .unwrap();
    let client = client_for(&server);
    let handles: Vec<_> = (0..3).map(|_| client.start_task(no_retry(b"x"))).collect();
    for h in handles {
        let err = h.await.unwrap_err();
        assert_eq!(err, TaskError::Socket(SocketFailure::RemoteClosed));
    }
}
