//! The connect race through the real driver and real loopback sockets: the default
//! (`ConnectProfile::Phobos`) staggers attempts by 250 ms, `MarsClassic` by 2.5 s, and every
//! cycle is reported on the link-event stream.

use std::time::Duration;

use phobos_plugin_api::IpPort;
use phobos_stn::{Client, ClientConfig, ConnectProfile, LinkEvent, LinkStatus};
use phobos_stn_proto::AttemptOutcome;
use phobos_test_support::{refused_addr, MockLongLinkServer};

mod common;
use common::{codec, Blackhole};

fn start(addrs: Vec<IpPort>, silent: Vec<IpPort>, profile: Option<ConnectProfile>) -> Client {
    let mut b = ClientConfig::builder(codec())
        .link_addrs("default-longlink", addrs)
        .connector(std::sync::Arc::new(Blackhole::new(silent)));
    if let Some(p) = profile {
        b = b.connect_profile(p);
    }
    Client::start(b.build().unwrap()).unwrap()
}

/// Subscribes to the link's events, then brings the app to the foreground (which connects
/// the keep-alive link at once) and asks for the link: the event of its connect.
async fn connected(client: &Client) -> LinkEvent {
    let mut events = client.link_events();
    client.set_foreground(true);
    client.make_sure_connected("default-longlink");
    events
        .wait_for("default-longlink", |e| {
            matches!(e.status, LinkStatus::Connected(_))
        })
        .await
        .unwrap()
}

/// A silent address that no listener will ever answer (TEST-NET-1, never dialled: the
/// connector holds it).
fn silent_addr() -> IpPort {
    "192.0.2.1:9"
        .parse::<std::net::SocketAddr>()
        .unwrap()
        .into()
}

#[tokio::test(start_paused = true)]
async fn the_default_profile_reaches_a_live_second_address_a_stagger_after_a_silent_first() {
    let server = MockLongLinkServer::start_echo(codec()).await.unwrap();
    let client = start(
        vec![silent_addr(), server.ip_port()],
        vec![silent_addr()],
        None,
    );
    let ev = connected(&client).await;
    assert_eq!(ev.status, LinkStatus::Connected(server.ip_port()));
    let cycle = ev.cycle.expect("the Connected event carries its cycle");
    assert_eq!(cycle.profile, ConnectProfile::Phobos);
    let outcomes: Vec<(IpPort, AttemptOutcome)> =
        cycle.attempts.iter().map(|a| (a.addr, a.outcome)).collect();
    assert_eq!(
        outcomes,
        vec![
            (silent_addr(), AttemptOutcome::Aborted),
            (server.ip_port(), AttemptOutcome::Won),
        ]
    );
    assert_eq!(cycle.attempts[1].started_after, Duration::from_millis(250));
    let at = cycle.connected_after.unwrap();
    assert!(
        at >= Duration::from_millis(250) && at < Duration::from_millis(2_500),
        "connected after {at:?}"
    );
    client.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn mars_classic_waits_the_full_two_and_a_half_second_step() {
    let server = MockLongLinkServer::start_echo(codec()).await.unwrap();
    let client = start(
        vec![silent_addr(), server.ip_port()],
        vec![silent_addr()],
        Some(ConnectProfile::MarsClassic),
    );
    let cycle = connected(&client).await.cycle.unwrap();
    assert_eq!(cycle.profile, ConnectProfile::MarsClassic);
    assert_eq!(
        cycle.attempts[1].started_after,
        Duration::from_millis(2_500)
    );
    assert!(cycle.connected_after.unwrap() >= Duration::from_millis(2_500));
    client.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_refused_address_hands_over_to_the_next_at_once_and_is_reported() {
    let server = MockLongLinkServer::start_echo(codec()).await.unwrap();
    let refused: IpPort = refused_addr().await.unwrap().into();
    let client = start(vec![refused, server.ip_port()], vec![], None);
    let cycle = connected(&client).await.cycle.unwrap();
    assert_eq!(cycle.attempts[0].outcome, AttemptOutcome::Refused);
    assert_eq!(cycle.attempts[1].outcome, AttemptOutcome::Won);
    assert!(
        cycle.attempts[1].started_after < Duration::from_millis(250),
        "no stagger wait after a refusal: {:?}",
        cycle.attempts[1].started_after
    );
    client.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_cycle_where_every_address_fails_is_reported_on_the_connect_failed_event() {
    let refused: IpPort = refused_addr().await.unwrap().into();
    let client = start(vec![silent_addr(), refused], vec![silent_addr()], None);
    let mut events = client.link_events();
    client.set_foreground(true);
    client.make_sure_connected("default-longlink");
    let ev = events
        .wait_for("default-longlink", |e| {
            e.status == LinkStatus::ConnectFailed
        })
        .await
        .unwrap();
    let cycle = ev.cycle.unwrap();
    assert_eq!(cycle.connected_after, None);
    let outcomes: Vec<AttemptOutcome> = cycle.attempts.iter().map(|a| a.outcome).collect();
    assert_eq!(
        outcomes,
        vec![AttemptOutcome::TimedOut, AttemptOutcome::Refused]
    );
    // The silent address times out after the per-attempt connect timeout (10 s).
    assert_eq!(cycle.elapsed, Duration::from_secs(10));
    client.shutdown().await;
}
