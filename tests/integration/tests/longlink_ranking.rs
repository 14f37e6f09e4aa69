//! IP ranking through the real driver: outcomes of real loopback connects feed the ranking,
//! the ranking is kept in a file across client runs (written atomically at shutdown), and a
//! corrupt or other-version file is ignored (a fresh start), never fatal.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use phobos_plugin_api::{
    AddrSource, IpPort, IpSource, LinkPurpose, NetKind, ResolveError, ResolvedAddr,
};
use phobos_stn::{Client, ClientConfig, LinkStatus};
use phobos_stn_proto::{AttemptOutcome, ConnectReport, RankingState};
use phobos_test_support::{refused_addr, MockLongLinkServer};

mod common;
use common::codec;

const HOST: &str = "im.example";

/// An app-DNS-like source: answers `HOST` with fixed addresses tagged `NewDns` (so they are
/// ranked, unlike a debug list).
#[derive(Debug)]
struct AppDns {
    addrs: Vec<IpPort>,
}

#[async_trait]
impl IpSource for AppDns {
    fn name(&self) -> &str {
        "app-dns-test"
    }

    async fn resolve(
        &self,
        host: &str,
        _purpose: LinkPurpose,
    ) -> Result<Vec<ResolvedAddr>, ResolveError> {
        if host != HOST {
            return Err(ResolveError::NoSuchHost);
        }
        Ok(self
            .addrs
            .iter()
            .map(|a| ResolvedAddr {
                ip: a.ip,
                port: Some(a.port),
                source: AddrSource::NewDns,
            })
            .collect())
    }
}

fn start(addrs: Vec<IpPort>, file: &Path, seed: u64) -> Client {
    let config = ClientConfig::builder(codec())
        .link_hosts("default-longlink", [HOST], [1])
        .ip_source(Arc::new(AppDns { addrs }))
        .ranking_state_file(file)
        .core(|c| c.seed(seed))
        .build()
        .unwrap();
    Client::start(config).unwrap()
}

/// Subscribes to the link's events, then brings the app to the foreground (which connects
/// the keep-alive link at once) and asks for the link: the cycle's report.
async fn connect_cycle(client: &Client) -> ConnectReport {
    let mut events = client.link_events();
    client.set_foreground(true);
    client.make_sure_connected("default-longlink");
    let ev = events
        .wait_for("default-longlink", |e| {
            matches!(e.status, LinkStatus::Connected(_))
        })
        .await
        .unwrap();
    ev.cycle.unwrap()
}

fn ip_port(a: SocketAddr) -> IpPort {
    a.into()
}

#[tokio::test(start_paused = true)]
async fn the_ranking_is_saved_at_shutdown_and_ranks_a_failed_address_last_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ranking.json");
    let server = MockLongLinkServer::start_echo(codec()).await.unwrap();
    let refused = ip_port(refused_addr().await.unwrap());
    let live = server.ip_port();

    // Find a seed whose first cycle tries the refused address first, so the first run
    // records a failure for it and a success for the live one.
    let mut seed = 0;
    loop {
        let c = start(vec![refused, live], &file, seed);
        let cycle = connect_cycle(&c).await;
        c.shutdown().await;
        if cycle.attempts[0].addr == refused {
            assert_eq!(cycle.attempts[0].outcome, AttemptOutcome::Refused);
            break;
        }
        std::fs::remove_file(&file).unwrap();
        seed += 1;
        assert!(seed < 50, "no seed tried the refused address first");
    }

    // The file was written (missing before: a fresh start) and holds both records.
    let state = RankingState::from_json(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(state.version, RankingState::VERSION);
    assert!(state.saved_at_unix.is_some());
    let net = state
        .networks
        .iter()
        .find(|n| n.label == "default")
        .unwrap();
    let rec = |a: IpPort| net.addrs.iter().find(|r| r.addr == a).unwrap().clone();
    assert_eq!((rec(refused).failures, rec(refused).successes), (1, 0));
    assert_eq!((rec(live).failures, rec(live).successes), (0, 1));
    assert!(rec(live).rtt_ms.is_some());
    let temporary: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|name| name.to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(temporary.is_empty(), "renamed into place: {temporary:?}");

    // Same seed, restored history: the live address now goes first.
    let c = start(vec![refused, live], &file, seed);
    let cycle = connect_cycle(&c).await;
    assert_eq!(cycle.attempts[0].addr, live);
    assert_eq!(cycle.attempts.len(), 1);
    c.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_corrupt_or_other_version_ranking_file_is_ignored_and_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ranking.json");
    let server = MockLongLinkServer::start_echo(codec()).await.unwrap();
    let live = server.ip_port();
    let other_version = RankingState::default()
        .to_json()
        .replace("\"version\": 1", "\"version\": 99");
    for junk in ["{ not json", "[]", other_version.as_str(), ""] {
        std::fs::write(&file, junk).unwrap();
        let c = start(vec![live], &file, 1);
        let cycle = connect_cycle(&c).await;
        assert_eq!(cycle.attempts[0].outcome, AttemptOutcome::Won);
        c.shutdown().await;
        let text = std::fs::read_to_string(&file).unwrap();
        let state = RankingState::from_json(&text).expect("a valid state replaced the junk");
        assert_eq!(state.networks.len(), 1);
    }
}

#[tokio::test(start_paused = true)]
async fn records_follow_the_network_label_and_are_saved_on_a_network_change() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ranking.json");
    let server = MockLongLinkServer::start_echo(codec()).await.unwrap();
    let live = server.ip_port();
    let c = start(vec![live], &file, 1);
    connect_cycle(&c).await;
    let mut events = c.link_events();
    c.set_network(NetKind::Mobile, "mobile_46000");
    // The network change re-races at once, and the new success is kept under the new label.
    events
        .wait_for("default-longlink", |e| {
            matches!(e.status, LinkStatus::Connected(_))
        })
        .await
        .unwrap();
    c.shutdown().await;
    let state = RankingState::from_json(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let mut labels: Vec<&str> = state.networks.iter().map(|n| n.label.as_str()).collect();
    labels.sort_unstable();
    assert_eq!(labels, vec!["default", "mobile_46000"]);
}
