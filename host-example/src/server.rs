//! The example IM server: the long link (frames through the configured codec, TLS by default)
//! and the short link (HTTP/1.1, HTTPS when TLS is on), one in-memory `Hub` behind both.
//!
//! What it answers is described in [`crate::proto`]. In short: a connection identifies with a
//! token (see [`crate::tokens`]) and is then bound to its user; a send is stored in its
//! conversation under the next sequence number and pushed to every online connection of the
//! conversation's members (the sender's included); a retried send (same user, same client message id) is answered
//! with the stored sequence and not stored or pushed again; conversation list pages and history
//! pages are served on both links (see [`crate::proto`]'s "Paging").
//!
//! ```no_run
//! # async fn demo(codec: std::sync::Arc<dyn phobos_plugin_api::PacketCodec>) -> anyhow::Result<()> {
//! use phobos_host_example::server::{Server, ServerConfig};
//! use phobos_host_example::tokens::TokenIssuer;
//!
//! let server = Server::start(ServerConfig::new(codec, TokenIssuer::new("secret"))).await?;
//! println!("long link {}, http {}", server.long_link_addr(), server.http_addr());
//! server.restart().await?; // every connection drops; state stays
//! server.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! # What a production server would replace
//!
//! - **State**: the `Hub` is process memory (conversations, history, room membership, the
//!   dedupe window). A real service keeps messages in a database, membership in a directory
//!   service and the dedupe keys in a store with a TTL, so it survives restarts and scales past
//!   one process. [`ServerHandle::restart`] keeps the hub to stand in for that durable state.
//! - **Fan-out**: pushes go to connections held by this process. A cluster routes them through
//!   a presence service and a message bus to whichever node holds each connection.
//! - **Login**: tokens come from a shared secret ([`TokenIssuer`]); a real deployment checks
//!   expiring tokens issued by its login service.
//! - **Flow control**: a connection whose outgoing queue passes [`MAX_QUEUED`] bytes (a
//!   reader too slow for its replies and pushes), or whose write stalls for
//!   [`WRITE_TIMEOUT`], is closed, and the client catches up from history when it
//!   reconnects. A real server would rather drop pushes first and keep the connection.
//!
//! # Robustness
//!
//! Bytes that are not a frame of the codec close that connection only; a failed TLS
//! handshake or malformed HTTP closes that connection only; bodies are size-limited. A
//! connection that has not identified within [`IDENTIFY_TIMEOUT`] of its accept (its TLS
//! handshake included) is closed, so silent peers cannot hold the server's descriptors; on
//! the short link an HTTPS handshake and a request head each get 10 s and a body 30 s (a
//! stalled body is answered 408 and its connection closed).
//! Nothing a peer sends panics the server or makes it hold more than [`MAX_QUEUED`] bytes
//! for a connection, besides one frame being read.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use phobos_plugin_api::codec::{
    HEARTBEAT_CMD, HEARTBEAT_SEQ, IDENTIFY_SEQ, PUSH_SEQ, SIGNAL_KEEP_SEQ,
};
use phobos_plugin_api::{CmdId, Decoded, FrameHead, PacketCodec};
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::proto::{
    self, Authed, Conversation, ConversationPage, ErrorCode, HistoryPage, HistoryRequest,
    JoinRequest, ListRequest, Message, Reply, SendAck, SendRequest, ServerError, Target,
};
use crate::tokens::TokenIssuer;

/// How to run a [`Server`].
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Where the long link listens (port 0: any free port).
    pub long_link_addr: SocketAddr,
    /// Where the short link (HTTP) listens (port 0: any free port).
    pub http_addr: SocketAddr,
    /// The long-link frame format.
    pub codec: Arc<dyn PacketCodec>,
    /// TLS for the long link; `None` for plain TCP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// TLS for the short link (HTTPS); `None` for plain HTTP.
    pub http_tls: Option<Arc<rustls::ServerConfig>>,
    /// Checks login tokens.
    pub tokens: TokenIssuer,
    /// The identify frame's command id (the auth plugin's `identify_cmd_id`).
    pub identify_cmd_id: CmdId,
    /// Messages kept per conversation; older ones drop out of the history.
    pub history_limit: usize,
    /// How many recent (user, client message id) pairs are remembered for dedupe.
    pub dedupe_window: usize,
}

impl ServerConfig {
    /// Loopback, any free ports, plain TCP and HTTP, the token plugin's default identify
    /// command, 10 000 messages of history per conversation, a 100 000-send dedupe window.
    pub fn new(codec: Arc<dyn PacketCodec>, tokens: TokenIssuer) -> Self {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        ServerConfig {
            long_link_addr: any,
            http_addr: any,
            codec,
            tls: None,
            http_tls: None,
            tokens,
            identify_cmd_id: phobos_auth_basic::DEFAULT_IDENTIFY_CMD,
            history_limit: 10_000,
            dedupe_window: 100_000,
        }
    }
}

/// Starts servers: see [`Server::start`].
#[derive(Debug)]
pub struct Server;

/// A running server. Cloning gives another handle to the same server. Dropping the handles
/// does not stop it (its tasks keep serving until the runtime ends): call
/// [`shutdown`](Self::shutdown).
#[derive(Clone, Debug)]
pub struct ServerHandle {
    inner: Arc<Inner>,
}

