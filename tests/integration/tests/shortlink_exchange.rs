//! The short link end to end on loopback: the request Mars's default packer writes, byte for
//! byte; content-length and chunked responses; HTTP and broken responses mapped to typed
//! errors; a stalled server (first-packet timeout, then a retry) in paused time; retries
//! switching to the next address.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use phobos_plugin_api::CmdId;
use phobos_stn::{
    ChannelSelect, Client, ClientConfig, ErrorKind, HttpFailure, ShortLinkConfig, TaskError,
    TaskSpec, TimeoutLevel,
};
use phobos_stn_proto::SocketFailure;
use phobos_test_support::{refused_addr, MockShortLinkServer, ShortReply};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

mod common;
use common::{codec, ends_once};

/// A client whose tasks go to the short link (the long link is configured but never used).
async fn client() -> Client {
    client_with(|b| b).await
}

async fn client_with(
    f: impl FnOnce(phobos_stn::ClientConfigBuilder) -> phobos_stn::ClientConfigBuilder,
) -> Client {
    let unused = refused_addr().await.unwrap();
    let config = f(ClientConfig::builder(codec()).link_addrs("default-longlink", [unused.into()]))
        .build()
        .expect("a valid config");
    Client::start(config).expect("the client starts")
}

fn short(hosts: &[String]) -> TaskSpec {
    TaskSpec::new(CmdId(0), &b"hello"[..])
        .with_channel(ChannelSelect::Short)
        .with_short_link("/cgi-bin/x", hosts.iter().cloned())
}

#[tokio::test]
async fn the_request_is_mars_default_shape_byte_for_byte() {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !got.ends_with(b"hello") {
            let n = s.read(&mut buf).await.unwrap();
            assert!(
                n > 0,
                "request incomplete: {:?}",
                String::from_utf8_lossy(&got)
            );
            got.extend_from_slice(&buf[..n]);
        }
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            .await
            .unwrap();
        got
    });
    let client = client().await;
    let resp = client
        .start_task(short(&[addr.to_string()]).with_header("X-Trace", "7"))
        .await
        .unwrap();
    assert_eq!(&resp.body[..], b"ok");
    let got = server.await.unwrap();
    let want = format!(
        "POST /cgi-bin/x HTTP/1.1\r\n\
         Accept: */*\r\n\
         Cache-Control: no-cache\r\n\
         Connection: close\r\n\
         Content-Length: 5\r\n\
         Content-Type: application/octet-stream\r\n\
         Host: {addr}\r\n\
         User-Agent: MicroMessenger Client\r\n\
         X-Trace: 7\r\n\
         \r\n\
         hello"
    );
    assert_eq!(String::from_utf8(got).unwrap(), want);
}

#[tokio::test]
async fn content_length_and_chunked_responses_deliver_their_bodies() {
    let server = MockShortLinkServer::start(|n| match n {
        0 => ShortReply::Ok(b"plain body".to_vec()),
        _ => ShortReply::Chunked(vec![b"chu".to_vec(), b"nked".to_vec(), vec![b'!'; 3000]]),
    })
    .await
    .unwrap();
    let client = client().await;
    let one = client.start_task(short(&[server.host()])).await.unwrap();
    assert_eq!(&one.body[..], b"plain body");
    let two = client.start_task(short(&[server.host()])).await.unwrap();
    assert_eq!(two.body.len(), 3007);
    assert!(two.body.starts_with(b"chunked!"));
    assert_eq!(server.connection_count(), 2, "Connection: close");
}

