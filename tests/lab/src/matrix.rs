//! The scenario matrix: the same echo workload through each [`Contender`] across packet loss
//! × added latency, plus the fault proxy's stream faults.
//!
//! Every (scenario, contender) cell runs in a lab of its own: loss comes from `nft` in the
//! namespaces (each direction independently), latency and stream faults from the fault
//! proxy in front of the server (netem is not available). The workload is open loop: task
//! `i` starts at `i × interval` whatever happened to the others, each with the same total
//! timeout, so a client that stalls cannot slow the offered load down.
//!
//! Per cell: tasks that succeeded within the task timeout, p50/p99 completion time of those,
//! connect attempts and reconnects (completed handshakes beyond the first), and the bytes the
//! veth pair carried (IP packets, headers and retransmissions included).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use phobos_test_support::proxy::SegmentDelay;
use phobos_test_support::DirectionFaults;
use tokio::time::Instant;

use crate::contender::{Contender, TaskResult};
use crate::netns::{Lab, LabError, NetFaults, Side, WireBytes};
use crate::server::{LabServer, ServerFaults};

/// One row of the matrix: the network between client and server.
#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    /// The row's name.
    pub name: String,
    /// Random loss per direction, in percent (`nft`).
    pub loss_percent: u8,
    /// Added round-trip time (fault proxy, half each way).
    pub rtt: Duration,
    /// Stream faults of the fault proxy (latency is added from `rtt`).
    pub proxy: ServerFaults,
    /// A `tbf` rate cap in bits per second.
    pub rate_bits: Option<u64>,
}

/// The offered load of one cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Workload {
    /// Tasks per cell.
    pub tasks: usize,
    /// Time between two task starts.
    pub interval: Duration,
    /// Each task's total timeout; a task counts as a success only within it.
    pub task_timeout: Duration,
    /// Request (and echoed response) body size in bytes.
    pub body_len: usize,
}

/// What one cell measured.
#[derive(Clone, Debug)]
pub struct CellResult {
    /// The row.
    pub scenario: Scenario,
    /// The client.
    pub contender: Contender,
    /// Tasks started.
    pub tasks: usize,
    /// Task ends seen (exactly one per task).
    pub ends: usize,
    /// Tasks that got their echo back within the timeout.
    pub successes: usize,
    /// Tasks whose response body differed from the request.
    pub wrong_bodies: usize,
    /// Failed tasks by the client's reason.
    pub failures: BTreeMap<String, usize>,
    /// Completion times of the successful tasks, sorted.
    pub completions: Vec<Duration>,
    /// Connect attempts.
    pub dials: u64,
    /// Completed handshakes beyond the first.
    pub reconnects: u64,
    /// Bytes on the veth pair during the cell.
    pub wire: WireBytes,
}

impl Workload {
    /// The full matrix's workload: 40 tasks, one every 250 ms, 15 s timeout, 200-byte bodies.
    pub fn full() -> Self {
        Workload {
            tasks: 40,
            interval: Duration::from_millis(250),
            task_timeout: Duration::from_secs(15),
            body_len: 200,
        }
    }
}

impl Scenario {
    /// A row with loss and added RTT only.
    pub fn grid(loss_percent: u8, rtt: Duration) -> Self {
        Scenario {
            name: format!("loss {loss_percent} %, +{} ms RTT", rtt.as_millis()),
            loss_percent,
            rtt,
            proxy: ServerFaults::default(),
            rate_bits: None,
        }
    }

    /// A row with one fault-proxy fault (or a rate cap) and neither loss nor added RTT.
    pub fn fault(name: &str, proxy: ServerFaults, rate_bits: Option<u64>) -> Self {
        Scenario {
            name: name.to_owned(),
            loss_percent: 0,
            rtt: Duration::ZERO,
            proxy,
            rate_bits,
        }
    }

    /// Whether this row is part of the loss × latency grid.
    pub fn is_grid(&self) -> bool {
        self.proxy == ServerFaults::default() && self.rate_bits.is_none()
    }
}

impl CellResult {
    /// Successes over tasks, in percent.
    pub fn success_percent(&self) -> f64 {
        if self.tasks == 0 {
            return 0.0;
        }
        100.0 * self.successes as f64 / self.tasks as f64
    }

    /// The `q` quantile (0–1) of the successful completion times, nearest rank.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        if self.completions.is_empty() {
            return None;
        }
        let n = self.completions.len();
        let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
        Some(self.completions[rank - 1])
    }
}

