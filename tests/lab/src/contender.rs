//! The clients the lab compares: Phobos with its defaults, Phobos with the `mars-classic`
//! connect profile, a naive client (fixed timeouts, no retry), and Phobos with its defaults
//! over TLS (`phobos-tls`, to a TLS front of the same server), each on either [`Link`].
//!
//! - **Long link**: all of them speak Mars framing to the same echo server over a persistent
//!   connection; the naive one is a [`NaiveClient`] (one shared connection, redialled only
//!   after it broke).
//! - **Short link**: one HTTP/1.1 `POST` per task to the lab's HTTP echo server. Phobos sends
//!   it through its short link (`ChannelSelect::Short`, Mars's request shape: the task's body
//!   raw, `Connection: close`, so one connection per attempt); the naive one is a
//!   [`NaiveHttpClient`] (hyper's connection-level client, one connection per task, the same
//!   headers, no retry).
//!
//! Every contender runs the same workload through [`ContenderClient`], so a table row differs
//! only in the client.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::io;

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use phobos_codec_mars::MarsCodec;
use phobos_plugin_api::{CmdId, Decoded, FrameHead, FrameKind, IpPort, PacketCodec, Seq};
use phobos_stn::{
    ChannelSelect, Client, ClientConfig, ConnectProfile, Connector, LinkStream, TaskSpec,
    TlsConnector,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use crate::recording::{AttemptOutcome, RecordingConnector};

/// Which client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Contender {
    /// `phobos_stn::Client` with every default ([`ConnectProfile::Phobos`]).
    Phobos,
    /// `phobos_stn::Client` with [`ConnectProfile::MarsClassic`].
    MarsClassic,
    /// [`NaiveClient`].
    Naive,
    /// `phobos_stn::Client` with every default but over TLS ([`TlsConnector`] over the
    /// recording connector) to a TLS front of the server: what Phobos can add and Mars
    /// cannot, end-to-end integrity (a damaged record fails its check, the connection
    /// breaks, the task is retried instead of answered with damaged bytes).
    PhobosTls,
}

/// Which link a cell's tasks travel on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Link {
    /// A persistent connection carrying Mars frames.
    Long,
    /// One HTTP/1.1 `POST` per task (per attempt, for Phobos).
    Short,
}

impl Link {
    /// Both links, in table order.
    pub const ALL: [Link; 2] = [Link::Long, Link::Short];

    /// The name used on the command line (`long`, `short`).
    pub fn name(self) -> &'static str {
        match self {
            Link::Long => "long",
            Link::Short => "short",
        }
    }

    /// The name used in headings (`long link`, `short link`).
    pub fn title(self) -> &'static str {
        match self {
            Link::Long => "long link",
            Link::Short => "short link",
        }
    }

    /// Parses [`name`](Self::name).
    pub fn parse(s: &str) -> Option<Link> {
        Link::ALL.into_iter().find(|l| l.name() == s)
    }
}

impl fmt::Display for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.title())
    }
}

/// A started client of any [`Contender`], running tasks against one server.
#[derive(Debug)]
pub enum ContenderClient {
    /// A Phobos client and the connector that records its dials.
    Stn {
        /// The client.
        client: Client,
        /// The connector of the link under test (the short link's for [`Link::Short`]).
        connector: RecordingConnector,
        /// For [`Link::Short`]: the hosts every task names (`ip:port`); empty for the long
        /// link.
        short_hosts: Vec<String>,
    },
    /// The naive long-link client.
    Naive(NaiveClient),
    /// The naive short-link client.
    NaiveHttp(NaiveHttpClient),
}

/// How one task ended, as the lab counts it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TaskResult {
    /// The echo came back intact.
    Success,
    /// The client reported an error (timeout, connect failure, reset…), in its words.
    Failed(String),
    /// The client answered with the wrong body.
    WrongBody,
}

