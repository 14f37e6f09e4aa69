//! A scriptable mock long-link server speaking any [`PacketCodec`].
//!
//! The server binds `127.0.0.1:0`, accepts connections and answers each one according to a
//! [`ConnScript`]: the first connection gets the first script given to the builder, the
//! second the second, and every later one the default script. A script says how to treat the
//! socket ([`AcceptMode`]), what to do right after accepting, how to answer each task request
//! in order ([`Reply`], a list of [`Step`]s), and whether to answer heartbeats and identify
//! frames. Everything the server receives is recorded for assertions.
//!
//! All waiting uses `tokio::time`, so the server works under
//! `#[tokio::test(start_paused = true)]`.
//!
//! ```
//! # use std::sync::Arc;
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! use phobos_test_support::mock_longlink::{ConnScript, MockLongLinkServer, Reply};
//! use phobos_test_support::frames;
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! let codec = Arc::new(phobos_codec_mars::MarsCodec::default());
//! let server = MockLongLinkServer::builder(codec)
//!     .script(ConnScript::echo().reply(Reply::body(b"pong".to_vec())))
//!     .start()
//!     .await?;
//! let mut sock = tokio::net::TcpStream::connect(server.addr()).await?;
//! sock.write_all(&frames::frame(0, 7, 1, b"ping")).await?;
//! let mut resp = [0u8; 24];
//! sock.read_exact(&mut resp).await?;
//! assert_eq!(&resp[20..], b"pong");
//! server.wait_for_task_frames(1).await;
//! assert_eq!(server.task_frames()[0].body, b"ping");
//! # Ok(()) }
//! ```

use std::collections::VecDeque;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use phobos_plugin_api::codec::{
    Decoded, FrameHead, PacketCodec, HEARTBEAT_CMD, HEARTBEAT_SEQ, IDENTIFY_SEQ, PUSH_SEQ,
    SIGNAL_KEEP_SEQ,
};
use phobos_plugin_api::{CmdId, DecodeError, IpPort, Seq};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;

use crate::frames;

/// A running mock long-link server. Dropping it stops the server and closes every connection.
#[derive(Debug)]
pub struct MockLongLinkServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

/// Configures a [`MockLongLinkServer`] before it starts.
#[derive(Debug)]
pub struct MockServerBuilder {
    codec: Arc<dyn PacketCodec>,
    version: u32,
    scripts: VecDeque<ConnScript>,
    default_script: ConnScript,
    record: bool,
}

/// How one connection is treated, from accept to close.
#[derive(Clone, Debug)]
pub struct ConnScript {
    accept: AcceptMode,
    on_connect: Vec<Step>,
    replies: VecDeque<Reply>,
    default_reply: Reply,
    heartbeat: HeartbeatMode,
    identify: IdentifyMode,
}

/// What the server does with an accepted socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcceptMode {
    /// Read frames and answer them.
    Serve,
    /// Close the socket at once.
    Refuse,
    /// Keep the socket open but never read from it (the client's writes eventually block).
    NeverRead,
}

/// How heartbeat frames are treated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeartbeatMode {
    /// Echo a heartbeat frame back.
    Answer,
    /// Record it and never answer.
    Drop,
}

/// How identify frames are treated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdentifyMode {
    /// Answer with this body, same command id, the identify sequence number.
    Answer(Vec<u8>),
    /// Record it and never answer.
    Drop,
}

/// The answer to one task request: steps run in order. An empty reply is a stall (the
/// request is never answered, the connection keeps working).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reply {
    steps: Vec<Step>,
}

/// One thing the server does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Answer the request (same command id and sequence): with its own body when `None`.
    Respond(Option<Vec<u8>>),
    /// Wait this long (tokio time) before the next step; other requests are not held up.
    Wait(Duration),
    /// Send a push frame (sequence 0).
    Push {
        /// Command id.
        cmd: CmdId,
        /// Body.
        body: Vec<u8>,
    },
    /// Write these bytes as they are.
    Raw(Vec<u8>),
    /// Write a malformed frame.
    Malformed(Malformation),
    /// Write the first half of the response frame, then close the connection.
    CloseMidFrame,
    /// Close the connection.
    Close,
}

/// The kinds of malformed frames the server can send (see [`frames`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Malformation {
    /// Header length 16 instead of 20.
    BadHeadLength,
    /// Header length 0 and body length 0.
    ZeroHeadLength,
    /// Another client version.
    WrongVersion,
    /// A length over the 1 MiB limit.
    Oversize,
}

