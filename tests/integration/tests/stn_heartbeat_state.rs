//! The driver keeps the heartbeat policy's learnt state in a file across client runs.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use phobos_plugin_api::{CmdId, HeartbeatContext, HeartbeatPolicy, HeartbeatPolicyFactory};
use phobos_stn::{Client, ClientConfig, TaskSpec};
use phobos_test_support::MockLongLinkServer;

mod common;
use common::codec;

/// Counts answered heartbeats; its state is `acks=N`.
#[derive(Debug, Default)]
struct Counting {
    acks: Arc<AtomicUsize>,
    imported: Mutex<Vec<String>>,
}

impl HeartbeatPolicyFactory for Counting {
    fn name(&self) -> &str {
        "counting"
    }
    fn build(&self, _now: Instant, _ctx: &HeartbeatContext) -> Box<dyn HeartbeatPolicy> {
        Box::new(CountingPolicy {
            acks: self.acks.clone(),
        })
    }
    fn export_state(&self) -> Option<String> {
        Some(format!("acks={}", self.acks.load(Ordering::SeqCst)))
    }
    fn import_state(&self, state: &str) -> bool {
        self.imported.lock().unwrap().push(state.to_owned());
        let Some(n) = state
            .strip_prefix("acks=")
            .and_then(|n| n.trim().parse().ok())
        else {
            return false;
        };
        self.acks.store(n, Ordering::SeqCst);
        true
    }
}

#[derive(Debug)]
struct CountingPolicy {
    acks: Arc<AtomicUsize>,
}

impl HeartbeatPolicy for CountingPolicy {
    fn next_interval(&mut self, _now: Instant, _ctx: &HeartbeatContext) -> Option<Duration> {
        Some(Duration::from_secs(60))
    }
    fn on_ack(&mut self, _now: Instant, _rtt: Duration) {
        self.acks.fetch_add(1, Ordering::SeqCst);
    }
}

fn client(server: &MockLongLinkServer, factory: Arc<Counting>, file: &std::path::Path) -> Client {
    let config = ClientConfig::builder(codec())
        .link_addrs("default-longlink", [server.ip_port()])
        .heartbeat(factory)
        .heartbeat_state_file(file)
        .build()
        .unwrap();
    let client = Client::start(config).unwrap();
    client.set_foreground(true);
    client
}

/// An echo server, and a client with a fresh counting policy keeping its state in `file`,
/// connected: its first task got its answer.
async fn connected(file: &std::path::Path) -> (MockLongLinkServer, Arc<Counting>, Client) {
    let server = MockLongLinkServer::start_echo(codec()).await.unwrap();
    let factory = Arc::new(Counting::default());
    let c = client(&server, factory.clone(), file);
    let resp = c
        .start_task(TaskSpec::new(CmdId(1), &b"hi"[..]))
        .await
        .unwrap();
    assert_eq!(&resp.body[..], b"hi");
    (server, factory, c)
}

/// [`connected`], then left running for 150 s: heartbeats are answered right after connect
/// and at 60 s and 120 s; the next one is due at 180 s.
async fn after_150_s(file: &std::path::Path) -> (MockLongLinkServer, Arc<Counting>, Client) {
    let running = connected(file).await;
    tokio::time::sleep(Duration::from_secs(150)).await;
    running
}

#[tokio::test(start_paused = true)]
async fn learnt_heartbeat_state_is_saved_at_shutdown_and_restored_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("heartbeat.state");
    let (server, first, c) = after_150_s(&file).await;
    c.shutdown().await;
    let acks = first.acks.load(Ordering::SeqCst);
    assert!(acks >= 2, "{acks} heartbeats answered");
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        format!("acks={acks}")
    );

    let second = Arc::new(Counting::default());
    let c = client(&server, second.clone(), &file);
    c.start_task(TaskSpec::new(CmdId(1), &b"hi"[..]))
        .await
        .unwrap();
    assert_eq!(*second.imported.lock().unwrap(), [format!("acks={acks}")]);
    assert!(second.acks.load(Ordering::SeqCst) >= acks);
    c.shutdown().await;
}

