//! [`LabServer`]: an echo server behind a [`FaultProxy`], both running inside a lab's server
//! namespace.
//!
//! The echo server listens on the namespace's loopback: for the long link a
//! [`MockLongLinkServer`] (Mars framing, each request frame answered with its body), for the
//! short link an HTTP/1.1 server ([`serve_http_echo`]) answering `POST` [`ECHO_PATH`] with
//! the request body. The proxy listens on `0.0.0.0:<port>` of the namespace, so every server
//! address of the [`Lab`] reaches it, and adds whatever latency, jitter and stream faults the
//! [`ServerFaults`] ask for (netem is not available, so latency comes from here).

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use phobos_codec_mars::MarsCodec;
use phobos_test_support::proxy::{Direction, SegmentDelay};
use phobos_test_support::{DirectionFaults, FaultProxy, MockLongLinkServer, ProxyConfig, TlsFront};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinSet;

use crate::contender::{Link, ECHO_PATH, MAX_ECHO_BODY};
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
    /// Starts the long-link echo server and its proxy in `lab`'s server namespace.
    ///
    /// # Errors
    ///
    /// When the namespace cannot be entered or a socket cannot be bound.
    pub fn start(lab: &Lab, faults: ServerFaults) -> Result<LabServer, LabError> {
        Self::start_for(lab, faults, Link::Long, false)
    }

    /// Starts the echo server for `link` and its proxy in `lab`'s server namespace; with
    /// `tls`, a TLS front ([`crate::tls`]) sits between the proxy and the echo server.
    ///
    /// # Errors
    ///
    /// When the namespace cannot be entered or a socket cannot be bound.
    pub fn start_for(
        lab: &Lab,
        faults: ServerFaults,
        link: Link,
        tls: bool,
    ) -> Result<LabServer, LabError> {
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
            rt.block_on(serve(faults, link, tls, port_tx, stop_rx))
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

/// The echo server behind the proxy; dropping it stops it.
enum Upstream {
    Long(MockLongLinkServer),
    Short(HttpEcho),
}

impl Upstream {
    async fn start(link: Link) -> std::io::Result<Upstream> {
        Ok(match link {
            Link::Long => Upstream::Long(
                MockLongLinkServer::builder(Arc::new(MarsCodec::default()))
                    .record(false)
                    .start()
                    .await?,
            ),
            Link::Short => {
                let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
                let addr = listener.local_addr()?;
                let task = tokio::spawn(serve_http_echo(listener));
                Upstream::Short(HttpEcho { addr, task })
            }
        })
    }

    fn addr(&self) -> SocketAddr {
        match self {
            Upstream::Long(s) => s.addr(),
            Upstream::Short(s) => s.addr,
        }
    }
}

struct HttpEcho {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HttpEcho {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves the short-link echo on `listener` until the task is aborted (which closes every
/// connection): HTTP/1.1 with keep-alive as the client asks (Phobos's short link and the
/// naive client both send `Connection: close`, so hyper closes after each response).
///
/// `POST` [`ECHO_PATH`] answers `200` with the request body (`application/octet-stream`);
/// another path is `404`, another method `405`, a body over [`MAX_ECHO_BODY`] `413`.
pub async fn serve_http_echo(listener: TcpListener) {
    let mut conns = JoinSet::new();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                // Out of descriptors or an aborted handshake: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        conns.spawn(async move {
            let service = hyper::service::service_fn(echo);
            // A connection that breaks (faults do that) just ends.
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
        // Reap finished connections so the set does not grow with every short link.
        while conns.try_join_next().is_some() {}
    }
}

async fn echo(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let status = if req.uri().path() != ECHO_PATH {
        StatusCode::NOT_FOUND
    } else if req.method() != Method::POST {
        StatusCode::METHOD_NOT_ALLOWED
    } else {
        match Limited::new(req.into_body(), MAX_ECHO_BODY).collect().await {
            Ok(body) => return Ok(reply(StatusCode::OK, body.to_bytes())),
            Err(e)
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some() =>
            {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            // The connection broke mid-body: hyper drops the response anyway.
            Err(_) => StatusCode::BAD_REQUEST,
        }
    };
    Ok(reply(status, Bytes::new()))
}

fn reply(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/octet-stream"),
    );
    response
}

async fn serve(
    faults: ServerFaults,
    link: Link,
    tls: bool,
    port_tx: std::sync::mpsc::Sender<std::io::Result<u16>>,
    stop: oneshot::Receiver<()>,
) -> ServerStats {
    let started = async {
        let server = Upstream::start(link).await?;
        let front = match tls {
            true => Some(
                TlsFront::start(
                    crate::tls::server_config(),
                    SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
                    server.addr(),
                )
                .await?,
            ),
            false => None,
        };
        let target = front.as_ref().map_or(server.addr(), TlsFront::addr);
        let config = ProxyConfig::new(target, faults.seed)
            .listen(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))
            .client_to_server(faults.client_to_server.clone())
            .server_to_client(faults.server_to_client.clone())
            .segment_delay(Direction::ClientToServer, faults.segment_delay)
            .segment_delay(Direction::ServerToClient, faults.segment_delay);
        let proxy = FaultProxy::start(config).await?;
        std::io::Result::Ok((server, front, proxy))
    };
    let (server, front, proxy) = match started.await {
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
    drop(front);
    drop(server);
    stats
}
