//! End handlers run on the driver ([`Client::run_on_driver`]) over a real socket against
//! the mock server: every task a handler starts gets exactly one end, in a call of the
//! handler or in the list of its stopped outcome, and a handler that panics or loops on
//! refused tasks does not take the client down.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use phobos_plugin_api::CmdId;
use phobos_stn::{EndGroup, EndHandler, ErrorKind, HandlerError, Starter, TaskKey, TaskSpec};
use phobos_test_support::{ConnScript, MockLongLinkServer, Reply};

mod common;

use common::{cancel_ends_it, client_for, client_whose_first_requests_stall, codec};

fn body(i: u32) -> Bytes {
    Bytes::from(format!("task {i}").into_bytes())
}

/// What a handler saw: each task's end, by key (as the body's text, or the error's kind).
type Seen = HashMap<TaskKey, Result<String, ErrorKind>>;

/// Records an end, asserting it is the task's first.
fn record(seen: &mut Seen, ends: &EndGroup) {
    for end in ends {
        let what = match end.outcome() {
            Ok(r) => Ok(String::from_utf8_lossy(&r.body).into_owned()),
            Err(e) => Err(e.kind()),
        };
        assert!(
            seen.insert(end.key(), what).is_none(),
            "{:?} ended twice",
            end.key()
        );
    }
}

/// Keeps `in_flight` tasks outstanding until `total` started, half by `start_like`, half
/// by `start`, and remembers which body each key carried.
struct Chain {
    in_flight: u32,
    total: u32,
    next: u32,
    params: TaskSpec,
    sent: HashMap<TaskKey, u32>,
    seen: Seen,
    calls: usize,
}

impl Chain {
    fn new(in_flight: u32, total: u32) -> Self {
        Chain {
            in_flight,
            total,
            next: 0,
            params: TaskSpec::new(CmdId(0), Bytes::new()).with_retry_count(1),
            sent: HashMap::new(),
            seen: Seen::new(),
            calls: 0,
        }
    }

    fn start_up_to(&mut self, n: u32, tasks: &mut Starter<'_>) {
        let n = n.min(self.total - self.next);
        if n == 0 {
            return;
        }
        let first = self.next;
        let keys = if first % 2 == 0 {
            tasks.start_like(
                &self.params,
                (first..first + n).map(|i| (CmdId(7), body(i))),
            )
        } else {
            tasks.start((first..first + n).map(|i| TaskSpec::new(CmdId(7), body(i))))
        };
        assert_eq!(keys.len(), n as usize);
        for (key, i) in keys.zip(first..) {
            self.sent.insert(key, i);
        }
        self.next += n;
    }
}

impl EndHandler for Chain {
    fn start(&mut self, tasks: &mut Starter<'_>) {
        self.start_up_to(self.in_flight, tasks);
    }

    fn on_ends(&mut self, ends: EndGroup, tasks: &mut Starter<'_>) {
        self.calls += 1;
        record(&mut self.seen, &ends);
        self.start_up_to(ends.len() as u32, tasks);
    }
}

#[tokio::test(start_paused = true)]
async fn a_handler_chains_its_tasks_and_gets_each_end_once() {
    let server = MockLongLinkServer::start_echo(codec()).await.unwrap();
    let client = client_for(&server);
    let chain = client
        .run_on_driver(Chain::new(30, 400))
        .await
        .expect("finished");
    assert_eq!(chain.sent.len(), 400);
    assert_eq!(chain.seen.len(), 400);
    for (key, i) in &chain.sent {
        assert_eq!(chain.seen[key], Ok(format!("task {i}")), "{key:?}");
    }
    // Every request went out once, on one connection, and nothing is left running.
    assert_eq!(server.task_frames().len(), 400);
    assert_eq!(server.connection_count(), 1);
    let stats = client.stats().await.unwrap();
    assert_eq!((stats.tasks_in_flight, stats.handlers_running), (0, 0));
    assert!(
        chain.calls >= 400 / 30,
        "ends come in groups: {} calls",
        chain.calls
    );
    // The client's own tasks and handlers share one key space.
    let key = client.start_task(TaskSpec::new(CmdId(7), body(0))).key();
    assert!(chain.sent.keys().all(|k| *k != key));
}

