//! `DohSource` against a DNS-over-HTTPS server built here: hyper (HTTP/2) over tokio-rustls on
//! a loopback port, with a CA and server certificate made by `rcgen`, answering DNS wire-format
//! queries built and parsed with `hickory-proto`.

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{RData, Record, RecordType};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use phobos_ipsource::{DohConfig, DohSource};
use phobos_plugin_api::{AddrSource, IpSource, LinkPurpose, ResolveError};
use phobos_test_support::certs::TestCa;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

const TLS_NAME: &str = "doh.phobos.test";

/// A server certificate for [`TLS_NAME`], signed by `ca`.
fn leaf(ca: &TestCa) -> (rcgen::Certificate, rcgen::KeyPair) {
    ca.server_cert(&[TLS_NAME])
}

/// One DNS question the server received.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Asked {
    name: String,
    kind: RecordType,
}

/// The test DoH server: its address and the questions it received.
struct DohServer {
    addr: SocketAddr,
    asked: Arc<Mutex<Vec<Asked>>>,
}

impl DohServer {
    /// Serves DoH on `127.0.0.1:0` with a certificate from `ca`.
    async fn start(ca: &TestCa) -> Self {
        let (cert, key) = leaf(ca);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let asked = Arc::new(Mutex::new(Vec::new()));
        let log = asked.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let log = log.clone();
                tokio::spawn(async move {
                    // A refused handshake (bad certificate test) just ends this connection.
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |req| serve(req, log.clone()));
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        DohServer { addr, asked }
    }

    fn asked(&self) -> Vec<Asked> {
        self.asked.lock().unwrap().clone()
    }

    /// A source asking this server and trusting `ca`. Its limit is a minute, not the
    /// default 2 s: these tests run a real TLS handshake in real time, which a loaded
    /// machine may slow past 2 s (the limit's own test sets it).
    fn source(&self, ca: &TestCa, edit: impl FnOnce(&mut DohConfig)) -> DohSource {
        let mut config = DohConfig {
            server_ips: vec![self.addr.ip()],
            port: self.addr.port(),
            tls_name: TLS_NAME.to_owned(),
            ca_pem: Some(ca.pem()),
            timeout_ms: 60_000,
            ..DohConfig::default()
        };
        edit(&mut config);
        DohSource::new(config).unwrap()
    }
}

/// Answers one RFC 8484 POST.
async fn serve(
    req: Request<Incoming>,
    asked: Arc<Mutex<Vec<Asked>>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let ok_shape = req.method() == Method::POST
        && req.uri().path() == "/dns-query"
        && req.headers().get("content-type").map(|v| v.as_bytes())
            == Some(b"application/dns-message");
    if !ok_shape {
        return Ok(status(StatusCode::BAD_REQUEST));
    }
    let Ok(body) = req.into_body().collect().await else {
        return Ok(status(StatusCode::BAD_REQUEST));
    };
    let Ok(query) = Message::from_vec(&body.to_bytes()) else {
        return Ok(status(StatusCode::BAD_REQUEST));
    };
    let Some(question) = query.queries().first().cloned() else {
        return Ok(status(StatusCode::BAD_REQUEST));
    };
    let name = question.name().to_string().to_ascii_lowercase();
    let kind = question.query_type();
    asked.lock().unwrap().push(Asked {
        name: name.clone(),
        kind,
    });

    let mut reply = Message::new();
    reply
        .set_id(query.id())
        .set_message_type(MessageType::Response)
        .set_op_code(query.op_code())
        .set_recursion_desired(query.recursion_desired())
        .set_recursion_available(true)
        .add_query(question.clone());
    let v4 = |ip: [u8; 4]| RData::A(A(Ipv4Addr::from(ip)));
    let v6 = |ip: &str| RData::AAAA(AAAA(ip.parse::<Ipv6Addr>().unwrap()));
    let answers: Vec<RData> = match (name.as_str(), kind) {
        ("a.test.", RecordType::A) => vec![v4([192, 0, 2, 1]), v4([192, 0, 2, 2])],
        ("a.test.", RecordType::AAAA) => vec![v6("2001:db8::1")],
        ("v4.test.", RecordType::A) => vec![v4([192, 0, 2, 3])],
        ("blocked.test.", RecordType::A) => vec![v4([0, 0, 0, 0]), v4([255, 255, 255, 255])],
        ("blocked.test.", RecordType::AAAA) => vec![v6("::")],
        ("loop.test.", RecordType::A) => vec![v4([127, 0, 0, 1]), v4([192, 0, 2, 4])],
        ("missing.test.", _) => {
            reply.set_response_code(ResponseCode::NXDomain);
            Vec::new()
        }
        ("broken.test.", _) => {
            reply.set_response_code(ResponseCode::ServFail);
            Vec::new()
        }
        ("slow.test.", _) => std::future::pending().await,
        _ => Vec::new(),
    };
    for rdata in answers {
        reply.add_answer(Record::from_rdata(question.name().clone(), 300, rdata));
    }
    let bytes = reply.to_vec().unwrap();
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/dns-message")
        .header("content-length", bytes.len())
        .body(Full::new(Bytes::from(bytes)))
        .unwrap())
}

