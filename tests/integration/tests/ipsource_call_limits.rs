//! IP source calls through the real driver: the core times each call at the source's limit
//! and tells the driver to stop it (`Action::CancelResolve`), so a source that never answers
//! costs its limit once, its future is dropped (nothing keeps running in the background), and
//! the chain moves on to the next source. Sources hear of network changes (to drop their
//! caches).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use phobos_plugin_api::{AddrSource, CmdId, IpSource, LinkPurpose, ResolveError, ResolvedAddr};
use phobos_stn::{Client, ClientConfig, TaskSpec};
use phobos_test_support::MockLongLinkServer;

mod common;
use common::codec;

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