/// The loss × latency grid: loss {0, 5, 15, 30} % × added RTT {0, 100, 300} ms.
pub fn grid_scenarios() -> Vec<Scenario> {
    let mut v = Vec::new();
    for rtt in [0, 100, 300] {
        for loss in [0, 5, 15, 30] {
            v.push(Scenario::grid(loss, Duration::from_millis(rtt)));
        }
    }
    v
}

/// One row per fault-proxy fault (and a `tbf` rate cap), on an otherwise clean link.
pub fn fault_scenarios() -> Vec<Scenario> {
    let ms = Duration::from_millis;
    let both = |f: DirectionFaults| ServerFaults {
        client_to_server: f.clone(),
        server_to_client: f,
        seed: 7,
        ..Default::default()
    };
    let up = |f: DirectionFaults| ServerFaults {
        client_to_server: f,
        seed: 7,
        ..Default::default()
    };
    vec![
        Scenario::fault(
            "jitter 25 ms + 0–100 ms each way",
            both(DirectionFaults {
                latency: ms(25),
                jitter: ms(100),
                ..Default::default()
            }),
            None,
        ),
        Scenario::fault(
            "segment delay 5 % × 1 s",
            ServerFaults {
                segment_delay: SegmentDelay {
                    probability: 0.05,
                    delay: ms(1_000),
                },
                seed: 7,
                ..Default::default()
            },
            None,
        ),
        Scenario::fault(
            "proxy cap 2 kB/s each way",
            both(DirectionFaults {
                bandwidth: Some(2_000),
                ..Default::default()
            }),
            None,
        ),
        Scenario::fault("tbf 32 kbit/s", ServerFaults::default(), Some(32_000)),
        Scenario::fault(
            "1-byte slices",
            both(DirectionFaults {
                slice: Some(1),
                ..Default::default()
            }),
            None,
        ),
        Scenario::fault(
            "corrupt 0.05 % of bytes",
            both(DirectionFaults {
                corrupt_probability: 0.0005,
                ..Default::default()
            }),
            None,
        ),
        Scenario::fault(
            "stall after 2 kB (per connection)",
            up(DirectionFaults {
                stall_after: Some(2_000),
                ..Default::default()
            }),
            None,
        ),
        Scenario::fault(
            "close after 2 kB (per connection)",
            up(DirectionFaults {
                close_after: Some(2_000),
                ..Default::default()
            }),
            None,
        ),
        Scenario::fault(
            "RST after 2 kB (per connection)",
            up(DirectionFaults {
                reset_after: Some(2_000),
                ..Default::default()
            }),
            None,
        ),
        Scenario::fault(
            "half-open from 2 s for 6 s",
            ServerFaults {
                half_open: Some((ms(2_000), ms(6_000))),
                ..Default::default()
            },
            None,
        ),
    ]
}

/// Runs one cell in a fresh lab.
///
/// # Errors
///
/// When the lab or the server cannot be set up, or the client cannot start.
pub fn run_cell(
    scenario: &Scenario,
    contender: Contender,
    workload: Workload,
    seed: u64,
) -> Result<CellResult, LabError> {
    let lab = Lab::create(1)?;
    lab.apply(&NetFaults {
        loss_percent: scenario.loss_percent,
        rate_bits: scenario.rate_bits,
        ..Default::default()
    })?;
    let mut proxy = scenario.proxy.clone();
    proxy.client_to_server.latency += scenario.rtt / 2;
    proxy.server_to_client.latency += scenario.rtt / 2;
    let server = LabServer::start(&lab, proxy)?;
    let addr = SocketAddr::new(IpAddr::V4(lab.server_addrs()[0]), server.port());
    let before = lab.wire_bytes()?;
    let outcome = lab.run_in(Side::Client, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(drive(contender, addr, workload, seed))
    })?;
    let after = lab.wire_bytes()?;
    server.stop()?;
    let run = outcome.map_err(|e| LabError::Io {
        what: format!("running {contender} in {}", scenario.name),
        source: std::io::Error::other(e),
    })?;
    let mut completions: Vec<Duration> = run
        .tasks
        .iter()
        .filter(|(r, _)| *r == TaskResult::Success)
        .map(|(_, d)| *d)
        .collect();
    completions.sort();
    Ok(CellResult {
        scenario: scenario.clone(),
        contender,
        tasks: workload.tasks,
        ends: run.tasks.len(),
        successes: completions.len(),
        wrong_bodies: run
            .tasks
            .iter()
            .filter(|(r, _)| *r == TaskResult::WrongBody)
            .count(),
        failures: run.tasks.iter().fold(BTreeMap::new(), |mut m, (r, _)| {
            if let TaskResult::Failed(reason) = r {
                *m.entry(reason.clone()).or_insert(0) += 1;
            }
            m
        }),
        completions,
        dials: run.dials,
        reconnects: run.connects.saturating_sub(1),
        wire: WireBytes {
            client_to_server: after.client_to_server - before.client_to_server,
            server_to_client: after.server_to_client - before.server_to_client,
        },
    })
}