/// One connection, a fixed connect timeout and a fixed task timeout, no retry, no heartbeat:
/// what an app gets from a plain socket and a request map.
///
/// Tasks share the connection (matched by sequence number). A broken connection fails every
/// task waiting on it; the next task dials again (that is all the recovery it has).
#[derive(Debug)]
pub struct NaiveClient {
    addr: SocketAddr,
    connect_timeout: Duration,
    task_timeout: Duration,
    codec: Arc<MarsCodec>,
    conn: tokio::sync::Mutex<Option<NaiveConn>>,
    next_seq: AtomicU32,
    dials: AtomicU64,
    connects: AtomicU64,
}

impl Contender {
    /// Every contender, in table order.
    pub const ALL: [Contender; 4] = [
        Contender::Phobos,
        Contender::MarsClassic,
        Contender::Naive,
        Contender::PhobosTls,
    ];

    /// The name used in tables and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Contender::Phobos => "phobos",
            Contender::MarsClassic => "mars-classic",
            Contender::Naive => "naive",
            Contender::PhobosTls => "phobos-tls",
        }
    }

    /// Whether its server must speak TLS.
    pub fn uses_tls(self) -> bool {
        self == Contender::PhobosTls
    }

    /// Every contender's name, for error messages.
    pub fn names() -> String {
        Contender::ALL.map(Contender::name).join(", ")
    }

    /// Parses [`name`](Self::name).
    pub fn parse(s: &str) -> Option<Contender> {
        Contender::ALL.into_iter().find(|c| c.name() == s)
    }

    /// Starts this client on the long link against `addrs` (see [`start_on`](Self::start_on)).
    ///
    /// # Errors
    ///
    /// As [`start_on`](Self::start_on).
    pub fn start(
        self,
        addrs: &[SocketAddr],
        task_timeout: Duration,
        seed: u64,
    ) -> Result<ContenderClient, String> {
        self.start_on(Link::Long, addrs, task_timeout, seed)
    }

    /// Starts this client for `link` against `addrs` (the naive clients use the first only).
    /// Must run inside a tokio runtime.
    ///
    /// A Phobos client for the short link still needs a long link in its config: that one
    /// goes to a reserved address through a connector that refuses at once without opening
    /// a socket, so it puts nothing on the wire and shares no address (ranking, bans) with
    /// the short link under test.
    ///
    /// # Errors
    ///
    /// No address, or the config error of a Phobos client, as text.
    pub fn start_on(
        self,
        link: Link,
        addrs: &[SocketAddr],
        task_timeout: Duration,
        seed: u64,
    ) -> Result<ContenderClient, String> {
        let first = *addrs.first().ok_or("no address")?;
        let profile = match (self, link) {
            (Contender::Phobos | Contender::PhobosTls, _) => ConnectProfile::default(),
            (Contender::MarsClassic, _) => ConnectProfile::MarsClassic,
            (Contender::Naive, Link::Long) => {
                return Ok(ContenderClient::Naive(NaiveClient::new(
                    first,
                    NAIVE_CONNECT_TIMEOUT.min(task_timeout),
                    task_timeout,
                )));
            }
            (Contender::Naive, Link::Short) => {
                return Ok(ContenderClient::NaiveHttp(NaiveHttpClient::new(
                    first,
                    NAIVE_CONNECT_TIMEOUT.min(task_timeout),
                    task_timeout,
                )));
            }
        };
        let connector = RecordingConnector::new();
        // The link under test dials through the recording connector, under TLS for
        // `phobos-tls`.
        let dialer: Arc<dyn Connector> = if self.uses_tls() {
            Arc::new(TlsConnector::over(
                Arc::new(connector.clone()),
                crate::tls::client_config(),
            ))
        } else {
            Arc::new(connector.clone())
        };
        let builder = ClientConfig::builder(Arc::new(MarsCodec::default()))
            .connect_profile(profile)
            .core(|c| c.seed(seed));
        let (builder, short_hosts) = match link {
            Link::Long => (
                builder
                    .link_addrs(LINK, addrs.iter().map(|a| IpPort::from(*a)))
                    .connector(dialer),
                Vec::new(),
            ),
            Link::Short => (
                builder
                    .link_addrs(LINK, [IpPort::from(UNUSED_LONG_LINK)])
                    .connector(Arc::new(NoLongLink))
                    .short_link_connector(dialer),
                addrs.iter().map(SocketAddr::to_string).collect(),
            ),
        };
        let config = builder.build().map_err(|e| e.to_string())?;
        let client = Client::start(config).map_err(|e| e.to_string())?;
        // The app under test is in use: an IM app reports foreground at start (Mars apps call
        // `OnForeground(true)`), which selects the foreground rows of the reconnect table
        // (task-driven reconnect after 5 s instead of the background's 30 s).
        client.set_foreground(true);
        Ok(ContenderClient::Stn {
            client,
            connector,
            short_hosts,
        })
    }
}