/// Why the server could not start (or restart).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// A listener could not bind its address.
    #[error("cannot listen on {addr} ({what})")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Counters of a running server.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerStats {
    /// Long-link connections accepted (TLS handshake included or not).
    pub long_link_accepted: u64,
    /// Long-link connections open now.
    pub long_link_open: usize,
    /// Connections closed because they sent bytes that are not a frame.
    pub malformed_closed: u64,
    /// Identify frames accepted.
    pub logins: u64,
    /// Identify frames rejected (bad token).
    pub logins_rejected: u64,
    /// Messages stored.
    pub messages_stored: u64,
    /// Sends answered from the dedupe window (retries of stored messages).
    pub duplicate_sends: u64,
    /// Pushes queued to connections.
    pub pushes: u64,
    /// HTTP requests answered.
    pub http_requests: u64,
    /// Times the listeners were restarted.
    pub restarts: u64,
    /// Send replies dropped on purpose ([`ServerHandle::lose_next_send_replies`]).
    pub replies_lost: u64,
    /// Connections closed because they did not read what was sent to them
    /// ([`MAX_QUEUED`], [`WRITE_TIMEOUT`]) or did not identify in time
    /// ([`IDENTIFY_TIMEOUT`]).
    pub stalled_closed: u64,
}

impl Server {
    /// Binds both listeners and starts serving.
    ///
    /// # Errors
    ///
    /// [`StartError::Bind`] naming the listener and address.
    pub async fn start(config: ServerConfig) -> Result<ServerHandle, StartError> {
        let inner = Arc::new(Inner {
            hub: Mutex::new(Hub {
                epoch: new_epoch(),
                ..Hub::default()
            }),
            counters: Counters::default(),
            addrs: Mutex::new((config.long_link_addr, config.http_addr)),
            tasks: Mutex::new(None),
            config,
        });
        inner.listen().await?;
        Ok(ServerHandle { inner })
    }
}

impl ServerHandle {
    /// The long link's address.
    pub fn long_link_addr(&self) -> SocketAddr {
        lock(&self.inner.addrs).0
    }

    /// The short link's (HTTP) address.
    pub fn http_addr(&self) -> SocketAddr {
        lock(&self.inner.addrs).1
    }

    /// Whether the long link runs over TLS.
    pub fn is_tls(&self) -> bool {
        self.inner.config.tls.is_some()
    }

    /// Drops both listeners and every connection, then listens again on the same addresses.
    /// The hub (conversations, history, membership, dedupe window) survives, as a database
    /// would.
    ///
    /// # Errors
    ///
    /// As [`Server::start`], should an address no longer be free.
    pub async fn restart(&self) -> Result<(), StartError> {
        self.restart_after(Duration::ZERO).await
    }

    /// As [`restart`](Self::restart), staying down for `downtime` first (so clients see their
    /// reconnect attempts refused).
    ///
    /// # Errors
    ///
    /// As [`restart`](Self::restart).
    pub async fn restart_after(&self, downtime: Duration) -> Result<(), StartError> {
        self.inner.stop().await;
        if !downtime.is_zero() {
            tokio::time::sleep(downtime).await;
        }
        self.inner.counters.restarts.fetch_add(1, Ordering::Relaxed);
        self.inner.listen().await
    }

    /// Stops listening and closes every connection.
    pub async fn shutdown(&self) {
        self.inner.stop().await;
    }

    /// Fault injection: the next `n` sends are stored and pushed as usual, but their replies
    /// are never written, as if the server crashed between committing a message and
    /// answering. The senders' tasks then wait until their link drops (a restart) and Phobos
    /// retries them on the next connection, where the dedupe window answers them.
    pub fn lose_next_send_replies(&self, n: u64) {
        self.inner.counters.lose_replies.store(n, Ordering::Relaxed);
    }

    /// The server's counters.
    pub fn stats(&self) -> ServerStats {
        let c = &self.inner.counters;
        ServerStats {
            long_link_accepted: c.accepted.load(Ordering::Relaxed),
            long_link_open: lock(&self.inner.hub).conns.len(),
            malformed_closed: c.malformed.load(Ordering::Relaxed),
            logins: c.logins.load(Ordering::Relaxed),
            logins_rejected: c.logins_rejected.load(Ordering::Relaxed),
            messages_stored: c.stored.load(Ordering::Relaxed),
            duplicate_sends: c.duplicates.load(Ordering::Relaxed),
            pushes: c.pushes.load(Ordering::Relaxed),
            http_requests: c.http.load(Ordering::Relaxed),
            restarts: c.restarts.load(Ordering::Relaxed),
            replies_lost: c.replies_lost.load(Ordering::Relaxed),
            stalled_closed: c.stalled.load(Ordering::Relaxed),
        }
    }
}

#[derive(Debug)]
struct Inner {
    config: ServerConfig,
    hub: Mutex<Hub>,
    counters: Counters,
    /// The bound addresses (the configured ones until the first bind resolves port 0).
    addrs: Mutex<(SocketAddr, SocketAddr)>,
    /// Every task of the current listening period: two accept loops and their connections.
    tasks: Mutex<Option<Arc<Mutex<JoinSet<()>>>>>,
}

