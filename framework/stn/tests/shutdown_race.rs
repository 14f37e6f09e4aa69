//! A shutdown racing task starts from other tasks on other threads: every task started,
//! before, during or after the shutdown, gets exactly one end (its response, or
//! [`LocalError::Reset`]), and none waits forever.
//!
//! (The narrowest window is a start whose push into the command channel is under way at the
//! instant the driver lets go of it; the driver's `Commands` drop waits such a push out.
//! That wait used to end early whenever the driver's task had spent its tokio budget, and
//! then a task waited for its end for ever: this test failed 2 of 8 runs and 2 of 5 runs
//! that way, on 2026-11-29, and passed 24 of 24 once the wait ran unconstrained. With the
//! wait taken out entirely it still passed 5 runs of 5, so the window proper is not
//! reliably reached.)

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use phobos_codec_mars::MarsCodec;
use phobos_plugin_api::CmdId;
use phobos_stn::{Client, ClientConfig, LocalError, Response, TaskError, TaskSpec};
use phobos_test_support::MockLongLinkServer;

fn spec(p: usize, i: usize) -> TaskSpec {
    TaskSpec::new(CmdId(7), format!("producer {p} task {i}").into_bytes())
}

/// An end is a response or the shutdown's reset; anything else is a defect here.
fn check(outcome: &Result<Response, TaskError>) {
    match outcome {
        Ok(_) | Err(TaskError::Local(LocalError::Reset)) => {}
        Err(e) => panic!("an end neither answered nor reset: {e:?}"),
    }
}

/// Starts tasks one by one and in batches of five, yielding between starts, until `stop`
/// and then `after` more; then waits for every end. Returns (ends, resets).
async fn produce(
    client: Client,
    p: usize,
    started: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) -> (usize, usize) {
    let mut handles = Vec::new();
    let mut batches = Vec::new();
    let mut i = 0;
    let mut after = 0;
    while after < 20 {
        if stop.load(Ordering::Acquire) {
            after += 1;
        }
        if i % 4 == 3 {
            batches.push(client.start_tasks((0..5).map(|k| spec(p, i * 10 + k))));
            started.fetch_add(5, Ordering::Relaxed);
        } else {
            handles.push(client.start_task(spec(p, i)));
            started.fetch_add(1, Ordering::Relaxed);
        }
        i += 1;
        tokio::task::yield_now().await;
    }
    let (mut ends, mut resets) = (0, 0);
    for handle in handles {
        let outcome = handle.await;
        check(&outcome);
        ends += 1;
        resets += usize::from(outcome.is_err());
    }
    for mut batch in batches {
        let mut got = Vec::new();
        let mut all = Vec::new();
        while batch.recv_many(&mut got).await > 0 {
            all.append(&mut got);
        }
        assert_eq!(all.len(), 5, "a batch of five got {} ends", all.len());
        let mut keys: Vec<_> = all.iter().map(|e| e.key).collect();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), 5, "a task of a batch ended twice");
        for end in &all {
            check(&end.outcome);
            resets += usize::from(end.outcome.is_err());
        }
        ends += all.len();
    }
    (ends, resets)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_started_while_the_client_shuts_down_each_get_one_end() {
    let mut resets_seen = 0;
    for round in 0..20 {
        let server = MockLongLinkServer::start_echo(Arc::new(MarsCodec::default()))
            .await
            .unwrap();
        let config = ClientConfig::builder(Arc::new(MarsCodec::default()))
            .link_addrs("default-longlink", [server.ip_port()])
            .build()
            .unwrap();
        let client = Client::start(config).unwrap();
        client.set_foreground(true);
        let started = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let producers: Vec<_> = (0..3)
            .map(|p| {
                let task = produce(client.clone(), p, started.clone(), stop.clone());
                tokio::spawn(task)
            })
            .collect();
        // Shut down once tasks are under way, at a different point each round.
        while started.load(Ordering::Relaxed) < 30 + round * 15 {
            tokio::task::yield_now().await;
        }
        client.shutdown().await;
        stop.store(true, Ordering::Release);
        let mut ends = 0;
        for producer in producers {
            // Only a hang guard: every end comes at once after the shutdown, or never.
            let (e, r) = tokio::time::timeout(Duration::from_secs(60), producer)
                .await
                .expect("a task waited forever for its end")
                .unwrap();
            ends += e;
            resets_seen += r;
        }
        assert_eq!(ends, started.load(Ordering::Relaxed), "round {round}");
    }
    // The tasks started after the shutdown were reset, in every round.
    assert!(resets_seen >= 20 * 3 * 19, "{resets_seen} resets");
}

