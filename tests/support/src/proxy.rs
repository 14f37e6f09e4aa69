//! A fault-injecting TCP proxy on loopback.
//!
//! [`FaultProxy`] listens on `127.0.0.1:0` and forwards every accepted connection to an
//! upstream address, damaging the traffic as its [`DirectionFaults`] say, separately for each
//! direction: latency and jitter, a bandwidth cap, slicing into tiny writes, byte corruption,
//! a stall, a close or a reset after a number of bytes. A [`SegmentDelay`] holds a random
//! segment back (and everything behind it, as a TCP retransmission would).
//! [`FaultProxy::set_half_open`] stops all forwarding while keeping the sockets open (a dead
//! path the endpoints cannot see). The proxy counts the bytes it read and delivered per
//! direction.
//!
//! It listens on `127.0.0.1:0` unless [`ProxyConfig::listen`] says otherwise (the
//! `phobos-lab` crate runs it on an address inside a network namespace it made).
//!
//! Every random choice comes from a ChaCha RNG seeded from [`ProxyConfig::seed`], the
//! connection number and the direction, so a run replays exactly. All delays use
//! `tokio::time`, so the proxy works under paused time.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! use std::time::Duration;
//! use phobos_test_support::proxy::{DirectionFaults, FaultProxy, ProxyConfig};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let config = ProxyConfig::new(upstream.local_addr()?, 7)
//!     .client_to_server(DirectionFaults { slice: Some(1), ..Default::default() });
//! let proxy = FaultProxy::start(config).await?;
//! let mut client = tokio::net::TcpStream::connect(proxy.addr()).await?;
//! let (mut server, _) = upstream.accept().await?;
//! client.write_all(b"hello").await?;
//! let mut got = [0u8; 5];
//! server.read_exact(&mut got).await?;
//! assert_eq!(&got, b"hello");
//! # Ok(()) }
//! ```

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use phobos_plugin_api::IpPort;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;
use tokio::time::Instant;

/// A running proxy. Dropping it stops it and closes every proxied connection.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<ProxyShared>,
}

/// What the proxy forwards to and how it damages traffic.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// Where accepted connections are forwarded.
    pub upstream: SocketAddr,
    /// The seed of every random choice.
    pub seed: u64,
    /// Faults on bytes from the client to the upstream server.
    pub client_to_server: DirectionFaults,
    /// Faults on bytes from the upstream server to the client.
    pub server_to_client: DirectionFaults,
    /// Random segment delay on bytes from the client to the upstream server.
    pub client_to_server_delay: SegmentDelay,
    /// Random segment delay on bytes from the upstream server to the client.
    pub server_to_client_delay: SegmentDelay,
    /// Where the proxy listens (default `127.0.0.1:0`).
    pub listen: SocketAddr,
}

/// Holds back a random segment (one read from the source socket) for an extra `delay`; the
/// segments behind it wait too, so order is kept, as after a TCP retransmission. The default
/// never delays.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SegmentDelay {
    /// The probability that a segment is held back.
    pub probability: f64,
    /// How long a held-back segment waits on top of latency and jitter.
    pub delay: Duration,
}

/// Faults for one direction of a connection. The default forwards faithfully.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DirectionFaults {
    /// Added to every chunk's delivery time.
    pub latency: Duration,
    /// A uniformly random extra delay in `[0, jitter]` per chunk (order is kept).
    pub jitter: Duration,
    /// A cap in bytes per second.
    pub bandwidth: Option<u64>,
    /// Writes at most this many bytes at a time.
    pub slice: Option<usize>,
    /// Pause between slices (zero: just yield).
    pub slice_gap: Duration,
    /// The probability that a forwarded byte gets one bit flipped.
    pub corrupt_probability: f64,
    /// Forward this many bytes, then swallow the rest (sockets stay open).
    pub stall_after: Option<u64>,
    /// Forward this many bytes, then close both sides (FIN).
    pub close_after: Option<u64>,
    /// Forward this many bytes, then reset both sides (RST).
    pub reset_after: Option<u64>,
}

