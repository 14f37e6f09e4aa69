//! Randomized: under random mock-server fault scripts, every task started gets exactly one
//! end, and the driver stays healthy.
//!
//! Each case draws scripts for the first few connections (refuse, never read, answer with
//! echoes, stalls, delays, malformed frames, closes mid-frame, pushes, dropped heartbeats)
//! and a stream of tasks with random retry counts, budgets and cancels, all from one seed.
//! The second test adds the fault proxy between client and server, with random latency,
//! jitter, bandwidth caps, slicing, corruption, stalls, closes and resets per direction.
//! Cases: `PHOBOS_FAULT_CASES` (default 12). A failing case prints its seed.

use std::sync::Arc;
use std::time::Duration;

use phobos_codec_mars::MarsCodec;
use phobos_plugin_api::CmdId;
use phobos_stn::{Client, ClientConfig, TaskSpec};
use phobos_test_support::{
    ConnScript, DirectionFaults, FaultProxy, Malformation, MockLongLinkServer, ProxyConfig, Reply,
    Step,
};
use rand::{Rng, SeedableRng};

fn random_reply(rng: &mut impl Rng) -> Reply {
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

fn random_script(rng: &mut impl Rng) -> ConnScript {
    let mut s = match rng.gen_range(0..100) {
        0..=9 => return ConnScript::refuse(),
        10..=14 => return ConnScript::never_read(),
        _ => ConnScript::echo(),
    };
    if rng.gen_bool(0.2) {
        s = s.drop_heartbeats();
    }
    for _ in 0..rng.gen_range(0..6) {
        s = s.reply(random_reply(rng));
    }
    s.default_reply(random_reply(rng))
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

async fn run_case(seed: u64, through_proxy: bool) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let codec = Arc::new(MarsCodec::default());
    let mut builder = MockLongLinkServer::builder(codec.clone());
    for _ in 0..rng.gen_range(1..5) {
        builder = builder.script(random_script(&mut rng));
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

    let n = rng.gen_range(1..30);
    let mut ends = Vec::new();
    for i in 0..n {
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
    let stats = client.stats().await.expect("driver alive");
    assert_eq!(stats.tasks_in_flight, 0, "seed {seed}");
    client.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn every_task_gets_exactly_one_end_under_random_server_faults() {
    let cases: u64 = std::env::var("PHOBOS_FAULT_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    for seed in 0..cases {
        run_case(seed, false).await;
    }
}

#[tokio::test(start_paused = true)]
async fn every_task_gets_exactly_one_end_under_random_server_and_network_faults() {
    let cases: u64 = std::env::var("PHOBOS_FAULT_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    for seed in 0..cases {
        run_case(1_000 + seed, true).await;
    }
}