#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    malformed: AtomicU64,
    logins: AtomicU64,
    logins_rejected: AtomicU64,
    stored: AtomicU64,
    duplicates: AtomicU64,
    pushes: AtomicU64,
    http: AtomicU64,
    restarts: AtomicU64,
    next_conn: AtomicU64,
    lose_replies: AtomicU64,
    replies_lost: AtomicU64,
    stalled: AtomicU64,
}

impl Inner {
    async fn listen(self: &Arc<Self>) -> Result<(), StartError> {
        let (ll_addr, http_addr) = *lock(&self.addrs);
        let long_link = TcpListener::bind(ll_addr)
            .await
            .map_err(|source| StartError::Bind {
                what: "long link",
                addr: ll_addr,
                source,
            })?;
        let http = TcpListener::bind(http_addr)
            .await
            .map_err(|source| StartError::Bind {
                what: "short link (HTTP)",
                addr: http_addr,
                source,
            })?;
        // Keep the real ports so a restart binds the same ones.
        let bound = (
            long_link.local_addr().unwrap_or(ll_addr),
            http.local_addr().unwrap_or(http_addr),
        );
        *lock(&self.addrs) = bound;
        let set = Arc::new(Mutex::new(JoinSet::new()));
        {
            let mut tasks = lock(&set);
            tasks.spawn(accept_loop(
                self.clone(),
                long_link,
                set.clone(),
                Kind::LongLink,
            ));
            tasks.spawn(accept_loop(self.clone(), http, set.clone(), Kind::Http));
        }
        *lock(&self.tasks) = Some(set);
        Ok(())
    }

    async fn stop(&self) {
        let set = lock(&self.tasks).take();
        if let Some(set) = set {
            // Abort and wait, so the listeners' sockets are closed before a restart binds
            // their addresses again. A second round catches a connection an accept loop
            // spawned while the first round ran.
            loop {
                let tasks = std::mem::take(&mut *lock(&set));
                if tasks.is_empty() {
                    break;
                }
                let mut tasks = tasks;
                tasks.shutdown().await;
            }
        }
        // The aborted connection tasks remove themselves lazily; clear now so no push is
        // queued to a dead connection.
        let mut hub = lock(&self.hub);
        hub.conns.clear();
        hub.online.clear();
    }
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    LongLink,
    Http,
}

async fn accept_loop(
    inner: Arc<Inner>,
    listener: TcpListener,
    set: Arc<Mutex<JoinSet<()>>>,
    kind: Kind,
) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let inner2 = inner.clone();
        let mut tasks = lock(&set);
        // Reap finished connections so the set does not grow without bound.
        while tasks.try_join_next().is_some() {}
        match kind {
            Kind::LongLink => {
                inner.counters.accepted.fetch_add(1, Ordering::Relaxed);
                tasks.spawn(long_link_conn(inner2, stream));
            }
            Kind::Http => {
                tasks.spawn(http_conn(inner2, stream));
            }
        }
    }
}

async fn long_link_conn(inner: Arc<Inner>, stream: TcpStream) {
    let id = ConnId(inner.counters.next_conn.fetch_add(1, Ordering::Relaxed));
    let identify_by = tokio::time::Instant::now() + IDENTIFY_TIMEOUT;
    match inner.config.tls.clone() {
        None => serve_frames(inner, id, stream, identify_by).await,
        Some(tls) => {
            let accept = tokio_rustls::TlsAcceptor::from(tls).accept(stream);
            match tokio::time::timeout_at(identify_by, accept).await {
                Ok(Ok(stream)) => serve_frames(inner, id, stream, identify_by).await,
                Ok(Err(e)) => tracing::debug!(conn = id.0, error = %e, "TLS handshake failed"),
                Err(_) => {
                    inner.counters.stalled.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(conn = id.0, "TLS handshake too slow; closing");
                }
            }
        }
    }
}

/// What a connection's task writes, bounded: [`MAX_QUEUED`] bytes at most.
#[derive(Clone, Debug)]
struct Outbox {
    tx: mpsc::UnboundedSender<Vec<u8>>,
    /// Bytes sent to the queue and not yet written.
    queued: Arc<AtomicUsize>,
    /// Told when a send found the queue full: the connection closes.
    full: Arc<tokio::sync::Notify>,
}

impl Outbox {
    /// Queues `bytes` for the connection; false when the connection is gone or its queue
    /// is full (then it closes).
    fn send(&self, bytes: Vec<u8>) -> bool {
        let n = bytes.len();
        if self.queued.fetch_add(n, Ordering::Relaxed) + n > MAX_QUEUED {
            self.queued.fetch_sub(n, Ordering::Relaxed);
            self.full.notify_one();
            return false;
        }
        self.tx.send(bytes).is_ok()
    }
}

