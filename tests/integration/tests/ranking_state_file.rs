//! The IP ranking's state file through the real driver: it stays bounded however many
//! networks a client sees, records unused for a day leave it even when it is saved daily,
//! and writing it never holds up the driver.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use phobos_plugin_api::{CmdId, NetKind};
use phobos_stn::{Client, ClientConfig, TaskSpec};
use phobos_stn_proto::RankingState;
use phobos_test_support::MockLongLinkServer;

mod common;
use common::codec;

fn client_with_state(server: &MockLongLinkServer, path: &Path) -> Client {
    let config = ClientConfig::builder(codec())
        .link_addrs("default-longlink", [server.ip_port()])
        .ranking_state_file(path)
        .build()
        .unwrap();
    let client = Client::start(config).unwrap();
    client.set_foreground(true);
    client
}

fn read_state(path: &Path) -> RankingState {
    RankingState::from_json(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn labels(state: &RankingState) -> Vec<String> {
    state.networks.iter().map(|n| n.label.clone()).collect()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn the_state_file_keeps_the_16_most_recently_used_networks_over_many_sessions() {
    let server = MockLongLinkServer::start_echo(codec()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ranking.json");
    // One session a network, 24 networks (before: every one stayed in the file forever).
    for i in 0..24 {
        let c = client_with_state(&server, &path);
        c.set_network(NetKind::Wifi, format!("wifi_ssid_{i:02}"));
        c.start_task(TaskSpec::new(CmdId(1), &b"x"[..]))
            .await
            .unwrap();
        c.shutdown().await;
    }
    let state = read_state(&path);
    let expected: Vec<String> = (8..24).map(|i| format!("wifi_ssid_{i:02}")).collect();
    assert_eq!(labels(&state), expected);
}

#[tokio::test]
async fn a_network_unused_for_a_day_leaves_the_state_file_though_the_file_is_recent() {
    let server = MockLongLinkServer::start_echo(codec()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ranking.json");
    let now = unix_now();
    let network = |label: &str, used: u64| {
        format!(
            r#"{{"label":"{label}","last_used_unix":{used},"addrs":[{{"addr":{{"ip":"10.0.0.1","port":443}},"history":1,"successes":3,"failures":1,"rtt_ms":40,"last_used_unix":{used}}}]}}"#
        )
    };
    // Saved an hour ago by a client that runs daily; one network last used two days ago.
    std::fs::write(
        &path,
        format!(
            r#"{{"version":1,"saved_at_unix":{},"networks":[{},{}]}}"#,
            now - 3_600,
            network("wifi_two_days_ago", now - 2 * 86_400),
            network("wifi_two_hours_ago", now - 2 * 3_600),
        ),
    )
    .unwrap();
    let c = client_with_state(&server, &path);
    c.start_task(TaskSpec::new(CmdId(1), &b"x"[..]))
        .await
        .unwrap();
    c.shutdown().await;
    let state = read_state(&path);
    assert_eq!(labels(&state), vec!["wifi_two_hours_ago", "default"]);
    let kept = &state.networks[0];
    assert_eq!(
        kept.last_used_unix,
        Some(now - 2 * 3_600),
        "its age is kept"
    );
}

/// The save cannot run: the runtime's only blocking thread is taken, and saves run on the
/// blocking pool. The driver must answer meanwhile (before, it wrote inside its loop, so it
/// answered nothing until the write ended; with a 20.9 MB state that was 2.75 s of a debug
/// build's loop).
///
/// (This test used to hold the write up with a FIFO at the temporary file's name; the write
/// now removes whatever is at that name instead of opening it.)
#[test]
fn the_driver_answers_while_a_save_is_held_up() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let server = MockLongLinkServer::start_echo(codec()).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("held_up.json");
        let c = client_with_state(&server, &path);
        c.start_task(TaskSpec::new(CmdId(1), &b"x"[..]))
            .await
            .unwrap();
        // Take the one blocking thread until the test lets it go.
        let (release, held) = std::sync::mpsc::channel::<()>();
        let (taken_tx, taken) = tokio::sync::oneshot::channel();
        let blocker = tokio::task::spawn_blocking(move || {
            let _ = taken_tx.send(());
            let _ = held.recv();
        });
        taken.await.unwrap();
        // Drops the link and saves; the save waits for the blocking thread.
        c.set_network(NetKind::Wifi, "wifi_new");
        // Only a hang guard: the answer comes at once, or (the write in the loop) never.
        let answered = tokio::time::timeout(Duration::from_secs(10), c.stats()).await;
        let done = tokio::time::timeout(
            Duration::from_secs(10),
            c.start_task(TaskSpec::new(CmdId(1), &b"y"[..])),
        )
        .await;
        assert!(!path.exists(), "the save ran although it could not");
        release.send(()).unwrap();
        blocker.await.unwrap();
        assert!(answered.is_ok(), "stats waited for the save");
        assert!(
            matches!(done, Ok(Ok(_))),
            "a task waited for the save: {done:?}"
        );
        // Shutdown completes only once the final state is written.
        c.shutdown().await;
        assert_eq!(labels(&read_state(&path)), vec!["default", "wifi_new"]);
    });
}