/// Runs every (scenario, contender) cell, `parallel` cells at a time, and returns the
/// results in scenario-major order. `progress` is called after each cell.
pub fn run_matrix(
    scenarios: &[Scenario],
    contenders: &[Contender],
    workload: Workload,
    parallel: usize,
    progress: &(dyn Fn(&Result<CellResult, String>) + Sync),
) -> Vec<Result<CellResult, String>> {
    let jobs: Vec<(usize, &Scenario, Contender)> = scenarios
        .iter()
        .flat_map(|s| contenders.iter().map(move |c| (s, *c)))
        .enumerate()
        .map(|(i, (s, c))| (i, s, c))
        .collect();
    let next = Mutex::new(0usize);
    let results: Mutex<Vec<Option<CellOutcome>>> = Mutex::new(vec![None; jobs.len()]);
    std::thread::scope(|scope| {
        for _ in 0..parallel.max(1) {
            scope.spawn(|| loop {
                let job = {
                    let mut n = next.lock().unwrap_or_else(|e| e.into_inner());
                    let j = jobs.get(*n).copied();
                    *n += 1;
                    j
                };
                let Some((i, scenario, contender)) = job else {
                    return;
                };
                let r = run_cell(scenario, contender, workload, 1 + i as u64)
                    .map_err(|e| format!("{} / {contender}: {e}", scenario.name));
                progress(&r);
                results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r);
            });
        }
    });
    let mut out = results.lock().unwrap_or_else(|e| e.into_inner());
    out.iter_mut()
        .map(|r| r.take().unwrap_or_else(|| Err("cell did not run".into())))
        .collect()
}

/// The matrix as Markdown: one row per (scenario, contender).
pub fn markdown_table(results: &[CellResult]) -> String {
    let mut s = String::from(
        "| scenario | client | success | p50 | p99 | dials | reconnects | wire bytes (up / down) \
         | most frequent failure |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in results {
        let q = |q: f64| {
            r.quantile(q).map_or("–".to_string(), |d| {
                format!("{:.0} ms", d.as_secs_f64() * 1e3)
            })
        };
        s.push_str(&format!(
            "| {} | {} | {}/{} ({:.0} %) | {} | {} | {} | {} | {} / {} | {} |\n",
            r.scenario.name,
            r.contender,
            r.successes,
            r.tasks,
            r.success_percent(),
            q(0.5),
            q(0.99),
            r.dials,
            r.reconnects,
            r.wire.client_to_server,
            r.wire.server_to_client,
            r.failures
                .iter()
                .max_by_key(|(_, n)| **n)
                .map_or("–".to_string(), |(why, n)| format!("{n} × {why}")),
        ));
    }
    s
}

/// `nproc`, `uname -r` and the CPU model, for the report header.
pub fn machine_description() -> String {
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    format!("nproc {nproc}, kernel {kernel}, CPU {cpu}")
}

type CellOutcome = Result<CellResult, String>;

struct Run {
    tasks: Vec<(TaskResult, Duration)>,
    dials: u64,
    connects: u64,
}

async fn drive(
    contender: Contender,
    addr: SocketAddr,
    workload: Workload,
    seed: u64,
) -> Result<Run, String> {
    let client = Arc::new(contender.start(&[addr], workload.task_timeout, seed)?);
    let t0 = Instant::now();
    let mut handles = Vec::with_capacity(workload.tasks);
    for i in 0..workload.tasks {
        tokio::time::sleep_until(t0 + workload.interval * i as u32).await;
        let body: Bytes = (0..workload.body_len)
            .map(|j| (i * 31 + j) as u8)
            .collect::<Vec<u8>>()
            .into();
        let client = client.clone();
        let timeout = workload.task_timeout;
        handles.push(tokio::spawn(async move {
            let start = Instant::now();
            let r = client.run_task(body, timeout).await;
            (r, start.elapsed())
        }));
    }
    let mut tasks = Vec::with_capacity(handles.len());
    for h in handles {
        tasks.push(h.await.map_err(|e| format!("task panicked: {e}"))?);
    }
    let (dials, connects) = (client.dials(), client.connects());
    if let Ok(client) = Arc::try_unwrap(client) {
        client.shutdown().await;
    }
    Ok(Run {
        tasks,
        dials,
        connects,
    })
}