/// What kind of frame the server received, judged by its head.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClientFrameKind {
    /// A task request.
    Task,
    /// A heartbeat.
    Heartbeat,
    /// An identify frame.
    Identify,
    /// A signalling-keeper frame (never answered).
    SignalKeep,
}

/// One frame the server received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceivedFrame {
    /// The connection number, from 0 in accept order.
    pub conn: usize,
    /// What it was.
    pub kind: ClientFrameKind,
    /// Its head.
    pub head: FrameHead,
    /// Its body.
    pub body: Vec<u8>,
    /// When it was decoded (tokio time).
    pub at: tokio::time::Instant,
}

impl MockLongLinkServer {
    /// A builder for a server framing with `codec`.
    pub fn builder(codec: Arc<dyn PacketCodec>) -> MockServerBuilder {
        MockServerBuilder {
            codec,
            version: 0,
            scripts: VecDeque::new(),
            default_script: ConnScript::echo(),
            record: true,
        }
    }

    /// An echo server: every request is answered with its own body.
    ///
    /// # Errors
    ///
    /// When binding the listener fails.
    pub async fn start_echo(codec: Arc<dyn PacketCodec>) -> io::Result<Self> {
        Self::builder(codec).start().await
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bound address as an [`IpPort`].
    pub fn ip_port(&self) -> IpPort {
        IpPort::from(self.addr)
    }

    /// How many connections were accepted so far.
    pub fn connection_count(&self) -> usize {
        self.shared.lock().conns.len()
    }

    /// How many connections are still open.
    pub fn open_connections(&self) -> usize {
        self.shared
            .lock()
            .conns
            .iter()
            .filter(|c| c.is_some())
            .count()
    }

    /// Every frame received so far, in order.
    pub fn frames(&self) -> Vec<ReceivedFrame> {
        self.shared.lock().frames.clone()
    }

    /// The task frames received so far, in order.
    pub fn task_frames(&self) -> Vec<ReceivedFrame> {
        self.frames_of(ClientFrameKind::Task)
    }

    /// The frames of one kind received so far, in order.
    pub fn frames_of(&self, kind: ClientFrameKind) -> Vec<ReceivedFrame> {
        let st = self.shared.lock();
        st.frames
            .iter()
            .filter(|f| f.kind == kind)
            .cloned()
            .collect()
    }

    /// How many frames were received (also counted when recording is off).
    pub fn frame_count(&self) -> u64 {
        self.shared.lock().frame_count
    }

    /// Decode errors met on client bytes, with the connection number.
    pub fn decode_errors(&self) -> Vec<(usize, DecodeError)> {
        self.shared.lock().decode_errors.clone()
    }

    /// Waits until `pred` holds for the server's state.
    pub async fn wait_until(&self, mut pred: impl FnMut(&MockLongLinkServer) -> bool) {
        let mut rx = self.shared.changed.subscribe();
        loop {
            if pred(self) {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// Waits until at least `n` connections were accepted.
    pub async fn wait_for_connections(&self, n: usize) {
        self.wait_until(|s| s.connection_count() >= n).await;
    }

    /// Waits until at least `n` task frames were received.
    pub async fn wait_for_task_frames(&self, n: usize) {
        self.wait_until(|s| s.frames_of(ClientFrameKind::Task).len() >= n)
            .await;
    }

    /// Waits until at least `n` frames of `kind` were received.
    pub async fn wait_for_frames_of(&self, kind: ClientFrameKind, n: usize) {
        self.wait_until(|s| s.frames_of(kind).len() >= n).await;
    }

    /// Sends a push frame on every open connection that serves; returns how many got it (a
    /// connection that never reads writes nothing, and is not counted).
    pub fn push(&self, cmd: CmdId, body: &[u8]) -> usize {
        let st = self.shared.lock();
        let mut n = 0;
        for conn in st.conns.iter().flatten().filter(|c| c.pushes) {
            if conn
                .tx
                .send(Cmd::Steps(vec![Step::Push {
                    cmd,
                    body: body.to_vec(),
                }]))
                .is_ok()
            {
                n += 1;
            }
        }
        n
    }

    /// Runs steps on connection `conn` (as if they were a reply to no request: `Respond`
    /// steps are ignored). Returns false when that connection is not open.
    pub fn run_on(&self, conn: usize, steps: Vec<Step>) -> bool {
        let st = self.shared.lock();
        match st.conns.get(conn) {
            Some(Some(conn)) => conn.tx.send(Cmd::Steps(steps)).is_ok(),
            _ => false,
        }
    }

    /// Closes connection `conn`. Returns false when it is not open.
    pub fn close(&self, conn: usize) -> bool {
        self.run_on(conn, vec![Step::Close])
    }

    /// Replaces the script used for connections beyond the ones scripted so far.
    pub fn set_default_script(&self, script: ConnScript) {
        self.shared.lock().default_script = script;
    }
}

impl Drop for MockLongLinkServer {
    fn drop(&mut self) {
        let st = self.shared.lock();
        for t in &st.tasks {
            t.abort();
        }
    }
}

impl MockServerBuilder {
    /// The client version written into malformed raw frames (default 0). Valid frames are
    /// produced by the codec.
    pub fn version(mut self, version: u32) -> Self {
        self.version = version;
        self
    }

    /// The script for the next connection (the first call scripts connection 0, and so on).
    pub fn script(mut self, script: ConnScript) -> Self {
        self.scripts.push_back(script);
        self
    }

    /// The script for every connection not given one with [`script`](Self::script).
    pub fn default_script(mut self, script: ConnScript) -> Self {
        self.default_script = script;
        self
    }

    /// Whether frames are kept for [`MockLongLinkServer::frames`] (default true). Benchmarks
    /// turn it off; counts are kept either way.
    pub fn record(mut self, record: bool) -> Self {
        self.record = record;
        self
    }

    /// Binds `127.0.0.1:0` and starts accepting.
    ///
    /// # Errors
    ///
    /// When binding fails.
    pub async fn start(self) -> io::Result<MockLongLinkServer> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let (changed, _) = watch::channel(0u64);
        let shared = Arc::new(Shared {
            codec: self.codec,
            version: self.version,
            record: self.record,
            changed,
            state: Mutex::new(State {
                scripts: self.scripts,
                default_script: self.default_script,
                conns: Vec::new(),
                frames: Vec::new(),
                frame_count: 0,
                decode_errors: Vec::new(),
                tasks: Vec::new(),
            }),
        });
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        shared.lock().tasks.push(accept.abort_handle());
        Ok(MockLongLinkServer { addr, shared })
    }
}

impl ConnScript {
    /// Serve, answer every request with its own body, answer heartbeats and identify frames
    /// (identify with an empty body).
    pub fn echo() -> Self {
        ConnScript {
            accept: AcceptMode::Serve,
            on_connect: Vec::new(),
            replies: VecDeque::new(),
            default_reply: Reply::echo(),
            heartbeat: HeartbeatMode::Answer,
            identify: IdentifyMode::Answer(Vec::new()),
        }
    }

    /// Close every connection at once.
    pub fn refuse() -> Self {
        ConnScript {
            accept: AcceptMode::Refuse,
            ..Self::echo()
        }
    }

    /// Accept and never read.
    pub fn never_read() -> Self {
        ConnScript {
            accept: AcceptMode::NeverRead,
            ..Self::echo()
        }
    }

    /// Adds the reply to the next unscripted request on this connection.
    pub fn reply(mut self, reply: Reply) -> Self {
        self.replies.push_back(reply);
        self
    }

    /// Adds `reply` to the next `n` unscripted requests on this connection.
    pub fn replies(mut self, n: usize, reply: Reply) -> Self {
        self.replies.extend(std::iter::repeat_n(reply, n));
        self
    }

    /// The reply for requests after the scripted ones (default: echo).
    pub fn default_reply(mut self, reply: Reply) -> Self {
        self.default_reply = reply;
        self
    }

    /// Steps run right after the connection is accepted (pushes, say).
    pub fn on_connect(mut self, steps: Vec<Step>) -> Self {
        self.on_connect = steps;
        self
    }

    /// How heartbeats are treated.
    pub fn heartbeat(mut self, mode: HeartbeatMode) -> Self {
        self.heartbeat = mode;
        self
    }

    /// Never answer heartbeats.
    pub fn drop_heartbeats(self) -> Self {
        self.heartbeat(HeartbeatMode::Drop)
    }

    /// How identify frames are treated.
    pub fn identify(mut self, mode: IdentifyMode) -> Self {
        self.identify = mode;
        self
    }
}

impl Reply {
    /// Answer with the request's own body.
    pub fn echo() -> Self {
        Reply::steps(vec![Step::Respond(None)])
    }

    /// Answer with `body`.
    pub fn body(body: Vec<u8>) -> Self {
        Reply::steps(vec![Step::Respond(Some(body))])
    }

    /// Never answer.
    pub fn stall() -> Self {
        Reply::default()
    }

    /// Wait `delay`, then do what `then` does.
    pub fn delayed(delay: Duration, then: Reply) -> Self {
        let mut steps = vec![Step::Wait(delay)];
        steps.extend(then.steps);
        Reply { steps }
    }

    /// Write the first half of the response, then close.
    pub fn close_mid_frame() -> Self {
        Reply::steps(vec![Step::CloseMidFrame])
    }

    /// Close the connection without answering.
    pub fn close() -> Self {
        Reply::steps(vec![Step::Close])
    }

    /// Answer with a malformed frame.
    pub fn malformed(kind: Malformation) -> Self {
        Reply::steps(vec![Step::Malformed(kind)])
    }

    /// Any sequence of steps.
    pub fn steps(steps: Vec<Step>) -> Self {
        Reply { steps }
    }

    /// The steps.
    pub fn as_steps(&self) -> &[Step] {
        &self.steps
    }
}

impl Malformation {
    /// Every kind.
    pub const ALL: [Malformation; 4] = [
        Malformation::BadHeadLength,
        Malformation::ZeroHeadLength,
        Malformation::WrongVersion,
        Malformation::Oversize,
    ];

    /// The raw bytes for this malformation.
    pub fn bytes(self, version: u32, seq: u32) -> Vec<u8> {
        match self {
            Malformation::BadHeadLength => frames::bad_head_len(version, seq),
            Malformation::ZeroHeadLength => frames::zero_head_len(version, seq),
            Malformation::WrongVersion => frames::wrong_version(version, seq),
            Malformation::Oversize => frames::oversize(version, seq),
        }
    }
}

/// An address on loopback where nothing listens (connecting is refused).
///
/// Design: the port stays bound, never listening, until the process ends: a port freed
/// after a probe bind could be taken by a test running in parallel, whose server would
/// then answer the connects meant to be refused. A bound socket that does not listen
/// answers a SYN with a reset, as a closed port does.
///
/// # Errors
///
/// When binding the socket fails.
pub async fn refused_addr() -> io::Result<SocketAddr> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind((Ipv4Addr::LOCALHOST, 0).into())?;
    let addr = socket.local_addr()?;
    // Kept open (and the port taken) for the rest of the process.
    std::mem::forget(socket);
    Ok(addr)
}

#[derive(Debug)]
struct Shared {
    codec: Arc<dyn PacketCodec>,
    version: u32,
    record: bool,
    changed: watch::Sender<u64>,
    state: Mutex<State>,
}

/// An open connection's command sender, and whether it writes pushes (a connection that
/// never reads, [`AcceptMode::NeverRead`], does not).
#[derive(Debug)]
struct OpenConn {
    tx: mpsc::UnboundedSender<Cmd>,
    pushes: bool,
}

#[derive(Debug)]
struct State {
    scripts: VecDeque<ConnScript>,
    default_script: ConnScript,
    /// Per accepted connection: its command sender while open.
    conns: Vec<Option<OpenConn>>,
    frames: Vec<ReceivedFrame>,
    frame_count: u64,
    decode_errors: Vec<(usize, DecodeError)>,
    tasks: Vec<AbortHandle>,
}

#[derive(Debug)]
enum Cmd {
    Steps(Vec<Step>),
}

/// Outgoing work for a connection's task, from delayed replies.
#[derive(Debug)]
enum Out {
    Steps {
        head: Option<FrameHead>,
        body: Vec<u8>,
        steps: Vec<Step>,
    },
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock is a test failure anyway; keep going with the data.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn bump(&self) {
        self.changed.send_modify(|v| *v += 1);
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            // Out of descriptors or the like: retry after a pause instead of spinning.
            Err(_) => {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (tx, rx) = mpsc::unbounded_channel();
        let (id, script) = {
            let mut st = shared.lock();
            let script = st
                .scripts
                .pop_front()
                .unwrap_or_else(|| st.default_script.clone());
            st.conns.push(Some(OpenConn {
                tx,
                pushes: script.accept == AcceptMode::Serve,
            }));
            (st.conns.len() - 1, script)
        };
        let conn = tokio::spawn(serve(shared.clone(), id, stream, script, rx));
        shared.lock().tasks.push(conn.abort_handle());
        shared.bump();
    }
}

async fn serve(
    shared: Arc<Shared>,
    id: usize,
    stream: TcpStream,
    script: ConnScript,
    cmds: mpsc::UnboundedReceiver<Cmd>,
) {
    let mut conn = Conn {
        shared: shared.clone(),
        id,
        stream,
        script,
        cmds,
        buf: Vec::with_capacity(64 * 1024),
    };
    conn.run().await;
    shared.lock().conns[id] = None;
    shared.bump();
}

struct Conn {
    shared: Arc<Shared>,
    id: usize,
    stream: TcpStream,
    script: ConnScript,
    cmds: mpsc::UnboundedReceiver<Cmd>,
    buf: Vec<u8>,
}

/// Whether the connection goes on after some steps.
#[derive(PartialEq, Eq)]
enum Flow {
    Continue,
    Closed,
}

impl Conn {
    async fn run(&mut self) {
        match self.script.accept {
            AcceptMode::Refuse => return,
            AcceptMode::NeverRead => {
                while let Some(Cmd::Steps(steps)) = self.cmds.recv().await {
                    if steps.contains(&Step::Close) {
                        return;
                    }
                }
                return;
            }
            AcceptMode::Serve => {}
        }
        let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Out>();
        let on_connect = std::mem::take(&mut self.script.on_connect);
        if self.run_steps(None, &[], &on_connect).await == Flow::Closed {
            return;
        }
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            tokio::select! {
                read = self.stream.read(&mut chunk) => {
                    match read {
                        Ok(0) | Err(_) => return,
                        Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                    }
                    if self.process(&out_tx).await == Flow::Closed {
                        return;
                    }
                }
                Some(Cmd::Steps(steps)) = self.cmds.recv() => {
                    if self.run_steps(None, &[], &steps).await == Flow::Closed {
                        return;
                    }
                }
                Some(Out::Steps { head, body, steps }) = out_rx.recv() => {
                    // The rest of a reply after its wait: a later wait in it is deferred
                    // again, so it holds up no other request either.
                    let flow = match head {
                        Some(head) => self.reply_steps(head, body, &steps, &out_tx).await,
                        None => self.run_steps(None, &body, &steps).await,
                    };
                    if flow == Flow::Closed {
                        return;
                    }
                }
            }
        }
    }

    /// Decodes and answers every whole frame in the buffer.
    async fn process(&mut self, out_tx: &mpsc::UnboundedSender<Out>) -> Flow {
        loop {
            let decoded = self.shared.codec.decode(&self.buf);
            let frame = match decoded {
                Ok(Decoded::Frame(f)) => f,
                Ok(Decoded::Incomplete { .. }) => return Flow::Continue,
                Err(e) => {
                    self.shared.lock().decode_errors.push((self.id, e));
                    self.shared.bump();
                    return Flow::Closed;
                }
            };
            let head = frame.head;
            let body = self.buf[frame.body.clone()].to_vec();
            self.buf.drain(..frame.len);
            let kind = classify(head);
            {
                let mut st = self.shared.lock();
                st.frame_count += 1;
                if self.shared.record {
                    st.frames.push(ReceivedFrame {
                        conn: self.id,
                        kind,
                        head,
                        body: body.clone(),
                        at: tokio::time::Instant::now(),
                    });
                }
            }
            self.shared.bump();
            let flow = match kind {
                ClientFrameKind::Heartbeat => match self.script.heartbeat {
                    HeartbeatMode::Answer => {
                        let mut out = Vec::new();
                        // The codec's own heartbeat frame is the reply (Mars echoes the noop).
                        if self.shared.codec.encode_heartbeat(&mut out).is_ok() {
                            self.write(&out).await
                        } else {
                            Flow::Continue
                        }
                    }
                    HeartbeatMode::Drop => Flow::Continue,
                },
                ClientFrameKind::Identify => match &self.script.identify {
                    IdentifyMode::Answer(reply) => {
                        let reply = reply.clone();
                        self.respond(head, &reply).await
                    }
                    IdentifyMode::Drop => Flow::Continue,
                },
                ClientFrameKind::SignalKeep => Flow::Continue,
                ClientFrameKind::Task => {
                    let reply = self
                        .script
                        .replies
                        .pop_front()
                        .unwrap_or_else(|| self.script.default_reply.clone());
                    self.start_reply(head, body, reply, out_tx).await
                }
            };
            if flow == Flow::Closed {
                return Flow::Closed;
            }
        }
    }

    /// Runs a reply now, or later in its own task when it waits, so a delayed reply does not
    /// hold up the requests behind it.
    async fn start_reply(
        &mut self,
        head: FrameHead,
        body: Vec<u8>,
        reply: Reply,
        out_tx: &mpsc::UnboundedSender<Out>,
    ) -> Flow {
        self.reply_steps(head, body, &reply.steps, out_tx).await
    }

    /// Runs a reply's `steps` up to its first wait, and the rest after it in a task of its
    /// own (which hands them back through `out_tx`, where a later wait is deferred again).
    async fn reply_steps(
        &mut self,
        head: FrameHead,
        body: Vec<u8>,
        steps: &[Step],
        out_tx: &mpsc::UnboundedSender<Out>,
    ) -> Flow {
        let Some(pos) = steps.iter().position(|s| matches!(s, Step::Wait(_))) else {
            return self.run_steps(Some(head), &body, steps).await;
        };
        if self.run_steps(Some(head), &body, &steps[..pos]).await == Flow::Closed {
            return Flow::Closed;
        }
        let Step::Wait(delay) = steps[pos] else {
            unreachable!("position() found a Wait step here");
        };
        let rest = steps[pos + 1..].to_vec();
        let tx = out_tx.clone();
        let t = tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = tx.send(Out::Steps {
                head: Some(head),
                body,
                steps: rest,
            });
        });
        self.shared.lock().tasks.push(t.abort_handle());
        Flow::Continue
    }