// Paused time: the 1 s retry pause passes without waiting.
#[tokio::test(start_paused = true)]
async fn http_and_broken_responses_end_with_typed_errors() {
    let cases: Vec<(ShortReply, TaskError)> = vec![
        (
            ShortReply::Status(503, b"busy".to_vec()),
            TaskError::Http(HttpFailure::Status(503)),
        ),
        (
            ShortReply::Status(404, Vec::new()),
            TaskError::Http(HttpFailure::Status(404)),
        ),
        (
            ShortReply::Raw(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\ntruncated".to_vec()),
            TaskError::Socket(SocketFailure::RemoteClosed),
        ),
        (
            ShortReply::Raw(b"SSH-2.0-OpenSSH\r\n\r\n".to_vec()),
            TaskError::Http(HttpFailure::BadStatusLine),
        ),
        (
            ShortReply::Raw(b"HTTP/1.1 200 OK\r\nBad Header Line\r\n\r\n".to_vec()),
            TaskError::Http(HttpFailure::BadHeaders),
        ),
        (
            ShortReply::Raw(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nnot-hex\r\n".to_vec(),
            ),
            TaskError::Http(HttpFailure::BadBody),
        ),
        (
            ShortReply::Ok(vec![b'x'; 2048]),
            TaskError::Http(HttpFailure::BodyTooLarge { limit: 1024 }),
        ),
        (
            // A body in 1-byte chunks: a frame's work for each byte.
            ShortReply::Raw(
                [
                    &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
                    &b"1\r\nx\r\n".repeat(2_000),
                    b"0\r\n\r\n",
                ]
                .concat(),
            ),
            TaskError::Http(HttpFailure::BadBody),
        ),
        (
            ShortReply::Raw(Vec::new()),
            TaskError::Socket(SocketFailure::RemoteClosed),
        ),
        (
            // Interim responses without end (here 20,000, then a final one).
            ShortReply::Raw(
                [
                    b"HTTP/1.1 100 Continue\r\n\r\n".repeat(20_000),
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(),
                ]
                .concat(),
            ),
            TaskError::Http(HttpFailure::BadHeaders),
        ),
    ];
    let client =
        client_with(|b| b.short_link(ShortLinkConfig::default().max_response_len(1024))).await;
    for (reply, want) in cases {
        let server = MockShortLinkServer::start(move |_| reply.clone())
            .await
            .unwrap();
        let end = client
            .start_task(short(&[server.host()]).with_retry_count(1))
            .end()
            .await
            .unwrap();
        assert_eq!(end.outcome.as_ref().err(), Some(&want));
        assert_eq!(end.profile.attempts, 2, "retried once: {want}");
        assert_eq!(server.connection_count(), 2);
        if matches!(want, TaskError::Http(_)) {
            assert_eq!(want.kind(), ErrorKind::Http);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_stalled_server_costs_a_first_packet_timeout_then_the_retry_succeeds() {
    let server = MockShortLinkServer::start(|n| match n {
        0 => ShortReply::Stall,
        _ => ShortReply::Ok(b"second time".to_vec()),
    })
    .await
    .unwrap();
    let client = client().await;
    let t0 = tokio::time::Instant::now();
    let end = client
        .start_task(short(&[server.host()]))
        .end()
        .await
        .unwrap();
    assert_eq!(&end.outcome.unwrap().body[..], b"second time");
    let waited = t0.elapsed();
    // 12 s first-packet timeout (Wi-Fi base) + the 1 s retry pause.
    assert!(waited >= Duration::from_secs(13), "{waited:?}");
    assert!(waited < Duration::from_secs(14), "{waited:?}");
    assert_eq!(end.profile.attempts, 2);
    assert_eq!(server.connection_count(), 2);
}

#[tokio::test(start_paused = true)]
async fn without_retries_a_stall_ends_with_a_first_packet_timeout() {
    let server = MockShortLinkServer::start(|_| ShortReply::Stall)
        .await
        .unwrap();
    let client = client().await;
    let err = client
        .start_task(short(&[server.host()]).with_retry_count(0))
        .await
        .unwrap_err();
    assert_eq!(err, TaskError::Timeout(TimeoutLevel::FirstPacket));
}

#[tokio::test]
async fn a_refusing_first_address_falls_through_to_the_second() {
    let dead: SocketAddr = refused_addr().await.unwrap();
    let server = MockShortLinkServer::start(|_| ShortReply::Ok(b"from the second".to_vec()))
        .await
        .unwrap();
    let client = client().await;
    let end = client
        .start_task(short(&[dead.to_string(), server.host()]))
        .end()
        .await
        .unwrap();
    assert_eq!(&end.outcome.unwrap().body[..], b"from the second");
    assert_eq!(
        end.profile.attempts, 1,
        "the race moved on within the attempt"
    );
    assert_eq!(end.profile.addr, Some(server.ip_port()));
}

// Paused time: the 1 s retry pause passes without waiting.
#[tokio::test(start_paused = true)]
async fn a_503_retries_on_the_next_address() {
    let first = MockShortLinkServer::start(|_| ShortReply::Status(503, Vec::new()))
        .await
        .unwrap();
    let second = MockShortLinkServer::start(|_| ShortReply::Ok(b"ok".to_vec()))
        .await
        .unwrap();
    let client = client().await;
    let end = client
        .start_task(short(&[first.host(), second.host()]))
        .end()
        .await
        .unwrap();
    assert_eq!(&end.outcome.unwrap().body[..], b"ok");
    assert_eq!(end.profile.attempts, 2);
    assert_eq!(end.profile.addr, Some(second.ip_port()));
    assert_eq!(first.connection_count(), 1);
    assert_eq!(second.connection_count(), 1);
}

#[tokio::test]
async fn names_resolve_through_the_ip_sources_for_the_short_link() {
    let server = MockShortLinkServer::start(|_| ShortReply::Ok(b"named".to_vec()))
        .await
        .unwrap();
    let source = Arc::new(
        phobos_test_support::StaticIpSource::new().with_host("s.example", [server.ip_port()]),
    );
    let client = client_with(|b| b.ip_source(source.clone())).await;
    let resp = client
        .start_task(short(&["s.example".to_owned()]))
        .await
        .unwrap();
    assert_eq!(&resp.body[..], b"named");
    let req = String::from_utf8(server.requests()[0].clone()).unwrap();
    assert!(req.contains("\r\nHost: s.example\r\n"), "{req}");
}

#[tokio::test]
async fn an_either_task_takes_the_short_link_while_the_long_link_is_down() {
    let server = MockShortLinkServer::start(|_| ShortReply::Ok(b"short".to_vec()))
        .await
        .unwrap();
    let client = client().await;
    let end = client
        .start_task(
            TaskSpec::new(CmdId(7), &b"either"[..])
                .with_channel(ChannelSelect::Either)
                .with_short_link("/cgi-bin/e", [server.host()]),
        )
        .end()
        .await
        .unwrap();
    assert_eq!(&end.outcome.unwrap().body[..], b"short");
    assert_eq!(
        end.profile.link.as_ref().map(|l| l.as_str()),
        Some(phobos_stn_proto::SHORT_LINK)
    );
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_response_that_stops_midway_hits_the_packet_to_packet_timeout() {
    let head = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part".to_vec();
    let sent = head.len();
    let server = MockShortLinkServer::start(move |_| ShortReply::PartialThenStall(head.clone()))
        .await
        .unwrap();
    let client = client().await;
    let t0 = tokio::time::Instant::now();
    let end = client
        .start_task(short(&[server.host()]).with_retry_count(0))
        .end()
        .await
        .unwrap();
    assert_eq!(
        end.outcome.unwrap_err(),
        TaskError::Timeout(TimeoutLevel::PacketToPacket)
    );
    // 8 s (Wi-Fi) after the last byte, well before the 12 s first-packet timeout.
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_secs(8) && waited < Duration::from_secs(9),
        "{waited:?}"
    );
    assert!(end.profile.first_byte.is_some());
    assert_eq!(end.profile.received_bytes, sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_tasks_runs_a_few_at_a_time_and_every_task_succeeds() {
    // 2,000 tasks at once. Running them all at once (as Mars does, a thread each) opened a
    // socket or more per task: under a 1,024-descriptor limit 257 of 3,000 succeeded. The
    // engine runs `ShortLinkConfig::max_running` (16) at a time; the rest wait their turn.
    // `PHOBOS_SHORT_BURST` sets another size.
    let n: usize = std::env::var("PHOBOS_SHORT_BURST")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let server = MockShortLinkServer::start(|n| ShortReply::Ok(format!("r{n}").into_bytes()))
        .await
        .unwrap();
    let client = client().await;
    let started = std::time::Instant::now();
    // The same body 2,000 times would trip the frequency limit (the 106th within the hour),
    // which this test is not about.
    let mut batch =
        client.start_tasks((0..n).map(|_| short(&[server.host()]).with_limits(false, false)));
    for end in ends_once(&mut batch, n).await {
        assert!(end.outcome.is_ok(), "{:?}: {:?}", end.key, end.outcome);
    }
    assert_eq!(server.requests().len(), n);
    // At most 16 attempts at once, each racing at most 3 connections (and on loopback the
    // first connect wins at once).
    let peak = server.peak_open_connections();
    // Shown, not asserted (wall clock).
    eprintln!(
        "{n} tasks in {:?}, at most {peak} connections at once",
        started.elapsed()
    );
    assert!(peak <= 3 * 16, "{peak} connections open at once");
}

/// A server that answers a large upload before reading it all (`413`, then close): the task
/// ends with the server's answer, not with the broken pipe its unread body caused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_sent_before_the_whole_request_was_read_is_the_tasks_end() {
    // A small receive buffer, so the client is still writing when the server closes.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.bind((Ipv4Addr::LOCALHOST, 0).into()).unwrap();
    let listener = socket.listen(16).unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut buf = [0u8; 1024];
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s
                    .write_all(
                        b"HTTP/1.1 413 Payload Too Large\r\nConnection: close\r\n\
                          Content-Length: 0\r\n\r\n",
                    )
                    .await;
                let _ = s.shutdown().await;
                // Dropping it with the body unread resets the connection.
            });
        }
    });
    let client = client().await;
    for len in [16 * 1024, 4 * 1024 * 1024] {
        let spec = TaskSpec::new(CmdId(0), vec![b'q'; len])
            .with_channel(ChannelSelect::Short)
            .with_short_link("/cgi-bin/x", [addr.to_string()])
            .with_retry_count(0);
        let end = client.start_task(spec).await;
        assert_eq!(
            end.unwrap_err(),
            TaskError::Http(HttpFailure::Status(413)),
            "a {len}-byte upload"
        );
    }
    client.shutdown().await;
}