/// Starts nothing.
struct Idle;

impl EndHandler for Idle {
    fn start(&mut self, _: &mut Starter<'_>) {}
    fn on_ends(&mut self, _: EndGroup, _: &mut Starter<'_>) {
        unreachable!("no task, no end");
    }
}

#[tokio::test(start_paused = true)]
async fn a_handler_that_starts_nothing_finishes_at_once() {
    let server = MockLongLinkServer::start_echo(codec()).await.unwrap();
    let client = client_for(&server);
    assert!(client.run_on_driver(Idle).await.is_ok());
    assert_eq!(client.stats().await.unwrap().handlers_running, 0);
}

/// Starts one task refused at admission (a priority out of range) per end, `left` times.
struct Refused {
    left: usize,
    seen: Seen,
}

impl Refused {
    fn next(&mut self, tasks: &mut Starter<'_>) {
        if self.left > 0 {
            self.left -= 1;
            tasks.start([TaskSpec::new(CmdId(7), body(0)).with_priority(9)]);
        }
    }
}

impl EndHandler for Refused {
    fn start(&mut self, tasks: &mut Starter<'_>) {
        self.next(tasks);
    }

    fn on_ends(&mut self, ends: EndGroup, tasks: &mut Starter<'_>) {
        record(&mut self.seen, &ends);
        self.next(tasks);
    }
}

#[tokio::test(start_paused = true)]
async fn tasks_refused_at_once_come_back_to_the_handler_without_holding_up_the_driver() {
    let server = MockLongLinkServer::start_echo(codec()).await.unwrap();
    let client = client_for(&server);
    // Each refused task ends in the pass that admitted it, so the handler is called again
    // at once: a chain far longer than one iteration's passes, which goes on in the
    // iterations that follow at once (no timer has to fire for it: virtual time stands).
    let t0 = tokio::time::Instant::now();
    let refused = client.run_on_driver(Refused {
        left: 5_000,
        seen: Seen::new(),
    });
    // Meanwhile the client's other tasks are served.
    let answered = client.start_task(TaskSpec::new(CmdId(7), body(1))).await;
    assert_eq!(&answered.unwrap().body[..], b"task 1");
    let refused = refused.await.expect("finished");
    assert_eq!(refused.seen.len(), 5_000);
    assert!(refused.seen.values().all(|e| *e == Err(ErrorKind::Param)));
    assert_eq!(server.task_frames().len(), 1);
    assert_eq!(t0.elapsed(), Duration::ZERO, "waited for a timer");
}

/// Starts `stalled` tasks the server never answers and one it answers, then panics when
/// the answer comes.
struct PanicsOnEnd {
    stalled: u32,
}

impl EndHandler for PanicsOnEnd {
    fn start(&mut self, tasks: &mut Starter<'_>) {
        let params = TaskSpec::new(CmdId(0), Bytes::new());
        tasks.start_like(&params, (0..=self.stalled).map(|i| (CmdId(7), body(i))));
    }

