//! IP source calls through the real driver: the core times each call at the source's limit
//! and tells the driver to stop it (`Action::CancelResolve`), so a source that never answers
//! costs its limit once, its future is dropped (nothing keeps running in the background), and
//! the chain moves on to the next source. Sources hear of network changes (to drop their
//! caches).
//!
//! A loaded source blocks its thread for the whole call (the ABI adapter runs the plugin's
//! future to completion), so the driver runs it on a thread of its own: neither another link
//! nor the source's limit waits for it. Such a call cannot be stopped; the chain moves on at
//! the limit all the same and the late answer is dropped. While a blocking call runs, tokio's
//! paused clock does not advance by itself, so those tests move it with `advance`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use phobos_plugin_api::{AddrSource, CmdId, IpSource, LinkPurpose, ResolveError, ResolvedAddr};
use phobos_stn::{Client, ClientConfig, TaskSpec};
use phobos_stn_proto::Timing;
use phobos_test_support::MockLongLinkServer;

mod common;
use common::{codec, Blocker, Gate, GatedSource};

const HOST: &str = "im.example";

/// Counts drops of the futures it is held by.
struct DropCount(Arc<AtomicUsize>);

impl Drop for DropCount {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// A source that never answers; counts the calls started and the calls dropped, and the
/// network changes it was told of.
#[derive(Debug, Default)]
struct Silent {
    started: Arc<AtomicUsize>,
    dropped: Arc<AtomicUsize>,
    network_changes: AtomicUsize,
}

#[async_trait]
impl IpSource for Silent {
    fn name(&self) -> &str {
        "silent-test"
    }

    async fn resolve(
        &self,
        _host: &str,
        _purpose: LinkPurpose,
    ) -> Result<Vec<ResolvedAddr>, ResolveError> {
        self.started.fetch_add(1, Ordering::SeqCst);
        let _guard = DropCount(self.dropped.clone());
        std::future::pending::<()>().await;
        unreachable!("never answers")
    }

    fn network_changed(&self) {
        self.network_changes.fetch_add(1, Ordering::SeqCst);
    }
}

/// A source that answers `HOST` with one address.
#[derive(Debug)]
struct Fixed(std::net::SocketAddr);

#[async_trait]
impl IpSource for Fixed {
    fn name(&self) -> &str {
        "fixed-test"
    }

