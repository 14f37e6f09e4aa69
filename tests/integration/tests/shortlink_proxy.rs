//! The short link through proxies (spec §8.6): tiny HTTP CONNECT and SOCKS5 proxies written
//! here on loopback check what the client asks them, then pipe to the mock server; refusals
//! by the proxy end the task with a dial error.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use phobos_plugin_api::CmdId;
use phobos_stn::{ChannelSelect, Client, ClientConfig, ErrorKind, Proxy, ProxyAuth, TaskSpec};
use phobos_test_support::{refused_addr, MockShortLinkServer, ShortReply};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

mod common;
use common::codec;

/// What a test proxy saw: the CONNECT head, or the SOCKS5 target and credentials.
type Seen = Arc<Mutex<Vec<String>>>;

/// An HTTP proxy answering CONNECT with `status`; on 200 it pipes to the requested target.
async fn connect_proxy(status: u16) -> (SocketAddr, Seen) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Seen::default();
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            client.set_nodelay(true).unwrap();
            let log = log.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                while !head.ends_with(b"\r\n\r\n") {
                    let Ok(b) = client.read_u8().await else {
                        return;
                    };
                    head.push(b);
                }
                let head = String::from_utf8(head).unwrap();
                log.lock().unwrap().push(head.clone());
                let target = head.split(' ').nth(1).unwrap().to_owned();
                let reply = format!("HTTP/1.1 {status} Whatever\r\n\r\n");
                client.write_all(reply.as_bytes()).await.unwrap();
                if status != 200 {
                    return;
                }
                let mut upstream = TcpStream::connect(&target).await.unwrap();
                upstream.set_nodelay(true).unwrap();
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    });
    (addr, seen)
}

/// A SOCKS5 proxy (RFC 1928) accepting only `user`/`pass` (RFC 1929) when `auth` is set.
async fn socks5_proxy(auth: Option<(&'static str, &'static str)>) -> (SocketAddr, Seen) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Seen::default();
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut c, _)) = listener.accept().await {
            c.set_nodelay(true).unwrap();
            let log = log.clone();
            tokio::spawn(async move {
                let mut hello = [0u8; 2];
                c.read_exact(&mut hello).await.unwrap();
                let mut methods = vec![0u8; usize::from(hello[1])];
                c.read_exact(&mut methods).await.unwrap();
                let want = if auth.is_some() { 2 } else { 0 };
                if !methods.contains(&want) {
                    c.write_all(&[5, 0xFF]).await.unwrap();
                    return;
                }
                c.write_all(&[5, want]).await.unwrap();
                if let Some((user, pass)) = auth {
                    let ver = c.read_u8().await.unwrap();
                    assert_eq!(ver, 1);
                    let mut u = vec![0u8; usize::from(c.read_u8().await.unwrap())];
                    c.read_exact(&mut u).await.unwrap();
                    let mut p = vec![0u8; usize::from(c.read_u8().await.unwrap())];
                    c.read_exact(&mut p).await.unwrap();
                    let ok = u == user.as_bytes() && p == pass.as_bytes();
                    log.lock()
                        .unwrap()
                        .push(format!("auth {}", String::from_utf8_lossy(&u)));
                    c.write_all(&[1, u8::from(!ok)]).await.unwrap();
                    if !ok {
                        return;
                    }
                }
                let mut req = [0u8; 4];
                c.read_exact(&mut req).await.unwrap();
                assert_eq!(&req[..3], &[5, 1, 0], "CONNECT");
                assert_eq!(req[3], 1, "the target is an IPv4 address, never a name");
                let mut ip = [0u8; 4];
                c.read_exact(&mut ip).await.unwrap();
                let port = c.read_u16().await.unwrap();
                let target = SocketAddr::from((ip, port));
                log.lock().unwrap().push(format!("connect {target}"));
                let Ok(mut upstream) = TcpStream::connect(target).await else {
                    c.write_all(&[5, 5, 0, 1, 0, 0, 0, 0, 0, 0]).await.unwrap();
                    return;
                };
                upstream.set_nodelay(true).unwrap();
                c.write_all(&[5, 0, 0, 1, 127, 0, 0, 1, 0x1F, 0x90])
                    .await
                    .unwrap();
                let _ = tokio::io::copy_bidirectional(&mut c, &mut upstream).await;
            });
        }
    });
    (addr, seen)
}

