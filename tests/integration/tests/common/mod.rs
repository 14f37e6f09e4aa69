//! Setup shared by the long-link integration tests.

#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;

use phobos_codec_mars::MarsCodec;
use phobos_stn::{Client, ClientConfig};
use phobos_test_support::{ConnScript, MockLongLinkServer, Reply};

/// The Mars codec with default settings.
pub fn codec() -> Arc<MarsCodec> {
    Arc::new(MarsCodec::default())
}

/// A client whose default long link goes straight to `server`, with the app in the
/// foreground: there a task waits at most 5 s for a reconnect (Mars's FG_1MIN row); in the
/// background it would be 30 s, longer than a no-retry task's 20 s budget.
///
/// Going to the foreground connects the (keep-alive) link at once (§7.9); a test that
/// watches the link from its first connect subscribes first ([`client_and_events_for`]).
pub fn client_for(server: &MockLongLinkServer) -> Client {
    client_and_events_for(server).0
}

/// [`client_for`], and the link's events from before the app went to the foreground.
pub fn client_and_events_for(server: &MockLongLinkServer) -> (Client, phobos_stn::LinkEvents) {
    let config = ClientConfig::builder(codec())
        .link_addrs("default-longlink", [server.ip_port()])
        .build()
        .expect("a valid client config");
    let client = Client::start(config).expect("the client starts");
    let events = client.link_events();
    client.set_foreground(true);
    (client, events)
}

/// A server whose first connection takes every request and never answers one (later
/// connections echo).
pub async fn first_connection_stalls() -> MockLongLinkServer {
    MockLongLinkServer::builder(codec())
        .script(ConnScript::echo().default_reply(Reply::stall()))
        .start()
        .await
        .expect("the mock server starts")
}

/// Receives the ends of `n` tasks from `batch`, checking that no task ends twice.
pub async fn ends_once(batch: &mut phobos_stn::TaskBatch, n: usize) -> Vec<phobos_stn::BatchEnd> {
    let mut seen = std::collections::HashSet::new();
    let mut all = Vec::with_capacity(n);
    let mut ends = Vec::new();
    while all.len() < n {
        ends.clear();
        assert!(batch.recv_many(&mut ends).await > 0, "every task ends");
        for end in ends.drain(..) {
            assert!(seen.insert(end.key), "{:?} ended twice", end.key);
            all.push(end);
        }
    }
    all
}

/// A multi-thread runtime with one worker, as a small app or a server beside it would use.
pub fn one_worker_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime")
}

/// Blocks the thread of a plugin call until the test opens its [`Gate`], as a loaded plugin
/// blocks by design (the ABI adapter runs the plugin's future to completion on the calling
/// thread).
///
/// If the gate stays shut for [`Blocker::GIVE_UP`] of real time the call returns anyway, so
/// a driver that waits for it fails its test instead of hanging it.
#[derive(Debug)]
pub struct Blocker {
    gate: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
    /// Told when a call has started blocking.
    pub entered: Arc<tokio::sync::Notify>,
    /// Set when a call returned.
    pub returned: Arc<std::sync::atomic::AtomicBool>,
    /// Calls made so far.
    calls: std::sync::atomic::AtomicUsize,
}

/// Opens a [`Blocker`]'s gate.
#[derive(Debug)]
pub struct Gate(std::sync::mpsc::Sender<()>);

impl Blocker {
    /// The real time after which a call returns with its gate still shut.
    pub const GIVE_UP: std::time::Duration = std::time::Duration::from_secs(15);

    /// A shut blocker and its gate.
    pub fn new() -> (Self, Gate) {
        let (open, gate) = std::sync::mpsc::channel();
        let blocker = Blocker {
            gate: std::sync::Mutex::new(gate),
            entered: Arc::new(tokio::sync::Notify::new()),
            returned: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            calls: std::sync::atomic::AtomicUsize::new(0),
        };
        (blocker, Gate(open))
    }

