//! [`LabServer`]: an echo long-link server behind a [`FaultProxy`], both running inside a
//! lab's server namespace.
//!
//! The echo server ([`MockLongLinkServer`], Mars framing) listens on the namespace's
//! loopback; the proxy listens on `0.0.0.0:<port>` of the namespace, so every server address
//! of the [`Lab`] reaches it, and adds whatever latency, jitter and stream faults the
//! [`ServerFaults`] ask for (netem is not available, so latency comes from here).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use phobos_codec_mars::MarsCodec;
use phobos_test_support::proxy::{Direction, SegmentDelay};
use phobos_test_support::{DirectionFaults, FaultProxy, MockLongLinkServer, ProxyConfig};
use tokio::sync::oneshot;

use crate::netns::{Lab, LabError, NsThread, Side};

/// A running lab server. [`stop`](Self::stop) it to get its counters; dropping it also stops
/// it.
#[derive(Debug)]
pub struct LabServer {
    port: u16,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<NsThread<ServerStats>>,
}

/// Stream faults the proxy in front of the server adds. The default forwards faithfully.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServerFaults {
    /// Faults on client-to-server bytes.
    pub client_to_server: DirectionFaults,
    /// Faults on server-to-client bytes.
    pub server_to_client: DirectionFaults,
    /// Random segment delay, both directions.
    pub segment_delay: SegmentDelay,
    /// Half-open (nothing forwarded, sockets kept) from this time after start, for this long.
    pub half_open: Option<(Duration, Duration)>,
    /// The proxy's seed.
    pub seed: u64,
}

/// What the server side counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Connections the proxy accepted.
    pub connections: u64,
    /// Bytes the proxy delivered to the server.
    pub client_to_server: u64,
    /// Bytes the proxy delivered to clients.
    pub server_to_client: u64,
}

impl ServerFaults {
    /// Adds `rtt` of latency, half in each direction.
    pub fn with_rtt(mut self, rtt: Duration) -> Self {
        self.client_to_server.latency = rtt / 2;
        self.server_to_client.latency = rtt / 2;
        self
    }
}

impl LabServer {
    /// Starts the echo server and its proxy in `lab`'s server namespace.
    ///
    /// # Errors
    ///
    /// When the namespace cannot be entered or a socket cannot be bound.
    pub fn start(lab: &Lab, faults: ServerFaults) -> Result<LabServer, LabError> {
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = lab.spawn_in(Side::Server, move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = port_tx.send(Err(e));
                    return ServerStats::default();
                }
            };
            rt.block_on(serve(faults, port_tx, stop_rx))
        })?;
        let port = match port_rx.recv() {
            Ok(Ok(port)) => port,
            Ok(Err(source)) => {
                return Err(LabError::Io {
                    what: "starting the lab server".into(),
                    source,
                })
            }
            Err(_) => {
                let _ = thread.join();
                return Err(LabError::Io {
                    what: "the lab server thread ended early".into(),
                    source: std::io::Error::other("thread ended"),
                });
            }
        };
        Ok(LabServer {
            port,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// The port the proxy listens on (on every server address of the lab).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server and returns its counters.
    ///
    /// # Errors
    ///
    /// When the server thread panicked.
    pub fn stop(mut self) -> Result<ServerStats, LabError> {
        self.stop_inner().unwrap_or(Ok(ServerStats::default()))
    }

    fn stop_inner(&mut self) -> Option<Result<ServerStats, LabError>> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.thread.take().map(NsThread::join)
    }
}

impl Drop for LabServer {
    fn drop(&mut self) {
        let _ = self.stop_inner();
    }
}

async fn serve(
    faults: ServerFaults,
    port_tx: std::sync::mpsc::Sender<std::io::Result<u16>>,
    stop: oneshot::Receiver<()>,
) -> ServerStats {
    let started = async {
        let server = MockLongLinkServer::builder(Arc::new(MarsCodec::default()))
            .record(false)
            .start()
            .await?;
        let config = ProxyConfig::new(server.addr(), faults.seed)
            .listen(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))
            .client_to_server(faults.client_to_server.clone())
            .server_to_client(faults.server_to_client.clone())
            .segment_delay(Direction::ClientToServer, faults.segment_delay)
            .segment_delay(Direction::ServerToClient, faults.segment_delay);
        let proxy = FaultProxy::start(config).await?;
        std::io::Result::Ok((server, proxy))
    };
    let (server, proxy) = match started.await {
        Ok(v) => v,
        Err(e) => {
            let _ = port_tx.send(Err(e));
            return ServerStats::default();
        }
    };
    let _ = port_tx.send(Ok(proxy.addr().port()));
    let half_open = async {
        match faults.half_open {
            Some((at, len)) => {
                tokio::time::sleep(at).await;
                proxy.set_half_open(true);
                tokio::time::sleep(len).await;
                proxy.set_half_open(false);
                std::future::pending::<()>().await
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = stop => {}
        _ = half_open => {}
    }
    let stats = ServerStats {
        connections: proxy.connection_count(),
        client_to_server: proxy.bytes_forwarded(Direction::ClientToServer),
        server_to_client: proxy.bytes_forwarded(Direction::ServerToClient),
    };
    drop(proxy);
    drop(server);
    stats
}
