//! The long link over TLS: `TlsConnector` against a TLS front (tokio-rustls) that terminates
//! TLS on loopback and pipes the plaintext to the Mars echo server. Certificates come from a
//! test CA generated here with `rcgen`; every failure must end the task with a dial error
//! and name the precise reason through the connector.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use phobos_plugin_api::{CmdId, IpPort};
use phobos_stn::{
    dial_error, Client, ClientConfig, Connector, ErrorKind, TaskError, TaskSpec, TimeoutLevel,
    TlsConfig, TlsConfigBuilder, TlsConnector, TlsError, TlsFailure,
};
use phobos_stn_proto::{ConnectProfile, DialError, DialFailure, Racing, Recovery, Timing};
use phobos_test_support::certs::{server_params, TestCa};
use phobos_test_support::tls_front::server_config;
use phobos_test_support::{MockLongLinkServer, TlsFront, TlsSession};
use rcgen::{CertificateParams, KeyPair};
use rustls::pki_types::CertificateDer;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

mod common;
use common::codec;

const HOST: &str = "phobos.test";

/// A server certificate for `phobos.test` and 127.0.0.1 signed by `ca`.
fn ca_leaf(ca: &TestCa) -> Leaf {
    Leaf::new(leaf_params(), Some(ca))
}

/// A server certificate with its key.
struct Leaf {
    cert: CertificateDer<'static>,
    key: Vec<u8>,
    /// SHA-256 of the SubjectPublicKeyInfo, in hex.
    pin: String,
}

impl Leaf {
    fn new(params: CertificateParams, issuer: Option<&TestCa>) -> Self {
        let (cert, key) = match issuer {
            Some(ca) => ca.sign(params),
            None => {
                let key = KeyPair::generate().unwrap();
                (params.self_signed(&key).unwrap(), key)
            }
        };
        Self {
            cert: cert.der().clone(),
            key: key.serialize_der(),
            pin: spki_pin(&key),
        }
    }
}

fn leaf_params() -> CertificateParams {
    server_params(&[HOST, "127.0.0.1"])
}

fn spki_pin(key: &KeyPair) -> String {
    hex::encode(Sha256::digest(key.public_key_der()))
}

/// What the TLS front saw of one completed handshake.
type Session = TlsSession;

struct Front {
    addr: IpPort,
    inner: TlsFront,
}

impl Front {
    fn sessions(&self) -> Vec<Session> {
        self.inner.sessions()
    }
}

/// Terminates TLS with `leaf` on a loopback port (offering ALPN "mars") and pipes each
/// session to `backend`.
async fn tls_front(leaf: &Leaf, backend: SocketAddr) -> Front {
    let config = server_config(leaf.cert.clone(), leaf.key.clone(), &[b"mars"]);
    let inner = TlsFront::start(config, (Ipv4Addr::LOCALHOST, 0).into(), backend)
        .await
        .unwrap();
    Front {
        addr: inner.addr().into(),
        inner,
    }
}

/// Failed handshakes reported through the `on_error` callback.
type Seen = Arc<Mutex<Vec<TlsFailure>>>;

fn tls_client(addr: IpPort, tls: TlsConfigBuilder) -> (Client, Arc<TlsConnector>, Seen) {
    let seen = Seen::default();
    let sink = seen.clone();
    let tls = tls
        .on_error(move |failure| sink.lock().unwrap().push(failure.clone()))
        .build()
        .expect("a valid TLS config");
    let connector = Arc::new(TlsConnector::new(tls));
    let config = ClientConfig::builder(codec())
        .link_addrs("default-longlink", [addr])
        .connector(connector.clone())
        .build()
        .expect("a valid client config");
    let client = Client::start(config).expect("the client starts");
    client.set_foreground(true);
    (client, connector, seen)
}

async fn round_trip(client: &Client, body: &'static [u8]) {
    let response = client
        .start_task(TaskSpec::new(CmdId(7), body).with_retry_count(0))
        .await
        .expect("the task succeeds over TLS");
    assert_eq!(&response.body[..], body);
}