    async fn run_steps(&mut self, head: Option<FrameHead>, body: &[u8], steps: &[Step]) -> Flow {
        for step in steps {
            let flow = match step {
                Step::Respond(reply_body) => match head {
                    Some(h) => {
                        let b = reply_body.as_deref().unwrap_or(body).to_vec();
                        self.respond(h, &b).await
                    }
                    None => Flow::Continue,
                },
                Step::Wait(d) => {
                    // Inline waits (on_connect, run_on) simply pause this connection.
                    tokio::time::sleep(*d).await;
                    Flow::Continue
                }
                Step::Push { cmd, body } => {
                    let mut out = Vec::new();
                    if self
                        .shared
                        .codec
                        .encode(FrameHead::new(*cmd, PUSH_SEQ), body, &[], &mut out)
                        .is_ok()
                    {
                        self.write(&out).await
                    } else {
                        Flow::Continue
                    }
                }
                Step::Raw(bytes) => self.write(bytes).await,
                Step::Malformed(kind) => {
                    let seq = head.map_or(1, |h| h.seq.0);
                    let bytes = kind.bytes(self.shared.version, seq);
                    self.write(&bytes).await
                }
                Step::CloseMidFrame => {
                    let h = head.unwrap_or(FrameHead::new(CmdId(1), Seq(1)));
                    let mut out = Vec::new();
                    let b = if body.is_empty() {
                        &b"mid-frame"[..]
                    } else {
                        body
                    };
                    let _ = self.shared.codec.encode(h, b, &[], &mut out);
                    let half = out.len() / 2;
                    let _ = self.write(&out[..half.max(1)]).await;
                    Flow::Closed
                }
                Step::Close => Flow::Closed,
            };
            if flow == Flow::Closed {
                let _ = self.stream.shutdown().await;
                return Flow::Closed;
            }
        }
        Flow::Continue
    }

    async fn respond(&mut self, head: FrameHead, body: &[u8]) -> Flow {
        let mut out = Vec::with_capacity(body.len() + 32);
        if self.shared.codec.encode(head, body, &[], &mut out).is_err() {
            return Flow::Continue;
        }
        self.write(&out).await
    }

    async fn write(&mut self, bytes: &[u8]) -> Flow {
        match self.stream.write_all(bytes).await {
            Ok(()) => Flow::Continue,
            Err(_) => Flow::Closed,
        }
    }
}

fn classify(head: FrameHead) -> ClientFrameKind {
    if head.seq == HEARTBEAT_SEQ || (head.cmd_id == HEARTBEAT_CMD && head.seq != IDENTIFY_SEQ) {
        ClientFrameKind::Heartbeat
    } else if head.seq == IDENTIFY_SEQ {
        ClientFrameKind::Identify
    } else if head.seq == SIGNAL_KEEP_SEQ {
        ClientFrameKind::SignalKeep
    } else {
        ClientFrameKind::Task
    }
}