    fn on_ends(&mut self, _: EndGroup, _: &mut Starter<'_>) {
        panic!("the handler's own bug");
    }
}

#[tokio::test(start_paused = true)]
async fn a_panicking_handler_is_stopped_its_tasks_canceled_and_the_client_serves_on() {
    // Requests 1 to 3 stall, the fourth is answered.
    let server = MockLongLinkServer::builder(codec())
        .script(
            ConnScript::echo()
                .reply(Reply::stall())
                .reply(Reply::stall())
                .reply(Reply::stall())
                .reply(Reply::echo()),
        )
        .start()
        .await
        .unwrap();
    let client = client_for(&server);
    let outcome = client.run_on_driver(PanicsOnEnd { stalled: 3 }).await;
    match outcome {
        Err(HandlerError::Panicked { message }) => {
            assert!(message.contains("the handler's own bug"), "{message}")
        }
        other => panic!("expected a panic, got {:?}", other.map(|_| ())),
    }
    let stats = client.stats().await.unwrap();
    assert_eq!(stats.handler_panics, 1);
    assert_eq!(stats.handlers_running, 0);
    // The stalled tasks were canceled (no timeout needed to end them).
    assert_eq!(stats.tasks_in_flight, 0);
    let answered = client.start_task(TaskSpec::new(CmdId(7), body(9))).await;
    assert_eq!(&answered.unwrap().body[..], b"task 9");
}

/// Starts `n` tasks and cancels the first when the others have ended.
struct CancelsFirst {
    n: u32,
    first: Option<TaskKey>,
    /// Another batch's task, which the handler tries to cancel too.
    not_its_own: TaskKey,
    seen: Seen,
}

impl EndHandler for CancelsFirst {
    fn start(&mut self, tasks: &mut Starter<'_>) {
        let keys = tasks.start((0..self.n).map(|i| TaskSpec::new(CmdId(7), body(i))));
        self.first = keys.first();
    }