/// Serves `leaf` in front of an echo server, connects with `tls`, and checks that the task
/// fails to dial with `expected` and that nothing reached the backend.
async fn dial_fails_with(leaf: &Leaf, tls: TlsConfigBuilder, expected: TlsError) {
    let server = MockLongLinkServer::start_echo(codec()).await.unwrap();
    let front = tls_front(leaf, server.addr()).await;
    let (client, connector, seen) = tls_client(front.addr, tls);
    let err = client
        .start_task(TaskSpec::new(CmdId(7), &b"never"[..]).with_retry_count(0))
        .await
        .unwrap_err();
    // A refused certificate is its own kind, not a network failure.
    assert_eq!(err, TaskError::Dial(DialFailure::Certificate), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::Certificate, "{err:?}");

    let last = connector.last_error().expect("the failure is remembered");
    assert_eq!(last.error, expected);
    assert_eq!(last.addr, front.addr);
    assert!(front.sessions().is_empty(), "no handshake completed");
    assert_eq!(last.server_name, connector.config().server_name());
    assert!(expected.is_certificate_error());
    let seen = seen.lock().unwrap().clone();
    assert!(!seen.is_empty());
    assert!(seen.iter().all(|f| f.error == expected), "{seen:?}");
    assert_eq!(
        server.connection_count(),
        0,
        "no plaintext reached the server"
    );
    client.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_valid_chain_carries_tasks() {
    let ca = TestCa::new("Phobos Test CA");
    let leaf = ca_leaf(&ca);
    let server = MockLongLinkServer::start_echo(codec()).await.unwrap();
    let front = tls_front(&leaf, server.addr()).await;
    let (client, connector, seen) = tls_client(
        front.addr,
        TlsConfig::builder(HOST)
            .ca_der(ca.der())
            .alpn(["h2", "mars"]),
    );
    round_trip(&client, b"hello over tls").await;
    round_trip(&client, b"and again").await;
    assert_eq!(server.connection_count(), 1, "both tasks share one link");
    let expected = Session {
        sni: Some(HOST.to_string()),
        alpn: Some(b"mars".to_vec()),
    };
    assert_eq!(front.sessions(), vec![expected]);
    assert_eq!(connector.last_error(), None);
    assert!(seen.lock().unwrap().is_empty());
    client.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_tls_stream_reports_the_facts_of_the_tcp_under_it() {
    let ca = TestCa::new("Phobos Test CA");
    let server = MockLongLinkServer::start_echo(codec()).await.unwrap();
    let front = tls_front(&ca_leaf(&ca), server.addr()).await;
    let connector = TlsConnector::new(TlsConfig::builder(HOST).ca_der(ca.der()).build().unwrap());
    let stream = connector.connect(front.addr).await.unwrap();
    // Read through the TLS layer from the socket under it: nothing lost on loopback, and
    // Linux's 200 ms floor on the retransmission timeout. (The client's last handshake
    // flight may still be unacknowledged at this instant.)
    let facts = stream.transport_facts().expect("TCP_INFO through TLS");
    assert_eq!(facts.backoff, 0);
    assert!(
        facts.rto >= std::time::Duration::from_millis(200),
        "{facts:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn roots_load_from_a_pem_file_and_ip_names_verify() {
    let ca = TestCa::new("Phobos Test CA");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ca.pem");
    std::fs::write(&path, ca.pem()).unwrap();
    let server = MockLongLinkServer::start_echo(codec()).await.unwrap();
    let front = tls_front(&ca_leaf(&ca), server.addr()).await;
    let (client, _, _) = tls_client(
        front.addr,
        TlsConfig::builder("127.0.0.1").ca_pem_file(&path),
    );
    round_trip(&client, b"by address").await;
    // No SNI for an IP address (RFC 6066), and no ALPN unless configured.
    let expected = Session {
        sni: None,
        alpn: None,
    };
    assert_eq!(front.sessions(), vec![expected]);
    client.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_wrong_host_name_is_not_valid_for_name() {
    let ca = TestCa::new("Phobos Test CA");
    dial_fails_with(
        &ca_leaf(&ca),
        TlsConfig::builder("other.test").ca_der(ca.der()),
        TlsError::NotValidForName,
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_self_signed_leaf_has_an_unknown_issuer() {
    let ca = TestCa::new("Phobos Test CA");
    let self_signed = Leaf::new(leaf_params(), None);
    dial_fails_with(
        &self_signed,
        TlsConfig::builder(HOST).ca_der(ca.der()),
        TlsError::UnknownIssuer,
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn the_default_roots_do_not_trust_a_private_ca() {
    let ca = TestCa::new("Phobos Test CA");
    dial_fails_with(
        &ca_leaf(&ca),
        TlsConfig::builder(HOST),
        TlsError::UnknownIssuer,
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn an_expired_certificate_is_expired() {
    let ca = TestCa::new("Phobos Test CA");
    let mut params = leaf_params();
    params.not_before = rcgen::date_time_ymd(2001, 1, 1);
    params.not_after = rcgen::date_time_ymd(2002, 1, 1);
    let expired = Leaf::new(params, Some(&ca));
    dial_fails_with(
        &expired,
        TlsConfig::builder(HOST).ca_der(ca.der()),
        TlsError::Expired,
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_pin_mismatch_fails_even_with_a_valid_chain() {
    let ca = TestCa::new("Phobos Test CA");
    let other_key = KeyPair::generate().unwrap();
    dial_fails_with(
        &ca_leaf(&ca),
        TlsConfig::builder(HOST)
            .ca_der(ca.der())
            .pin_sha256(spki_pin(&other_key)),
        TlsError::PinMismatch,
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_matching_pin_succeeds_alongside_a_backup_pin() {
    let ca = TestCa::new("Phobos Test CA");
    let leaf = ca_leaf(&ca);
    let backup = spki_pin(&KeyPair::generate().unwrap());
    let server = MockLongLinkServer::start_echo(codec()).await.unwrap();
    let front = tls_front(&leaf, server.addr()).await;
    let (client, connector, _) = tls_client(
        front.addr,
        TlsConfig::builder(HOST)
            .ca_pem(ca.pem())
            .pin_sha256(backup)
            .pin_sha256(format!("sha256/{}", leaf.pin.to_uppercase())),
    );
    round_trip(&client, b"pinned").await;
    assert_eq!(connector.last_error(), None);
    client.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_pin_never_rescues_an_untrusted_chain() {
    let ca = TestCa::new("Phobos Test CA");
    let self_signed = Leaf::new(leaf_params(), None);
    let pin = self_signed.pin.clone();
    dial_fails_with(
        &self_signed,
        TlsConfig::builder(HOST).ca_der(ca.der()).pin_sha256(pin),
        TlsError::UnknownIssuer,
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_silent_server_is_bounded_by_the_handshake_timeouts() {
    // Accepts TCP (the kernel's backlog) but never answers the ClientHello.
    let silent = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let addr: IpPort = silent.local_addr().unwrap().into();
    let ca = TestCa::new("Phobos Test CA");
    let (client, connector, _) = tls_client(addr, TlsConfig::builder(HOST).ca_der(ca.der()));
    let t0 = tokio::time::Instant::now();
    let err = client
        .start_task(TaskSpec::new(CmdId(7), &b"x"[..]).with_retry_count(0))
        .await
        .unwrap_err();
    let waited = t0.elapsed();
    // The connector reports the TCP connection, so the engine times each handshake on its
    // own (3 s here) and dials again twice; when those stall too the cycle fails, before
    // the 10 s connect timeout, with no timer in the connector.
    assert_eq!(
        err.kind(),
        ErrorKind::Timeout(TimeoutLevel::Connect),
        "{err:?}"
    );
    let floor = Recovery::default().handshake_timeout.unwrap().0;
    assert!(waited >= floor * 2, "{waited:?}");
    assert!(waited < Timing::default().connect_timeout, "{waited:?}");
    // The attempts were abandoned, not failed: no handshake error was recorded.
    assert_eq!(connector.last_error(), None);
    drop(silent);
    client.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn on_mars_timing_a_silent_server_is_bounded_by_the_connect_timeout() {
    let silent = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let addr: IpPort = silent.local_addr().unwrap().into();
    let ca = TestCa::new("Phobos Test CA");
    let tls = TlsConfig::builder(HOST).ca_der(ca.der()).build().unwrap();
    let config = ClientConfig::builder(codec())
        .link_addrs("default-longlink", [addr])
        .connector(Arc::new(TlsConnector::new(tls)))
        .connect_profile(ConnectProfile::MarsClassic)
        .build()
        .unwrap();
    let client = Client::start(config).unwrap();
    client.set_foreground(true);
    let t0 = tokio::time::Instant::now();
    let err = client
        .start_task(TaskSpec::new(CmdId(7), &b"x"[..]).with_retry_count(0))
        .await
        .unwrap_err();
    // The engine's per-attempt deadline (10 s) covers the handshake.
    assert_eq!(err.kind(), ErrorKind::Timeout(TimeoutLevel::Connect));
    assert_eq!(t0.elapsed(), Timing::default().connect_timeout);
    drop(silent);
    client.shutdown().await;
}

/// Under TLS: the first `swallow` connects get a stream whose far end never reads or answers
/// (a middlebox, or an outage that ate the handshake; no network is touched), the later
/// ones plain TCP.
#[derive(Debug)]
struct SwallowFirst {
    swallow: usize,
    connects: Mutex<usize>,
    held: Mutex<Vec<tokio::io::DuplexStream>>,
}

impl SwallowFirst {
    fn new(swallow: usize) -> Arc<SwallowFirst> {
        Arc::new(SwallowFirst {
            swallow,
            connects: Mutex::new(0),
            held: Mutex::new(Vec::new()),
        })
    }

    fn connects(&self) -> usize {
        *self.connects.lock().unwrap()
    }
}

#[async_trait::async_trait]
impl Connector for SwallowFirst {
    async fn connect(&self, addr: IpPort) -> io::Result<Box<dyn phobos_stn::LinkStream>> {
        let n = {
            let mut c = self.connects.lock().unwrap();
            *c += 1;
            *c
        };
        if n <= self.swallow {
            let (ours, far) = tokio::io::duplex(64 * 1024);
            self.held.lock().unwrap().push(far);
            return Ok(Box::new(ours));
        }
        phobos_stn::TcpConnector::default().connect(addr).await
    }
}

#[tokio::test(start_paused = true)]
async fn a_swallowed_handshake_is_dialed_again_within_the_tasks_budget() {
    let ca = TestCa::new("Phobos Test CA");
    let server = MockLongLinkServer::start_echo(codec()).await.unwrap();
    let front = tls_front(&ca_leaf(&ca), server.addr()).await;
    // The first attempt and the first redial are swallowed; the second redial gets through.
    let path = SwallowFirst::new(2);
    let tls = TlsConfig::builder(HOST).ca_der(ca.der()).build().unwrap();
    let handshake = Duration::from_millis(1500);
    let config = ClientConfig::builder(codec())
        .link_addrs("default-longlink", [front.addr])
        .connector(Arc::new(TlsConnector::over(path.clone(), tls)))
        // No hedges: only the handshake timeout can free the link before the connect
        // timeout, and the connects are exactly the attempt and its redials.
        .core(|c| {
            c.racing(Racing {
                hedges: 0,
                ..Racing::default()
            })
            .recovery(Recovery {
                handshake_timeout: Some((handshake, handshake)),
                ..Recovery::default()
            })
        })
        .build()
        .unwrap();
    let client = Client::start(config).unwrap();
    client.set_foreground(true);
    // 8 s: less than the 10 s connect timeout a swallowed handshake would otherwise hold
    // the link for (the task would end with a total timeout).
    let spec = TaskSpec::new(CmdId(7), &b"through"[..])
        .with_retry_count(0)
        .with_total_timeout(Duration::from_secs(8));
    let response = client
        .start_task(spec)
        .await
        .expect("the redial gets through");
    assert_eq!(&response.body[..], b"through");
    assert_eq!(path.connects(), 3, "two swallowed, then one through");
    assert_eq!(front.sessions().len(), 1);
    client.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn the_connector_returns_the_reason_inside_the_io_error() {
    let ca = TestCa::new("Phobos Test CA");
    let server = MockLongLinkServer::start_echo(codec()).await.unwrap();
    let front = tls_front(&ca_leaf(&ca), server.addr()).await;
    let connector = TlsConnector::new(
        TlsConfig::builder("other.test")
            .ca_der(ca.der())
            .build()
            .unwrap(),
    );
    let err = match connector.connect(front.addr).await {
        Ok(_) => panic!("the name must not verify"),
        Err(err) => err,
    };
    assert_eq!(TlsError::from_io(&err), Some(&TlsError::NotValidForName));
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    // What the driver hands the engine: a refused certificate.
    assert_eq!(dial_error(&err), DialError::Certificate);
    let last = connector.last_error().unwrap();
    assert_eq!(
        (last.addr, last.error),
        (front.addr, TlsError::NotValidForName)
    );
}

#[tokio::test(start_paused = true)]
async fn a_refused_tcp_connect_stays_a_refusal_under_tls() {
    let dead = phobos_test_support::refused_addr().await.unwrap();
    let ca = TestCa::new("Phobos Test CA");
    let (client, connector, seen) =
        tls_client(dead.into(), TlsConfig::builder(HOST).ca_der(ca.der()));
    let err = client
        .start_task(TaskSpec::new(CmdId(7), &b"x"[..]).with_retry_count(0))
        .await
        .unwrap_err();
    assert_eq!(err, TaskError::Dial(DialFailure::Refused));
    assert_eq!(connector.last_error(), None, "no handshake was attempted");
    assert!(seen.lock().unwrap().is_empty());
    client.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_refused_certificate_ends_the_task_without_spending_its_retries() {
    let ca = TestCa::new("Phobos Test CA");
    let self_signed = Leaf::new(leaf_params(), None);
    let server = MockLongLinkServer::start_echo(codec()).await.unwrap();
    let front = tls_front(&self_signed, server.addr()).await;
    let (client, _connector, seen) =
        tls_client(front.addr, TlsConfig::builder(HOST).ca_der(ca.der()));
    // Default retries (one): a network failure would be tried again after the reconnect
    // pause; a refused certificate would only be refused again.
    let err = client
        .start_task(TaskSpec::new(CmdId(7), &b"never"[..]))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Certificate, "{err:?}");
    assert_eq!(seen.lock().unwrap().len(), 1, "one handshake, no retry");
}

/// A stream under TLS that is an in-memory pipe of `PIPE` bytes: what the client writes
/// stays there, as in a socket whose send buffer is full, once the peer stops reading.
#[derive(Debug)]
struct Pipe(tokio::io::DuplexStream);

const PIPE: usize = 8 * 1024;

impl tokio::io::AsyncRead for Pipe {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Pipe {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl phobos_stn::LinkStream for Pipe {}

/// Connects through a [`Pipe`] to a TLS server that completes the handshake and then
/// reads nothing more.
#[derive(Debug)]
struct StalledPeer {
    server: Arc<rustls::ServerConfig>,
}

#[async_trait::async_trait]
impl Connector for StalledPeer {
    async fn connect(&self, _: IpPort) -> io::Result<Box<dyn phobos_stn::LinkStream>> {
        let (client, server) = tokio::io::duplex(PIPE);
        let acceptor = tokio_rustls::TlsAcceptor::from(self.server.clone());
        tokio::spawn(async move {
            let held = acceptor.accept(server).await;
            // Hold the connection open, reading nothing.
            std::future::pending::<()>().await;
            drop(held);
        });
        Ok(Box::new(Pipe(client)))
    }
}

/// The TLS stream takes at most one bounded buffer of bytes beyond what its socket took:
/// what the driver counts as left over sits in its own queue, where the core sees it
/// (requests are timed from their first byte, spec §6.2), not in rustls's buffer, which
/// held 64 KiB by default, seconds of a slow uplink.
#[tokio::test(start_paused = true)]
async fn a_tls_stream_holds_at_most_its_send_buffer_beyond_the_socket() {
    let ca = TestCa::new("Phobos Test CA");
    let leaf = ca_leaf(&ca);
    let peer = StalledPeer {
        server: server_config(leaf.cert.clone(), leaf.key.clone(), &[b"mars"]),
    };
    let tls = TlsConfig::builder(HOST).ca_der(ca.der()).build().unwrap();
    let connector = TlsConnector::over(Arc::new(peer), tls);
    let mut stream = connector
        .connect(IpPort::new(Ipv4Addr::LOCALHOST.into(), 443))
        .await
        .expect("the handshake completes");
    let chunk = vec![7u8; 4096];
    let mut taken = 0;
    loop {
        let step = std::future::poll_fn(|cx| {
            std::task::Poll::Ready(tokio::io::AsyncWrite::poll_write(
                std::pin::Pin::new(&mut stream),
                cx,
                &chunk,
            ))
        })
        .await;
        match step {
            std::task::Poll::Ready(Ok(n)) => taken += n,
            std::task::Poll::Ready(Err(e)) => panic!("{e}"),
            std::task::Poll::Pending => break,
        }
        assert!(taken < 1 << 20, "the stream never stopped taking bytes");
    }
    eprintln!("the TLS stream took {taken} bytes with {PIPE} in the pipe");
    // The pipe and the buffer (the buffer counts encrypted records, the stream takes
    // plaintext, so it takes a little less: 24,386 bytes here, 73,274 with rustls's
    // default limit).
    let bound = PIPE + phobos_stn::TLS_SEND_BUFFER;
    assert!(
        taken <= bound,
        "the TLS stream took {taken} bytes with {PIPE} in the pipe (bound {bound})"
    );
    assert!(taken >= PIPE, "the pipe itself was filled: {taken}");
}