    /// Whether a call returned.
    pub fn has_returned(&self) -> bool {
        self.returned.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// How many calls were made (returned or not).
    pub fn calls(&self) -> usize {
        self.calls.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Blocks the calling thread until the gate opens.
    fn block(&self) {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.entered.notify_one();
        let gate = self.gate.lock().unwrap_or_else(|e| e.into_inner());
        // Open (the sender dropped) ends the wait at once.
        let _ = gate.recv_timeout(Self::GIVE_UP);
        drop(gate);
        self.returned
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Gate {
    /// Lets every call, running or to come, return.
    pub fn open(self) {
        drop(self);
    }
}

/// An IP source whose `resolve` blocks (see [`Blocker`]), then answers `addr`. Use it
/// through [`GatedSource::loaded`]: the export and import adapters a dynamic library's source
/// goes through.
#[derive(Debug)]
pub struct GatedSource {
    addr: std::net::SocketAddr,
    blocker: Arc<Blocker>,
}

impl GatedSource {
    /// A source answering `addr` once the gate is open, the blocker (to watch the calls)
    /// and the gate.
    pub fn new(addr: std::net::SocketAddr) -> (Self, Arc<Blocker>, Gate) {
        let (blocker, gate) = Blocker::new();
        let blocker = Arc::new(blocker);
        let source = GatedSource {
            addr,
            blocker: blocker.clone(),
        };
        (source, blocker, gate)
    }

    /// This source as the host sees a loaded one.
    pub fn loaded(self) -> Arc<dyn phobos_plugin_api::IpSource> {
        let ffi = phobos_plugin_abi::export_ip_source(self).expect("the source exports");
        phobos_plugin_abi::import_ip_source(ffi, "gated-test")
    }
}

#[async_trait::async_trait]
impl phobos_plugin_api::IpSource for GatedSource {
    fn name(&self) -> &str {
        "gated-test"
    }

    async fn resolve(
        &self,
        _host: &str,
        _purpose: phobos_plugin_api::LinkPurpose,
    ) -> Result<Vec<phobos_plugin_api::ResolvedAddr>, phobos_plugin_api::ResolveError> {
        self.blocker.block();
        Ok(vec![phobos_plugin_api::ResolvedAddr {
            ip: self.addr.ip(),
            port: Some(self.addr.port()),
            source: phobos_plugin_api::AddrSource::NewDns,
        }])
    }
}

/// An auth check whose `ensure_authed` blocks (see [`Blocker`]), then logs in. Use it
/// through [`GatedAuth::loaded`].
#[derive(Debug)]
pub struct GatedAuth {
    authed: std::sync::atomic::AtomicBool,
    blocker: Arc<Blocker>,
}

impl GatedAuth {
    /// A check that logs in once the gate is open, the blocker and the gate.
    pub fn new() -> (Self, Arc<Blocker>, Gate) {
        let (blocker, gate) = Blocker::new();
        let blocker = Arc::new(blocker);
        let auth = GatedAuth {
            authed: std::sync::atomic::AtomicBool::new(false),
            blocker: blocker.clone(),
        };
        (auth, blocker, gate)
    }

    /// This check as the host sees a loaded one.
    pub fn loaded(self) -> Arc<dyn phobos_plugin_api::AuthCheck> {
        let ffi = phobos_plugin_abi::export_auth(self).expect("the check exports");
        phobos_plugin_abi::import_auth(ffi, "gated-test")
    }
}

#[async_trait::async_trait]
impl phobos_plugin_api::AuthCheck for GatedAuth {
    fn name(&self) -> &str {
        "gated-test"
    }

    fn is_authed(&self, _host: &str) -> bool {
        self.authed.load(std::sync::atomic::Ordering::SeqCst)
    }

    async fn ensure_authed(&self, _host: &str) -> Result<(), phobos_plugin_api::AuthError> {
        self.blocker.block();
        self.authed.store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
}

/// Plain TCP, except that connects to `silent` addresses never finish (a blackholed SYN) and
/// never touch the network.
#[derive(Debug)]
pub struct Blackhole {
    silent: Vec<phobos_plugin_api::IpPort>,
}

impl Blackhole {
    /// Connects to any of `silent` hang; the others go through [`phobos_stn::TcpConnector`].
    pub fn new(silent: impl IntoIterator<Item = phobos_plugin_api::IpPort>) -> Self {
        Blackhole {
            silent: silent.into_iter().collect(),
        }
    }
}

type ConnectFuture<'a> = std::pin::Pin<
    Box<
        dyn std::future::Future<Output = std::io::Result<Box<dyn phobos_stn::LinkStream>>>
            + Send
            + 'a,
    >,
>;

impl phobos_stn::Connector for Blackhole {
    fn connect<'life0, 'async_trait>(
        &'life0 self,
        addr: phobos_plugin_api::IpPort,
    ) -> ConnectFuture<'async_trait>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(async move {
            if self.silent.contains(&addr) {
                std::future::pending::<()>().await;
            }
            phobos_stn::TcpConnector::default().connect(addr).await
        })
    }
}