impl fmt::Display for Contender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl ContenderClient {
    /// Runs one echo task with `body` and a total timeout of `timeout`.
    pub async fn run_task(&self, body: Bytes, timeout: Duration) -> TaskResult {
        let got = match self {
            ContenderClient::Stn {
                client,
                short_hosts,
                ..
            } => {
                let mut spec = TaskSpec::new(ECHO_CMD, body.clone()).with_total_timeout(timeout);
                if !short_hosts.is_empty() {
                    spec = spec
                        .with_channel(ChannelSelect::Short)
                        .with_short_link(ECHO_PATH, short_hosts.iter().cloned());
                }
                client
                    .start_task(spec)
                    .await
                    .map(|r| r.body)
                    .map_err(|e| e.to_string())
            }
            ContenderClient::Naive(n) => n.run_task(body.clone()).await.map_err(str::to_owned),
            ContenderClient::NaiveHttp(n) => n.run_task(body.clone()).await,
        };
        match got {
            Ok(b) if b == body => TaskResult::Success,
            Ok(_) => TaskResult::WrongBody,
            Err(reason) => TaskResult::Failed(reason),
        }
    }

    /// Connect attempts so far.
    pub fn dials(&self) -> u64 {
        match self {
            ContenderClient::Stn { connector, .. } => connector.attempts().len() as u64,
            ContenderClient::Naive(n) => n.dials.load(Ordering::SeqCst),
            ContenderClient::NaiveHttp(n) => n.dials.load(Ordering::SeqCst),
        }
    }

    /// Completed TCP handshakes so far.
    pub fn connects(&self) -> u64 {
        match self {
            ContenderClient::Stn { connector, .. } => connector
                .attempts()
                .iter()
                .filter(|a| a.outcome == AttemptOutcome::Connected)
                .count() as u64,
            ContenderClient::Naive(n) => n.connects.load(Ordering::SeqCst),
            ContenderClient::NaiveHttp(n) => n.connects.load(Ordering::SeqCst),
        }
    }

    /// Stops the client.
    pub async fn shutdown(self) {
        match self {
            ContenderClient::Stn { client, .. } => client.shutdown().await,
            ContenderClient::Naive(n) => drop(n.conn.lock().await.take()),
            ContenderClient::NaiveHttp(_) => {}
        }
    }
}

impl NaiveClient {
    /// A client for `addr`: each dial may take `connect_timeout`, each task `task_timeout`
    /// (the dial included).
    pub fn new(addr: SocketAddr, connect_timeout: Duration, task_timeout: Duration) -> Self {
        NaiveClient {
            addr,
            connect_timeout,
            task_timeout,
            codec: Arc::new(MarsCodec::default()),
            conn: tokio::sync::Mutex::new(None),
            next_seq: AtomicU32::new(1),
            dials: AtomicU64::new(0),
            connects: AtomicU64::new(0),
        }
    }