    async fn resolve(
        &self,
        host: &str,
        _purpose: LinkPurpose,
    ) -> Result<Vec<ResolvedAddr>, ResolveError> {
        if host != HOST {
            return Err(ResolveError::NoSuchHost);
        }
        Ok(vec![ResolvedAddr {
            ip: self.0.ip(),
            port: Some(self.0.port()),
            source: AddrSource::NewDns,
        }])
    }
}

#[tokio::test(start_paused = true)]
async fn a_silent_source_costs_its_limit_once_and_its_call_is_stopped() {
    let server = MockLongLinkServer::start_echo(codec()).await.unwrap();
    let silent = Arc::new(Silent::default());
    let config = ClientConfig::builder(codec())
        .link_hosts("default-longlink", [HOST], [server.addr().port()])
        .ip_source(silent.clone())
        .ip_source(Arc::new(Fixed(server.addr())))
        .build()
        .unwrap();
    let client = Client::start(config).unwrap();
    let started = tokio::time::Instant::now();
    let resp = client
        .start_task(TaskSpec::new(CmdId(7), &b"ping"[..]))
        .await
        .unwrap();
    assert_eq!(&resp.body[..], b"ping");
    let took = started.elapsed();
    // Virtual time: the silent source's 2 s limit, then the fixed source and a loopback
    // connect (no virtual time).
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_millis(2_100),
        "{took:?}"
    );
    // Let the abort land.
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(silent.started.load(Ordering::SeqCst), 1);
    assert_eq!(
        silent.dropped.load(Ordering::SeqCst),
        1,
        "the call the core gave up was stopped"
    );
    client.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn every_source_hears_of_a_network_change() {
    let silent = Arc::new(Silent::default());
    let config = ClientConfig::builder(codec())
        .link_hosts("default-longlink", [HOST], [443])
        .ip_source(silent.clone())
        .build()
        .unwrap();
    let client = Client::start(config).unwrap();
    client.set_network(phobos_plugin_api::NetKind::Wifi, "wifi-1");
    client.set_network(phobos_plugin_api::NetKind::Mobile, "cell-1");
    // A round trip through the driver: the commands before it have been handled.
    client.stats().await.unwrap();
    assert_eq!(silent.network_changes.load(Ordering::SeqCst), 2);
    client.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_loaded_source_blocked_in_a_call_does_not_hold_up_another_link() {
    let server = MockLongLinkServer::start_echo(codec()).await.unwrap();
    let (gated, blocker, gate) = GatedSource::new(server.addr());
    let config = ClientConfig::builder(codec())
        .link_addrs("default-longlink", [server.ip_port()])
        .link_hosts("b", [HOST], [server.addr().port()])
        .ip_source(gated.loaded())
        .build()
        .unwrap();
    let client = Client::start(config).unwrap();
    client.set_foreground(true);
    // The default link is up (its addresses are given, nothing to resolve).
    client
        .start_task(TaskSpec::new(CmdId(7), &b"warm"[..]))
        .await
        .unwrap();
    // Link "b" asks the source, which blocks.
    let on_b = tokio::spawn(client.start_task(TaskSpec::new(CmdId(7), &b"b"[..]).with_link("b")));
    blocker.entered.notified().await;

    let on_a = client
        .start_task(TaskSpec::new(CmdId(7), &b"a"[..]))
        .await
        .unwrap();
    assert_eq!(&on_a.body[..], b"a");
    assert!(
        !blocker.has_returned(),
        "the task on the default link waited for link b's source"
    );

    // Answered within its limit: link "b" uses the answer.
    gate.open();
    let on_b = on_b.await.unwrap().unwrap();
    assert_eq!(&on_b.body[..], b"b");
    client.shutdown().await;
}

/// The limit of every source call in the tests of a loaded, blocking source.
const LIMIT: Duration = Duration::from_secs(2);

/// A started client whose default link names `HOST`, resolved first by a loaded source that
/// blocks until its gate opens, then by one answering `server` at once; each source call
/// limited to [`LIMIT`], and the watchdog's threshold half of it. Also the blocker and gate.
fn gated_then_fixed(server: &MockLongLinkServer) -> (Client, Arc<Blocker>, Gate) {
    let (gated, blocker, gate) = GatedSource::new(server.addr());
    let config = ClientConfig::builder(codec())
        .link_hosts("default-longlink", [HOST], [server.addr().port()])
        .ip_source(gated.loaded())
        .ip_source(Arc::new(Fixed(server.addr())))
        .core(|c| {
            c.timing(Timing {
                resolve_timeout: LIMIT,
                ..Timing::default()
            })
        })
        .watchdog_threshold(LIMIT / 2)
        .build()
        .unwrap();
    let client = Client::start(config).unwrap();
    client.set_foreground(true);
    (client, blocker, gate)
}

#[tokio::test(start_paused = true)]
async fn a_loaded_source_blocked_past_its_limit_is_left_behind_at_the_limit() {
    let server = MockLongLinkServer::start_echo(codec()).await.unwrap();
    let (client, blocker, gate) = gated_then_fixed(&server);
    let started = tokio::time::Instant::now();
    let task = tokio::spawn(client.start_task(TaskSpec::new(CmdId(7), &b"ping"[..])));
    blocker.entered.notified().await;

    // The paused clock stands still while the call blocks; move it to just before the limit.
    tokio::time::advance(LIMIT - Duration::from_millis(1)).await;
    client.stats().await.unwrap();
    assert!(!task.is_finished(), "the chain moved on before the limit");
    // At the limit the chain moves on to the next source, whose answer serves the task.
    tokio::time::advance(Duration::from_millis(1)).await;
    let resp = task.await.unwrap().unwrap();
    assert_eq!(&resp.body[..], b"ping");
    let took = started.elapsed();
    assert!(
        took >= LIMIT && took < LIMIT + Duration::from_millis(50),
        "{took:?}"
    );
    assert!(
        !blocker.has_returned(),
        "the task waited for the blocked source"
    );
    // The watchdog saw the call blocked past its threshold (half the limit).
    let stats = client.stats().await.unwrap();
    assert_eq!(stats.watchdog_stalls, 1, "{stats:?}");

    // Its answer, when it comes, is for a call given up: dropped.
    gate.open();
    client.shutdown().await;
}

/// A loaded source blocked past its limit is not asked again while that call still runs: the
/// next connect cycle (after a network change) finds the call refused at once and moves on
/// to the next source, so a source that hangs holds one thread, not one more per cycle.
#[tokio::test(start_paused = true)]
async fn a_loaded_source_still_blocked_in_a_given_up_call_is_not_called_again() {
    let server = MockLongLinkServer::start_echo(codec()).await.unwrap();
    let (client, blocker, gate) = gated_then_fixed(&server);
    let task = tokio::spawn(client.start_task(TaskSpec::new(CmdId(7), &b"first"[..])));
    blocker.entered.notified().await;
    // The paused clock stands still while the call blocks: move it to the limit, where the
    // chain moves on to the fixed source.
    tokio::time::advance(LIMIT).await;
    assert_eq!(&task.await.unwrap().unwrap().body[..], b"first");

    // A new network: the link connects again and walks the chain from its first source,
    // whose given-up call still blocks.
    client.set_network(phobos_plugin_api::NetKind::Wifi, "wifi-2");
    let started = tokio::time::Instant::now();
    let resp = client
        .start_task(TaskSpec::new(CmdId(7), &b"second"[..]))
        .await
        .unwrap();
    assert_eq!(&resp.body[..], b"second");
    assert_eq!(
        started.elapsed(),
        Duration::ZERO,
        "the chain waited for the blocked source again"
    );
    assert_eq!(blocker.calls(), 1, "the blocked source was called again");
    assert!(!blocker.has_returned());
    assert_eq!(client.stats().await.unwrap().plugin_calls_refused, 1);

    // Once the call returns, the source is asked again as before. (The paused clock moves
    // only once the blocking call has ended.)
    gate.open();
    tokio::time::sleep(Duration::from_millis(1)).await;
    client.set_network(phobos_plugin_api::NetKind::Wifi, "wifi-3");
    let resp = client
        .start_task(TaskSpec::new(CmdId(7), &b"third"[..]))
        .await
        .unwrap();
    assert_eq!(&resp.body[..], b"third");
    assert_eq!(
        blocker.calls(),
        2,
        "the source was not asked once it returned"
    );
    client.shutdown().await;
}
