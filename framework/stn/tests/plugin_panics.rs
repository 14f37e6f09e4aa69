//! In-process plugins that panic, through the real driver and loopback sockets: the panic is
//! caught where the plugin is called, the call gets its documented fallback
//! (`phobos_plugin_api::panics`, the same as a loaded plugin's), the driver logs it and
//! counts it (`DriverStats::plugin_panics`), and the client keeps working.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use phobos_codec_mars::MarsCodec;
use phobos_plugin_api::panics::PLUGIN_PANICKED;
use phobos_plugin_api::{
    AddrSource, AuthCheck, AuthError, CmdId, DecodeError, Decoded, EncodeError, FrameHead,
    FrameKind, IpSource, LinkPurpose, PacketCodec, ResolveError, ResolvedAddr,
};
use phobos_stn::{Client, ClientConfig, LinkError, LinkStatus, TaskError, TaskSpec};
use phobos_stn_proto::CodecFailure;
use phobos_test_support::MockLongLinkServer;

const HOST: &str = "im.example";

/// Mars's codec, panicking in `decode` on frames of command 66 and in `encode` for
/// command 77.
#[derive(Debug, Default)]
struct Shaky(MarsCodec);

impl PacketCodec for Shaky {
    fn name(&self) -> &str {
        "shaky"
    }
    fn encode(
        &self,
        head: FrameHead,
        body: &[u8],
        ext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        if head.cmd_id == CmdId(77) {
            out.extend_from_slice(b"half a frame");
            panic!("encode exploded");
        }
        self.0.encode(head, body, ext, out)
    }
    fn decode(&self, buf: &[u8]) -> Result<Decoded, DecodeError> {
        let decoded = self.0.decode(buf);
        if let Ok(Decoded::Frame(f)) = &decoded {
            if f.head.cmd_id == CmdId(66) {
                panic!("decode exploded");
            }
        }
        decoded
    }
    fn classify(&self, head: &FrameHead) -> FrameKind {
        self.0.classify(head)
    }
}

fn codec() -> Arc<MarsCodec> {
    Arc::new(MarsCodec::default())
}

fn no_retry(cmd: u32, body: &'static [u8]) -> TaskSpec {
    TaskSpec::new(CmdId(cmd), body).with_retry_count(0)
}

/// An echo server, and a client framing its long link with [`Shaky`].
async fn shaky_client() -> (MockLongLinkServer, Client) {
    let server = MockLongLinkServer::start_echo(codec()).await.unwrap();
    let config = ClientConfig::builder(Arc::new(Shaky::default()))
        .link_addrs("default-longlink", [server.ip_port()])
        .build()
        .unwrap();
    (server, Client::start(config).unwrap())
}

async fn panics_counted(client: &Client) -> u64 {
    client.stats().await.unwrap().plugin_panics
}

