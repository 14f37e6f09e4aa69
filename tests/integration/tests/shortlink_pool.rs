//! The short link's keep-alive pool (spec §8.5): a task asking `Connection: Keep-Alive`
//! leaves its connection cached when the server keeps it alive, and the next task to the
//! same address and host reuses it; default tasks (`Connection: close`) never do.

use phobos_plugin_api::CmdId;
use phobos_stn::{ChannelSelect, Client, ClientConfig, TaskSpec};
use phobos_test_support::{refused_addr, MockShortLinkServer, ShortReply};

mod common;
use common::codec;

async fn client() -> Client {
    let unused = refused_addr().await.unwrap();
    let config = ClientConfig::builder(codec())
        .link_addrs("default-longlink", [unused.into()])
        .build()
        .unwrap();
    Client::start(config).unwrap()
}

fn keep_alive(host: String, body: &'static [u8]) -> TaskSpec {
    TaskSpec::new(CmdId(0), body)
        .with_channel(ChannelSelect::Short)
        .with_short_link("/cgi-bin/ka", [host])
        .with_header("Connection", "Keep-Alive")
}

#[tokio::test(start_paused = true)]
async fn keep_alive_tasks_reuse_one_connection() {
    let server =
        MockShortLinkServer::start(|n| ShortReply::KeepAlive(format!("r{n}").into_bytes()))
            .await
            .unwrap();
    let client = client().await;
    for n in 0..3 {
        let resp = client
            .start_task(keep_alive(server.host(), b"x"))
            .await
            .unwrap();
        assert_eq!(resp.body, format!("r{n}").into_bytes());
    }
    assert_eq!(
        server.connection_count(),
        1,
        "one connection for three requests"
    );
    assert_eq!(server.requests().len(), 3);
    let first = String::from_utf8(server.requests()[0].clone()).unwrap();
    assert!(first.contains("\r\nConnection: Keep-Alive\r\n"), "{first}");
    let stats = client.stats().await.unwrap();
    assert_eq!(stats.short_link_pooled, 1);
    assert_eq!(stats.short_link_in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn a_server_that_closes_or_a_default_task_gets_no_reuse() {
    let server = MockShortLinkServer::start(|_| ShortReply::Ok(b"closing".to_vec()))
        .await
        .unwrap();
    let client = client().await;
    for _ in 0..2 {
        client
            .start_task(keep_alive(server.host(), b"x"))
            .await
            .unwrap();
    }
    assert_eq!(
        server.connection_count(),
        2,
        "the server said Connection: close"
    );
    let ka = MockShortLinkServer::start(|_| ShortReply::KeepAlive(b"ka".to_vec()))
        .await
        .unwrap();
    for _ in 0..2 {
        let plain = TaskSpec::new(CmdId(0), &b"x"[..])
            .with_channel(ChannelSelect::Short)
            .with_short_link("/cgi-bin/ka", [ka.host()]);
        client.start_task(plain).await.unwrap();
    }
    assert_eq!(
        ka.connection_count(),
        2,
        "default requests say Connection: close"
    );
    assert_eq!(client.stats().await.unwrap().short_link_pooled, 0);
}

#[tokio::test(start_paused = true)]
async fn a_cached_connection_expires_with_the_servers_keep_alive_timeout() {
    let server = MockShortLinkServer::start(|_| ShortReply::KeepAlive(b"ka".to_vec()))
        .await
        .unwrap();
    let client = client().await;
    client
        .start_task(keep_alive(server.host(), b"x"))
        .await
        .unwrap();
    assert_eq!(client.stats().await.unwrap().short_link_pooled, 1);
    // The mock says `Keep-Alive: timeout=30`.
    tokio::time::sleep(std::time::Duration::from_secs(31)).await;
    client
        .start_task(keep_alive(server.host(), b"x"))
        .await
        .unwrap();
    assert_eq!(server.connection_count(), 2);
}

#[tokio::test(start_paused = true)]
async fn an_idle_connection_the_server_closes_is_not_reused_and_costs_no_ban() {
    // Request 0: a keep-alive answer, then the server closes anyway (before its own
    // advertised timeout). Later requests: ordinary keep-alive answers.
    let server = MockShortLinkServer::start(|n| match n {
        0 => ShortReply::Raw(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\
              Keep-Alive: timeout=30\r\n\r\nr0"
                .to_vec(),
        ),
        n => ShortReply::KeepAlive(format!("r{n}").into_bytes()),
    })
    .await
    .unwrap();
    let client = client().await;
    let first = client
        .start_task(keep_alive(server.host(), b"x"))
        .await
        .unwrap();
    assert_eq!(first.body, b"r0".to_vec());
    // Let the client notice the close.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(client.stats().await.unwrap().short_link_pooled, 0);
    for n in 1..3 {
        let task = keep_alive(server.host(), b"x").with_retry_count(0);
        let resp = client.start_task(task).await.unwrap();
        assert_eq!(resp.body, format!("r{n}").into_bytes());
    }
    assert_eq!(
        server.connection_count(),
        2,
        "a fresh connection for request 1, reused by request 2 (no ban)"
    );
}

#[tokio::test(start_paused = true)]
async fn an_idle_connection_closed_as_the_next_task_starts_is_replaced_by_a_fresh_one() {
    let server =
        MockShortLinkServer::start(|n| ShortReply::KeepAlive(format!("r{n}").into_bytes()))
            .await
            .unwrap();
    let client = client().await;
    let task = || keep_alive(server.host(), b"x").with_retry_count(0);
    assert_eq!(client.start_task(task()).await.unwrap().body, &b"r0"[..]);
    assert_eq!(client.stats().await.unwrap().short_link_pooled, 1);
    // The server's idle timeout closes the connection just as the app starts its next task:
    // the FIN is at the client's socket, and nothing on the client has read it yet.
    server.close_open_connections();
    let second = client.start_task(task()).await;
    assert_eq!(
        second.map(|r| r.body.to_vec()),
        Ok(b"r1".to_vec()),
        "the task goes on with a fresh connection, no retry needed"
    );
    assert_eq!(server.connection_count(), 2);
    assert_eq!(server.requests().len(), 2, "nothing reached the closed one");
}

#[tokio::test(start_paused = true)]
async fn an_idle_connection_closed_as_the_next_task_starts_costs_no_ban() {
    let server =
        MockShortLinkServer::start(|n| ShortReply::KeepAlive(format!("r{n}").into_bytes()))
            .await
            .unwrap();
    let client = client().await;
    let task = || keep_alive(server.host(), b"x");
    client.start_task(task()).await.unwrap();
    server.close_open_connections();
    let started = tokio::time::Instant::now();
    assert_eq!(client.start_task(task()).await.unwrap().body, &b"r1"[..]);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(1),
        "no retry pause: the attempt was not failed"
    );
    // Reuse is not banned: the third task takes the second's connection.
    assert_eq!(client.start_task(task()).await.unwrap().body, &b"r2"[..]);
    assert_eq!(server.connection_count(), 2);
    assert_eq!(client.stats().await.unwrap().short_link_pooled, 1);
}