/// Chains short-link tasks from an end handler: each answer starts the next request, in
/// pairs, until `left` is used up; records each answer's body once.
struct ShortChain {
    host: String,
    left: usize,
    bodies: Vec<Vec<u8>>,
    failed: usize,
}

impl ShortChain {
    fn next(&mut self, tasks: &mut phobos_stn::Starter<'_>, n: usize) {
        let n = n.min(self.left);
        self.left -= n;
        let host = self.host.clone();
        tasks.start((0..n).map(|_| short(std::slice::from_ref(&host)).with_limits(false, false)));
    }
}

impl phobos_stn::EndHandler for ShortChain {
    fn start(&mut self, tasks: &mut phobos_stn::Starter<'_>) {
        self.next(tasks, 2);
    }

    fn on_ends(&mut self, ends: phobos_stn::EndGroup, tasks: &mut phobos_stn::Starter<'_>) {
        for end in &ends {
            match end.outcome() {
                Ok(r) => self.bodies.push(r.body.to_vec()),
                Err(_) => self.failed += 1,
            }
        }
        self.next(tasks, ends.len());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_end_handler_chains_short_link_tasks_to_their_end() {
    // A short-link end reaches the driver as an IO event, not a socket read: the handler is
    // called from that branch of the loop too.
    let server = MockShortLinkServer::start(|n| ShortReply::Ok(format!("r{n}").into_bytes()))
        .await
        .unwrap();
    let client = client().await;
    let chain = ShortChain {
        host: server.host(),
        left: 60,
        bodies: Vec::new(),
        failed: 0,
    };
    let chain = tokio::time::timeout(Duration::from_secs(60), client.run_on_driver(chain))
        .await
        .expect("the chain ends")
        .expect("the handler finished");
    assert_eq!((chain.bodies.len(), chain.failed), (60, 0));
    let mut bodies = chain.bodies;
    bodies.sort();
    bodies.dedup();
    assert_eq!(bodies.len(), 60, "every answer once");
    assert_eq!(server.requests().len(), 60);
}
