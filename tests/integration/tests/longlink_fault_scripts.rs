//! Randomized: under random mock-server fault scripts, every task started gets exactly one
//! end, and the driver stays healthy.
//!
//! Each case draws scripts for the first few connections (refuse, never read, answer with
//! echoes, stalls, delays, malformed frames, closes mid-frame, pushes, dropped heartbeats)
//! and a stream of tasks with random retry counts, budgets and cancels, all from one seed.
//! The second test adds the fault proxy between client and server, with random latency,
//! jitter, bandwidth caps, slicing, corruption, stalls, closes and resets per direction.
//! Some tasks go through one [`TaskBatch`] (both `start` and `start_like`, the batch lane's
//! way), some canceled at random times: every key a batch call returned gets exactly one end.
//! The third test draws calmer scripts (mostly echoes) and more batch tasks, so that faults
//! meet batches the lane is answering together. In every case an end handler runs on the
//! driver beside them ([`Client::run_on_driver`]), starting and canceling tasks from its
//! calls: every key it was given ends exactly once, in one of its calls.
//! Cases: `PHOBOS_FAULT_CASES` (default 12). A failing case prints its seed.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use phobos_codec_mars::MarsCodec;
use phobos_plugin_api::CmdId;
use phobos_stn::{
    BatchEnd, Client, ClientConfig, EndGroup, EndHandler, HandlerError, Starter, TaskBatch,
    TaskKey, TaskSpec,
};
use phobos_test_support::{
    ConnScript, DirectionFaults, FaultProxy, Malformation, MockLongLinkServer, ProxyConfig, Reply,
    Step,
};
use rand::{Rng, SeedableRng};

/// A random reply; with `calm`, nine in ten are plain echoes.
fn random_reply(rng: &mut impl Rng, calm: bool) -> Reply {
    if calm && rng.gen_bool(0.9) {
        return Reply::echo();
    }
    match rng.gen_range(0..100) {
        0..=39 => Reply::echo(),
        40..=49 => Reply::stall(),
        50..=64 => Reply::delayed(
            Duration::from_millis(rng.gen_range(0..20_000)),
            Reply::echo(),
        ),
        65..=69 => Reply::close_mid_frame(),
        70..=74 => Reply::close(),
        75..=84 => Reply::malformed(Malformation::ALL[rng.gen_range(0..4)]),
        85..=94 => Reply::body(vec![rng.gen(); rng.gen_range(0..64)]),
        _ => Reply::steps(vec![
            Step::Push {
                cmd: CmdId(rng.gen_range(1..1000)),
                body: b"p".to_vec(),
            },
            Step::Respond(None),
        ]),
    }
}

fn random_script(rng: &mut impl Rng, calm: bool) -> ConnScript {
    let mut s = match rng.gen_range(0..100) {
        0..=9 => return ConnScript::refuse(),
        10..=14 => return ConnScript::never_read(),
        _ => ConnScript::echo(),
    };
    if rng.gen_bool(0.2) {
        s = s.drop_heartbeats();
    }
    for _ in 0..rng.gen_range(0..6) {
        s = s.reply(random_reply(rng, calm));
    }
    s.default_reply(random_reply(rng, calm))
}

fn random_faults(rng: &mut impl Rng) -> DirectionFaults {
    let maybe = |rng: &mut dyn rand::RngCore, p: f64, max: u64| {
        rng.gen_bool(p).then(|| rng.gen_range(0..max))
    };
    DirectionFaults {
        latency: Duration::from_millis(rng.gen_range(0..300)),
        jitter: Duration::from_millis(rng.gen_range(0..200)),
        bandwidth: rng.gen_bool(0.2).then(|| rng.gen_range(1_000..100_000)),
        slice: rng.gen_bool(0.3).then(|| rng.gen_range(1..16)),
        slice_gap: Duration::ZERO,
        corrupt_probability: if rng.gen_bool(0.1) { 0.01 } else { 0.0 },
        stall_after: maybe(rng, 0.1, 5_000),
        close_after: maybe(rng, 0.1, 5_000),
        reset_after: maybe(rng, 0.1, 5_000),
    }
}

