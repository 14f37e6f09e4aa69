//! The public `Client` API: admission errors, shutdown, stats, host resolution through IP
//! sources, the auth gate and the watchdog.

use std::sync::Arc;
use std::time::Duration;

use phobos_plugin_api::{AuthError, CmdId};
use phobos_stn::{
    Client, ClientConfig, ErrorKind, LinkStatus, LocalError, StreamError, TaskError, TaskSpec,
};
use phobos_test_support::{ConnScript, MockLongLinkServer, Reply, StaticIpSource, TestAuth};

mod common;
use common::{client_and_events_for, client_for, codec, first_connection_stalls, GatedAuth};

#[tokio::test(start_paused = true)]
async fn a_refused_spec_ends_at_once_with_a_param_error() {
    let server = MockLongLinkServer::start_echo(codec()).await.unwrap();
    // In the background, so that nothing but a task would connect the link.
    let config = ClientConfig::builder(codec())
        .link_addrs("default-longlink", [server.ip_port()])
        .build()
        .unwrap();
    let client = Client::start(config).unwrap();
    let err = client
        .start_task(TaskSpec::new(CmdId(1), &b"x"[..]).with_priority(9))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Param);
    let err = client
        .start_task(TaskSpec::new(CmdId(1), &b"x"[..]).with_link("no-such-link"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Param);
    assert_eq!(server.connection_count(), 0);
}

#[test]
fn an_invalid_config_is_refused_when_built() {
    let err = ClientConfig::builder(codec()).build().unwrap_err();
    assert!(err.to_string().contains("link"), "{err}");
    let with_watchdog = |threshold| {
        let addr = "127.0.0.1:1".parse::<std::net::SocketAddr>().unwrap();
        ClientConfig::builder(codec())
            .link_addrs("a", [addr.into()])
            .watchdog_threshold(threshold)
            .build()
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        with_watchdog(Duration::ZERO),
        "watchdog_threshold must not be zero"
    );
    // "Never" written as the largest duration is refused, not a panic later.
    assert_eq!(
        with_watchdog(Duration::MAX),
        "watchdog_threshold must not exceed 365 days"
    );
    // A link of hosts with nothing to resolve them is refused, not left to end every task
    // with `NoAddress` after its total timeout; fixed addresses beside the hosts, or a
    // source, make it whole.
    let hosts = || ClientConfig::builder(codec()).link_hosts("a", ["a.example"], [443]);
    let err = hosts().build().unwrap_err();
    assert_eq!(err, phobos_stn::ConfigError::NoIpSource("a".into()));
    assert!(err.to_string().contains("no IP source"), "{err}");
    assert!(hosts()
        .ip_source(Arc::new(StaticIpSource::new()))
        .build()
        .is_ok());
}

/// `Client` docs: "When the last clone is dropped ... the driver ends every unfinished task
/// with `LocalError::Reset` and closes its connections."
#[tokio::test(start_paused = true)]
async fn dropping_the_last_client_ends_a_pending_handle_with_reset_and_closes_the_link() {
    let server = first_connection_stalls().await;
    let client = client_for(&server);
    let h = client.start_task(TaskSpec::new(CmdId(1), &b"x"[..]));
    server.wait_for_task_frames(1).await;
    let t0 = tokio::time::Instant::now();
    drop(client);
    let end = tokio::time::timeout(Duration::from_secs(3600), h)
        .await
        .expect("the handle resolves");
    let waited = t0.elapsed();
    assert_eq!(
        end,
        Err(TaskError::Local(LocalError::Reset)),
        "after {waited:?} (virtual)"
    );
    tokio::time::timeout(
        Duration::from_secs(3600),
        server.wait_until(|s| s.open_connections() == 0),
    )
    .await
    .expect("the link closes");
}

/// A handle whose task already ended (kept, not awaited, e.g. in a collection) must not keep
/// the driver, its socket and its heartbeats alive after the last client is dropped.
#[tokio::test(start_paused = true)]
async fn an_ended_unawaited_handle_does_not_keep_the_link_open_after_drop() {
    let server = MockLongLinkServer::start_echo(codec()).await.unwrap();
    let client = client_for(&server);
    let kept = client.start_task(TaskSpec::new(CmdId(1), &b"kept"[..]));
    client
        .start_task(TaskSpec::new(CmdId(1), &b"awaited"[..]))
        .await
        .unwrap();
    assert_eq!(client.stats().await.unwrap().tasks_in_flight, 0);
    drop(client);
    let closed = tokio::time::timeout(
        Duration::from_secs(1800),
        server.wait_until(|s| s.open_connections() == 0),
    )
    .await;
    let hb = server.frames().len();
    assert!(
        closed.is_ok(),
        "the link is still open 30 min (virtual) after the last client was dropped; \
         {hb} frames received so far"
    );
    drop(kept);
}

