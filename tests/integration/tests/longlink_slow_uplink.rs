//! A slow uplink through the real driver, in virtual time: requests pipelined behind one
//! another are timed from when their first byte leaves the driver (spec §6.2), so a burst of
//! uploads that takes longer to leave than a first-packet timeout still gets through on one
//! connection.

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use phobos_plugin_api::{CmdId, IpPort};
use phobos_stn::{Client, ClientConfig, Connector, LinkStream, TaskSpec};
use phobos_test_support::MockLongLinkServer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

mod common;
use common::{codec, ends_once};

/// Mars's minimum Wi-Fi rate (bytes a second), the slowest uplink its first-packet formula
/// allows for.
const RATE: u64 = 12_288;
/// The most a write takes at once.
const PIECE: u64 = 1024;

/// A stream that takes at most [`RATE`] bytes a second (in tokio's clock) from its writer,
/// in pieces of [`PIECE`] bytes: the socket of a slow uplink, whose send buffer is full.
struct Throttled {
    inner: Box<dyn LinkStream>,
    start: Instant,
    taken: u64,
    wait: Option<Pin<Box<Sleep>>>,
}

impl AsyncRead for Throttled {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Throttled {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        loop {
            let elapsed = this.start.elapsed().as_nanos() as u64;
            let allowed = (elapsed as u128 * u128::from(RATE) / 1_000_000_000) as u64;
            let room = allowed.saturating_sub(this.taken).min(PIECE);
            if room > 0 {
                this.wait = None;
                let n = (buf.len() as u64).min(room) as usize;
                return match Pin::new(&mut this.inner).poll_write(cx, &buf[..n]) {
                    Poll::Ready(Ok(n)) => {
                        this.taken += n as u64;
                        Poll::Ready(Ok(n))
                    }
                    other => other,
                };
            }
            // Room for the next piece at the rate.
            let next = Duration::from_nanos((this.taken + PIECE) * 1_000_000_000 / RATE);
            let at = this.start + next;
            let wait = this
                .wait
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
            wait.as_mut().reset(at);
            if wait.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl LinkStream for Throttled {}

/// Connects over TCP and throttles what the client writes; counts its connections.
#[derive(Debug, Default)]
struct SlowUplink {
    connects: Mutex<usize>,
}

#[async_trait::async_trait]
impl Connector for SlowUplink {
    async fn connect(&self, addr: IpPort) -> io::Result<Box<dyn LinkStream>> {
        *self.connects.lock().unwrap() += 1;
        let inner = phobos_stn::TcpConnector::default().connect(addr).await?;
        Ok(Box::new(Throttled {
            inner,
            start: Instant::now(),
            taken: 0,
            wait: None,
        }))
    }
}

/// Fifteen 20 KiB uploads take 25 s to leave at 12 KiB/s, and each is answered as soon as
/// it arrives. Their first-packet timeouts (13.67 s, plus 1.5 s for each request ahead, up
/// to five) run from each one's first byte. Timed from the dispatch pass instead, the
/// thirteenth timed out about 21 s in, and the link went down with every request on it.
#[tokio::test(start_paused = true)]
async fn uploads_queued_behind_a_slow_uplink_all_get_through_on_one_connection() {
    let server = MockLongLinkServer::start_echo(codec()).await.unwrap();
    let path = Arc::new(SlowUplink::default());
    let config = ClientConfig::builder(codec())
        .link_addrs("default-longlink", [server.ip_port()])
        .connector(path.clone())
        .build()
        .unwrap();
    let client = Client::start(config).unwrap();
    client.set_foreground(true);
    server.wait_for_connections(1).await;
    let t0 = Instant::now();
    let mut batch =
        client.start_tasks((0..15u8).map(|i| TaskSpec::new(CmdId(1), vec![i; 20 * 1024])));
    let ends = ends_once(&mut batch, 15).await;
    for end in &ends {
        assert!(end.outcome.is_ok(), "{:?}: {:?}", end.key, end.outcome);
        assert_eq!(
            end.profile().expect("a profile").attempts,
            1,
            "{:?}",
            end.key
        );
    }
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_secs(25),
        "the uplink's pace: {took:?}"
    );
    assert_eq!(*path.connects.lock().unwrap(), 1);
    assert_eq!(server.connection_count(), 1);
}