fn status(code: StatusCode) -> Response<Full<Bytes>> {
    Response::builder()
        .status(code)
        .body(Full::new(Bytes::new()))
        .unwrap()
}

fn ips(addrs: &[phobos_plugin_api::ResolvedAddr]) -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = addrs.iter().map(|a| a.ip).collect();
    v.sort();
    v
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[tokio::test]
async fn a_and_aaaa_answers_come_back_tagged_doh() {
    let ca = TestCa::new("Phobos DoH Test CA");
    let server = DohServer::start(&ca).await;
    let doh = server.source(&ca, |_| {});
    let got = doh.resolve("A.test", LinkPurpose::LongLink).await.unwrap();
    assert_eq!(
        ips(&got),
        [ip("192.0.2.1"), ip("192.0.2.2"), ip("2001:db8::1")]
    );
    assert!(got
        .iter()
        .all(|a| a.source == AddrSource::Doh && a.port.is_none()));
    let mut asked = server.asked();
    asked.sort_by_key(|a| u16::from(a.kind));
    assert_eq!(
        asked,
        [
            Asked {
                name: "a.test.".to_owned(),
                kind: RecordType::A
            },
            Asked {
                name: "a.test.".to_owned(),
                kind: RecordType::AAAA
            }
        ]
    );
    // The answer is cached for its TTL: no second round trip.
    let again = doh
        .resolve("a.test.", LinkPurpose::ShortLink)
        .await
        .unwrap();
    assert_eq!(ips(&again), ips(&got));
    assert_eq!(server.asked().len(), 2);
    // Until a network change clears it (the driver calls this on every change).
    doh.network_changed();
    doh.resolve("a.test", LinkPurpose::LongLink).await.unwrap();
    assert_eq!(server.asked().len(), 4);
}

#[tokio::test]
async fn ipv4_only_asks_for_a_records_only() {
    let ca = TestCa::new("Phobos DoH Test CA");
    let server = DohServer::start(&ca).await;
    // Configured by URL this time: the URL's name, port and path replace the fields.
    let port = server.addr.port();
    let doh = server.source(&ca, |c| {
        c.ipv4_only = true;
        c.url = Some(format!("https://{TLS_NAME}:{port}/dns-query"));
        c.tls_name = "ignored.example".to_owned();
        c.port = 1;
    });
    let got = doh.resolve("a.test", LinkPurpose::LongLink).await.unwrap();
    assert_eq!(ips(&got), [ip("192.0.2.1"), ip("192.0.2.2")]);
    assert!(server.asked().iter().all(|a| a.kind == RecordType::A));
}

#[tokio::test]
async fn a_name_with_only_an_a_record_gives_just_that() {
    let ca = TestCa::new("Phobos DoH Test CA");
    let server = DohServer::start(&ca).await;
    let doh = server.source(&ca, |_| {});
    let got = doh.resolve("v4.test", LinkPurpose::LongLink).await.unwrap();
    assert_eq!(ips(&got), [ip("192.0.2.3")]);
    // A name that exists without addresses is an empty answer, not an error.
    let none = doh.resolve("empty.test", LinkPurpose::LongLink).await;
    assert_eq!(none, Ok(Vec::new()));
}

