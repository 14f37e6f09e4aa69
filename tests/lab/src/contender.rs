//! The clients the lab compares: Phobos with its defaults, Phobos with the `mars-classic`
//! connect profile, and a [`NaiveClient`] (one connection, fixed timeouts, no retry).
//!
//! All three speak Mars framing to the same echo server and run the same workload through
//! [`ContenderClient`], so a table row differs only in the client.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use phobos_codec_mars::MarsCodec;
use phobos_plugin_api::{CmdId, Decoded, FrameHead, FrameKind, IpPort, PacketCodec, Seq};
use phobos_stn::{Client, ClientConfig, ConnectProfile, TaskSpec};
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
}

/// A started client of any [`Contender`], running tasks against one server.
#[derive(Debug)]
pub enum ContenderClient {
    /// A Phobos client and the connector that records its dials.
    Stn {
        /// The client.
        client: Client,
        /// Its connector.
        connector: RecordingConnector,
    },
    /// The naive client.
    Naive(NaiveClient),
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
    pub const ALL: [Contender; 3] = [Contender::Phobos, Contender::MarsClassic, Contender::Naive];

    /// The name used in tables and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Contender::Phobos => "phobos",
            Contender::MarsClassic => "mars-classic",
            Contender::Naive => "naive",
        }
    }

    /// Starts this client against `addrs` (the naive client uses the first only). Must run
    /// inside a tokio runtime.
    ///
    /// # Errors
    ///
    /// The config error of a Phobos client, as text.
    pub fn start(
        self,
        addrs: &[SocketAddr],
        task_timeout: Duration,
        seed: u64,
    ) -> Result<ContenderClient, String> {
        let profile = match self {
            Contender::Phobos => ConnectProfile::default(),
            Contender::MarsClassic => ConnectProfile::MarsClassic,
            Contender::Naive => {
                let first = *addrs.first().ok_or("no address")?;
                return Ok(ContenderClient::Naive(NaiveClient::new(
                    first,
                    NAIVE_CONNECT_TIMEOUT.min(task_timeout),
                    task_timeout,
                )));
            }
        };
        let connector = RecordingConnector::new();
        let config = ClientConfig::builder(Arc::new(MarsCodec::default()))
            .link_addrs(LINK, addrs.iter().map(|a| IpPort::from(*a)))
            .connector(Arc::new(connector.clone()))
            .connect_profile(profile)
            .core(|c| c.seed(seed))
            .build()
            .map_err(|e| e.to_string())?;
        let client = Client::start(config).map_err(|e| e.to_string())?;
        // The app under test is in use: an IM app reports foreground at start (Mars apps call
        // `OnForeground(true)`), which selects the foreground rows of the reconnect table
        // (task-driven reconnect after 5 s instead of the background's 30 s).
        client.set_foreground(true);
        Ok(ContenderClient::Stn { client, connector })
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
            ContenderClient::Stn { client, .. } => {
                let spec = TaskSpec::new(ECHO_CMD, body.clone()).with_total_timeout(timeout);
                client
                    .start_task(spec)
                    .await
                    .map(|r| r.body)
                    .map_err(|e| e.to_string())
            }
            ContenderClient::Naive(n) => n.run_task(body.clone()).await.map_err(str::to_owned),
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
        }
    }

    /// Stops the client.
    pub async fn shutdown(self) {
        match self {
            ContenderClient::Stn { client, .. } => client.shutdown().await,
            ContenderClient::Naive(n) => drop(n.conn.lock().await.take()),
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

/// The long link's name in every lab client.
pub const LINK: &str = "default-longlink";

/// The command id of the echo tasks.
pub const ECHO_CMD: CmdId = CmdId(7);

/// The naive client's dial timeout (what a hand-written client typically picks).
pub const NAIVE_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
