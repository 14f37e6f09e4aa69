//! Core throughput of the sans-IO engine alone (no sockets, no driver).
//!
//! - `task_cycle/idle_link`: one task start → Send → response bytes → TaskEnded, on a
//!   connected link with nothing else pending.
//! - `task_cycle/10k_pending`: the same cycle while 10 000 other tasks are running on the
//!   link (timer table and running set at size).
//! - `queued_10k/connect_send_answer`: 10 000 tasks queued while the link is down, then the
//!   connect, the single dispatch pass that sends them all, and one buffer holding all
//!   10 000 responses.
//! - `queued_10k/start_while_down`: admitting 10 000 tasks while the link is down.
//!
//! Run: `cargo bench -p phobos-stn-proto --bench scheduler_tick`.

// `criterion_group!` generates an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use phobos_codec_mars::MarsCodec;
use phobos_plugin_api::{CmdId, FrameHead, IpPort, PacketCodec, Seq, TaskId};
use phobos_stn_proto::{Action, Config, ConnId, Engine, Event, LinkConfig, TaskSpec};

const BODY: &[u8] = &[0x5A; 100];

fn engine(t0: Instant) -> Engine {
    let addr: IpPort = "10.0.0.1:8080"
        .parse::<std::net::SocketAddr>()
        .unwrap()
        .into();
    let config = Config::builder(Arc::new(MarsCodec::default()))
        .link(LinkConfig::new("default-longlink").addrs([addr]))
        .build()
        .unwrap();
    Engine::new(config, t0).unwrap()
}

fn drain(e: &mut Engine) -> (Option<ConnId>, usize) {
    let mut attempt = None;
    let mut ended = 0;
    while let Some(a) = e.poll_action() {
        if let Action::Connect { attempt: c, .. } = a {
            attempt = Some(c);
        }
    }
    while let Some(ev) = e.poll_event() {
        if matches!(ev, Event::TaskEnded(_)) {
            ended += 1;
        }
    }
    (attempt, ended)
}

/// A connected engine and its connection.
fn connected(t0: Instant) -> (Engine, ConnId) {
    let mut e = engine(t0);
    e.connect_link(t0, "default-longlink");
    let conn = drain(&mut e).0.unwrap();
    e.handle_connected(t0, conn);
    drain(&mut e);
    (e, conn)
}

/// A response frame template; `response(template, id)` patches the sequence number.
fn template() -> Vec<u8> {
    let mut out = Vec::new();
    MarsCodec::default()
        .encode(FrameHead::new(CmdId(1), Seq(1)), BODY, &[], &mut out)
        .unwrap();
    out
}

fn patch(buf: &mut [u8], id: TaskId) {
    buf[12..16].copy_from_slice(&id.0.to_be_bytes());
}

fn spec() -> TaskSpec {
    TaskSpec::new(CmdId(1), BODY).with_limits(false, false)
}

fn task_cycle(c: &mut Criterion) {
    let mut group = c.benchmark_group("task_cycle");
    group.throughput(Throughput::Elements(1));
    for pending in [0usize, 10_000] {
        let name = if pending == 0 {
            "idle_link"
        } else {
            "10k_pending"
        };
        let t0 = Instant::now();
        let (mut e, conn) = connected(t0);
        for _ in 0..pending {
            e.start_task(t0, spec());
        }
        drain(&mut e);
        let mut frame = template();
        let mut now = t0;
        group.bench_function(name, |b| {
            b.iter(|| {
                now += Duration::from_micros(10);
                let id = e.start_task(now, spec());
                drain(&mut e);
                patch(&mut frame, id);
                e.handle_bytes(now, conn, &frame);
                let (_, ended) = drain(&mut e);
                // The response must still match its task, or another path is being timed.
                assert_eq!(ended, 1, "the task ended");
                black_box(ended)
            })
        });
    }
    group.finish();
}

fn queued_10k(c: &mut Criterion) {
    const N: usize = 10_000;
    let mut group = c.benchmark_group("queued_10k");
    group.throughput(Throughput::Elements(N as u64));
    group.sample_size(20);
    group.bench_function("start_while_down", |b| {
        b.iter_batched(
            || engine(Instant::now()),
            |mut e| {
                let t0 = Instant::now();
                for _ in 0..N {
                    e.start_task(t0, spec());
                }
                drain(&mut e);
                e
            },
            BatchSize::LargeInput,
        )
    });
    group.bench_function("connect_send_answer", |b| {
        b.iter_batched(
            || {
                let t0 = Instant::now();
                let mut e = engine(t0);
                let ids: Vec<TaskId> = (0..N).map(|_| e.start_task(t0, spec())).collect();
                let conn = drain(&mut e).0.unwrap();
                let one = template();
                let mut all = Vec::with_capacity(one.len() * N);
                for id in ids {
                    let start = all.len();
                    all.extend_from_slice(&one);
                    patch(&mut all[start..], id);
                }
                (e, conn, all, t0)
            },
            |(mut e, conn, all, t0)| {
                let now = t0 + Duration::from_millis(40);
                e.handle_connected(now, conn);
                drain(&mut e);
                e.handle_bytes(now + Duration::from_millis(45), conn, &all);
                let (_, ended) = drain(&mut e);
                assert_eq!(ended, N);
                e
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, task_cycle, queued_10k);
criterion_main!(benches);