async fn client_via(proxy: Proxy) -> Client {
    let unused = refused_addr().await.unwrap();
    let config = ClientConfig::builder(codec())
        .link_addrs("default-longlink", [unused.into()])
        .proxy(proxy)
        .build()
        .unwrap();
    Client::start(config).unwrap()
}

fn short(host: String) -> TaskSpec {
    TaskSpec::new(CmdId(0), &b"via proxy"[..])
        .with_channel(ChannelSelect::Short)
        .with_short_link("/cgi-bin/p", [host])
        .with_retry_count(0)
}

#[tokio::test(start_paused = true)]
async fn an_http_connect_proxy_tunnels_to_the_chosen_address() {
    let server = MockShortLinkServer::start(|_| ShortReply::Ok(b"tunneled".to_vec()))
        .await
        .unwrap();
    let (proxy, seen) = connect_proxy(200).await;
    let auth = ProxyAuth::new("alice", "s3cret");
    let client = client_via(Proxy::http_connect_with_auth(proxy, auth)).await;
    let resp = client.start_task(short(server.host())).await.unwrap();
    assert_eq!(&resp.body[..], b"tunneled");
    let head = seen.lock().unwrap()[0].clone();
    let target = server.addr();
    // base64("alice:s3cret")
    assert_eq!(
        head,
        format!(
            "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nProxy-Authorization: Basic YWxpY2U6czNjcmV0\r\n\r\n"
        )
    );
    // The origin server saw an ordinary request (origin-form target), not a proxy one.
    let req = String::from_utf8(server.requests()[0].clone()).unwrap();
    assert!(req.starts_with("POST /cgi-bin/p HTTP/1.1\r\n"), "{req}");
}

#[tokio::test(start_paused = true)]
async fn a_connect_refusal_ends_the_task_with_a_dial_error() {
    let server = MockShortLinkServer::start(|_| ShortReply::Ok(Vec::new()))
        .await
        .unwrap();
    let (proxy, _) = connect_proxy(407).await;
    let client = client_via(Proxy::http_connect(proxy)).await;
    let err = client.start_task(short(server.host())).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Dial, "{err}");
    assert_eq!(server.connection_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_socks5_proxy_with_credentials_tunnels_to_the_chosen_address() {
    let server = MockShortLinkServer::start(|_| ShortReply::Ok(b"socks".to_vec()))
        .await
        .unwrap();
    let (proxy, seen) = socks5_proxy(Some(("bob", "pw"))).await;
    let client = client_via(Proxy::socks5(proxy, Some(ProxyAuth::new("bob", "pw")))).await;
    let resp = client.start_task(short(server.host())).await.unwrap();
    assert_eq!(&resp.body[..], b"socks");
    assert_eq!(
        *seen.lock().unwrap(),
        vec!["auth bob".to_owned(), format!("connect {}", server.addr())]
    );
}

#[tokio::test(start_paused = true)]
async fn socks5_refusals_end_with_dial_errors() {
    let server = MockShortLinkServer::start(|_| ShortReply::Ok(Vec::new()))
        .await
        .unwrap();
    // Wrong password.
    let (proxy, _) = socks5_proxy(Some(("bob", "pw"))).await;
    let client = client_via(Proxy::socks5(proxy, Some(ProxyAuth::new("bob", "nope")))).await;
    let err = client.start_task(short(server.host())).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Dial, "{err}");
    // No credentials offered to a proxy that wants them.
    let client = client_via(Proxy::socks5(proxy, None)).await;
    let err = client.start_task(short(server.host())).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Dial, "{err}");
    // The target refuses behind the proxy: reported like a direct refusal.
    let dead = refused_addr().await.unwrap();
    let (open, _) = socks5_proxy(None).await;
    let client = client_via(Proxy::socks5(open, None)).await;
    let err = client
        .start_task(short(dead.to_string()))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        phobos_stn::TaskError::Dial(phobos_stn_proto::DialFailure::Refused)
    );
    assert_eq!(server.connection_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_refusing_proxy_still_leaves_a_direct_last_try() {
    let server = MockShortLinkServer::start(|_| ShortReply::Ok(b"direct".to_vec()))
        .await
        .unwrap();
    let (proxy, seen) = connect_proxy(503).await;
    let client = client_via(Proxy::http_connect(proxy)).await;
    let end = client
        .start_task(short(server.host()).with_retry_count(1))
        .end()
        .await
        .unwrap();
    assert_eq!(&end.outcome.unwrap().body[..], b"direct");
    assert_eq!(end.profile.attempts, 2);
    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "only the first attempt used the proxy"
    );
    assert_eq!(server.connection_count(), 1);
}