async fn serve_frames<S>(
    inner: Arc<Inner>,
    id: ConnId,
    stream: S,
    identify_by: tokio::time::Instant,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let tx = Outbox {
        tx,
        queued: Arc::new(AtomicUsize::new(0)),
        full: Arc::new(tokio::sync::Notify::new()),
    };
    lock(&inner.hub).conns.insert(
        id,
        Conn {
            user: None,
            tx: tx.clone(),
        },
    );
    // Once identified, always: the hub is not asked again.
    let mut identified = false;
    let mut is_identified = || {
        identified = identified
            || lock(&inner.hub)
                .conns
                .get(&id)
                .is_some_and(|c| c.user.is_some());
        identified
    };
    let stalled = || {
        inner.counters.stalled.fetch_add(1, Ordering::Relaxed);
    };
    let codec = inner.config.codec.clone();
    let mut buf: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    let mut chunk = vec![0u8; READ_CHUNK];
    'conn: loop {
        tokio::select! {
            read = rd.read(&mut chunk) => {
                let n = match read {
                    Ok(0) | Err(_) => break 'conn,
                    Ok(n) => n,
                };
                buf.extend_from_slice(&chunk[..n]);
                loop {
                    let frame = match codec.decode(&buf) {
                        Ok(Decoded::Frame(f)) => f,
                        // A codec that keeps asking for more than a frame can hold (a
                        // loaded plugin may) does not make this buffer grow without end.
                        Ok(Decoded::Incomplete { .. }) if buf.len() > codec.max_frame_len() => {
                            inner.counters.malformed.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(conn = id.0, "no frame in a frame's length; closing");
                            break 'conn;
                        }
                        Ok(Decoded::Incomplete { .. }) => break,
                        Err(e) => {
                            inner.counters.malformed.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(conn = id.0, error = %e, "malformed frame; closing");
                            break 'conn;
                        }
                    };
                    let body = buf.get(frame.body.clone()).unwrap_or_default().to_vec();
                    buf.drain(..frame.len.min(buf.len()));
                    let (reply, close) = inner.handle_frame(id, frame.head, &body);
                    if let Some(reply) = reply {
                        let mut out = Vec::new();
                        if codec.encode(frame.head, &reply, &[], &mut out).is_err() {
                            // Too large for a frame: answer with an error rather than
                            // leaving the request unanswered.
                            out.clear();
                            let err: Reply<()> = Reply::Error(ServerError::new(
                                ErrorCode::BadRequest,
                                "the reply does not fit in a frame",
                            ));
                            if codec.encode(frame.head, &err.to_body(), &[], &mut out).is_err() {
                                break 'conn;
                            }
                        }
                        if !tx.send(out) {
                            stalled();
                            tracing::debug!(conn = id.0, "replies not read; closing");
                            break 'conn;
                        }
                    }
                    if close {
                        // Flush what is queued (the rejection), then close.
                        while let Ok(bytes) = rx.try_recv() {
                            let write = wr.write_all(&bytes);
                            if !matches!(tokio::time::timeout(WRITE_TIMEOUT, write).await, Ok(Ok(()))) {
                                break;
                            }
                        }
                        let _ = tokio::time::timeout(WRITE_TIMEOUT, wr.shutdown()).await;
                        break 'conn;
                    }
                }
            }
            Some(bytes) = rx.recv() => {
                let n = bytes.len();
                match tokio::time::timeout(WRITE_TIMEOUT, wr.write_all(&bytes)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => break 'conn,
                    Err(_) => {
                        stalled();
                        tracing::debug!(conn = id.0, "write stalled; closing");
                        break 'conn;
                    }
                }
                tx.queued.fetch_sub(n, Ordering::Relaxed);
            }
            () = tx.full.notified() => {
                stalled();
                tracing::debug!(conn = id.0, "pushes not read; closing");
                break 'conn;
            }
            () = tokio::time::sleep_until(identify_by), if !is_identified() => {
                stalled();
                tracing::debug!(conn = id.0, "no identify in time; closing");
                break 'conn;
            }
        }
    }
    lock(&inner.hub).remove_conn(id);
}

impl Inner {
    /// Answers one long-link frame: the reply body (if any) and whether to close afterwards.
    fn handle_frame(&self, id: ConnId, head: FrameHead, body: &[u8]) -> (Option<Vec<u8>>, bool) {
        if head.seq == IDENTIFY_SEQ {
            return self.identify(id, head, body);
        }
        if head.cmd_id == HEARTBEAT_CMD || head.seq == HEARTBEAT_SEQ {
            return (Some(Vec::new()), false);
        }
        if head.seq == SIGNAL_KEEP_SEQ {
            return (None, false);
        }
        if head.cmd_id == proto::CMD_ECHO {
            return (Some(body.to_vec()), false);
        }
        let user = lock(&self.hub).conns.get(&id).and_then(|c| c.user.clone());
        let Some(user) = user else {
            let err: Reply<()> = Reply::Error(ServerError::new(
                ErrorCode::Unauthenticated,
                "identify with a token first",
            ));
            return (Some(err.to_body()), false);
        };
        let reply = match head.cmd_id {
            proto::CMD_SEND => {
                let result = parse(body).and_then(|r| self.send(&user, r));
                if result.is_ok() && self.take_lost_reply() {
                    // Fault injection: stored and pushed, but the answer is lost.
                    return (None, false);
                }
                Reply::from(result).to_body()
            }
            proto::CMD_JOIN => Reply::from(parse(body).and_then(|r| self.join(&user, r))).to_body(),
            proto::CMD_CONVERSATIONS => {
                // An empty body (what the command took before it was paged) is the first page.
                let req = if body.is_empty() {
                    Ok(ListRequest::default())
                } else {
                    parse(body)
                };
                Reply::from(req.and_then(|r| self.conversations(&user, r))).to_body()
            }
            proto::CMD_HISTORY => {
                Reply::from(parse(body).and_then(|r| self.history(&user, r))).to_body()
            }
            other => Reply::<()>::Error(ServerError::new(
                ErrorCode::NotFound,
                format!("no command {}", other.0),
            ))
            .to_body(),
        };
        (Some(reply), false)
    }