/// One case. `calm`: mostly echoes and more tasks by batch, so that batches run long in the
/// batch lane (their responses ended together) before a fault meets them.
async fn run_case(seed: u64, through_proxy: bool, calm: bool) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let codec = Arc::new(MarsCodec::default());
    let mut builder = MockLongLinkServer::builder(codec.clone());
    for _ in 0..rng.gen_range(1..5) {
        builder = builder.script(random_script(&mut rng, calm));
    }
    let server = builder.start().await.unwrap();
    let mut target = server.ip_port();
    let mut _proxy = None;
    if through_proxy {
        let config = ProxyConfig::new(server.addr(), seed)
            .client_to_server(random_faults(&mut rng))
            .server_to_client(random_faults(&mut rng));
        let proxy = FaultProxy::start(config).await.unwrap();
        target = proxy.ip_port();
        _proxy = Some(proxy);
    }
    let config = ClientConfig::builder(codec)
        .link_addrs("default-longlink", [target])
        .core(|c| c.seed(seed))
        .build()
        .unwrap();
    let client = Client::start(config).unwrap();
    client.set_foreground(rng.gen_bool(0.7));

    let handler = client.run_on_driver(RandomHandler {
        rng: Box::new(rand::rngs::StdRng::seed_from_u64(seed ^ 0x5eed)),
        left: rng.gen_range(0..if calm { 120 } else { 40 }),
        started: Vec::new(),
        ended: HashSet::new(),
        twice: None,
    });
    let n = rng.gen_range(1..30);
    // The handler aborted at a random point, in some cases.
    let abort_at = rng.gen_bool(0.25).then(|| rng.gen_range(0..n));
    let mut ends = Vec::new();
    let mut batch = client.task_batch();
    let mut batch_keys: Vec<TaskKey> = Vec::new();
    for i in 0..n {
        if abort_at == Some(i) {
            handler.abort();
        }
        // A batch task canceled at a random later point (maybe ended already: a no-op).
        if !batch_keys.is_empty() && rng.gen_bool(if calm { 0.05 } else { 0.2 }) {
            batch.cancel(batch_keys[rng.gen_range(0..batch_keys.len())]);
        }
        if rng.gen_bool(if calm { 0.5 } else { 0.2 }) {
            start_batch_tasks(&mut rng, &mut batch, &mut batch_keys);
            if rng.gen_bool(0.5) {
                tokio::time::sleep(Duration::from_millis(rng.gen_range(0..3_000))).await;
            }
            continue;
        }
        let mut spec = TaskSpec::new(
            CmdId(rng.gen_range(1..10)),
            vec![i as u8; rng.gen_range(0..200)],
        )
        .with_retry_count(rng.gen_range(0..3));
        if rng.gen_bool(0.3) {
            spec = spec.with_total_timeout(Duration::from_millis(rng.gen_range(1..60_000)));
        }
        let handle = client.start_task(spec);
        if rng.gen_bool(0.1) {
            handle.cancel();
        }
        ends.push(tokio::spawn(handle.end()));
        if rng.gen_bool(0.5) {
            tokio::time::sleep(Duration::from_millis(rng.gen_range(0..3_000))).await;
        }
    }
    for (i, end) in ends.into_iter().enumerate() {
        // Virtual time: an hour is far beyond any task budget (at most 600 s).
        let end = tokio::time::timeout(Duration::from_secs(3600), end)
            .await
            .unwrap_or_else(|_| panic!("seed {seed}: task {i} never ended"))
            .unwrap();
        assert!(end.is_some(), "seed {seed}: task {i}: driver stopped");
    }
    let batch_ends = tokio::time::timeout(Duration::from_secs(3600), all_ends(&mut batch))
        .await
        .unwrap_or_else(|_| panic!("seed {seed}: a batch task never ended"));
    let mut ended = HashSet::new();
    for end in &batch_ends {
        assert!(
            ended.insert(end.key),
            "seed {seed}: {:?} ended twice",
            end.key
        );
    }
    let started: HashSet<TaskKey> = batch_keys.iter().copied().collect();
    assert_eq!(ended, started, "seed {seed}: batch tasks and their ends");
    // Finished, or aborted: every key it was given ended once in its calls, or is listed as
    // never given to it, not both.
    let (handler, undelivered) =
        match tokio::time::timeout(Duration::from_secs(3600), handler).await {
            Ok(Ok(handler)) => (handler, Vec::new()),
            Ok(Err(HandlerError::Aborted {
                handler,
                undelivered,
            })) if abort_at.is_some() => (handler, undelivered),
            Ok(Err(e)) => panic!("seed {seed}: the handler did not finish: {e}"),
            Err(_) => panic!("seed {seed}: a handler's task never ended"),
        };
    assert_eq!(
        handler.twice, None,
        "seed {seed}: a handler's task ended twice"
    );
    let started: HashSet<TaskKey> = handler.started.iter().copied().collect();
    assert_eq!(
        started.len(),
        handler.started.len(),
        "seed {seed}: keys given twice"
    );
    let mut accounted = handler.ended.clone();
    for key in undelivered {
        assert!(
            accounted.insert(key),
            "seed {seed}: {key:?} ended and listed"
        );
    }
    assert_eq!(
        accounted, started,
        "seed {seed}: handler tasks and their ends"
    );
    let stats = client.stats().await.expect("driver alive");
    assert_eq!(stats.tasks_in_flight, 0, "seed {seed}");
    client.shutdown().await;
}