#[tokio::test(start_paused = true)]
async fn shutdown_ends_unfinished_tasks_with_reset_and_closes_the_link() {
    let server = first_connection_stalls().await;
    let client = client_for(&server);
    let h = client.start_task(TaskSpec::new(CmdId(1), &b"x"[..]));
    server.wait_for_task_frames(1).await;
    let mut pushes = client.subscribe_pushes();
    client.shutdown().await;
    assert_eq!(h.await.unwrap_err(), TaskError::Local(LocalError::Reset));
    server.wait_until(|s| s.open_connections() == 0).await;
    // After shutdown every call fails quietly.
    let late = client.start_task(TaskSpec::new(CmdId(1), &b"late"[..]));
    assert_eq!(late.await.unwrap_err(), TaskError::Local(LocalError::Reset));
    assert_eq!(client.stats().await, Err(StreamError::Closed));
    assert_eq!(pushes.recv().await, Err(StreamError::Closed));
}

#[tokio::test(start_paused = true)]
async fn dropping_every_handle_stops_the_driver() {
    let server = MockLongLinkServer::start_echo(codec()).await.unwrap();
    let client = client_for(&server);
    client.make_sure_connected("default-longlink");
    server.wait_for_connections(1).await;
    drop(client);
    server.wait_until(|s| s.open_connections() == 0).await;
}

#[tokio::test(start_paused = true)]
async fn stats_count_connections_and_tasks_in_flight() {
    let server = MockLongLinkServer::builder(codec())
        .script(ConnScript::echo().reply(Reply::stall()))
        .start()
        .await
        .unwrap();
    let client = client_for(&server);
    let _stalled = client.start_task(TaskSpec::new(CmdId(1), &b"x"[..]));
    server.wait_for_task_frames(1).await;
    let s = client.stats().await.unwrap();
    assert_eq!(s.tasks_in_flight, 1);
    assert_eq!(s.open_connections, 1);
    assert_eq!(s.connect_attempts, 1);
    assert_eq!(s.pending_connects, 0);
}

#[tokio::test(start_paused = true)]
async fn hosts_are_resolved_through_the_ip_sources() {
    let server = MockLongLinkServer::start_echo(codec()).await.unwrap();
    let source = Arc::new(StaticIpSource::new().with_host("long.example", [server.ip_port()]));
    let config = ClientConfig::builder(codec())
        .link_hosts("default-longlink", ["long.example"], [server.addr().port()])
        .ip_source(source.clone())
        .build()
        .unwrap();
    let client = Client::start(config).unwrap();
    let resp = client
        .start_task(TaskSpec::new(CmdId(1), &b"via dns"[..]))
        .await
        .unwrap();
    assert_eq!(&resp.body[..], b"via dns");
    assert_eq!(source.calls(), 1);
    assert!(matches!(
        client.link_status("default-longlink"),
        Some(LinkStatus::Connected(a)) if a == server.ip_port()
    ));
}

