//! A burst of uploads over a slow link, through real kernel TCP: `n` long-link tasks of
//! `body` bytes started at once by a Phobos client (default profile) against the lab's echo
//! server, across a veth pair capped by `tbf` at `rate` bits a second each way. Counts, per
//! run, the tasks that succeeded, the connections made during the burst (a new one means the
//! link was dropped), and the time the burst took. Needs
//! root.
//!
//! ```text
//! cargo run --release -p phobos-lab --bin lab-uplink -- [--rate BITS] [--tasks N] [--body BYTES] [--runs R]
//! ```
//!
//! The defaults (98,304 bit/s, that is 12 KiB/s, Mars's minimum Wi-Fi rate; 15 tasks of
//! 20 KiB; 3 runs) are the case of `framework/stn-proto/src/tests/uplink.rs`: each request
//! fits its own first-packet timeout at that rate, but those pipelined behind it leave
//! after it, up to 25 s later.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use phobos_lab::contender::{Contender, TaskResult};
use phobos_lab::netns::{Lab, NetFaults, Side};
use phobos_lab::server::{LabServer, ServerFaults};

struct Args {
    rate: u64,
    tasks: usize,
    body: usize,
    runs: usize,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        rate: 98_304,
        tasks: 15,
        body: 20 * 1024,
        runs: 3,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || -> anyhow::Result<u64> {
            let v = it
                .next()
                .ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))?;
            Ok(v.parse()?)
        };
        match flag.as_str() {
            "--rate" => a.rate = value()?,
            "--tasks" => a.tasks = value()? as usize,
            "--body" => a.body = value()? as usize,
            "--runs" => a.runs = value()? as usize,
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    anyhow::ensure!(
        a.rate > 0 && a.tasks > 0 && a.runs > 0,
        "zero is not a setting"
    );
    Ok(a)
}

/// One run: a fresh lab, the burst, and what came of it.
struct Run {
    ok: usize,
    failures: Vec<String>,
    /// Connections made during the burst (after the first task's).
    connects: u64,
    took: Duration,
}

fn run_once(a: &Args, seed: u64) -> anyhow::Result<Run> {
    let lab = Lab::create(1)?;
    lab.apply(&NetFaults {
        rate_bits: Some(a.rate),
        ..NetFaults::default()
    })?;
    let server = LabServer::start(&lab, ServerFaults::default())?;
    let addr = SocketAddr::from((lab.server_addrs()[0], server.port()));
    let (tasks, body) = (a.tasks, a.body);
    let run = lab.run_in(Side::Client, move || -> Result<Run, String> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async move {
            let client =
                Arc::new(Contender::Phobos.start(&[addr], Duration::from_secs(40), seed)?);
            // Connected first, so the burst is one dispatch pass over a link that is up.
            let warm = client
                .run_task(Bytes::from_static(b"warm"), Duration::from_secs(40))
                .await;
            if warm != TaskResult::Success {
                return Err(format!("the first task: {warm:?}"));
            }
            let connects_before = client.connects();
            let t0 = Instant::now();
            let handles: Vec<_> = (0..tasks)
                .map(|i| {
                    let client = client.clone();
                    let body = Bytes::from(vec![i as u8; body]);
                    tokio::spawn(
                        async move { client.run_task(body, Duration::from_secs(40)).await },
                    )
                })
                .collect();
            let mut ok = 0;
            let mut failures = Vec::new();
            for h in handles {
                match h.await.map_err(|e| e.to_string())? {
                    TaskResult::Success => ok += 1,
                    other => failures.push(format!("{other:?}")),
                }
            }
            let took = t0.elapsed();
            let connects = client.connects() - connects_before;
            if let Ok(client) = Arc::try_unwrap(client) {
                client.shutdown().await;
            }
            Ok(Run {
                ok,
                failures,
                connects,
                took,
            })
        })
    })?;
    let _ = server.stop();
    run.map_err(|e| anyhow::anyhow!(e))
}

fn main() -> anyhow::Result<()> {
    let a = args()?;
    // `PHOBOS_LAB_LOG=1`: the client's log (link drops and their reasons) on stderr;
    // `PHOBOS_LAB_LOG=debug`: every task's progress too.
    if let Some(level) = std::env::var_os("PHOBOS_LAB_LOG") {
        let level = if level == "debug" {
            tracing::Level::DEBUG
        } else {
            tracing::Level::INFO
        };
        tracing_subscriber::fmt()
            .with_max_level(level)
            .with_writer(std::io::stderr)
            .init();
    }
    phobos_lab::netns::check_root()?;
    phobos_lab::netns::ensure_tools()?;
    println!(
        "{} tasks of {} bytes at once over tbf {} bit/s each way, Phobos default profile \
         ({}; {})",
        a.tasks,
        a.body,
        a.rate,
        phobos_lab::matrix::machine_description(),
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC")
    );
    println!("| run | succeeded | new connections | burst took | failures |");
    println!("|---|---|---|---|---|");
    for r in 0..a.runs {
        let run = run_once(&a, 7 + r as u64)?;
        let mut failures = run.failures.clone();
        failures.sort();
        failures.dedup();
        println!(
            "| {} | {} of {} | {} | {:.1} s | {} |",
            r + 1,
            run.ok,
            a.tasks,
            run.connects,
            run.took.as_secs_f64(),
            if failures.is_empty() {
                "none".to_string()
            } else {
                failures.join("; ")
            }
        );
    }
    Ok(())
}