#[tokio::test]
async fn junk_and_loopback_answers_are_filtered() {
    let ca = TestCa::new("Phobos DoH Test CA");
    let server = DohServer::start(&ca).await;
    let strict = server.source(&ca, |_| {});
    assert_eq!(
        strict.resolve("blocked.test", LinkPurpose::LongLink).await,
        Ok(Vec::new())
    );
    let got = strict
        .resolve("loop.test", LinkPurpose::LongLink)
        .await
        .unwrap();
    assert_eq!(ips(&got), [ip("192.0.2.4")]);
    let lenient = server.source(&ca, |c| c.allow_loopback = true);
    let got = lenient
        .resolve("loop.test", LinkPurpose::LongLink)
        .await
        .unwrap();
    assert_eq!(ips(&got), [ip("127.0.0.1"), ip("192.0.2.4")]);
}

#[tokio::test]
async fn nxdomain_is_no_such_host() {
    let ca = TestCa::new("Phobos DoH Test CA");
    let server = DohServer::start(&ca).await;
    let doh = server.source(&ca, |_| {});
    assert_eq!(
        doh.resolve("missing.test", LinkPurpose::LongLink).await,
        Err(ResolveError::NoSuchHost)
    );
}

#[tokio::test]
async fn a_server_failure_is_a_failed_lookup() {
    let ca = TestCa::new("Phobos DoH Test CA");
    let server = DohServer::start(&ca).await;
    let doh = server.source(&ca, |_| {});
    match doh.resolve("broken.test", LinkPurpose::LongLink).await {
        Err(ResolveError::Failed(why)) => assert!(why.contains("Server Failure"), "{why}"),
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_server_that_never_answers_times_out() {
    // Virtual time: the 2 s limit passes as soon as everything is idle, waiting on the server.
    let ca = TestCa::new("Phobos DoH Test CA");
    let server = DohServer::start(&ca).await;
    let doh = server.source(&ca, |c| c.timeout_ms = 2000);
    let started = tokio::time::Instant::now();
    assert_eq!(
        doh.resolve("slow.test", LinkPurpose::LongLink).await,
        Err(ResolveError::Timeout)
    );
    assert!(started.elapsed() >= std::time::Duration::from_secs(2));
    assert!(
        !server.asked().is_empty(),
        "the query must have reached the server"
    );
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused() {
    let ca = TestCa::new("Phobos DoH Test CA");
    let server = DohServer::start(&ca).await;
    let stranger = TestCa::new("Phobos DoH Test CA");
    let doh = server.source(&stranger, |_| {});
    assert!(matches!(
        doh.resolve("a.test", LinkPurpose::LongLink).await,
        Err(ResolveError::Failed(_))
    ));
    assert!(
        server.asked().is_empty(),
        "no query may be sent over an untrusted link"
    );
}

#[tokio::test]
async fn a_certificate_for_another_name_is_refused() {
    let ca = TestCa::new("Phobos DoH Test CA");
    let server = DohServer::start(&ca).await;
    let doh = server.source(&ca, |c| c.tls_name = "other.phobos.test".to_owned());
    assert!(matches!(
        doh.resolve("a.test", LinkPurpose::LongLink).await,
        Err(ResolveError::Failed(_))
    ));
    assert!(server.asked().is_empty());
}

#[tokio::test]
async fn the_public_roots_do_not_trust_a_private_ca() {
    let ca = TestCa::new("Phobos DoH Test CA");
    let server = DohServer::start(&ca).await;
    let doh = server.source(&ca, |c| c.ca_pem = None);
    assert!(matches!(
        doh.resolve("a.test", LinkPurpose::LongLink).await,
        Err(ResolveError::Failed(_))
    ));
}

#[tokio::test]
async fn an_unreachable_server_is_a_failure_or_timeout_not_a_hang() {
    // A port nobody listens on (bound, not listening, and kept so, so no parallel test can
    // take it): the connect is refused at once.
    let closed = tokio::net::TcpSocket::new_v4().unwrap();
    closed.bind((Ipv4Addr::LOCALHOST, 0).into()).unwrap();
    let addr = closed.local_addr().unwrap();
    let doh = DohSource::new(DohConfig {
        server_ips: vec![addr.ip()],
        port: addr.port(),
        tls_name: TLS_NAME.to_owned(),
        ..DohConfig::default()
    })
    .unwrap();
    assert!(matches!(
        doh.resolve("a.test", LinkPurpose::LongLink).await,
        Err(ResolveError::Failed(_))
    ));
}