/// A few random tasks: by specs, or by one set of parameters (the batch lane's way).
enum Draw {
    Like(Box<TaskSpec>, Vec<(CmdId, Bytes)>),
    Specs(Vec<TaskSpec>),
}

fn draw_tasks(rng: &mut impl Rng, max: usize) -> Draw {
    let n = rng.gen_range(1..=max);
    let mut params = TaskSpec::new(CmdId(rng.gen_range(1..10)), Bytes::new())
        .with_retry_count(rng.gen_range(0..3));
    if rng.gen_bool(0.3) {
        params = params.with_total_timeout(Duration::from_millis(rng.gen_range(1..60_000)));
    }
    if rng.gen_bool(0.5) {
        let requests: Vec<(CmdId, Bytes)> = (0..n)
            .map(|i| {
                let len = rng.gen_range(0..200);
                (CmdId(rng.gen_range(1..10)), Bytes::from(vec![i as u8; len]))
            })
            .collect();
        Draw::Like(Box::new(params), requests)
    } else {
        let specs: Vec<TaskSpec> = (0..n)
            .map(|i| {
                let mut spec = params.clone();
                spec.cmd_id = CmdId(rng.gen_range(1..10));
                spec.body = Bytes::from(vec![i as u8; rng.gen_range(0..200)]);
                spec
            })
            .collect();
        Draw::Specs(specs)
    }
}

/// Starts a few tasks through `batch` ([`draw_tasks`]) and adds their keys to `keys`.
fn start_batch_tasks(rng: &mut impl Rng, batch: &mut TaskBatch, keys: &mut Vec<TaskKey>) {
    let (n, started): (usize, Vec<TaskKey>) = match draw_tasks(rng, 39) {
        Draw::Like(params, requests) => (
            requests.len(),
            batch.start_like(&params, requests).collect(),
        ),
        Draw::Specs(specs) => (specs.len(), batch.start(specs).collect()),
    };
    assert_eq!(started.len(), n);
    keys.extend(started);
}

/// An end handler run on the driver beside the other tasks: it starts random tasks
/// ([`draw_tasks`]) until `left` is used up, cancels some of its own, and starts more from
/// most of its calls. Every key it was given must end exactly once, in one of its calls.
struct RandomHandler {
    /// Boxed: the handler comes back inside the outcome's `Result`.
    rng: Box<rand::rngs::StdRng>,
    left: usize,
    started: Vec<TaskKey>,
    ended: HashSet<TaskKey>,
    twice: Option<TaskKey>,
}

impl RandomHandler {
    fn more(&mut self, tasks: &mut Starter<'_>) {
        if !self.started.is_empty() && self.rng.gen_bool(0.1) {
            tasks.cancel(self.started[self.rng.gen_range(0..self.started.len())]);
        }
        if self.left == 0 {
            return;
        }
        let (n, keys): (usize, Vec<TaskKey>) = match draw_tasks(&mut self.rng, self.left.min(20)) {
            Draw::Like(params, requests) => (
                requests.len(),
                tasks.start_like(&params, requests).collect(),
            ),
            Draw::Specs(specs) => (specs.len(), tasks.start(specs).collect()),
        };
        assert_eq!(keys.len(), n);
        self.left -= n;
        self.started.extend(keys);
    }
}

impl EndHandler for RandomHandler {
    fn start(&mut self, tasks: &mut Starter<'_>) {
        self.more(tasks);
    }

    fn on_ends(&mut self, ends: EndGroup, tasks: &mut Starter<'_>) {
        for end in &ends {
            if !self.ended.insert(end.key()) {
                self.twice.get_or_insert(end.key());
            }
        }
        if self.rng.gen_bool(0.7) {
            self.more(tasks);
        }
    }
}

/// Every end of `batch`, until none is outstanding.
async fn all_ends(batch: &mut TaskBatch) -> Vec<BatchEnd> {
    let mut all = Vec::new();
    while batch.recv_many(&mut all).await > 0 {}
    assert_eq!(batch.outstanding(), 0);
    all
}

/// Cases per test: `PHOBOS_FAULT_CASES`, default 12.
fn cases() -> u64 {
    std::env::var("PHOBOS_FAULT_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12)
}

#[tokio::test(start_paused = true)]
async fn every_task_gets_exactly_one_end_under_random_server_faults() {
    for seed in 0..cases() {
        run_case(seed, false, false).await;
    }
}

#[tokio::test(start_paused = true)]
async fn every_task_gets_exactly_one_end_under_random_server_and_network_faults() {
    for seed in 0..cases() {
        run_case(1_000 + seed, true, false).await;
    }
}

#[tokio::test(start_paused = true)]
async fn every_batch_task_gets_exactly_one_end_when_faults_meet_busy_batches() {
    for seed in 0..cases() {
        run_case(2_000 + seed, seed % 2 == 1, true).await;
    }
}