    fn on_ends(&mut self, ends: EndGroup, tasks: &mut Starter<'_>) {
        record(&mut self.seen, &ends);
        if self.seen.len() == self.n as usize - 1 {
            tasks.cancel(self.first.unwrap());
            tasks.cancel(self.not_its_own);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_handler_cancels_its_own_task_and_no_other() {
    // The first two requests stall: a batch's, then the handler's first.
    let (server, client) = client_whose_first_requests_stall(2).await;
    let mut batch = client.task_batch();
    let other = batch
        .start([TaskSpec::new(CmdId(7), body(99))])
        .first()
        .unwrap();
    server.wait_for_task_frames(1).await;
    let handler = CancelsFirst {
        n: 4,
        first: None,
        not_its_own: other,
        seen: Seen::new(),
    };
    let done = client.run_on_driver(handler).await.expect("finished");
    let first = done.first.unwrap();
    assert_eq!(done.seen[&first], Err(ErrorKind::Canceled));
    assert_eq!(done.seen.len(), 4);
    assert!(done
        .seen
        .iter()
        .all(|(k, e)| *k == first || e.as_ref().is_ok_and(|b| b.starts_with("task "))));
    // The batch's task runs on until its own caller cancels it.
    assert_eq!(client.stats().await.unwrap().tasks_in_flight, 1);
    cancel_ends_it(&mut batch, other).await;
}

/// A client of a mock server that leaves every request unanswered.
async fn silent_server_client() -> (MockLongLinkServer, phobos_stn::Client) {
    let server = MockLongLinkServer::builder(codec())
        .script(ConnScript::echo().default_reply(Reply::stall()))
        .start()
        .await
        .unwrap();
    let client = client_for(&server);
    (server, client)
}

/// Asserts that `undelivered` lists exactly the tasks `chain` started, which it never got.
fn all_undelivered(chain: &Chain, mut undelivered: Vec<TaskKey>) {
    undelivered.sort_unstable();
    let mut sent: Vec<TaskKey> = chain.sent.keys().copied().collect();
    sent.sort_unstable();
    assert_eq!(
        undelivered, sent,
        "every task started and not given is listed"
    );
    assert!(chain.seen.is_empty(), "not called with an end");
}

#[tokio::test(start_paused = true)]
async fn shutdown_hands_a_running_handler_back_with_its_unended_tasks() {
    let (server, client) = silent_server_client().await;
    let handle = client.run_on_driver(Chain::new(20, 100));
    server.wait_for_task_frames(20).await;
    client.shutdown().await;
    match handle.await {
        Err(HandlerError::Stopped {
            handler,
            undelivered,
        }) => all_undelivered(&handler, undelivered),
        other => panic!("expected stopped, got {:?}", other.map(|_| ())),
    }
    // A handler given to a stopped client comes back at once, never called.
    match client.run_on_driver(Chain::new(5, 5)).await {
        Err(HandlerError::Stopped {
            handler,
            undelivered: unended,
        }) => {
            assert!(unended.is_empty() && handler.sent.is_empty());
        }
        other => panic!("expected stopped, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn a_runtime_dropped_mid_handler_hands_it_back_as_stopped() {
    let (_server_rt, server, client_rt) = common::stalling_server_and_client_runtime();
    let handle = client_rt.block_on(async {
        let client = client_for(&server);
        let handle = client.run_on_driver(Chain::new(10, 10));
        server.wait_for_task_frames(10).await;
        // The client stays alive: only the runtime's end stops the driver.
        (client, handle)
    });
    let (client, handle) = handle;
    drop(client_rt);
    match handle.wait() {
        Err(HandlerError::Stopped {
            handler,
            undelivered,
        }) => {
            assert_eq!(handler.sent.len(), 10);
            all_undelivered(&handler, undelivered);
        }
        other => panic!("expected stopped, got {:?}", other.map(|_| ())),
    }
    drop(client);
}

#[test]
fn the_blocking_facade_runs_a_handler_to_its_end() {
    let (_rt, _server, client) = common::blocking_client_of_an_echo_server();
    let chain = client.run_on_driver(Chain::new(8, 50)).expect("finished");
    assert_eq!(chain.seen.len(), 50);
    assert!(chain.seen.values().all(|e| e.is_ok()));
    client.shutdown();
}

#[tokio::test(start_paused = true)]
async fn a_link_dying_under_a_handler_still_ends_each_task_once() {
    // The first connection answers five requests and closes mid-frame; every later one is
    // refused, so the rest fail after their retries.
    let script = (0..5).fold(ConnScript::echo(), |s, _| s.reply(Reply::echo()));
    let server = MockLongLinkServer::builder(codec())
        .script(script.reply(Reply::close_mid_frame()))
        .default_script(ConnScript::refuse())
        .start()
        .await
        .unwrap();
    let client = client_for(&server);
    let chain = client
        .run_on_driver(Chain::new(10, 60))
        .await
        .expect("finished");
    assert_eq!(chain.seen.len(), 60);
    assert_eq!(chain.sent.len(), 60);
    let ok = chain.seen.values().filter(|e| e.is_ok()).count();
    assert!(ok >= 5, "{ok} answered");
    // The rest failed at the link (no reset: the driver ran on).
    assert!(chain
        .seen
        .values()
        .all(|e| e.is_ok() || *e != Err(ErrorKind::Local)));
}

/// Starts one task; panics when dropped.
struct PanicsOnDrop;

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        panic!("the handler's drop panicked");
    }
}

impl EndHandler for PanicsOnDrop {
    fn start(&mut self, tasks: &mut Starter<'_>) {
        tasks.start([TaskSpec::new(CmdId(7), body(0))]);
    }

    fn on_ends(&mut self, _: EndGroup, _: &mut Starter<'_>) {}
}

#[tokio::test(start_paused = true)]
async fn a_finished_handler_nobody_waits_for_is_dropped_on_the_driver_under_guard() {
    let server = MockLongLinkServer::start_echo(codec()).await.unwrap();
    let client = client_for(&server);
    // Its handle is dropped at once: the handler finishes with nobody to take it back, and
    // its `Drop` runs on the driver.
    drop(client.run_on_driver(PanicsOnDrop));
    server.wait_for_task_frames(1).await;
    let answered = client.start_task(TaskSpec::new(CmdId(7), body(1))).await;
    assert_eq!(&answered.unwrap().body[..], b"task 1");
    let stats = client.stats().await.unwrap();
    assert_eq!((stats.handlers_running, stats.tasks_in_flight), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn an_aborted_handler_comes_back_with_its_running_tasks_canceled() {
    let (server, client) = silent_server_client().await;
    let handle = client.run_on_driver(Chain::new(12, 100));
    server.wait_for_task_frames(12).await;
    handle.abort();
    match handle.await {
        Err(HandlerError::Aborted {
            handler,
            undelivered,
        }) => all_undelivered(&handler, undelivered),
        other => panic!("expected aborted, got {:?}", other.map(|_| ())),
    }
    let stats = client.stats().await.unwrap();
    assert_eq!((stats.handlers_running, stats.tasks_in_flight), (0, 0));
    // A handler that finished is not touched by a late abort.
    let server = MockLongLinkServer::start_echo(codec()).await.unwrap();
    let client = client_for(&server);
    let handle = client.run_on_driver(Chain::new(3, 3));
    server.wait_for_task_frames(3).await;
    while client.stats().await.unwrap().handlers_running > 0 {
        tokio::task::yield_now().await;
    }
    handle.abort();
    let done = handle.await.expect("finished before the abort");
    assert_eq!(done.seen.len(), 3);
}

/// Starts one task refused at admission per call, for ever; says once when its calls have
/// used up one driver iteration's passes (8), so its next ends wait for the next iteration.
struct RefusedUntilAborted {
    calls: usize,
    reached: Option<tokio::sync::mpsc::UnboundedSender<()>>,
}

impl EndHandler for RefusedUntilAborted {
    fn start(&mut self, tasks: &mut Starter<'_>) {
        tasks.start([TaskSpec::new(CmdId(7), body(0)).with_priority(9)]);
    }

    fn on_ends(&mut self, _: EndGroup, tasks: &mut Starter<'_>) {
        self.calls += 1;
        if self.calls == 8 {
            if let Some(reached) = self.reached.take() {
                let _ = reached.send(());
            }
        }
        tasks.start([TaskSpec::new(CmdId(7), body(0)).with_priority(9)]);
    }
}

/// An abort that finds a handler's ends waiting for the next iteration (its calls used up
/// an iteration's passes) hands them back and leaves the driver idle: it does not go on
/// yielding to itself for ends nobody will take. In virtual time a timer fires only once
/// the runtime has nothing else to do, which a spinning driver never lets happen; the run is
/// guarded so that a spin fails the test instead of hanging it (no real time passes when it
/// passes).
#[test]
fn aborting_a_handler_whose_ends_wait_for_the_next_iteration_leaves_the_driver_idle() {
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            let server = MockLongLinkServer::start_echo(codec()).await.unwrap();
            let client = client_for(&server);
            let (reached_tx, mut reached) = tokio::sync::mpsc::unbounded_channel();
            let handle = client.run_on_driver(RefusedUntilAborted {
                calls: 0,
                reached: Some(reached_tx),
            });
            reached.recv().await.expect("eight calls");
            handle.abort();
            match handle.await {
                Err(HandlerError::Aborted {
                    handler,
                    undelivered,
                }) => {
                    // The end of its last start waited for an iteration it did not get.
                    assert!(handler.calls >= 8);
                    assert_eq!(undelivered.len(), 1);
                }
                other => panic!("expected aborted, got {:?}", other.map(|_| ())),
            }
            let stats = client.stats().await.unwrap();
            assert_eq!((stats.handlers_running, stats.tasks_in_flight), (0, 0));
            let t0 = tokio::time::Instant::now();
            tokio::time::sleep(Duration::from_secs(1)).await;
            assert_eq!(t0.elapsed(), Duration::from_secs(1));
        });
        let _ = done_tx.send(());
    });
    done_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("virtual time never moved after the abort: the driver kept running (spinning)");
}