/// A direction of a proxied connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Client to upstream server.
    ClientToServer,
    /// Upstream server to client.
    ServerToClient,
}

impl ProxyConfig {
    /// Faithful forwarding to `upstream`, random choices seeded by `seed`.
    pub fn new(upstream: SocketAddr, seed: u64) -> Self {
        ProxyConfig {
            upstream,
            seed,
            client_to_server: DirectionFaults::default(),
            server_to_client: DirectionFaults::default(),
            client_to_server_delay: SegmentDelay::default(),
            server_to_client_delay: SegmentDelay::default(),
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        }
    }

    /// Sets the random segment delay of one direction.
    pub fn segment_delay(mut self, direction: Direction, delay: SegmentDelay) -> Self {
        match direction {
            Direction::ClientToServer => self.client_to_server_delay = delay,
            Direction::ServerToClient => self.server_to_client_delay = delay,
        }
        self
    }

    /// Listens on `addr` instead of `127.0.0.1:0`.
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// Sets the client-to-server faults.
    pub fn client_to_server(mut self, faults: DirectionFaults) -> Self {
        self.client_to_server = faults;
        self
    }

    /// Sets the server-to-client faults.
    pub fn server_to_client(mut self, faults: DirectionFaults) -> Self {
        self.server_to_client = faults;
        self
    }
}

impl FaultProxy {
    /// Binds [`ProxyConfig::listen`] (`127.0.0.1:0` by default) and starts proxying.
    ///
    /// # Errors
    ///
    /// When binding fails.
    pub async fn start(config: ProxyConfig) -> io::Result<Self> {
        let listener = TcpListener::bind(config.listen).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(ProxyShared {
            config: Mutex::new(config),
            half_open: AtomicBool::new(false),
            connections: AtomicU64::new(0),
            forwarded: [AtomicU64::new(0), AtomicU64::new(0)],
            read: [AtomicU64::new(0), AtomicU64::new(0)],
            corrupted: AtomicU64::new(0),
            tasks: Mutex::new(Vec::new()),
        });
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        shared.push_task(accept.abort_handle());
        Ok(FaultProxy { addr, shared })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address clients connect to, as an [`IpPort`].
    pub fn ip_port(&self) -> IpPort {
        IpPort::from(self.addr)
    }

    /// Stops (`true`) or resumes (`false`) forwarding in both directions for every
    /// connection. Bytes read while half-open are discarded; sockets stay open.
    pub fn set_half_open(&self, on: bool) {
        self.shared.half_open.store(on, Ordering::SeqCst);
    }

    /// Replaces the faults used for connections accepted from now on.
    pub fn set_faults(&self, direction: Direction, faults: DirectionFaults) {
        let mut c = self.shared.config.lock().unwrap_or_else(|e| e.into_inner());
        match direction {
            Direction::ClientToServer => c.client_to_server = faults,
            Direction::ServerToClient => c.server_to_client = faults,
        }
    }

    /// How many connections were accepted.
    pub fn connection_count(&self) -> u64 {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// How many bytes were delivered in `direction`, over all connections.
    pub fn bytes_forwarded(&self, direction: Direction) -> u64 {
        self.shared.forwarded[direction.index()].load(Ordering::SeqCst)
    }

    /// How many bytes were read from the sending side in `direction`, over all connections
    /// (what was delivered plus what a stall, a close, a reset or half-open swallowed, plus
    /// what is still queued).
    pub fn bytes_read(&self, direction: Direction) -> u64 {
        self.shared.read[direction.index()].load(Ordering::SeqCst)
    }

    /// How many bytes were corrupted, over all connections.
    pub fn bytes_corrupted(&self) -> u64 {
        self.shared.corrupted.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        for t in self
            .shared
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            t.abort();
        }
    }
}

impl Direction {
    fn index(self) -> usize {
        match self {
            Direction::ClientToServer => 0,
            Direction::ServerToClient => 1,
        }
    }
}

#[derive(Debug)]
struct ProxyShared {
    config: Mutex<ProxyConfig>,
    half_open: AtomicBool,
    connections: AtomicU64,
    forwarded: [AtomicU64; 2],
    read: [AtomicU64; 2],
    corrupted: AtomicU64,
    tasks: Mutex<Vec<AbortHandle>>,
}

impl ProxyShared {
    fn push_task(&self, t: AbortHandle) {
        self.tasks.lock().unwrap_or_else(|e| e.into_inner()).push(t);
    }
}

/// How a connection ends early.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kill {
    Alive,
    Close,
    Reset,
}