    /// Sends one echo request and waits for its response.
    ///
    /// # Errors
    ///
    /// A short reason: the dial failed or timed out, the connection broke, or the task
    /// timed out.
    pub async fn run_task(&self, body: Bytes) -> Result<Bytes, &'static str> {
        let run = async {
            let seq = Seq(self.next_seq.fetch_add(1, Ordering::Relaxed) % 1_000_000 + 1);
            let mut frame = Vec::with_capacity(body.len() + 32);
            self.codec
                .encode(FrameHead::new(ECHO_CMD, seq), &body, &[], &mut frame)
                .map_err(|_| "encode")?;
            let (tx, rx) = oneshot::channel();
            {
                let mut guard = self.conn.lock().await;
                let dead = guard.as_ref().is_none_or(|c| c.writer.is_closed());
                if dead {
                    *guard = Some(self.dial().await?);
                }
                let conn = guard.as_ref().ok_or("no connection")?;
                conn.pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(seq.0, tx);
                conn.writer.send(frame).map_err(|_| "connection broke")?;
            }
            rx.await.map_err(|_| "connection broke")
        };
        tokio::time::timeout(self.task_timeout, run)
            .await
            .map_err(|_| "task timeout")?
    }

    async fn dial(&self) -> Result<NaiveConn, &'static str> {
        self.dials.fetch_add(1, Ordering::SeqCst);
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(self.addr))
            .await
            .map_err(|_| "connect timeout")?
            .map_err(|_| "connect failed")?;
        self.connects.fetch_add(1, Ordering::SeqCst);
        let _ = stream.set_nodelay(true);
        let (mut rd, mut wr) = stream.into_split();
        let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
        let (writer, mut frames) = mpsc::unbounded_channel::<Vec<u8>>();
        let reader_pending = pending.clone();
        let codec = self.codec.clone();
        let reader = tokio::spawn(async move {
            let mut buf = Vec::with_capacity(4096);
            let mut chunk = vec![0u8; 16 * 1024];
            loop {
                loop {
                    match codec.decode(&buf) {
                        Ok(Decoded::Frame(f)) => {
                            if let FrameKind::Response(seq) = codec.classify(&f.head) {
                                let body = Bytes::copy_from_slice(&buf[f.body.clone()]);
                                let tx = reader_pending
                                    .lock()
                                    .unwrap_or_else(|e| e.into_inner())
                                    .remove(&seq.0);
                                if let Some(tx) = tx {
                                    let _ = tx.send(body);
                                }
                            }
                            buf.drain(..f.len);
                        }
                        Ok(Decoded::Incomplete { .. }) => break,
                        Err(_) => return, // garbage: give up on the connection
                    }
                }
                match rd.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
        });
        let writer_task = tokio::spawn(async move {
            while let Some(frame) = frames.recv().await {
                if wr.write_all(&frame).await.is_err() {
                    return;
                }
            }
        });
        // When either half ends, the connection is dead: close the request channel (so the
        // next task dials again) and fail every waiting task by dropping its sender.
        let watch_pending = pending.clone();
        let tasks = [reader.abort_handle(), writer_task.abort_handle()];
        let (reader_abort, writer_abort) = (tasks[0].clone(), tasks[1].clone());
        let watcher = tokio::spawn(async move {
            tokio::select! {
                _ = reader => writer_abort.abort(),
                _ = writer_task => reader_abort.abort(),
            }
            watch_pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clear();
        });
        Ok(NaiveConn {
            writer,
            pending,
            tasks: [tasks[0].clone(), tasks[1].clone(), watcher.abort_handle()],
        })
    }
}

type Pending = Arc<Mutex<HashMap<u32, oneshot::Sender<Bytes>>>>;

#[derive(Debug)]
struct NaiveConn {
    writer: mpsc::UnboundedSender<Vec<u8>>,
    pending: Pending,
    /// Reader, writer and watcher: aborted (closing the socket) when the connection is
    /// dropped.
    tasks: [tokio::task::AbortHandle; 3],
}

impl Drop for NaiveConn {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// One HTTP/1.1 `POST` per task on a connection of its own, a fixed connect timeout and a
/// fixed task timeout, no retry: what an app gets from a plain HTTP client with
/// `Connection: close`.
///
/// The request has the same shape as Phobos's short link (Mars's headers, the body raw), so
/// the two put the same bytes on the wire per attempt; it is written with hyper's
/// connection-level HTTP/1.1 client over a socket this client dials itself (so its dials
/// are counted).
#[derive(Debug)]
pub struct NaiveHttpClient {
    addr: SocketAddr,
    host: String,
    connect_timeout: Duration,
    task_timeout: Duration,
    dials: AtomicU64,
    connects: AtomicU64,
}

impl NaiveHttpClient {
    /// A client posting to [`ECHO_PATH`] on `addr`: each dial may take `connect_timeout`,
    /// each task `task_timeout` (the dial included).
    pub fn new(addr: SocketAddr, connect_timeout: Duration, task_timeout: Duration) -> Self {
        NaiveHttpClient {
            addr,
            host: addr.to_string(),
            connect_timeout,
            task_timeout,
            dials: AtomicU64::new(0),
            connects: AtomicU64::new(0),
        }
    }