/// What the policy learns is on disk after each answered heartbeat, with no link drop and no
/// shutdown: a mobile app is usually killed by the OS, and then nothing else saves it.
#[tokio::test(start_paused = true)]
async fn learnt_heartbeat_state_is_on_disk_after_each_answer_before_any_drop_or_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("heartbeat.state");
    let (server, factory, c) = after_150_s(&file).await;
    let acks = factory.acks.load(Ordering::SeqCst);
    assert!(acks >= 3, "{acks} heartbeats answered");
    // Written on the blocking pool: give the write a moment (virtual seconds, well before
    // the next heartbeat).
    let mut saved = String::new();
    for _ in 0..20 {
        saved = std::fs::read_to_string(&file).unwrap_or_default();
        if saved == format!("acks={acks}") {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(saved, format!("acks={acks}"), "saved while the link is up");
    assert_eq!(server.connection_count(), 1, "no link drop");
    c.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn an_unreadable_state_file_is_ignored_and_the_client_works() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("heartbeat.state");
    std::fs::write(&file, b"\xff\xfe not a state").unwrap();
    let (_server, factory, c) = connected(&file).await;
    // Not UTF-8: never handed to the policy.
    assert!(factory.imported.lock().unwrap().is_empty());
    c.shutdown().await;
    // Shutdown replaced it with a good state.
    assert!(std::fs::read_to_string(&file).unwrap().starts_with("acks="));
}

#[tokio::test(start_paused = true)]
async fn a_state_the_policy_rejects_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("heartbeat.state");
    std::fs::write(&file, "garbage").unwrap();
    let (_server, factory, c) = connected(&file).await;
    assert_eq!(*factory.imported.lock().unwrap(), ["garbage".to_owned()]);
    c.shutdown().await;
    // The rejected text did not survive: shutdown wrote the policy's own state over it.
    let saved = std::fs::read_to_string(&file).unwrap();
    assert_eq!(
        saved,
        format!("acks={}", factory.acks.load(Ordering::SeqCst))
    );
}

#[tokio::test(start_paused = true)]
async fn a_folder_where_the_state_file_should_be_is_left_alone_and_nothing_else_is_left() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("heartbeat.state");
    std::fs::create_dir(&file).unwrap();
    std::fs::write(file.join("keep"), "inside").unwrap();
    let (_server, factory, c) = connected(&file).await;
    // The save at shutdown cannot replace a folder: a warning, and no temporary file left
    // behind beside it.
    c.shutdown().await;
    assert!(factory.imported.lock().unwrap().is_empty());
    assert_eq!(
        std::fs::read_to_string(file.join("keep")).unwrap(),
        "inside"
    );
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["heartbeat.state"]);
}

/// Two clients configured with one state file, saving at once: the file always ends as one
/// client's whole state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_sharing_one_state_file_each_write_a_whole_state() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("heartbeat.state");
    let server = MockLongLinkServer::start_echo(codec()).await.unwrap();
    for _ in 0..10 {
        // Nothing to import: each client keeps the count it is given.
        let _ = std::fs::remove_file(&file);
        let factories = [Arc::new(Counting::default()), Arc::new(Counting::default())];
        factories[0].acks.store(7, Ordering::SeqCst);
        factories[1].acks.store(1_234_567, Ordering::SeqCst);
        let clients: Vec<Client> = factories
            .iter()
            .map(|f| client(&server, f.clone(), &file))
            .collect();
        let [a, b] = [&clients[0], &clients[1]];
        tokio::join!(a.shutdown(), b.shutdown());
        let saved = std::fs::read_to_string(&file).unwrap();
        // Each client saves its count at shutdown (a heartbeat answered since its start,
        // on the link the foreground brought up, counts too).
        let whole: Vec<String> = factories
            .iter()
            .map(|f| format!("acks={}", f.acks.load(Ordering::SeqCst)))
            .collect();
        assert!(
            whole.contains(&saved),
            "a mixed state: {saved:?}, not one of {whole:?}"
        );
    }
    let left = std::fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(left, 1, "no temporary file is left behind");
}

/// State files named by mistake as FIFOs: the client starts (the FIFOs are not read),
/// works and shuts down, and its saves replace them with its states. (Reading one waited for
/// a writer forever: the driver never started.)
#[cfg(unix)]
#[test]
fn fifos_where_the_state_files_should_be_are_not_read_and_the_client_works() {
    let dir = tempfile::tempdir().unwrap();
    let heartbeat = dir.path().join("heartbeat.state");
    let ranking = dir.path().join("ranking.json");
    for fifo in [&heartbeat, &ranking] {
        let made = std::process::Command::new("mkfifo")
            .arg(fifo)
            .status()
            .unwrap();
        assert!(made.success());
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let files = (heartbeat.clone(), ranking.clone());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let body = rt.block_on(async move {
            let server = MockLongLinkServer::start_echo(codec()).await.unwrap();
            let config = ClientConfig::builder(codec())
                .link_addrs("default-longlink", [server.ip_port()])
                .heartbeat(Arc::new(Counting::default()))
                .heartbeat_state_file(&files.0)
                .ranking_state_file(&files.1)
                .build()
                .unwrap();
            let c = Client::start(config).unwrap();
            let resp = c
                .start_task(TaskSpec::new(CmdId(1), &b"hi"[..]))
                .await
                .unwrap();
            c.shutdown().await;
            resp.body
        });
        let _ = tx.send(body);
    });
    // Generous: a loaded machine is slow, and the old code never got here at all.
    let body = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("the client started, worked and shut down");
    assert_eq!(&body[..], b"hi");
    assert!(std::fs::read_to_string(&heartbeat)
        .unwrap()
        .starts_with("acks="));
    assert!(std::fs::metadata(&ranking).unwrap().is_file());
}