#[tokio::test(start_paused = true)]
async fn an_unknown_host_ends_the_task_with_a_dial_error() {
    let server = MockLongLinkServer::start_echo(codec()).await.unwrap();
    let config = ClientConfig::builder(codec())
        .link_hosts(
            "default-longlink",
            ["nowhere.example"],
            [server.addr().port()],
        )
        .ip_source(Arc::new(StaticIpSource::new()))
        .build()
        .unwrap();
    let client = Client::start(config).unwrap();
    client.set_foreground(true);
    let err = client
        .start_task(TaskSpec::new(CmdId(1), &b"x"[..]).with_retry_count(0))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Dial, "{err:?}");
    assert_eq!(server.connection_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_task_needing_auth_waits_for_the_login_run_off_the_loop() {
    let server = MockLongLinkServer::start_echo(codec()).await.unwrap();
    let auth = Arc::new(TestAuth::new().needing_login(Duration::from_secs(2), Ok(())));
    let config = ClientConfig::builder(codec())
        .link_addrs("default-longlink", [server.ip_port()])
        .auth(auth.clone())
        .build()
        .unwrap();
    let client = Client::start(config).unwrap();
    let t0 = tokio::time::Instant::now();
    let resp = client
        .start_task(TaskSpec::new(CmdId(1), &b"authed"[..]).needs_auth())
        .await
        .unwrap();
    assert_eq!(&resp.body[..], b"authed");
    assert!(t0.elapsed() >= Duration::from_secs(2));
    assert_eq!(auth.logins(), 1);
}

/// A loaded auth plugin blocks its thread for the whole login; the driver runs it on a thread
/// of its own, so tasks that need no login go on meanwhile.
#[tokio::test(start_paused = true)]
async fn a_loaded_auth_plugin_blocked_in_a_login_does_not_hold_up_other_tasks() {
    let server = MockLongLinkServer::start_echo(codec()).await.unwrap();
    let (auth, blocker, gate) = GatedAuth::new();
    let config = ClientConfig::builder(codec())
        .link_addrs("default-longlink", [server.ip_port()])
        .auth(auth.loaded())
        .build()
        .unwrap();
    let client = Client::start(config).unwrap();
    client.set_foreground(true);
    let authed =
        tokio::spawn(client.start_task(TaskSpec::new(CmdId(1), &b"authed"[..]).needs_auth()));
    blocker.entered.notified().await;

    let open = client
        .start_task(TaskSpec::new(CmdId(1), &b"open"[..]))
        .await
        .unwrap();
    assert_eq!(&open.body[..], b"open");
    assert!(
        !blocker.has_returned(),
        "a task needing no login waited for the login"
    );
    assert!(!authed.is_finished());

    gate.open();
    let authed = authed.await.unwrap().unwrap();
    assert_eq!(&authed.body[..], b"authed");
    client.shutdown().await;
}

/// A loaded auth plugin blocked in a login past its limit is not asked again while that
/// login still runs: each retry is answered at once as a transient failure, so a plugin that
/// hangs holds one thread, not one more per retry. Its late answer still lets the task go.
#[tokio::test(start_paused = true)]
async fn a_loaded_auth_plugin_still_blocked_in_a_login_is_not_asked_again() {
    let server = MockLongLinkServer::start_echo(codec()).await.unwrap();
    let (auth, blocker, gate) = GatedAuth::new();
    let (limit, retry) = (Duration::from_secs(2), Duration::from_secs(1));
    let config = ClientConfig::builder(codec())
        .link_addrs("default-longlink", [server.ip_port()])
        .auth(auth.loaded())
        .core(|c| {
            c.timing(phobos_stn_proto::Timing {
                auth_limit: limit,
                auth_retry: retry,
                ..phobos_stn_proto::Timing::default()
            })
        })
        .build()
        .unwrap();
    let client = Client::start(config).unwrap();
    client.set_foreground(true);
    let task = tokio::spawn(
        client.start_task(
            TaskSpec::new(CmdId(1), &b"authed"[..])
                .needs_auth()
                .with_total_timeout(Duration::from_secs(60)),
        ),
    );
    blocker.entered.notified().await;
    // The paused clock stands still while the login blocks: move it past the limit, then
    // through three retries.
    tokio::time::advance(limit).await;
    for _ in 0..3 {
        client.stats().await.unwrap();
        tokio::time::advance(retry).await;
        client.stats().await.unwrap();
    }
    let stats = client.stats().await.unwrap();
    assert!(stats.plugin_calls_refused >= 1, "{stats:?}");
    assert!(!task.is_finished());

    // The login answers at last: the task goes.
    gate.open();
    let resp = task.await.unwrap().unwrap();
    assert_eq!(&resp.body[..], b"authed");
    // The paused clock moves only once every blocking call has ended: any second login
    // has been made by then.
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(blocker.calls(), 1, "the blocked plugin was asked again");
    client.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_rejected_login_ends_the_waiting_task_with_an_auth_error() {
    let server = MockLongLinkServer::start_echo(codec()).await.unwrap();
    let auth = Arc::new(
        TestAuth::new().needing_login(Duration::ZERO, Err(AuthError::Rejected("bad".into()))),
    );
    let config = ClientConfig::builder(codec())
        .link_addrs("default-longlink", [server.ip_port()])
        .auth(auth)
        .build()
        .unwrap();
    let client = Client::start(config).unwrap();
    let err = client
        .start_task(TaskSpec::new(CmdId(1), &b"x"[..]).needs_auth())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Auth);
    assert!(server.task_frames().is_empty());
}

/// An async source that waits 1.5 s on its (here: virtual) network holds no thread: it is no
/// stall, though longer than the watchdog's threshold. Before, it was counted as one, which
/// hid the real stalls among slow lookups. A call that blocks its thread is still reported
/// (`ipsource_call_limits.rs`: a loaded source blocked past its limit).
#[tokio::test(start_paused = true)]
async fn the_watchdog_counts_no_stall_for_an_async_plugin_call_that_only_waits() {
    let server = MockLongLinkServer::start_echo(codec()).await.unwrap();
    let slow = Arc::new(
        StaticIpSource::new()
            .with_host("slow.example", [server.ip_port()])
            .with_delay(Duration::from_millis(1500)),
    );
    let config = ClientConfig::builder(codec())
        .link_hosts("default-longlink", ["slow.example"], [server.addr().port()])
        .ip_source(slow)
        .watchdog_threshold(Duration::from_millis(500))
        .build()
        .unwrap();
    let client = Client::start(config).unwrap();
    let resp = client
        .start_task(TaskSpec::new(CmdId(1), &b"slow"[..]))
        .await
        .unwrap();
    assert_eq!(&resp.body[..], b"slow");
    assert_eq!(client.stats().await.unwrap().watchdog_stalls, 0);
}

#[tokio::test(start_paused = true)]
async fn link_events_report_each_status_with_its_reason() {
    let server = MockLongLinkServer::builder(codec())
        .script(ConnScript::echo().reply(Reply::close()))
        .start()
        .await
        .unwrap();
    let (client, mut events) = client_and_events_for(&server);
    let _ = client
        .start_task(TaskSpec::new(CmdId(1), &b"x"[..]).with_retry_count(0))
        .await;
    let mut seen = Vec::new();
    while seen.len() < 3 {
        seen.push(events.recv().await.unwrap());
    }
    assert_eq!(seen[0].status, LinkStatus::Connecting);
    assert!(matches!(seen[1].status, LinkStatus::Connected(_)));
    assert_eq!(seen[2].status, LinkStatus::Disconnected);
    assert!(seen[2].reason.is_some());
}

/// A task whose request is built by its encoder as it goes out: the server gets (and the echo
/// server returns) the encoder's body, built once for the one attempt.
#[tokio::test(start_paused = true)]
async fn a_request_encoder_builds_the_request_as_it_goes_out() {
    let server = MockLongLinkServer::start_echo(codec()).await.unwrap();
    let client = client_for(&server);
    let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counter = calls.clone();
    let encoder = phobos_stn::RequestEncoder::new(move |cx| {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let link = match cx.via {
            phobos_stn::EncodeVia::LongLink(link) => link.as_str().to_owned(),
            _ => "?".to_owned(),
        };
        Ok(phobos_stn::EncodedRequest::body(format!(
            "{} on {link}",
            cx.task
        )))
    });
    let spec = TaskSpec::new(CmdId(7), Vec::new()).with_encoder(encoder);
    let resp = client.start_task(spec).await.unwrap();
    let body = String::from_utf8(resp.body.to_vec()).unwrap();
    assert!(body.ends_with(" on default-longlink"), "{body}");
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    let frames = server.task_frames();
    assert_eq!(frames.len(), 1);
    assert_eq!(&frames[0].body[..], body.as_bytes());
    client.shutdown().await;
}

/// A config made around a core config gets the checks `build` makes when the client starts:
/// before, a link of hosts with no IP source to resolve them started, and every task ended
/// with `Dial(NoAddress)` after its whole total timeout.
#[tokio::test]
async fn a_config_from_a_core_config_is_checked_against_its_ip_sources_at_start() {
    let core = phobos_stn::Config::builder(codec())
        .link(
            phobos_stn::LinkConfig::new("default-longlink")
                .hosts(["long.example.com"])
                .ports([8080]),
        )
        .build()
        .unwrap();
    let err = Client::start(ClientConfig::from_core(core.clone())).unwrap_err();
    assert_eq!(
        err,
        phobos_stn::ConfigError::NoIpSource("default-longlink".into())
    );
    // With a source it starts.
    let with_source = ClientConfig::from_core(core)
        .with_ip_sources(vec![
            Arc::new(StaticIpSource::new()) as Arc<dyn phobos_plugin_api::IpSource>
        ]);
    let client = Client::start(with_source).unwrap();
    client.shutdown().await;
}