async fn accept_loop(listener: TcpListener, shared: Arc<ProxyShared>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        let n = shared.connections.fetch_add(1, Ordering::SeqCst);
        let config = shared
            .config
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let s = shared.clone();
        let t = tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(config.upstream).await else {
                return; // dropping `client` closes it, like a refused upstream
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            let (kill_tx, _) = watch::channel(Kill::Alive);
            let kill_tx = Arc::new(kill_tx);
            let seed = config.seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let up = spawn_direction(
                &s,
                Direction::ClientToServer,
                config.client_to_server,
                config.client_to_server_delay,
                seed,
                cr,
                sw,
                kill_tx.clone(),
            );
            let down = spawn_direction(
                &s,
                Direction::ServerToClient,
                config.server_to_client,
                config.server_to_client_delay,
                seed ^ 1,
                sr,
                cw,
                kill_tx,
            );
            let _ = tokio::join!(up, down);
        });
        shared.push_task(t.abort_handle());
    }
}

#[allow(clippy::too_many_arguments)]
fn spawn_direction(
    shared: &Arc<ProxyShared>,
    dir: Direction,
    faults: DirectionFaults,
    delay: SegmentDelay,
    seed: u64,
    mut from: OwnedReadHalf,
    to: OwnedWriteHalf,
    kill: Arc<watch::Sender<Kill>>,
) -> tokio::task::JoinHandle<()> {
    let (tx, rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let latency = faults.latency;
    let jitter = faults.jitter;
    let mut kill_rx = kill.subscribe();
    let delay_p = delay.probability.clamp(0.0, 1.0);
    let counters = shared.clone();
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 16 * 1024];
        let mut last = Instant::now();
        loop {
            tokio::select! {
                r = from.read(&mut buf) => match r {
                    Ok(0) | Err(_) => return, // dropping `tx` ends the writer after the queue
                    Ok(n) => {
                        counters.read[dir.index()].fetch_add(n as u64, Ordering::SeqCst);
                        let mut extra = if jitter.is_zero() {
                            Duration::ZERO
                        } else {
                            jitter.mul_f64(rng.gen_range(0.0..=1.0))
                        };
                        // Design: the draw happens only when the fault is on, so adding it
                        // left the jitter sequence of existing seeds unchanged.
                        if delay_p > 0.0 && rng.gen_bool(delay_p) {
                            extra += delay.delay;
                        }
                        let at = (Instant::now() + latency + extra).max(last);
                        last = at;
                        if tx.send((at, buf[..n].to_vec())).is_err() {
                            return;
                        }
                    }
                },
                _ = kill_rx.wait_for(|k| *k != Kill::Alive) => return,
            }
        }
    });
    shared.push_task(reader.abort_handle());
    let writer = Writer {
        shared: shared.clone(),
        dir,
        faults,
        rng: ChaCha8Rng::seed_from_u64(seed ^ 0xC0FF_EE00),
        to,
        sent: 0,
        kill,
    };
    let t = tokio::spawn(writer.run(rx));
    shared.push_task(t.abort_handle());
    t
}

