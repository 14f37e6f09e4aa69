//! A burst of uploads over a slow link, through real kernel TCP: `n` long-link tasks of
//! `body` bytes started at once by a Phobos client (default profile) against the lab's echo
//! server, across a veth pair capped by `tbf` at `rate` bits a second each way: one cell of
//! the scenario matrix ([`run_cell`]), run `runs` times. Counts, per run, the tasks that
//! succeeded, the connections made after the first (a new one means the link was dropped),
//! and when the last task ended. `--tls` runs the client over TLS (the lab's `phobos-tls`
//! contender) instead of plain TCP. Needs root.
//!
//! ```text
//! cargo run --release -p phobos-lab --bin lab-uplink -- [--rate BITS] [--tasks N] [--body BYTES] [--runs R] [--tls]
//! ```
//!
//! The defaults (98,304 bit/s, that is 12 KiB/s, Mars's minimum Wi-Fi rate; 15 tasks of
//! 20 KiB; 3 runs) are the case of `framework/stn-proto/src/tests/uplink.rs`: each request
//! fits its own first-packet timeout at that rate, but those pipelined behind it leave
//! after it, up to 25 s later. `RUST_LOG=phobos_stn=info` (or `debug`) shows the client's
//! log on stderr: why a link went down, and each task's progress.

use std::io::IsTerminal;
use std::time::Duration;

use phobos_lab::contender::{Contender, Link};
use phobos_lab::matrix::{run_cell, CellSeeds, Scenario, Workload};
use phobos_lab::server::ServerFaults;

struct Args {
    rate: u64,
    tasks: usize,
    body: usize,
    runs: usize,
    tls: bool,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        rate: 98_304,
        tasks: 15,
        body: 20 * 1024,
        runs: 3,
        tls: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || -> anyhow::Result<u64> {
            let v = it
                .next()
                .ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))?;
            Ok(v.parse()?)
        };
        if flag == "--tls" {
            a.tls = true;
            continue;
        }
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

fn main() -> anyhow::Result<()> {
    let a = args()?;
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .init();
    }
    phobos_lab::netns::check_root()?;
    phobos_lab::netns::ensure_tools()?;
    let scenario = Scenario::fault(
        &format!("tbf {} bit/s", a.rate),
        ServerFaults::default(),
        Some(a.rate),
    );
    // Mars's default total timeout (40 s): a task's budget, as an app would have it.
    let workload = Workload {
        tasks: a.tasks,
        interval: Duration::ZERO,
        task_timeout: Duration::from_secs(40),
        body_len: a.body,
    };
    println!(
        "{} tasks of {} bytes at once over tbf {} bit/s each way, Phobos default profile{} \
         ({}; {})",
        a.tasks,
        a.body,
        a.rate,
        if a.tls { " over TLS" } else { "" },
        phobos_lab::matrix::machine_description(),
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC")
    );
    println!("| run | succeeded | new connections | last end | failures |");
    println!("|---|---|---|---|---|");
    for r in 0..a.runs {
        let seeds = CellSeeds {
            client: 7 + r as u64,
            proxy: 7,
        };
        let contender = if a.tls {
            Contender::PhobosTls
        } else {
            Contender::Phobos
        };
        let cell = run_cell(&scenario, Link::Long, contender, workload, r, seeds)?;
        let failures: Vec<String> = cell
            .failures
            .iter()
            .map(|(reason, n)| format!("{n} × {reason}"))
            .collect();
        println!(
            "| {} | {} of {} | {} | {:.1} s | {} |",
            r + 1,
            cell.successes,
            cell.tasks,
            cell.reconnects,
            cell.completions
                .last()
                .copied()
                .unwrap_or_default()
                .as_secs_f64(),
            if failures.is_empty() {
                "none".to_string()
            } else {
                failures.join("; ")
            }
        );
    }
    Ok(())
}
