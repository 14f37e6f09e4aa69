//! The short link over TLS: `ClientConfigBuilder::short_link_tls` against a tokio-rustls
//! server with a certificate from a CA made here with `rcgen`; an untrusted certificate
//! ends the task with `ErrorKind::Certificate` at once (no retry can fix it).

use std::net::Ipv4Addr;
use std::sync::Arc;

use phobos_plugin_api::CmdId;
use phobos_stn::{ChannelSelect, Client, ClientConfig, ErrorKind, TaskSpec, TlsConfig};
use phobos_test_support::certs::TestCa;
use phobos_test_support::mock_shortlink::{serve_conn, Shared};
use phobos_test_support::tls_front::server_config;
use phobos_test_support::{refused_addr, ShortReply};
use rustls::pki_types::CertificateDer;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

mod common;
use common::codec;

const HOST: &str = "phobos.test";

/// A server certificate for `phobos.test` signed by `ca`: (cert, PKCS#8 key).
fn leaf(ca: &TestCa) -> (CertificateDer<'static>, Vec<u8>) {
    let (cert, key) = ca.server_cert(&[HOST]);
    (cert.der().clone(), key.serialize_der())
}

/// An HTTPS mock: TLS with `leaf`, then the mock short-link server's logic (its
/// [`Shared`] counts the connections and can close them).
async fn https_server(
    leaf: (CertificateDer<'static>, Vec<u8>),
    reply: ShortReply,
) -> (std::net::SocketAddr, Arc<Shared>) {
    let config = server_config(leaf.0, leaf.1, &[]);
    let acceptor = TlsAcceptor::from(config);
    let shared = Shared::new(move |_| reply.clone());
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = shared.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tcp.set_nodelay(true).unwrap();
            let acceptor = acceptor.clone();
            let state = state.clone();
            let (tcp, tracked) = state.track(tcp).unwrap();
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(tcp).await {
                    serve_conn(tls, state).await;
                }
                drop(tracked);
            });
        }
    });
    (addr, shared)
}

async fn tls_client(trusted: &TestCa) -> Client {
    let unused = refused_addr().await.unwrap();
    let tls = TlsConfig::builder(HOST)
        .ca_der(trusted.der())
        .build()
        .unwrap();
    let config = ClientConfig::builder(codec())
        .link_addrs("default-longlink", [unused.into()])
        .short_link_tls(tls)
        .build()
        .unwrap();
    assert!(config.short_link_uses_tls());
    Client::start(config).unwrap()
}

fn short(host: String) -> TaskSpec {
    TaskSpec::new(CmdId(0), &b"secret"[..])
        .with_channel(ChannelSelect::Short)
        .with_short_link("/cgi-bin/tls", [host])
}

#[tokio::test(start_paused = true)]
async fn a_short_link_over_tls_round_trips() {
    let ca = TestCa::new("Phobos Test CA");
    let (addr, shared) = https_server(leaf(&ca), ShortReply::Ok(b"over tls".to_vec())).await;
    let client = tls_client(&ca).await;
    let resp = client.start_task(short(addr.to_string())).await.unwrap();
    assert_eq!(&resp.body[..], b"over tls");
    let req = String::from_utf8(shared.requests()[0].clone()).unwrap();
    assert!(req.starts_with("POST /cgi-bin/tls HTTP/1.1\r\n"), "{req}");
    assert!(req.ends_with("\r\n\r\nsecret"), "{req}");
}

#[tokio::test(start_paused = true)]
async fn an_untrusted_certificate_ends_the_task_at_once() {
    let ca = TestCa::new("Phobos Test CA");
    let other = TestCa::new("Someone Else");
    let (addr, shared) = https_server(leaf(&other), ShortReply::Ok(Vec::new())).await;
    let client = tls_client(&ca).await;
    let end = client
        .start_task(short(addr.to_string()).with_retry_count(3))
        .end()
        .await
        .unwrap();
    assert_eq!(
        end.outcome.unwrap_err().kind(),
        ErrorKind::Certificate,
        "a refused certificate is not a network failure"
    );
    assert_eq!(end.profile.attempts, 1, "not retried");
    assert!(
        shared.requests().is_empty(),
        "nothing was sent in the clear"
    );
}

#[tokio::test(start_paused = true)]
async fn an_idle_tls_connection_the_server_closed_is_replaced_by_a_fresh_one() {
    let ca = TestCa::new("Phobos Test CA");
    let (addr, shared) = https_server(leaf(&ca), ShortReply::KeepAlive(b"ka".to_vec())).await;
    let client = tls_client(&ca).await;
    let task = || {
        short(addr.to_string())
            .with_header("Connection", "Keep-Alive")
            .with_retry_count(0)
    };
    client.start_task(task()).await.unwrap();
    client.start_task(task()).await.unwrap();
    assert_eq!(
        shared.connection_count(),
        1,
        "the second task reused the first's"
    );
    // The server drops the connection under TLS (a FIN, no close_notify) just as the app
    // starts its next task; nothing on the client has read the FIN yet.
    shared.close_open_connections();
    let resp = client.start_task(task()).await;
    assert_eq!(resp.map(|r| r.body.to_vec()), Ok(b"ka".to_vec()));
    assert_eq!(shared.connection_count(), 2);
    assert_eq!(shared.requests().len(), 3, "nothing reached the closed one");
}
