//! Timeouts in virtual time: a stalled server costs a first-packet timeout, then the retry
//! goes out on a new connection.

use std::time::Duration;

use phobos_plugin_api::CmdId;
use phobos_stn::{Client, ClientConfig, ErrorKind, TaskError, TaskSpec, TimeoutLevel};
use phobos_stn_proto::SocketFailure;
use phobos_test_support::{ConnScript, MockLongLinkServer, Reply};
use tokio::time::Instant;

mod common;
use common::{client_for, codec, ends_once, first_connection_stalls};

/// Mars's base first-packet timeout on Wi-Fi.
const FIRST_PACKET: Duration = Duration::from_secs(12);

#[tokio::test(start_paused = true)]
async fn a_stall_costs_a_first_packet_timeout_and_the_retry_uses_a_new_connection() {
    let server = first_connection_stalls().await;
    let client = client_for(&server);
    let t0 = Instant::now();
    let resp = client
        .start_task(TaskSpec::new(CmdId(1), &b"retry me"[..]))
        .await
        .unwrap();
    assert_eq!(&resp.body[..], b"retry me");
    assert!(t0.elapsed() >= FIRST_PACKET, "{:?}", t0.elapsed());
    assert_eq!(server.connection_count(), 2);
    let frames = server.task_frames();
    assert_eq!(frames.len(), 2);
    assert_eq!((frames[0].conn, frames[1].conn), (0, 1));
    let first_wait = frames[1].at - frames[0].at;
    assert!(first_wait >= FIRST_PACKET, "{first_wait:?}");
}

#[tokio::test(start_paused = true)]
async fn without_retries_a_stall_ends_with_a_first_packet_timeout() {
    let server = first_connection_stalls().await;
    let client = client_for(&server);
    let t0 = Instant::now();
    let err = client
        .start_task(TaskSpec::new(CmdId(1), &b"x"[..]).with_retry_count(0))
        .await
        .unwrap_err();
    assert_eq!(err, TaskError::Timeout(TimeoutLevel::FirstPacket));
    assert_eq!(err.kind(), ErrorKind::Timeout(TimeoutLevel::FirstPacket));
    let e = t0.elapsed();
    assert!(
        e >= FIRST_PACKET && e < FIRST_PACKET + Duration::from_secs(1),
        "{e:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_task_total_timeout_ends_it_with_the_total_level() {
    let server = MockLongLinkServer::builder(codec())
        .default_script(ConnScript::echo().default_reply(Reply::stall()))
        .start()
        .await
        .unwrap();
    let client = client_for(&server);
    let t0 = Instant::now();
    let err = client
        .start_task(TaskSpec::new(CmdId(1), &b"x"[..]).with_total_timeout(Duration::from_secs(5)))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout(TimeoutLevel::Total));
    assert_eq!(t0.elapsed(), Duration::from_secs(5));
}

#[tokio::test(start_paused = true)]
async fn a_server_that_never_reads_is_caught_by_the_unanswered_heartbeat() {
    let server = MockLongLinkServer::builder(codec())
        .default_script(ConnScript::never_read())
        .start()
        .await
        .unwrap();
    let client = client_for(&server);
    let err = client
        .start_task(TaskSpec::new(CmdId(1), &b"x"[..]).with_retry_count(0))
        .await
        .unwrap_err();
    // The heartbeat sent right after connect goes unanswered 8 s later, before the
    // first-packet timeout (12 s).
    assert_eq!(err, TaskError::Socket(SocketFailure::HeartbeatTimeout));
}

#[tokio::test(start_paused = true)]
async fn a_refused_address_ends_the_task_with_a_dial_error() {
    let dead = phobos_test_support::refused_addr().await.unwrap();
    let config = ClientConfig::builder(codec())
        .link_addrs("default-longlink", [dead.into()])
        .build()
        .unwrap();
    let client = Client::start(config).unwrap();
    client.set_foreground(true);
    let err = client
        .start_task(TaskSpec::new(CmdId(1), &b"x"[..]).with_retry_count(0))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Dial, "{err:?}");
}

#[tokio::test(start_paused = true)]
async fn a_stalled_link_saving_a_large_burst_as_zombies_recovers_every_task() {
    // 20,000 tasks with a total timeout stall on the first connection; its first-packet
    // timeout drops it (shared fate) and saves them all as zombies, which restart on the
    // next connection. (Saving each zombie once scanned all the others: at 100,000 tasks that
    // blocked the driver for 44 s, past every task's budget.)
    const N: usize = 20_000;
    let server = MockLongLinkServer::builder(codec())
        .script(ConnScript::echo().default_reply(Reply::stall()))
        .default_script(ConnScript::echo())
        .start()
        .await
        .unwrap();
    let client = client_for(&server);
    let t0 = Instant::now();
    let mut batch = client.start_tasks((0..N).map(|i| {
        TaskSpec::new(CmdId(1), (i as u32).to_be_bytes().to_vec())
            .with_limits(false, false)
            .with_retry_count(0)
            .with_total_timeout(Duration::from_secs(40))
    }));
    for end in ends_once(&mut batch, N).await {
        let profile = end.profile().expect("a profile");
        assert!(end.outcome.is_ok(), "{:?}: {:?}", end.key, end.outcome);
        assert_eq!(profile.zombie_rounds, 1);
    }
    assert!(t0.elapsed() >= FIRST_PACKET);
    assert_eq!(server.connection_count(), 2);
    assert_eq!(client.stats().await.unwrap().tasks_in_flight, 0);
}
