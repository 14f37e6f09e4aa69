//! The app's own transport panicking, through the real driver and loopback sockets: a
//! [`Connector`] whose connect panics, and streams that panic in a read or a write. Each
//! panic is an error of that connect or that connection, like a socket's: the task is retried
//! on a new connection and succeeds, the panic is counted (`DriverStats::transport_panics`),
//! and the client keeps working. Before the guard, a long link stream's panic ended the
//! driver (every task ended with `LocalError::Reset`), a connect's panic was never reported,
//! and a short-link write's panic failed the task for good as a request HTTP cannot carry.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use phobos_codec_mars::MarsCodec;
use phobos_plugin_api::{CmdId, IpPort};
use phobos_stn::{
    ChannelSelect, Client, ClientConfig, Connector, LinkError, LinkStatus, LinkStream, TaskSpec,
    TcpConnector,
};
use phobos_stn_proto::{DialFailure, SocketFailure};
use phobos_test_support::{refused_addr, MockLongLinkServer, MockShortLinkServer, ShortReply};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What the connector's connect number `n` (0-based) does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// The connect itself panics.
    Connect,
    /// The stream panics in its first read after it has written something.
    Read,
    /// The stream panics in its first write.
    Write,
    /// Nothing: a plain TCP connection.
    None,
}

/// Connects over TCP, with the faults of `script` by connect number (then none); counts its
/// connects.
#[derive(Debug)]
struct Faulty {
    script: Vec<Fault>,
    connects: AtomicUsize,
}

impl Faulty {
    fn new(script: impl IntoIterator<Item = Fault>) -> Arc<Self> {
        Arc::new(Faulty {
            script: script.into_iter().collect(),
            connects: AtomicUsize::new(0),
        })
    }

    fn connects(&self) -> usize {
        self.connects.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Connector for Faulty {
    async fn connect(&self, addr: IpPort) -> io::Result<Box<dyn LinkStream>> {
        let n = self.connects.fetch_add(1, Ordering::SeqCst);
        let fault = self.script.get(n).copied().unwrap_or(Fault::None);
        if fault == Fault::Connect {
            panic!("connect exploded");
        }
        let inner = TcpConnector::default().connect(addr).await?;
        Ok(Box::new(Panicking {
            inner,
            fault,
            wrote: false,
        }))
    }
}

/// A stream that panics once at its [`Fault`].
struct Panicking {
    inner: Box<dyn LinkStream>,
    fault: Fault,
    wrote: bool,
}

impl AsyncRead for Panicking {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.fault == Fault::Read && self.wrote {
            panic!("read exploded");
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Panicking {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.fault == Fault::Write {
            panic!("write exploded");
        }
        self.wrote = true;
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl LinkStream for Panicking {}

fn codec() -> Arc<MarsCodec> {
    Arc::new(MarsCodec::default())
}

/// An echo server, and a client reaching it through `connector`.
async fn long_link_client(connector: Arc<Faulty>) -> (MockLongLinkServer, Client) {
    let server = MockLongLinkServer::start_echo(codec()).await.unwrap();
    let config = ClientConfig::builder(codec())
        .link_addrs("default-longlink", [server.ip_port()])
        .connector(connector)
        .build()
        .unwrap();
    (server, Client::start(config).unwrap())
}

/// The panics the driver caught in the transport ([`DriverStats::transport_panics`]).
///
/// [`DriverStats::transport_panics`]: phobos_stn::DriverStats::transport_panics
async fn transport_panics(client: &Client) -> u64 {
    let stats = client.stats().await.unwrap();
    assert_eq!(
        stats.plugin_panics, 0,
        "a transport panic is not a plugin's"
    );
    stats.transport_panics
}

/// The connection's error after the stream's panic: what every later call answers.
fn stream_panicked() -> LinkError {
    LinkError::Socket(SocketFailure::Io { errno: -1 })
}

#[tokio::test(start_paused = true)]
async fn a_stream_panicking_drops_the_link_and_the_task_is_retried() {
    for fault in [Fault::Read, Fault::Write] {
        let connector = Faulty::new([fault]);
        let (server, client) = long_link_client(connector.clone()).await;
        let mut events = client.link_events();
        client.set_foreground(true);
        let spec = TaskSpec::new(CmdId(1), &b"through"[..]).with_retry_count(1);
        let ok = client.start_task(spec).await.expect("retried and answered");
        assert_eq!(&ok.body[..], b"through");
        let down = events
            .wait_for("default-longlink", |ev| {
                ev.status == LinkStatus::Disconnected
            })
            .await
            .unwrap();
        assert_eq!(down.reason, Some(stream_panicked()), "{fault:?}");
        assert_eq!(connector.connects(), 2, "{fault:?}");
        assert!(server.connection_count() >= 1, "{fault:?}");
        // The driver is alive and the new connection serves.
        let again = client
            .start_task(TaskSpec::new(CmdId(1), &b"again"[..]).with_retry_count(0))
            .await
            .unwrap();
        assert_eq!(&again.body[..], b"again");
        assert_eq!(connector.connects(), 2, "{fault:?}");
        assert_eq!(transport_panics(&client).await, 1, "{fault:?}");
        client.shutdown().await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_connect_that_panics_is_a_failed_connect() {
    let connector = Faulty::new([Fault::Connect]);
    let (_server, client) = long_link_client(connector.clone()).await;
    let mut events = client.link_events();
    client.set_foreground(true);
    // Before, the panicked attempt never reported, and a raced second attempt connected
    // with no failure reported at all.
    let failed = tokio::time::timeout(
        Duration::from_secs(60),
        events.wait_for("default-longlink", |ev| ev.reason.is_some()),
    )
    .await
    .expect("the failed connect is reported")
    .unwrap();
    assert_eq!(
        failed.reason,
        Some(LinkError::Dial(DialFailure::Io { errno: -1 })),
        "a dial error at once, not a connect timeout"
    );
    let ok = client
        .start_task(TaskSpec::new(CmdId(1), &b"after"[..]))
        .await
        .unwrap();
    assert_eq!(&ok.body[..], b"after");
    assert_eq!(connector.connects(), 2);
    assert_eq!(transport_panics(&client).await, 1);
    client.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_short_link_stream_panicking_fails_the_attempt_not_the_task() {
    for fault in [Fault::Connect, Fault::Write, Fault::Read] {
        let server = MockShortLinkServer::start(|_| ShortReply::Ok(b"fine".to_vec()))
            .await
            .unwrap();
        let unused = refused_addr().await.unwrap();
        let connector = Faulty::new([fault]);
        let config = ClientConfig::builder(codec())
            .link_addrs("default-longlink", [unused.into()])
            .short_link_connector(connector.clone())
            .build()
            .unwrap();
        let client = Client::start(config).unwrap();
        let spec = TaskSpec::new(CmdId(0), &b"hello"[..])
            .with_channel(ChannelSelect::Short)
            .with_short_link("/cgi-bin/x", [server.host()])
            .with_retry_count(1);
        let ok = client.start_task(spec).await;
        assert_eq!(
            ok.map(|r| r.body).ok().as_deref(),
            Some(&b"fine"[..]),
            "{fault:?}"
        );
        assert_eq!(connector.connects(), 2, "{fault:?}");
        assert_eq!(transport_panics(&client).await, 1, "{fault:?}");
        client.shutdown().await;
    }
}