    /// Posts `body` and returns the response body of a `200`.
    ///
    /// # Errors
    ///
    /// A short reason: the dial failed or timed out, the exchange failed, the status was not
    /// 200, the body was too large, or the task timed out.
    pub async fn run_task(&self, body: Bytes) -> Result<Bytes, String> {
        let run = async {
            self.dials.fetch_add(1, Ordering::SeqCst);
            let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(self.addr))
                .await
                .map_err(|_| "connect timeout".to_owned())?
                .map_err(|_| "connect failed".to_owned())?;
            self.connects.fetch_add(1, Ordering::SeqCst);
            let _ = stream.set_nodelay(true);
            let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
                .title_case_headers(true)
                .handshake::<_, Full<Bytes>>(TokioIo::new(stream))
                .await
                .map_err(|e| format!("http handshake: {e}"))?;
            // Drives the socket; dropped (closing it) when the task ends or times out.
            let driver = AbortOnDrop(tokio::spawn(async move {
                let _ = conn.await;
            }));
            let request = hyper::Request::post(ECHO_PATH)
                .header("Accept", "*/*")
                .header("Cache-Control", "no-cache")
                .header("Connection", "close")
                .header("Content-Length", body.len())
                .header("Content-Type", "application/octet-stream")
                .header("Host", self.host.as_str())
                .header("User-Agent", "MicroMessenger Client")
                .body(Full::new(body))
                .map_err(|e| format!("request: {e}"))?;
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| format!("exchange failed: {}", hyper_reason(&e)))?;
            if response.status() != hyper::StatusCode::OK {
                return Err(format!("status {}", response.status().as_u16()));
            }
            let body = Limited::new(response.into_body(), MAX_ECHO_BODY)
                .collect()
                .await
                .map_err(|e| format!("body failed: {e}"))?
                .to_bytes();
            drop(driver);
            Ok(body)
        };
        tokio::time::timeout(self.task_timeout, run)
            .await
            .map_err(|_| "task timeout".to_owned())?
    }
}

/// hyper's error in a few words (its `Display` for the kind, without the source chain, so
/// a cell's failures group by kind).
fn hyper_reason(e: &hyper::Error) -> &'static str {
    if e.is_incomplete_message() || e.is_closed() || e.is_canceled() {
        "connection closed"
    } else if e.is_parse() {
        "bad response"
    } else if e.is_timeout() {
        "timeout"
    } else {
        "io error"
    }
}

/// Aborts a spawned task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The long-link connector of a short-link cell's Phobos client: refuses every attempt at
/// once and opens no socket.
#[derive(Debug)]
struct NoLongLink;

#[async_trait]
impl Connector for NoLongLink {
    async fn connect(&self, _addr: IpPort) -> io::Result<Box<dyn LinkStream>> {
        Err(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            "no long link in a short-link cell",
        ))
    }
}

/// Where the unused long link of a short-link cell points (never dialled: [`NoLongLink`]).
const UNUSED_LONG_LINK: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 9)),
    9,
);

/// The path of the short-link echo.
pub const ECHO_PATH: &str = "/phobos-lab/echo";

/// The largest echo body a lab client or the lab server accepts.
pub const MAX_ECHO_BODY: usize = 1024 * 1024;

/// The long link's name in every lab client.
pub const LINK: &str = "default-longlink";

/// The command id of the echo tasks.
pub const ECHO_CMD: CmdId = CmdId(7);

/// The naive client's dial timeout (what a hand-written client typically picks).
pub const NAIVE_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
