//! Tests of the mock long-link server, driven by a raw socket client.

use std::sync::Arc;
use std::time::Duration;

use phobos_codec_mars::MarsCodec;
use phobos_plugin_api::codec::{HEARTBEAT_SEQ, IDENTIFY_SEQ};
use phobos_plugin_api::{CmdId, DecodeError, Decoded, FrameHead, PacketCodec, Seq};
use phobos_test_support::frames;
use phobos_test_support::{
    refused_addr, ClientFrameKind, ConnScript, IdentifyMode, Malformation, MockLongLinkServer,
    Reply, Step,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

fn codec() -> Arc<MarsCodec> {
    Arc::new(MarsCodec::default())
}

/// A server of one connection scripted `script`, and a socket connected to it.
async fn connected(script: ConnScript) -> (MockLongLinkServer, TcpStream) {
    let server = MockLongLinkServer::builder(codec())
        .script(script)
        .start()
        .await
        .unwrap();
    let sock = TcpStream::connect(server.addr()).await.unwrap();
    (server, sock)
}

/// Reads one whole frame with the codec: (head, body), or None on EOF/error.
async fn read_frame(sock: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(FrameHead, Vec<u8>)> {
    let codec = MarsCodec::default();
    loop {
        if let Ok(Decoded::Frame(f)) = codec.decode(buf) {
            let out = (f.head, buf[f.body.clone()].to_vec());
            buf.drain(..f.len);
            return Some(out);
        }
        let mut chunk = [0u8; 4096];
        match sock.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn echo_answers_each_request_and_records_it() {
    let server = MockLongLinkServer::start_echo(codec()).await.unwrap();
    let mut sock = TcpStream::connect(server.addr()).await.unwrap();
    let mut buf = Vec::new();
    sock.write_all(&frames::frame(0, 9, 5, b"abc"))
        .await
        .unwrap();
    let (head, body) = read_frame(&mut sock, &mut buf).await.unwrap();
    assert_eq!(head, FrameHead::new(CmdId(9), Seq(5)));
    assert_eq!(body, b"abc");
    let got = server.task_frames();
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].conn, got[0].head.seq, got[0].body.as_slice()),
        (0, Seq(5), &b"abc"[..])
    );
    assert_eq!(server.connection_count(), 1);
}

#[tokio::test(start_paused = true)]
async fn scripted_replies_run_in_request_order_and_a_stall_blocks_nothing_else() {
    let script = ConnScript::echo()
        .reply(Reply::body(b"first".to_vec()))
        .reply(Reply::stall());
    let (server, mut sock) = connected(script).await;
    let mut buf = Vec::new();
    for seq in 1..=3 {
        sock.write_all(&frames::frame(0, 1, seq, b"x"))
            .await
            .unwrap();
    }
    let a = read_frame(&mut sock, &mut buf).await.unwrap();
    let b = read_frame(&mut sock, &mut buf).await.unwrap();
    assert_eq!((a.0.seq, a.1.as_slice()), (Seq(1), &b"first"[..]));
    // Request 2 stalls; request 3 gets the default echo.
    assert_eq!((b.0.seq, b.1.as_slice()), (Seq(3), &b"x"[..]));
    assert_eq!(server.task_frames().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_delayed_reply_waits_in_virtual_time_without_holding_up_later_requests() {
    let script = ConnScript::echo().reply(Reply::delayed(Duration::from_secs(30), Reply::echo()));
    let (_server, mut sock) = connected(script).await;
    let mut buf = Vec::new();
    let t0 = Instant::now();
    sock.write_all(&frames::frame(0, 1, 1, b"slow"))
        .await
        .unwrap();
    sock.write_all(&frames::frame(0, 1, 2, b"fast"))
        .await
        .unwrap();
    let first = read_frame(&mut sock, &mut buf).await.unwrap();
    assert_eq!(first.0.seq, Seq(2));
    assert!(t0.elapsed() < Duration::from_secs(30));
    let second = read_frame(&mut sock, &mut buf).await.unwrap();
    assert_eq!(second.0.seq, Seq(1));
    assert!(t0.elapsed() >= Duration::from_secs(30));
}

#[tokio::test(start_paused = true)]
async fn every_malformation_is_rejected_by_the_mars_codec_with_its_own_error() {
    for (i, kind) in Malformation::ALL.into_iter().enumerate() {
        // One connection per kind: the reply to the i-th request is the i-th malformation.
        let mut s = ConnScript::echo();
        for _ in 0..i {
            s = s.reply(Reply::echo());
        }
        let (_server, mut sock) = connected(s.reply(Reply::malformed(kind))).await;
        let mut buf = Vec::new();
        for seq in 1..=i as u32 {
            sock.write_all(&frames::frame(0, 1, seq, b"ok"))
                .await
                .unwrap();
            read_frame(&mut sock, &mut buf).await.unwrap();
        }
        sock.write_all(&frames::frame(0, 1, 77, b"bad"))
            .await
            .unwrap();
        let mut raw = vec![0u8; 64];
        let n = sock.read(&mut raw).await.unwrap();
        let err = MarsCodec::default().decode(&raw[..n]).unwrap_err();
        let ok = match kind {
            Malformation::BadHeadLength | Malformation::ZeroHeadLength => {
                matches!(err, DecodeError::HeadLength { .. })
            }
            Malformation::WrongVersion => matches!(err, DecodeError::Version { .. }),
            Malformation::Oversize => matches!(err, DecodeError::TooLarge { .. }),
        };
        assert!(ok, "{kind:?} decoded as {err:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn close_mid_frame_writes_half_a_frame_then_eof() {
    let (server, mut sock) = connected(ConnScript::echo().reply(Reply::close_mid_frame())).await;
    sock.write_all(&frames::frame(0, 1, 1, b"0123456789"))
        .await
        .unwrap();
    let mut all = Vec::new();
    sock.read_to_end(&mut all).await.unwrap();
    assert_eq!(all.len(), 15); // half of 20 + 10
    assert!(matches!(
        MarsCodec::default().decode(&all),
        Ok(Decoded::Incomplete { .. })
    ));
    server.wait_until(|s| s.open_connections() == 0).await;
}

#[tokio::test(start_paused = true)]
async fn pushes_go_out_on_connect_and_on_demand_with_seq_zero() {
    let script = ConnScript::echo().on_connect(vec![Step::Push {
        cmd: CmdId(100),
        body: b"hello".to_vec(),
    }]);
    let (server, mut sock) = connected(script).await;
    let mut buf = Vec::new();
    let (head, body) = read_frame(&mut sock, &mut buf).await.unwrap();
    assert_eq!(
        (head.cmd_id, head.seq, body.as_slice()),
        (CmdId(100), Seq(0), &b"hello"[..])
    );
    server.wait_for_connections(1).await;
    assert_eq!(server.push(CmdId(101), b"again"), 1);
    let (head, body) = read_frame(&mut sock, &mut buf).await.unwrap();
    assert_eq!(
        (head.cmd_id, head.seq, body.as_slice()),
        (CmdId(101), Seq(0), &b"again"[..])
    );
}

#[tokio::test(start_paused = true)]
async fn a_push_counts_only_the_connections_that_write_it() {
    // Before, a connection that never reads (and so writes nothing) was counted as pushed to.
    let server = MockLongLinkServer::builder(codec())
        .script(ConnScript::never_read())
        .script(ConnScript::echo())
        .start()
        .await
        .unwrap();
    let _silent = TcpStream::connect(server.addr()).await.unwrap();
    let mut serving = TcpStream::connect(server.addr()).await.unwrap();
    server.wait_for_connections(2).await;
    assert_eq!(server.push(CmdId(7), b"p"), 1);
    let mut buf = Vec::new();
    let (head, _) = read_frame(&mut serving, &mut buf).await.unwrap();
    assert_eq!(head.cmd_id, CmdId(7));
    assert_eq!(server.open_connections(), 2);
}

#[tokio::test(start_paused = true)]
async fn heartbeats_are_answered_or_dropped_as_scripted() {
    let server = MockLongLinkServer::builder(codec())
        .script(ConnScript::echo())
        .script(ConnScript::echo().drop_heartbeats())
        .start()
        .await
        .unwrap();
    let mut a = TcpStream::connect(server.addr()).await.unwrap();
    let mut buf = Vec::new();
    a.write_all(&frames::heartbeat(0)).await.unwrap();
    let (head, _) = read_frame(&mut a, &mut buf).await.unwrap();
    assert_eq!(head.seq, HEARTBEAT_SEQ);

    let mut b = TcpStream::connect(server.addr()).await.unwrap();
    b.write_all(&frames::heartbeat(0)).await.unwrap();
    b.write_all(&frames::frame(0, 1, 3, b"after"))
        .await
        .unwrap();
    let mut buf = Vec::new();
    let (head, _) = read_frame(&mut b, &mut buf).await.unwrap();
    assert_eq!(head.seq, Seq(3), "the heartbeat got no reply");
    assert_eq!(server.frames_of(ClientFrameKind::Heartbeat).len(), 2);
}

#[tokio::test(start_paused = true)]
async fn identify_is_answered_with_the_scripted_body() {
    let server = MockLongLinkServer::builder(codec())
        .script(ConnScript::echo().identify(IdentifyMode::Answer(b"ok-id".to_vec())))
        .start()
        .await
        .unwrap();
    let mut sock = TcpStream::connect(server.addr()).await.unwrap();
    let mut buf = Vec::new();
    sock.write_all(&frames::frame(0, 55, IDENTIFY_SEQ.0, b"token"))
        .await
        .unwrap();
    let (head, body) = read_frame(&mut sock, &mut buf).await.unwrap();
    assert_eq!(
        (head.cmd_id, head.seq, body.as_slice()),
        (CmdId(55), IDENTIFY_SEQ, &b"ok-id"[..])
    );
    let ids = server.frames_of(ClientFrameKind::Identify);
    assert_eq!(ids[0].body, b"token");
}

#[tokio::test(start_paused = true)]
async fn refused_and_never_read_connections_are_counted_but_not_served() {
    let server = MockLongLinkServer::builder(codec())
        .script(ConnScript::refuse())
        .script(ConnScript::never_read())
        .start()
        .await
        .unwrap();
    let mut a = TcpStream::connect(server.addr()).await.unwrap();
    let mut rest = Vec::new();
    let _ = a.read_to_end(&mut rest).await;
    assert!(rest.is_empty());

    let mut b = TcpStream::connect(server.addr()).await.unwrap();
    b.write_all(&frames::frame(0, 1, 1, b"lost")).await.unwrap();
    server.wait_for_connections(2).await;
    let r = tokio::time::timeout(Duration::from_secs(60), b.read(&mut [0u8; 8])).await;
    assert!(
        r.is_err(),
        "a never-read connection sends nothing and stays open"
    );
    assert!(server.task_frames().is_empty());
    assert_eq!(server.open_connections(), 1);
    assert!(server.close(1));
    server.wait_until(|s| s.open_connections() == 0).await;
}

#[tokio::test(start_paused = true)]
async fn client_garbage_is_a_recorded_decode_error_that_closes_the_connection() {
    let server = MockLongLinkServer::start_echo(codec()).await.unwrap();
    let mut sock = TcpStream::connect(server.addr()).await.unwrap();
    sock.write_all(&frames::zero_head_len(0, 1)).await.unwrap();
    let mut rest = Vec::new();
    let _ = sock.read_to_end(&mut rest).await;
    assert!(rest.is_empty());
    let errs = server.decode_errors();
    assert_eq!(errs.len(), 1);
    assert!(matches!(errs[0].1, DecodeError::HeadLength { .. }));
}

#[tokio::test(start_paused = true)]
async fn later_connections_follow_the_default_script() {
    let server = MockLongLinkServer::builder(codec())
        .script(ConnScript::refuse())
        .default_script(ConnScript::echo().default_reply(Reply::body(b"d".to_vec())))
        .start()
        .await
        .unwrap();
    let mut a = TcpStream::connect(server.addr()).await.unwrap();
    let _ = a.read_to_end(&mut Vec::new()).await;
    let mut b = TcpStream::connect(server.addr()).await.unwrap();
    b.write_all(&frames::frame(0, 1, 1, b"x")).await.unwrap();
    let (_, body) = read_frame(&mut b, &mut Vec::new()).await.unwrap();
    assert_eq!(body, b"d");
    server.set_default_script(ConnScript::refuse());
    let mut c = TcpStream::connect(server.addr()).await.unwrap();
    assert_eq!(c.read(&mut [0u8; 4]).await.unwrap_or(0), 0);
    assert_eq!(server.connection_count(), 3);
}

#[tokio::test]
async fn refused_addr_refuses() {
    let addr = refused_addr().await.unwrap();
    let err = TcpStream::connect(addr).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
}

/// A reply with two waits holds up no other request at either: request 2's echo comes while
/// request 1's reply still waits at its second wait. (The rest of a reply after its first
/// wait ran in the connection's own task, where the second wait paused the connection.)
#[tokio::test(start_paused = true)]
async fn a_replys_second_wait_holds_up_no_other_request_either() {
    let script = ConnScript::echo().reply(Reply::steps(vec![
        Step::Wait(Duration::from_secs(1)),
        Step::Push {
            cmd: CmdId(50),
            body: b"p".to_vec(),
        },
        Step::Wait(Duration::from_secs(30)),
        Step::Respond(None),
    ]));
    let (_server, mut sock) = connected(script).await;
    let mut buf = Vec::new();
    let t0 = Instant::now();
    sock.write_all(&frames::frame(0, 1, 1, b"slow"))
        .await
        .unwrap();
    let push = read_frame(&mut sock, &mut buf).await.unwrap();
    assert_eq!(push.0.seq, Seq(0), "the push, after the first wait");
    sock.write_all(&frames::frame(0, 1, 2, b"fast"))
        .await
        .unwrap();
    let next = read_frame(&mut sock, &mut buf).await.unwrap();
    assert_eq!(next.0.seq, Seq(2), "request 2's echo first");
    assert!(t0.elapsed() < Duration::from_secs(30), "{:?}", t0.elapsed());
    let last = read_frame(&mut sock, &mut buf).await.unwrap();
    assert_eq!(last.0.seq, Seq(1), "then request 1's reply");
    assert!(t0.elapsed() >= Duration::from_secs(31));
}