#[tokio::test(start_paused = true)]
async fn a_codec_panicking_in_decode_drops_the_link_and_the_next_task_succeeds() {
    let (server, client) = shaky_client().await;
    let mut events = client.link_events();
    client.set_foreground(true);
    let err = client.start_task(no_retry(66, b"bad")).await.unwrap_err();
    let panicked = DecodeError::Other(PLUGIN_PANICKED);
    assert_eq!(err, TaskError::Codec(CodecFailure::Decode(panicked)));
    assert!(err.to_string().contains("codec plugin panicked"), "{err}");
    let down = events
        .wait_for("default-longlink", |ev| {
            ev.status == LinkStatus::Disconnected
        })
        .await
        .unwrap();
    assert_eq!(down.reason, Some(LinkError::Decode(panicked)));
    // The driver is alive: the next task reconnects and succeeds.
    let ok = client.start_task(no_retry(1, b"good")).await.unwrap();
    assert_eq!(&ok.body[..], b"good");
    assert_eq!(server.connection_count(), 2);
    assert_eq!(panics_counted(&client).await, 1);
    client.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_codec_panicking_in_encode_ends_that_task_and_the_link_stays_up() {
    let (server, client) = shaky_client().await;
    client.set_foreground(true);
    let ok = client.start_task(no_retry(1, b"before")).await.unwrap();
    assert_eq!(&ok.body[..], b"before");
    let err = client.start_task(no_retry(77, b"bad")).await.unwrap_err();
    assert_eq!(
        err,
        TaskError::Codec(CodecFailure::Encode(EncodeError::Other(PLUGIN_PANICKED)))
    );
    let ok = client.start_task(no_retry(1, b"after")).await.unwrap();
    assert_eq!(&ok.body[..], b"after");
    assert_eq!(
        server.connection_count(),
        1,
        "the half frame never went out"
    );
    assert_eq!(panics_counted(&client).await, 1);
    client.shutdown().await;
}

/// Panics in `resolve` (and in `network_changed`).
#[derive(Debug)]
struct Exploding;

#[async_trait]
impl IpSource for Exploding {
    fn name(&self) -> &str {
        "exploding"
    }
    async fn resolve(
        &self,
        _host: &str,
        _purpose: LinkPurpose,
    ) -> Result<Vec<ResolvedAddr>, ResolveError> {
        panic!("resolve exploded");
    }
    fn network_changed(&self) {
        panic!("network_changed exploded");
    }
}

/// Answers `HOST` with the server's address.
#[derive(Debug)]
struct Fixed(std::net::SocketAddr);

#[async_trait]
impl IpSource for Fixed {
    fn name(&self) -> &str {
        "fixed"
    }
    async fn resolve(
        &self,
        _host: &str,
        _purpose: LinkPurpose,
    ) -> Result<Vec<ResolvedAddr>, ResolveError> {
        Ok(vec![ResolvedAddr {
            ip: self.0.ip(),
            port: Some(self.0.port()),
            source: AddrSource::NewDns,
        }])
    }
}

#[tokio::test(start_paused = true)]
async fn an_ip_source_panicking_fails_its_call_at_once_and_the_chain_moves_on() {
    let server = MockLongLinkServer::start_echo(codec()).await.unwrap();
    let config = ClientConfig::builder(codec())
        .link_hosts("default-longlink", [HOST], [server.addr().port()])
        .ip_source(Arc::new(Exploding))
        .ip_source(Arc::new(Fixed(server.addr())))
        .build()
        .unwrap();
    let client = Client::start(config).unwrap();
    let started = tokio::time::Instant::now();
    let resp = client
        .start_task(TaskSpec::new(CmdId(7), &b"ping"[..]))
        .await
        .unwrap();
    assert_eq!(&resp.body[..], b"ping");
    // A failure, answered at once: not the source's 2 s limit of a call that never ends.
    let took = started.elapsed();
    assert!(took < Duration::from_secs(1), "{took:?}");
    assert_eq!(panics_counted(&client).await, 1);
    // `network_changed` panics on the driver's loop: caught there too.
    client.set_network(phobos_plugin_api::NetKind::Wifi, "wifi-1");
    assert_eq!(panics_counted(&client).await, 2);
    let resp = client
        .start_task(TaskSpec::new(CmdId(7), &b"again"[..]))
        .await
        .unwrap();
    assert_eq!(&resp.body[..], b"again");
    client.shutdown().await;
}

/// Panics in its first `ensure_authed`; the second logs in.
#[derive(Debug, Default)]
struct FirstLoginExplodes {
    calls: AtomicUsize,
    authed: AtomicBool,
}

#[async_trait]
impl AuthCheck for FirstLoginExplodes {
    fn name(&self) -> &str {
        "first-login-explodes"
    }
    fn is_authed(&self, _host: &str) -> bool {
        self.authed.load(Ordering::SeqCst)
    }
    async fn ensure_authed(&self, _host: &str) -> Result<(), AuthError> {
        if self.calls.fetch_add(1, Ordering::SeqCst) == 0 {
            panic!("login exploded");
        }
        self.authed.store(true, Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn an_auth_plugin_panicking_in_a_login_is_a_transient_failure_and_the_next_login_works() {
    let server = MockLongLinkServer::start_echo(codec()).await.unwrap();
    let auth = Arc::new(FirstLoginExplodes::default());
    let config = ClientConfig::builder(codec())
        .link_addrs("default-longlink", [server.ip_port()])
        .auth(auth.clone())
        .build()
        .unwrap();
    let client = Client::start(config).unwrap();
    client.set_foreground(true);
    let started = tokio::time::Instant::now();
    let resp = client
        .start_task(TaskSpec::new(CmdId(7), &b"authed"[..]).needs_auth())
        .await
        .unwrap();
    assert_eq!(&resp.body[..], b"authed");
    // The panic was a transient failure, answered at once; the core asked again.
    assert_eq!(auth.calls.load(Ordering::SeqCst), 2);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(panics_counted(&client).await, 1);
    client.shutdown().await;
}

/// Answers `HOST` with the server's address; its `name()` panics.
#[derive(Debug)]
struct NamelessSource(std::net::SocketAddr);

#[async_trait]
impl IpSource for NamelessSource {
    fn name(&self) -> &str {
        panic!("name exploded");
    }
    async fn resolve(
        &self,
        host: &str,
        purpose: LinkPurpose,
    ) -> Result<Vec<ResolvedAddr>, ResolveError> {
        Fixed(self.0).resolve(host, purpose).await
    }
}

/// Logs in at once; its `name()` panics.
#[derive(Debug, Default)]
struct NamelessAuth {
    authed: AtomicBool,
}

#[async_trait]
impl AuthCheck for NamelessAuth {
    fn name(&self) -> &str {
        panic!("name exploded");
    }
    fn is_authed(&self, _host: &str) -> bool {
        self.authed.load(Ordering::SeqCst)
    }
    async fn ensure_authed(&self, _host: &str) -> Result<(), AuthError> {
        self.authed.store(true, Ordering::SeqCst);
        Ok(())
    }
}

/// A plugin's name is read for the watchdog's labels and log lines, around the calls that
/// do work: before, a panicking `name()` there ended the driver (every task then ended with
/// `LocalError::Reset`) or the build.
#[tokio::test(start_paused = true)]
async fn plugins_whose_name_panics_still_work() {
    let server = MockLongLinkServer::start_echo(codec()).await.unwrap();
    let config = ClientConfig::builder(codec())
        .link_hosts("default-longlink", [HOST], [server.addr().port()])
        .ip_source(Arc::new(NamelessSource(server.addr())))
        .auth(Arc::new(NamelessAuth::default()))
        .build()
        .unwrap();
    let client = Client::start(config).unwrap();
    client.set_foreground(true);
    let resp = client
        .start_task(TaskSpec::new(CmdId(7), &b"named"[..]).needs_auth())
        .await
        .unwrap();
    assert_eq!(&resp.body[..], b"named");
    client.set_network(phobos_plugin_api::NetKind::Wifi, "wifi-1");
    let resp = client
        .start_task(TaskSpec::new(CmdId(7), &b"again"[..]).needs_auth())
        .await
        .unwrap();
    assert_eq!(&resp.body[..], b"again");
    assert_eq!(panics_counted(&client).await, 0, "no call panicked");
    client.shutdown().await;
}