    /// Whether to drop this send's reply (see [`ServerHandle::lose_next_send_replies`]).
    fn take_lost_reply(&self) -> bool {
        let taken = self
            .counters
            .lose_replies
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok();
        if taken {
            self.counters.replies_lost.fetch_add(1, Ordering::Relaxed);
        }
        taken
    }

    fn identify(&self, id: ConnId, head: FrameHead, body: &[u8]) -> (Option<Vec<u8>>, bool) {
        let user = if head.cmd_id == self.config.identify_cmd_id {
            parse_identify(body).and_then(|t| self.config.tokens.verify(t).ok())
        } else {
            None
        };
        let Some(user) = user else {
            self.counters
                .logins_rejected
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!(conn = id.0, "identify rejected");
            return (Some(vec![phobos_auth_basic::STATUS_REJECTED]), true);
        };
        self.counters.logins.fetch_add(1, Ordering::Relaxed);
        lock(&self.hub).bind(id, user);
        (Some(vec![phobos_auth_basic::STATUS_ACCEPTED]), false)
    }

    /// Stores and fans out a message (or recognises a retry).
    fn send(&self, user: &str, req: SendRequest) -> Result<SendAck, ServerError> {
        proto::check_name("client_msg_id", &req.client_msg_id)?;
        if req.text.len() > proto::MAX_TEXT_LEN {
            return Err(ServerError::new(
                ErrorCode::BadRequest,
                format!("text longer than {} bytes", proto::MAX_TEXT_LEN),
            ));
        }
        let mut hub = lock(&self.hub);
        let key = (user.to_owned(), req.client_msg_id.clone());
        if let Some((conversation, seq)) = hub.sent.get(&key) {
            self.counters.duplicates.fetch_add(1, Ordering::Relaxed);
            return Ok(SendAck {
                conversation: conversation.clone(),
                seq: *seq,
                duplicate: true,
            });
        }
        let conv_id = match &req.to {
            Target::Room(room) => {
                proto::check_name("room", room)?;
                let conv_id = proto::room_conversation(room);
                // Sending to a room joins it.
                hub.add_member(&conv_id, user);
                conv_id
            }
            Target::User(peer) => {
                proto::check_name("user", peer)?;
                let conv_id = proto::direct_conversation(user, peer);
                hub.add_member(&conv_id, user);
                hub.add_member(&conv_id, peer);
                conv_id
            }
        };
        let limit = self.config.history_limit.max(1);
        let epoch = hub.epoch;
        let conv = hub.conversations.entry(conv_id.clone()).or_default();
        conv.last_seq += 1;
        let message = Message {
            conversation: conv_id.clone(),
            seq: conv.last_seq,
            from: user.to_owned(),
            client_msg_id: req.client_msg_id,
            text: req.text,
            epoch,
        };
        conv.messages.push_back(message.clone());
        while conv.messages.len() > limit {
            conv.messages.pop_front();
        }
        let members: Vec<String> = conv.members.iter().cloned().collect();
        hub.remember(
            key,
            (conv_id.clone(), message.seq),
            self.config.dedupe_window,
        );
        self.counters.stored.fetch_add(1, Ordering::Relaxed);

        // Fan out while holding the hub lock, so every connection sees a conversation's
        // messages in sequence order.
        let body = serde_json::to_vec(&message).unwrap_or_default();
        let mut push = Vec::new();
        let head = FrameHead::new(proto::CMD_PUSH_MESSAGE, PUSH_SEQ);
        if self
            .config
            .codec
            .encode(head, &body, &[], &mut push)
            .is_ok()
        {
            for member in &members {
                let Some(conns) = hub.online.get(member) else {
                    continue;
                };
                for conn in conns {
                    if let Some(c) = hub.conns.get(conn) {
                        if c.tx.send(push.clone()) {
                            self.counters.pushes.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        }
        Ok(SendAck {
            conversation: conv_id,
            seq: message.seq,
            duplicate: false,
        })
    }

    fn join(&self, user: &str, req: JoinRequest) -> Result<Conversation, ServerError> {
        proto::check_name("room", &req.room)?;
        let conv_id = proto::room_conversation(&req.room);
        let mut hub = lock(&self.hub);
        hub.add_member(&conv_id, user);
        let mut summary = hub.summary(&conv_id);
        fit_members(&mut summary, self.reply_budget());
        Ok(summary)
    }

    /// One page of `user`'s conversations in id order (see [`crate::proto`]'s "Paging" for why
    /// that order).
    fn conversations(&self, user: &str, req: ListRequest) -> Result<ConversationPage, ServerError> {
        if let Some(after) = &req.after {
            proto::check_conversation_id("after", after)?;
        }
        let limit = req.limit.clamp(1, proto::MAX_LIST_PAGE) as usize;
        // As for history: a page must fit in one long-link frame, and large rooms make large
        // entries (every member is listed). Stop at the budget, keeping at least one entry so
        // paging makes progress. The short link uses the same budget, which keeps its answers
        // far below the client's response limit.
        let budget = self.reply_budget();
        let hub = lock(&self.hub);
        let Some(ids) = hub.user_convs.get(user) else {
            return Ok(ConversationPage {
                conversations: Vec::new(),
                next: None,
                epoch: hub.epoch,
            });
        };
        let start = match &req.after {
            Some(after) => Bound::Excluded(after.as_str()),
            None => Bound::Unbounded,
        };
        let mut rest = ids.range::<str, _>((start, Bound::Unbounded)).peekable();
        let mut conversations: Vec<Conversation> = Vec::new();
        let mut used = 0usize;
        while let Some(id) = rest.peek() {
            if conversations.len() == limit {
                break;
            }
            let mut summary = hub.summary(id);
            // A room too large for a page by itself (as the first entry only: any other
            // starts the next page) has its member list cut, so that the page, and every
            // catch-up after it, still goes through.
            if conversations.is_empty() {
                fit_members(&mut summary, budget);
            }
            let size = serde_json::to_vec(&summary).map_or(0, |v| v.len()) + 1;
            if !conversations.is_empty() && used + size > budget {
                break;
            }
            used += size;
            conversations.push(summary);
            rest.next();
        }
        // Something is left exactly when the loop stopped early; the cursor is the last id
        // returned, so the next page starts right after it.
        let next = match (rest.peek(), conversations.last()) {
            (Some(_), Some(last)) => Some(last.id.clone()),
            _ => None,
        };
        Ok(ConversationPage {
            conversations,
            next,
            epoch: hub.epoch,
        })
    }

    fn history(&self, user: &str, req: HistoryRequest) -> Result<HistoryPage, ServerError> {
        let hub = lock(&self.hub);
        let Some(conv) = hub.conversations.get(&req.conversation) else {
            return Err(ServerError::new(
                ErrorCode::NotFound,
                format!("no conversation {:?}", req.conversation),
            ));
        };
        if !conv.members.contains(user) {
            return Err(ServerError::new(
                ErrorCode::Forbidden,
                format!("{user} is not a member of {}", req.conversation),
            ));
        }
        let limit = req.limit.clamp(1, proto::MAX_HISTORY_PAGE) as usize;
        // A page must fit in one long-link frame: 500 messages of 4 KiB text (more once JSON
        // escapes it) do not fit in the codec's 1 MiB, and a reply that cannot be encoded
        // would leave the caller (the client's catch-up) without an answer. Stop at the
        // frame's budget; `more` tells the caller to ask for the rest. At least one message
        // is always returned, so paging makes progress.
        let budget = self.reply_budget();
        let in_range = |m: &&Message| {
            m.seq > req.after_seq && req.before_seq.is_none_or(|before| m.seq < before)
        };
        let mut page = PageFill::new(budget);
        let more = match req.before_seq {
            None => {
                for m in conv.messages.iter().filter(in_range).take(limit) {
                    if !page.add(m) {
                        break;
                    }
                }
                page.messages
                    .last()
                    .is_some_and(|last| last.seq < conv.last_seq)
            }
            Some(_) => {
                // The newest messages of the range, walked from the end, then put back in
                // sequence order.
                for m in conv.messages.iter().rev().filter(in_range).take(limit) {
                    if !page.add(m) {
                        break;
                    }
                }
                page.messages.reverse();
                let first = page.messages.first().map(|m| m.seq);
                first.is_some_and(|first| {
                    conv.messages
                        .front()
                        .is_some_and(|oldest| oldest.seq < first && first > req.after_seq + 1)
                })
            }
        };
        Ok(HistoryPage {
            messages: page.messages,
            more,
        })
    }

    /// The bytes a page's items may take so that the reply fits in one long-link frame.
    fn reply_budget(&self) -> usize {
        self.config
            .codec
            .max_frame_len()
            .saturating_sub(REPLY_OVERHEAD)
    }

    /// Answers one HTTP request (the short link).
    fn handle_http(&self, path: &str, body: &[u8]) -> (StatusCode, Vec<u8>) {
        self.counters.http.fetch_add(1, Ordering::Relaxed);
        match path {
            proto::PATH_ECHO => (StatusCode::OK, body.to_vec()),
            proto::PATH_CONVERSATIONS => {
                // `request` absent or `null` is the first page.
                let reply = self
                    .authed::<Option<ListRequest>>(body)
                    .and_then(|(user, req)| self.conversations(&user, req.unwrap_or_default()));
                (StatusCode::OK, Reply::from(reply).to_body())
            }
            proto::PATH_HISTORY => {
                let reply = self
                    .authed::<HistoryRequest>(body)
                    .and_then(|(user, req)| self.history(&user, req));
                (StatusCode::OK, Reply::from(reply).to_body())
            }
            _ => (StatusCode::NOT_FOUND, b"no such path\n".to_vec()),
        }
    }

    fn authed<T: DeserializeOwned>(&self, body: &[u8]) -> Result<(String, T), ServerError> {
        let req: Authed<T> = parse(body)?;
        let user =
            self.config.tokens.verify(&req.token).map_err(|e| {
                ServerError::new(ErrorCode::Unauthenticated, format!("bad token: {e}"))
            })?;
        Ok((user.to_owned(), req.request))
    }
}

async fn http_conn(inner: Arc<Inner>, stream: TcpStream) {
    match inner.config.http_tls.clone() {
        None => serve_http(inner, stream).await,
        // The handshake gets the header timeout too: a peer that connects and says nothing
        // held a task and a descriptor for ever (hyper's header timer starts after it).
        Some(tls) => match tokio::time::timeout(
            HTTP_HEADER_TIMEOUT,
            tokio_rustls::TlsAcceptor::from(tls).accept(stream),
        )
        .await
        {
            Ok(Ok(stream)) => serve_http(inner, stream).await,
            Ok(Err(e)) => tracing::debug!(error = %e, "HTTPS handshake failed"),
            Err(_) => tracing::debug!("HTTPS handshake timed out"),
        },
    }
}

async fn serve_http<S>(inner: Arc<Inner>, stream: S)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let inner = inner.clone();
        async move { Ok::<_, Infallible>(http_request(&inner, req).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .header_read_timeout(HTTP_HEADER_TIMEOUT)
        .timer(hyper_util::rt::TokioTimer::new())
        .serve_connection(TokioIo::new(stream), service);
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "HTTP connection ended with an error");
    }
}

async fn http_request(inner: &Inner, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let respond = |status: StatusCode, body: Vec<u8>| {
        let mut resp = Response::new(Full::new(Bytes::from(body)));
        *resp.status_mut() = status;
        resp
    };
    if req.method() != Method::POST {
        return respond(StatusCode::METHOD_NOT_ALLOWED, b"POST only\n".to_vec());
    }
    let path = req.uri().path().to_owned();
    // hyper's header timeout does not cover the body: one that stalls is answered 408 and
    // its connection closed, instead of holding both for ever.
    let body = match tokio::time::timeout(
        HTTP_BODY_TIMEOUT,
        Limited::new(req.into_body(), MAX_HTTP_BODY).collect(),
    )
    .await
    {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(_)) => return respond(StatusCode::PAYLOAD_TOO_LARGE, b"body too large\n".to_vec()),
        Err(_) => {
            let mut resp = respond(StatusCode::REQUEST_TIMEOUT, b"body too slow\n".to_vec());
            resp.headers_mut().insert(
                hyper::header::CONNECTION,
                hyper::header::HeaderValue::from_static("close"),
            );
            return resp;
        }
    };
    let (status, body) = inner.handle_http(&path, &body);
    respond(status, body)
}

/// A connection's id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct ConnId(u64);

/// The server's state: connections, who is online, conversations and their history, the
/// dedupe window.
#[derive(Debug, Default)]
struct Hub {
    conns: HashMap<ConnId, Conn>,
    online: HashMap<String, BTreeSet<ConnId>>,
    conversations: HashMap<String, ConvState>,
    user_convs: HashMap<String, BTreeSet<String>>,
    sent: HashMap<(String, String), (String, u64)>,
    sent_order: VecDeque<(String, String)>,
    /// This server's history epoch ([`Message::epoch`]): picked at [`Server::start`], kept
    /// across [`ServerHandle::restart`], which keeps the history.
    epoch: u64,
}

#[derive(Debug)]
struct Conn {
    user: Option<String>,
    tx: Outbox,
}

#[derive(Debug, Default)]
struct ConvState {
    members: BTreeSet<String>,
    last_seq: u64,
    messages: VecDeque<Message>,
}

impl Hub {
    fn bind(&mut self, id: ConnId, user: &str) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        if let Some(old) = conn.user.replace(user.to_owned()) {
            if let Some(set) = self.online.get_mut(&old) {
                set.remove(&id);
            }
        }
        self.online.entry(user.to_owned()).or_default().insert(id);
    }

    fn remove_conn(&mut self, id: ConnId) {
        let Some(conn) = self.conns.remove(&id) else {
            return;
        };
        if let Some(user) = conn.user {
            if let Some(set) = self.online.get_mut(&user) {
                set.remove(&id);
                if set.is_empty() {
                    self.online.remove(&user);
                }
            }
        }
    }

    fn add_member(&mut self, conv_id: &str, user: &str) {
        let conv = self.conversations.entry(conv_id.to_owned()).or_default();
        if conv.members.insert(user.to_owned()) {
            self.user_convs
                .entry(user.to_owned())
                .or_default()
                .insert(conv_id.to_owned());
        }
    }

    fn summary(&self, conv_id: &str) -> Conversation {
        let conv = self.conversations.get(conv_id);
        Conversation {
            id: conv_id.to_owned(),
            members: conv
                .map(|c| c.members.iter().cloned().collect())
                .unwrap_or_default(),
            last_seq: conv.map_or(0, |c| c.last_seq),
            members_cut: false,
            epoch: self.epoch,
        }
    }

    fn remember(&mut self, key: (String, String), value: (String, u64), window: usize) {
        self.sent_order.push_back(key.clone());
        self.sent.insert(key, value);
        while self.sent_order.len() > window.max(1) {
            if let Some(old) = self.sent_order.pop_front() {
                self.sent.remove(&old);
            }
        }
    }
}

/// A history epoch no other server start is likely to pick: the clock's nanoseconds, the
/// process id and a per-process count, never 0.
fn new_epoch() -> u64 {
    static STARTS: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let epoch = nanos
        ^ (u64::from(std::process::id()) << 40)
        ^ STARTS
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    epoch.max(1)
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ServerError> {
    serde_json::from_slice(body)
        .map_err(|e| ServerError::new(ErrorCode::BadRequest, format!("bad request body: {e}")))
}

/// The token in `phobos-auth-basic`'s identify body (version 1, u16 length, token).
fn parse_identify(body: &[u8]) -> Option<&str> {
    let (&version, rest) = body.split_first()?;
    if version != phobos_auth_basic::IDENTIFY_BODY_VERSION || rest.len() < 2 {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
    let token = rest.get(2..2 + len)?;
    std::str::from_utf8(token).ok()
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves the maps consistent at each step (single inserts and
    // removes), so a lock poisoned by a panicking holder is still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

const READ_CHUNK: usize = 16 * 1024;
/// The most bytes queued for a connection (replies and pushes it has not read yet) before
/// it is closed: a few of the largest replies (a history page fills a frame).
pub const MAX_QUEUED: usize = 4 << 20;
/// How long a write to a connection may stall before the connection is closed.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long after its accept a long-link connection has to identify (TLS handshake
/// included).
pub const IDENTIFY_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_HTTP_BODY: usize = 64 * 1024;
/// Room left in a frame for the codec's header and a page's envelope
/// (`{"ok":{"messages":[…],"more":false}}`, or `{"ok":{"conversations":[…],"next":"ID"}}`, an
/// id being at most `dm:` and two 64-byte names).
const REPLY_OVERHEAD: usize = 1024;
const HTTP_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an HTTP request's body may take to arrive once its head has.
const HTTP_BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// Cuts `summary`'s member list so that it serializes in at most `budget` bytes (with room
/// for the reply around it), marking it cut; a summary that fits is left as it is.
///
/// Design: a room is listed with every member, and one with thousands of long names did not
/// fit in a frame: the list page holding it, and with it every conversation's catch-up after
/// a reconnect, failed, as did joining it.
fn fit_members(summary: &mut Conversation, budget: usize) {
    let size = |c: &Conversation| serde_json::to_vec(c).map_or(usize::MAX, |v| v.len());
    if size(summary) <= budget {
        return;
    }
    let members = std::mem::take(&mut summary.members);
    summary.members_cut = true;
    // Each member costs its JSON string and a comma; escapes make some longer, so the cut is
    // checked again below.
    let mut left = budget.saturating_sub(size(summary));
    let keep = members
        .iter()
        .take_while(|m| {
            let cost = serde_json::to_vec(m).map_or(usize::MAX, |v| v.len()) + 1;
            let fits = cost <= left;
            left = left.saturating_sub(cost);
            fits
        })
        .count();
    summary.members = members;
    summary.members.truncate(keep);
    while size(summary) > budget && summary.members.pop().is_some() {}
}

/// A history page being filled within a frame's budget.
struct PageFill {
    messages: Vec<Message>,
    used: usize,
    budget: usize,
}

impl PageFill {
    fn new(budget: usize) -> Self {
        Self {
            messages: Vec::new(),
            used: 0,
            budget,
        }
    }

    /// Adds `m` if it fits (the first message always does, so paging makes progress);
    /// `false` once the page is full.
    fn add(&mut self, m: &Message) -> bool {
        let size = serde_json::to_vec(m).map_or(0, |v| v.len()) + 1;
        if !self.messages.is_empty() && self.used + size > self.budget {
            return false;
        }
        self.used += size;
        self.messages.push(m.clone());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identify_bodies_are_parsed_strictly() {
        assert_eq!(parse_identify(b"\x01\x00\x03abc"), Some("abc"));
        assert_eq!(parse_identify(b"\x01\x00\x04abc"), None);
        assert_eq!(parse_identify(b"\x02\x00\x03abc"), None);
        assert_eq!(parse_identify(b"\x01\x00\x00"), Some(""));
        assert_eq!(parse_identify(b"\x01"), None);
        assert_eq!(parse_identify(b""), None);
        assert_eq!(parse_identify(b"\x01\x00\x02\xff\xfe"), None);
    }

    #[test]
    fn the_dedupe_window_forgets_the_oldest_sends() {
        let mut hub = Hub::default();
        for i in 0..5u64 {
            hub.remember(("u".into(), i.to_string()), ("c".into(), i), 3);
        }
        assert_eq!(hub.sent.len(), 3);
        assert!(!hub.sent.contains_key(&("u".into(), "1".into())));
        assert!(hub.sent.contains_key(&("u".into(), "4".into())));
    }
}