struct Writer {
    shared: Arc<ProxyShared>,
    dir: Direction,
    faults: DirectionFaults,
    rng: ChaCha8Rng,
    to: OwnedWriteHalf,
    sent: u64,
    kill: Arc<watch::Sender<Kill>>,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<(Instant, Vec<u8>)>) {
        let mut kill_rx = self.kill.subscribe();
        loop {
            let item = tokio::select! {
                item = rx.recv() => item,
                _ = kill_rx.wait_for(|k| *k != Kill::Alive) => None,
            };
            let Some((at, mut bytes)) = item else {
                break;
            };
            tokio::time::sleep_until(at).await;
            if self.shared.half_open.load(Ordering::SeqCst) {
                continue;
            }
            // Cut the chunk at the first byte limit, and remember what happens there.
            let mut after = None;
            for (limit, kill) in [
                (self.faults.stall_after, None),
                (self.faults.close_after, Some(Kill::Close)),
                (self.faults.reset_after, Some(Kill::Reset)),
            ] {
                let Some(limit) = limit else { continue };
                let room = limit.saturating_sub(self.sent);
                if (bytes.len() as u64) >= room && after.is_none_or(|(r, _)| room < r) {
                    after = Some((room, kill));
                }
            }
            if let Some((room, _)) = after {
                bytes.truncate(room as usize);
            }
            self.corrupt(&mut bytes);
            if self.forward(&bytes).await.is_err() {
                break;
            }
            match after {
                None => {}
                Some((_, None)) => {
                    // Stalled: swallow everything from now on, keep the sockets until the
                    // other direction ends the connection.
                    let swallow = async {
                        while rx.recv().await.is_some() {}
                        std::future::pending::<()>().await
                    };
                    tokio::select! {
                        _ = swallow => {}
                        _ = kill_rx.wait_for(|k| *k != Kill::Alive) => {}
                    }
                    break;
                }
                Some((_, Some(kill))) => {
                    self.kill.send_replace(kill);
                    break;
                }
            }
        }
        let kill = *self.kill.borrow();
        if kill == Kill::Reset {
            // SO_LINGER 0 and no FIN: closing the descriptor sends RST.
            let _ = self.to.as_ref().set_zero_linger();
            self.to.forget();
        }
        // Otherwise dropping the write half sends FIN.
    }

    fn corrupt(&mut self, bytes: &mut [u8]) {
        let p = self.faults.corrupt_probability;
        if p <= 0.0 {
            return;
        }
        let p = p.min(1.0);
        for b in bytes.iter_mut() {
            if self.rng.gen_bool(p) {
                *b ^= 1 << self.rng.gen_range(0..8);
                self.shared.corrupted.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    async fn forward(&mut self, bytes: &[u8]) -> io::Result<()> {
        // Under a bandwidth cap and no explicit slicing, pace in 10 ms worth of bytes so a
        // large read is spread out rather than written at once and paid for afterwards.
        let paced = self
            .faults
            .bandwidth
            .filter(|b| *b > 0)
            .map(|b| (b / 100).max(1) as usize);
        let slice = self.faults.slice.or(paced).unwrap_or(usize::MAX).max(1);
        for (i, part) in bytes.chunks(slice).enumerate() {
            if i > 0 {
                if self.faults.slice_gap.is_zero() {
                    tokio::task::yield_now().await;
                } else {
                    tokio::time::sleep(self.faults.slice_gap).await;
                }
            }
            self.to.write_all(part).await?;
            self.sent += part.len() as u64;
            self.shared.forwarded[self.dir.index()].fetch_add(part.len() as u64, Ordering::SeqCst);
            if let Some(bw) = self.faults.bandwidth.filter(|b| *b > 0) {
                tokio::time::sleep(Duration::from_secs_f64(part.len() as f64 / bw as f64)).await;
            }
        }
        Ok(())
    }
}
