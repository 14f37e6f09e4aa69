//! Garbage on the wire: a "server" that answers with junk, and junk sent to the real server's
//! ports. Nobody panics; the client reports why its link went down.

use std::time::Duration;

use phobos_host_example::chat::{ChatClient, ChatError, ChatEvent, ChatOptions};
use phobos_host_example::config::HostConfig;
use phobos_host_example::plugins::LoadedPlugins;
use phobos_host_example::proto::Target;
use phobos_host_example::server::{Server, ServerConfig};
use phobos_host_example::tokens::TokenIssuer;
use phobos_stn::{LinkError, LinkStatus};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A guard against hangs, not a timing assertion.
const GUARD: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_talking_to_a_junk_server_reports_a_malformed_frame_and_fails_its_send() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let junk = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n\xff\xfe garbage")
                    .await;
            });
        }
    });

    let config = HostConfig::load(None).unwrap();
    let plugins = LoadedPlugins::load(&config, &[]).unwrap();
    let (client, mut events) = ChatClient::start(
        ChatOptions {
            user: "alice".into(),
            token: TokenIssuer::new("x").issue("alice").unwrap(),
            long_link: addr,
            http: addr,
            tls: None,
            http_tls: None,
            retry_count: 1,
            send_timeout: Duration::from_secs(5),
        },
        &plugins,
    )
    .unwrap();
    let send = tokio::spawn({
        let client = client.clone();
        async move { client.send(Target::Room("r".into()), "hi").await }
    });
    let reason = tokio::time::timeout(GUARD, async {
        loop {
            match events.recv().await {
                Some(ChatEvent::Link {
                    status: LinkStatus::Disconnected,
                    reason: Some(reason),
                }) => return reason,
                Some(_) => {}
                None => panic!("client stopped"),
            }
        }
    })
    .await
    .expect("the link goes down");
    assert!(matches!(reason, LinkError::Decode(_)), "{reason:?}");
    let result = tokio::time::timeout(GUARD, send).await.unwrap().unwrap();
    assert!(matches!(result, Err(ChatError::Task(_))), "{result:?}");

    // The short link against junk: an error, not a panic.
    let listed = tokio::time::timeout(GUARD, client.conversations())
        .await
        .unwrap();
    assert!(listed.is_err(), "{listed:?}");
    client.shutdown().await;
    junk.abort();
}

#[tokio::test]
async fn the_server_survives_random_bytes_on_both_ports_over_tls() {
    let config = HostConfig::load(None).unwrap();
    let plugins = LoadedPlugins::load(&config, &[]).unwrap();
    let tls = phobos_host_example::tls::DemoTls::generate().unwrap();
    let mut sc = ServerConfig::new(plugins.codec.clone(), TokenIssuer::new("s"));
    sc.tls = Some(tls.server.clone());
    sc.http_tls = Some(tls.server.clone());
    let server = Server::start(sc).await.unwrap();
    // Deterministic pseudo-random junk of several shapes, including a TLS record header.
    let mut seed = 0x2545_f491_u32;
    for round in 0..16 {
        let mut junk = Vec::new();
        if round % 4 == 0 {
            junk.extend_from_slice(&[0x16, 0x03, 0x01, 0xff, 0xff]);
        }
        for _ in 0..(round * 97 + 13) {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            junk.push(seed as u8);
        }
        for addr in [server.long_link_addr(), server.http_addr()] {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            let _ = s.write_all(&junk).await;
            let _ = s.shutdown().await;
            // The server closes a connection that sent junk; reading ends (with the end of
            // the stream or a reset), never hangs.
            let mut sink = Vec::new();
            let _end_or_reset = tokio::time::timeout(GUARD, s.read_to_end(&mut sink))
                .await
                .expect("the server closes a connection that sent junk");
        }
    }
    // Still serving: a TLS client can connect and complete a handshake.
    let connector = {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(rustls::pki_types::CertificateDer::from(tls.ca_der.clone()))
            .unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
    };
    let tcp = tokio::net::TcpStream::connect(server.long_link_addr())
        .await
        .unwrap();
    let name =
        rustls::pki_types::ServerName::try_from(phobos_host_example::tls::SERVER_NAME).unwrap();
    connector.connect(name, tcp).await.expect("handshake");
    server.shutdown().await;
}