/// Two shutdowns at once both return only once the driver has stopped and its final state
/// file is written (the doc's promise): the one whose command the driver did not take
/// returned as soon as the loop stopped, and a process exiting then (a `BlockingClient`
/// dropped while the app shuts down) lost the file. The
/// runtime's one blocking thread is held until the test has looked, so the final save cannot
/// be done before.
#[test]
fn two_shutdowns_at_once_both_wait_for_the_final_state_file() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let codec = Arc::new(MarsCodec::default());
        let server = MockLongLinkServer::start_echo(codec.clone()).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ranking.json");
        let config = ClientConfig::builder(codec)
            .link_addrs("default-longlink", [server.ip_port()])
            .ranking_state_file(&path)
            .build()
            .unwrap();
        let client = Client::start(config).unwrap();
        client.start_task(spec(0, 0)).await.unwrap();
        // The blocking pool's one thread waits for the gate: the final save queues behind it.
        let (open, gate) = std::sync::mpsc::channel::<()>();
        let held = tokio::task::spawn_blocking(move || gate.recv());
        // Both shutdowns' commands are sent in one go (each future's first poll sends it).
        let (a, b) = (client.clone(), client.clone());
        let (first, second) = (a.shutdown(), b.shutdown());
        tokio::pin!(first, second);
        let polled = |f: std::pin::Pin<&mut _>| {
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            std::future::Future::poll(f, &mut cx).is_ready()
        };
        assert!(!polled(first.as_mut()) && !polled(second.as_mut()));
        // Until the driver's loop has stopped (it answers nothing any more), and a while:
        // neither may have returned.
        while client.stats().await.is_ok() {
            tokio::task::yield_now().await;
        }
        for _ in 0..200 {
            tokio::task::yield_now().await;
        }
        assert!(!polled(first.as_mut()), "returned before the final save");
        assert!(!polled(second.as_mut()), "returned before the final save");
        assert!(!path.exists());
        open.send(()).unwrap();
        first.await;
        second.await;
        assert!(
            path.exists(),
            "both returned once the state file was written"
        );
        held.await.unwrap().unwrap();
    });
}

/// A login that never answers.
#[derive(Debug, Default)]
struct EndlessLogin {
    /// Set when a call starts.
    called: Arc<AtomicBool>,
    /// Set when the call's future is dropped.
    dropped: Arc<AtomicBool>,
}

/// Sets its flag when dropped.
struct SetOnDrop(Arc<AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[async_trait::async_trait]
impl phobos_plugin_api::AuthCheck for EndlessLogin {
    fn name(&self) -> &str {
        "endless"
    }
    fn is_authed(&self, _: &str) -> bool {
        false
    }
    async fn ensure_authed(&self, _: &str) -> Result<(), phobos_plugin_api::AuthError> {
        self.called.store(true, Ordering::SeqCst);
        let _armed = SetOnDrop(self.dropped.clone());
        std::future::pending().await
    }
}

/// A login call still running when the client shuts down is stopped with it, not left on
/// the app's runtime holding the plugin (an app making clients anew gathered them).
#[tokio::test(start_paused = true)]
async fn a_login_still_running_is_stopped_with_the_client() {
    let codec = Arc::new(MarsCodec::default());
    let server = MockLongLinkServer::start_echo(codec.clone()).await.unwrap();
    let auth = Arc::new(EndlessLogin::default());
    let (called, dropped) = (auth.called.clone(), auth.dropped.clone());
    let config = ClientConfig::builder(codec)
        .link_addrs("default-longlink", [server.ip_port()])
        .auth(auth)
        .build()
        .unwrap();
    let client = Client::start(config).unwrap();
    let task = client.start_task(spec(0, 0).needs_auth());
    while !called.load(Ordering::SeqCst) {
        tokio::task::yield_now().await;
    }
    client.shutdown().await;
    assert_eq!(task.await.unwrap_err(), TaskError::Local(LocalError::Reset));
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(
        dropped.load(Ordering::SeqCst),
        "the login call was left running"
    );
}
