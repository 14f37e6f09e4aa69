//! The scenario matrix: the same echo workload through each [`Contender`] on each [`Link`]
//! across packet loss × added latency, plus the fault proxy's stream faults, repeated
//! [`Plan::runs`] times.
//!
//! Every (scenario, link, contender, run) cell runs in a lab of its own: loss comes from
//! `nft` in the namespaces (each direction independently), latency and stream faults from
//! the fault proxy in front of the server (netem is not available). The workload is open
//! loop: task `i` starts at `i × interval` whatever happened to the others, each with the
//! same total timeout, so a client that stalls cannot slow the offered load down.
//!
//! Per run of a cell ([`CellResult`]): tasks that succeeded within the task timeout, their
//! completion times, connect attempts, completed handshakes (for the long link, those beyond
//! the first are reconnects; the short link opens one per attempt), the connections the
//! server's proxy accepted, and the bytes the veth pair carried (IP packets, headers and
//! retransmissions included). [`summarize`] pools the runs of a cell ([`CellSummary`]):
//! pooled success and quantiles, and the spread between runs.
//!
//! # Repeatability
//!
//! Kernel loss (`nft numgen random`) cannot be seeded, so one run of a lossy cell is one
//! sample; the runs give the spread. Everything else is seeded from [`Plan::seed`], the
//! scenario's name and the run number ([`cell_seeds`]): the client's core (address shuffles,
//! jitter) and the fault proxy (per-connection fault draws, the same for every client of a
//! scenario in a run), so a proxy-fault cell replays run for run, also when rerun alone
//! with a cell filter.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use phobos_test_support::proxy::SegmentDelay;
use phobos_test_support::DirectionFaults;
use tokio::time::Instant;
use tracing::Instrument;

use crate::contender::{Contender, Link, TaskResult};
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

/// What one run of one cell measured.
#[derive(Clone, Debug)]
pub struct CellResult {
    /// The row.
    pub scenario: Scenario,
    /// The link the tasks used.
    pub link: Link,
    /// The client.
    pub contender: Contender,
    /// Which run (0-based).
    pub run: usize,
    /// The seeds this run used.
    pub seeds: CellSeeds,
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
    /// Completed handshakes (the client's view).
    pub connects: u64,
    /// Completed handshakes beyond the first.
    pub reconnects: u64,
    /// Connections the fault proxy in front of the server accepted.
    pub server_connections: u64,
    /// Bytes on the veth pair during the cell.
    pub wire: WireBytes,
}

/// The seeds of one run of one cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CellSeeds {
    /// The client's seed (Phobos's core RNG; the naive clients draw nothing).
    pub client: u64,
    /// The fault proxy's seed.
    pub proxy: u64,
}

/// What to run: every scenario × link × contender, `runs` times.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The rows.
    pub scenarios: Vec<Scenario>,
    /// The links.
    pub links: Vec<Link>,
    /// The clients.
    pub contenders: Vec<Contender>,
    /// Runs of each cell (at least 1).
    pub runs: usize,
    /// The workload of every cell.
    pub workload: Workload,
    /// The base of every seed ([`cell_seeds`]).
    pub seed: u64,
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
        percent(self.successes, self.tasks)
    }

    /// The `q` quantile (0–1) of the successful completion times, nearest rank.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        quantile(&self.completions, q)
    }
}

impl Plan {
    /// Cells per run (scenarios × links × contenders).
    pub fn cells(&self) -> usize {
        self.scenarios.len() * self.links.len() * self.contenders.len()
    }

    /// Keeps the scenarios whose name contains `needle` (case-insensitive).
    pub fn filter_scenarios(&mut self, needle: &str) {
        let needle = needle.to_lowercase();
        self.scenarios
            .retain(|s| s.name.to_lowercase().contains(&needle));
    }
}

/// The seeds of run `run` of (`scenario`, `link`, `contender`) under the plan seed `base`.
///
/// The client seed differs per cell and run. The proxy seed depends on the scenario's own
/// seed, `base` and the run only, so every client of a scenario meets the same fault draws
/// in a run. Both depend on the scenario's name, never on its position, so a filtered
/// rerun uses the same seeds.
pub fn cell_seeds(
    base: u64,
    scenario: &Scenario,
    link: Link,
    contender: Contender,
    run: usize,
) -> CellSeeds {
    let name = fnv1a(scenario.name.as_bytes());
    let run = run as u64;
    let proxy = splitmix64(scenario.proxy.seed ^ splitmix64(base ^ name).wrapping_add(run));
    let client = splitmix64(
        proxy ^ ((link as u64) << 8 | contender as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
    );
    CellSeeds { client, proxy }
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn percent(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        return 0.0;
    }
    100.0 * part as f64 / whole as f64
}

/// The `q` quantile (0–1) of sorted `values`, nearest rank.
fn quantile(values: &[Duration], q: f64) -> Option<Duration> {
    if values.is_empty() {
        return None;
    }
    let n = values.len();
    let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
    Some(values[rank - 1])
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

/// Runs one run of one cell in a fresh lab.
///
/// # Errors
///
/// When the lab or the server cannot be set up, or the client cannot start.
pub fn run_cell(
    scenario: &Scenario,
    link: Link,
    contender: Contender,
    workload: Workload,
    run: usize,
    seeds: CellSeeds,
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
    proxy.seed = seeds.proxy;
    let server = LabServer::start_for(&lab, proxy, link, contender.uses_tls())?;
    let addr = SocketAddr::new(IpAddr::V4(lab.server_addrs()[0]), server.port());
    let before = lab.wire_bytes()?;
    // Every log line of the client names its cell and run (cells run in parallel).
    let span = tracing::info_span!(
        "cell",
        scenario = %scenario.name,
        %link,
        %contender,
        run
    );
    let outcome = lab.run_in(Side::Client, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(drive(contender, link, addr, workload, seeds.client).instrument(span))
    })?;
    let after = lab.wire_bytes()?;
    let server_stats = server.stop()?;
    let run_out = outcome.map_err(|e| LabError::Io {
        what: format!("running {contender} ({link}) in {}", scenario.name),
        source: std::io::Error::other(e),
    })?;
    let mut completions: Vec<Duration> = run_out
        .tasks
        .iter()
        .filter(|(r, _)| *r == TaskResult::Success)
        .map(|(_, d)| *d)
        .collect();
    completions.sort();
    Ok(CellResult {
        scenario: scenario.clone(),
        link,
        contender,
        run,
        seeds,
        tasks: workload.tasks,
        ends: run_out.tasks.len(),
        successes: completions.len(),
        wrong_bodies: run_out
            .tasks
            .iter()
            .filter(|(r, _)| *r == TaskResult::WrongBody)
            .count(),
        failures: run_out.tasks.iter().fold(BTreeMap::new(), |mut m, (r, _)| {
            if let TaskResult::Failed(reason) = r {
                *m.entry(reason.clone()).or_insert(0) += 1;
            }
            m
        }),
        completions,
        dials: run_out.dials,
        connects: run_out.connects,
        reconnects: run_out.connects.saturating_sub(1),
        server_connections: server_stats.connections,
        wire: WireBytes {
            client_to_server: after.client_to_server - before.client_to_server,
            server_to_client: after.server_to_client - before.server_to_client,
        },
    })
}

/// One unit of work of [`run_matrix`].
#[derive(Clone, Copy)]
struct Job<'a> {
    scenario: &'a Scenario,
    link: Link,
    contender: Contender,
    run: usize,
}

/// Runs every cell of `plan` `plan.runs` times, `parallel` cells at a time, and returns the
/// results run by run, each run in scenario, link, contender order. `progress` is called
/// after each cell.
///
/// Design: run-major order puts the contenders of a scenario side by side in time (they
/// share the machine's load), while the runs of one cell are spread over the whole matrix.
pub fn run_matrix(
    plan: &Plan,
    parallel: usize,
    progress: &(dyn Fn(&Result<CellResult, String>) + Sync),
) -> Vec<Result<CellResult, String>> {
    let mut jobs: Vec<Job<'_>> = Vec::with_capacity(plan.cells() * plan.runs);
    for run in 0..plan.runs.max(1) {
        for scenario in &plan.scenarios {
            for &link in &plan.links {
                for &contender in &plan.contenders {
                    jobs.push(Job {
                        scenario,
                        link,
                        contender,
                        run,
                    });
                }
            }
        }
    }
    let next = Mutex::new(0usize);
    let results: Mutex<Vec<Option<CellOutcome>>> = Mutex::new(vec![None; jobs.len()]);
    std::thread::scope(|scope| {
        for _ in 0..parallel.max(1) {
            scope.spawn(|| loop {
                let index = {
                    let mut n = next.lock().unwrap_or_else(|e| e.into_inner());
                    let i = *n;
                    *n += 1;
                    i
                };
                let Some(job) = jobs.get(index).copied() else {
                    return;
                };
                let seeds = cell_seeds(plan.seed, job.scenario, job.link, job.contender, job.run);
                let r = run_cell(
                    job.scenario,
                    job.link,
                    job.contender,
                    plan.workload,
                    job.run,
                    seeds,
                )
                .map_err(|e| {
                    format!(
                        "{} / {} / {} / run {}: {e}",
                        job.scenario.name, job.link, job.contender, job.run
                    )
                });
                progress(&r);
                results.lock().unwrap_or_else(|e| e.into_inner())[index] = Some(r);
            });
        }
    });
    let mut out = results.lock().unwrap_or_else(|e| e.into_inner());
    out.iter_mut()
        .map(|r| r.take().unwrap_or_else(|| Err("cell did not run".into())))
        .collect()
}

/// The failure reason the tables give a task whose echo came back different from what it
/// sent (corruption the protocol did not catch).
pub const WRONG_ECHO: &str = "wrong echo (damaged, no error)";

/// One run of a [`CellSummary`], for the spread.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RunStats {
    /// Which run.
    pub run: usize,
    /// Tasks started.
    pub tasks: usize,
    /// Tasks that succeeded.
    pub successes: usize,
    /// The run's p99 of successful completions.
    pub p99: Option<Duration>,
}

impl RunStats {
    /// Successes over tasks, in percent.
    pub fn success_percent(&self) -> f64 {
        percent(self.successes, self.tasks)
    }
}

/// Every run of one (scenario, link, contender) cell, pooled.
#[derive(Clone, Debug)]
pub struct CellSummary {
    /// The row.
    pub scenario: Scenario,
    /// The link.
    pub link: Link,
    /// The client.
    pub contender: Contender,
    /// Each run, in run order.
    pub runs: Vec<RunStats>,
    /// Tasks started, all runs.
    pub tasks: usize,
    /// Task ends seen, all runs.
    pub ends: usize,
    /// Successes, all runs.
    pub successes: usize,
    /// Wrong echoes, all runs.
    pub wrong_bodies: usize,
    /// Failed tasks by reason, all runs.
    pub failures: BTreeMap<String, usize>,
    /// Successful completion times of all runs, sorted.
    pub completions: Vec<Duration>,
    /// Connect attempts, all runs.
    pub dials: u64,
    /// Completed handshakes, all runs.
    pub connects: u64,
    /// Reconnects (handshakes beyond each run's first), all runs.
    pub reconnects: u64,
    /// Connections the server's proxy accepted, all runs.
    pub server_connections: u64,
    /// Wire bytes, all runs.
    pub wire: WireBytes,
}

impl CellSummary {
    /// Pooled successes over pooled tasks, in percent.
    pub fn success_percent(&self) -> f64 {
        percent(self.successes, self.tasks)
    }

    /// Failed tasks (all runs): not a success within the timeout.
    pub fn failed(&self) -> usize {
        self.tasks - self.successes
    }

    /// The pooled `q` quantile (0–1) of successful completions, nearest rank.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        quantile(&self.completions, q)
    }

    /// The pooled `q` quantile (0–1) of the completion times of *all* tasks, a failed task
    /// counting as never completing: `None` when more than `1 − q` of the tasks failed
    /// (the quantile lies beyond the task timeout). Unlike [`quantile`](Self::quantile), a
    /// client cannot look fast by failing its slow tasks.
    pub fn quantile_all(&self, q: f64) -> Option<Duration> {
        if self.tasks == 0 {
            return None;
        }
        let rank = ((q * self.tasks as f64).ceil() as usize).clamp(1, self.tasks);
        self.completions.get(rank - 1).copied()
    }

    /// The lowest and highest per-run success, in percent.
    pub fn success_range(&self) -> (f64, f64) {
        self.runs
            .iter()
            .map(RunStats::success_percent)
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), s| {
                (lo.min(s), hi.max(s))
            })
    }

    /// The lowest and highest per-run p99 (runs without a success left out).
    pub fn p99_range(&self) -> Option<(Duration, Duration)> {
        let p99s = self.runs.iter().filter_map(|r| r.p99);
        let lo = p99s.clone().min()?;
        Some((lo, p99s.max()?))
    }

    /// `total` divided by the number of runs.
    pub fn per_run(&self, total: u64) -> f64 {
        total as f64 / self.runs.len().max(1) as f64
    }

    /// The most frequent reason a task did not succeed and its count: the client's error,
    /// or [`WRONG_ECHO`] for an echo that came back damaged (the client saw no error).
    pub fn top_failure(&self) -> Option<(&str, usize)> {
        let wrong = (self.wrong_bodies > 0).then_some((WRONG_ECHO, self.wrong_bodies));
        self.failures
            .iter()
            .map(|(why, n)| (why.as_str(), *n))
            .chain(wrong)
            .max_by_key(|(_, n)| *n)
    }
}

/// Pools the runs of each (scenario, link, contender) cell, in the order cells first
/// appear in `results`.
pub fn summarize(results: &[CellResult]) -> Vec<CellSummary> {
    let mut out: Vec<CellSummary> = Vec::new();
    for r in results {
        let found = out.iter_mut().find(|s| {
            s.scenario.name == r.scenario.name && s.link == r.link && s.contender == r.contender
        });
        let s = match found {
            Some(s) => s,
            None => {
                out.push(CellSummary {
                    scenario: r.scenario.clone(),
                    link: r.link,
                    contender: r.contender,
                    runs: Vec::new(),
                    tasks: 0,
                    ends: 0,
                    successes: 0,
                    wrong_bodies: 0,
                    failures: BTreeMap::new(),
                    completions: Vec::new(),
                    dials: 0,
                    connects: 0,
                    reconnects: 0,
                    server_connections: 0,
                    wire: WireBytes::default(),
                });
                out.last_mut().expect("just pushed")
            }
        };
        s.runs.push(RunStats {
            run: r.run,
            tasks: r.tasks,
            successes: r.successes,
            p99: r.quantile(0.99),
        });
        s.tasks += r.tasks;
        s.ends += r.ends;
        s.successes += r.successes;
        s.wrong_bodies += r.wrong_bodies;
        for (why, n) in &r.failures {
            *s.failures.entry(why.clone()).or_insert(0) += n;
        }
        s.completions.extend_from_slice(&r.completions);
        s.dials += r.dials;
        s.connects += r.connects;
        s.reconnects += r.reconnects;
        s.server_connections += r.server_connections;
        s.wire.client_to_server += r.wire.client_to_server;
        s.wire.server_to_client += r.wire.server_to_client;
    }
    for s in &mut out {
        s.completions.sort();
        s.runs.sort_by_key(|r| r.run);
    }
    out
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

fn opt_ms(d: Option<Duration>) -> String {
    d.map_or("–".to_owned(), ms)
}

/// The `link` rows of `summaries` as a Markdown table, one row per (scenario, contender):
/// pooled success and quantiles, the per-run spread, and per-run means of the counters.
pub fn markdown_table(summaries: &[CellSummary], link: Link) -> String {
    let conns = match link {
        Link::Long => "reconnects",
        Link::Short => "connections",
    };
    let mut s = format!(
        "| scenario | client | success | per run | p50 | p99 | p99 per run | dials | {conns} \
         | wire bytes (up / down) | most frequent failure |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n"
    );
    for r in summaries.iter().filter(|r| r.link == link) {
        let (lo, hi) = r.success_range();
        let spread = if r.runs.len() <= 1 {
            "–".to_owned()
        } else if format!("{lo:.0}") == format!("{hi:.0}") {
            format!("{lo:.0} % each")
        } else {
            format!("{lo:.0}–{hi:.0} %")
        };
        let p99_spread = match r.p99_range() {
            Some((a, b)) if r.runs.len() > 1 => {
                format!("{}–{}", ms(a).trim_end_matches(" ms"), ms(b))
            }
            _ => "–".to_owned(),
        };
        let conns = match link {
            Link::Long => r.reconnects,
            Link::Short => r.connects,
        };
        s.push_str(&format!(
            "| {} | {} | {}/{} ({:.1} %) | {} | {} | {} | {} | {} | {} | {:.0} / {:.0} | {} |\n",
            r.scenario.name,
            r.contender,
            r.successes,
            r.tasks,
            r.success_percent(),
            spread,
            opt_ms(r.quantile(0.5)),
            opt_ms(r.quantile(0.99)),
            p99_spread,
            fmt_mean(r.per_run(r.dials)),
            fmt_mean(r.per_run(conns)),
            r.per_run(r.wire.client_to_server),
            r.per_run(r.wire.server_to_client),
            r.top_failure()
                .map_or("–".to_string(), |(why, n)| format!("{n} × {why}")),
        ));
    }
    s
}

fn fmt_mean(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// The worst scenarios of `link`, worst first: those where the lowest pooled success over
/// the contenders is lowest, ties broken by the highest pooled p99 of all tasks
/// ([`CellSummary::quantile_all`], beyond the timeout first) over the contenders.
/// Each entry holds the scenario's summaries in [`Contender::ALL`] order (contenders that
/// did not run left out).
pub fn worst_cells(summaries: &[CellSummary], link: Link, n: usize) -> Vec<Vec<&CellSummary>> {
    let mut names: Vec<&str> = Vec::new();
    for s in summaries.iter().filter(|s| s.link == link) {
        if !names.contains(&s.scenario.name.as_str()) {
            names.push(&s.scenario.name);
        }
    }
    let mut groups: Vec<Vec<&CellSummary>> = names
        .iter()
        .map(|name| {
            Contender::ALL
                .iter()
                .filter_map(|c| {
                    summaries
                        .iter()
                        .find(|s| s.link == link && s.contender == *c && s.scenario.name == *name)
                })
                .collect()
        })
        .collect();
    let key = |g: &Vec<&CellSummary>| {
        let min_success = g
            .iter()
            .map(|s| s.success_percent())
            .fold(f64::INFINITY, f64::min);
        // `None` (beyond the timeout) ranks above every time.
        let max_p99 = g
            .iter()
            .map(|s| s.quantile_all(0.99).unwrap_or(Duration::MAX))
            .max()
            .unwrap_or_default();
        (min_success, max_p99)
    };
    groups.sort_by(|a, b| {
        let (sa, pa) = key(a);
        let (sb, pb) = key(b);
        sa.total_cmp(&sb).then(pb.cmp(&pa))
    });
    groups.truncate(n);
    groups
}

/// `other ÷ phobos` for the worst-cell table: `×r`, or how the two compare when a ratio
/// cannot be formed.
fn ratio(other: f64, phobos: f64) -> String {
    if phobos.is_infinite() {
        // Phobos beyond the timeout: only "worse" can be said of it, not by how much.
        if other.is_infinite() {
            "–".to_owned()
        } else {
            "×0".to_owned()
        }
    } else if other.is_infinite() {
        "×∞".to_owned()
    } else if phobos > 0.0 {
        format!("×{:.2}", other / phobos)
    } else if other > 0.0 {
        "×∞".to_owned()
    } else {
        "–".to_owned()
    }
}

/// The worst-cell section: for each link in `links`, the `n` worst scenarios
/// ([`worst_cells`]) with every contender side by side and the ratios to Phobos (failed
/// tasks, and the pooled p99 of all tasks with failures counting as never; above 1 means
/// Phobos did better).
pub fn worst_cells_markdown(summaries: &[CellSummary], links: &[Link], n: usize) -> String {
    let mut md = String::new();
    for &link in links {
        let worst = worst_cells(summaries, link, n);
        if worst.is_empty() {
            continue;
        }
        md.push_str(&format!(
            "**{}** ({} worst of {} scenarios):\n\n",
            capitalize(link.title()),
            worst.len(),
            summaries
                .iter()
                .filter(|s| s.link == link && s.contender == Contender::Phobos)
                .count()
        ));
        md.push_str(
            "| scenario | phobos | mars-classic | naive | failed: mars-classic ÷ phobos | \
             failed: naive ÷ phobos | p99: mars-classic ÷ phobos | p99: naive ÷ phobos |",
        );
        // Its column only when `phobos-tls` ran (`--contenders` may leave it out).
        let tls = summaries
            .iter()
            .any(|s| s.contender == Contender::PhobosTls);
        md.push_str(if tls {
            " phobos-tls |\n|---|---|---|---|---|---|---|---|---|\n"
        } else {
            "\n|---|---|---|---|---|---|---|---|\n"
        });
        for group in worst {
            let get = |c: Contender| group.iter().find(|s| s.contender == c).copied();
            let cell = |c: Contender| {
                get(c).map_or("–".to_owned(), |s| {
                    format!(
                        "{:.1} % ({}/{}), p99 {}",
                        s.success_percent(),
                        s.successes,
                        s.tasks,
                        s.quantile_all(0.99).map_or("> timeout".to_owned(), ms)
                    )
                })
            };
            // Beyond the timeout counts as infinitely slow.
            let p99 = |c: Contender| {
                get(c).map(|s| {
                    s.quantile_all(0.99)
                        .map_or(f64::INFINITY, |d| d.as_secs_f64())
                })
            };
            let failed = |c: Contender| get(c).map(|s| s.failed() as f64);
            let cmp_failed = |c: Contender| match (failed(c), failed(Contender::Phobos)) {
                (Some(o), Some(p)) => ratio(o, p),
                _ => "–".to_owned(),
            };
            let cmp_p99 = |c: Contender| match (p99(c), p99(Contender::Phobos)) {
                (Some(o), Some(p)) => ratio(o, p),
                _ => "–".to_owned(),
            };
            md.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                group[0].scenario.name,
                cell(Contender::Phobos),
                cell(Contender::MarsClassic),
                cell(Contender::Naive),
                cmp_failed(Contender::MarsClassic),
                cmp_failed(Contender::Naive),
                cmp_p99(Contender::MarsClassic),
                cmp_p99(Contender::Naive),
            ));
            if tls {
                md.push_str(&format!(" {} |", cell(Contender::PhobosTls)));
            }
            md.push('\n');
        }
        md.push('\n');
    }
    md
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
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

struct RunOutcome {
    tasks: Vec<(TaskResult, Duration)>,
    dials: u64,
    connects: u64,
}

async fn drive(
    contender: Contender,
    link: Link,
    addr: SocketAddr,
    workload: Workload,
    seed: u64,
) -> Result<RunOutcome, String> {
    let client = Arc::new(contender.start_on(link, &[addr], workload.task_timeout, seed)?);
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
    Ok(RunOutcome {
        tasks,
        dials,
        connects,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(
        scenario: &Scenario,
        contender: Contender,
        run: usize,
        completions_ms: &[u64],
        tasks: usize,
    ) -> CellResult {
        let mut completions: Vec<Duration> = completions_ms
            .iter()
            .map(|ms| Duration::from_millis(*ms))
            .collect();
        completions.sort();
        let failed = tasks - completions.len();
        CellResult {
            scenario: scenario.clone(),
            link: Link::Short,
            contender,
            run,
            seeds: cell_seeds(1, scenario, Link::Short, contender, run),
            tasks,
            ends: tasks,
            successes: completions.len(),
            wrong_bodies: 0,
            failures: if failed > 0 {
                BTreeMap::from([("total timeout".to_owned(), failed)])
            } else {
                BTreeMap::new()
            },
            completions,
            dials: tasks as u64 + 1,
            connects: tasks as u64,
            reconnects: tasks as u64 - 1,
            server_connections: tasks as u64,
            wire: WireBytes {
                client_to_server: 1000,
                server_to_client: 500,
            },
        }
    }

    #[test]
    fn summaries_pool_the_runs_and_keep_their_spread() {
        let s = Scenario::grid(30, Duration::from_millis(300));
        let results = [
            result(&s, Contender::Phobos, 0, &[10, 20, 30, 40], 4),
            result(&s, Contender::Naive, 0, &[10], 4),
            result(&s, Contender::Phobos, 1, &[50, 60], 4),
        ];
        let sums = summarize(&results);
        assert_eq!(sums.len(), 2);
        let p = &sums[0];
        assert_eq!(p.contender, Contender::Phobos);
        assert_eq!((p.tasks, p.successes, p.failed()), (8, 6, 2));
        assert_eq!(p.runs.len(), 2);
        assert_eq!(p.success_range(), (50.0, 100.0));
        assert_eq!(p.quantile(0.5), Some(Duration::from_millis(30)));
        assert_eq!(p.quantile(0.99), Some(Duration::from_millis(60)));
        // Over all 8 tasks, 2 of which failed.
        assert_eq!(p.quantile_all(0.5), Some(Duration::from_millis(40)));
        assert_eq!(p.quantile_all(0.75), Some(Duration::from_millis(60)));
        assert_eq!(p.quantile_all(0.99), None);
        assert_eq!(
            p.p99_range(),
            Some((Duration::from_millis(40), Duration::from_millis(60)))
        );
        assert_eq!(p.per_run(p.dials), 5.0);
        assert_eq!(p.wire.client_to_server, 2000);
        assert_eq!(p.top_failure(), Some(("total timeout", 2)));
        let mut damaged = result(&s, Contender::Naive, 0, &[10], 4);
        damaged.failures = BTreeMap::from([("task timeout".to_owned(), 1)]);
        damaged.wrong_bodies = 2;
        assert_eq!(
            summarize(&[damaged])[0].top_failure(),
            Some((WRONG_ECHO, 2))
        );
        let table = markdown_table(&sums, Link::Short);
        assert!(table.contains("| 6/8 (75.0 %) | 50–100 % |"), "{table}");
        assert!(table.contains("| connections |"), "{table}");
        assert!(markdown_table(&sums, Link::Long).lines().count() == 2);
        let same = [
            result(&s, Contender::Naive, 0, &[10, 20], 2),
            result(&s, Contender::Naive, 1, &[30, 40], 2),
        ];
        let table = markdown_table(&summarize(&same), Link::Short);
        assert!(
            table.contains("| 4/4 (100.0 %) | 100 % each | 20 ms | 40 ms | 20–40 ms |"),
            "{table}"
        );
    }

    #[test]
    fn the_worst_cells_come_first_with_ratios_to_phobos() {
        let good = Scenario::grid(0, Duration::ZERO);
        let slow = Scenario::grid(15, Duration::from_millis(300));
        let bad = Scenario::grid(30, Duration::from_millis(300));
        let results = [
            result(&good, Contender::Phobos, 0, &[1, 1], 2),
            result(&good, Contender::Naive, 0, &[1, 1], 2),
            result(&slow, Contender::Phobos, 0, &[100, 200], 2),
            result(&slow, Contender::Naive, 0, &[100, 800], 2),
            result(&bad, Contender::Phobos, 0, &[100, 200, 300], 4),
            result(&bad, Contender::Naive, 0, &[900], 4),
        ];
        let sums = summarize(&results);
        let worst = worst_cells(&sums, Link::Short, 2);
        let names: Vec<&str> = worst.iter().map(|g| g[0].scenario.name.as_str()).collect();
        assert_eq!(names, [bad.name.as_str(), slow.name.as_str()]);
        assert!(worst_cells(&sums, Link::Long, 2).is_empty());
        let md = worst_cells_markdown(&sums, &[Link::Short], 2);
        // bad: phobos failed 1, naive 3; both p99s of all tasks lie beyond the timeout.
        assert!(
            md.contains(
                "| 75.0 % (3/4), p99 > timeout | – | 25.0 % (1/4), p99 > timeout | – | ×3.00 \
                 | – | – |"
            ),
            "{md}"
        );
        // slow: nobody failed, p99 200 vs 800 ms.
        assert!(md.contains("| – | – | – | ×4.00 |"), "{md}");
    }

    #[test]
    fn ratios_say_who_did_better_even_beyond_the_timeout() {
        assert_eq!(ratio(3.0, 1.5), "×2.00");
        assert_eq!(ratio(2.0, 0.0), "×∞");
        assert_eq!(ratio(0.0, 0.0), "–");
        assert_eq!(ratio(f64::INFINITY, 2.0), "×∞");
        assert_eq!(ratio(2.0, f64::INFINITY), "×0");
        assert_eq!(ratio(f64::INFINITY, f64::INFINITY), "–");
    }

    #[test]
    fn seeds_follow_the_scenario_name_and_the_run_not_the_position() {
        let a = Scenario::grid(5, Duration::ZERO);
        let b = Scenario::grid(15, Duration::ZERO);
        let seed = |s: &Scenario, c, run| cell_seeds(1, s, Link::Long, c, run);
        assert_eq!(
            seed(&a, Contender::Phobos, 0),
            seed(&a.clone(), Contender::Phobos, 0)
        );
        assert_ne!(
            seed(&a, Contender::Phobos, 0),
            seed(&a, Contender::Phobos, 1)
        );
        assert_ne!(
            seed(&a, Contender::Phobos, 0).proxy,
            seed(&b, Contender::Phobos, 0).proxy
        );
        // Every client of a scenario meets the same proxy draws in a run.
        assert_eq!(
            seed(&a, Contender::Phobos, 2).proxy,
            seed(&a, Contender::Naive, 2).proxy
        );
        assert_ne!(
            seed(&a, Contender::Phobos, 2).client,
            seed(&a, Contender::Naive, 2).client
        );
        assert_ne!(
            cell_seeds(1, &a, Link::Long, Contender::Phobos, 0),
            cell_seeds(2, &a, Link::Long, Contender::Phobos, 0)
        );
    }

    #[test]
    fn a_filter_keeps_matching_scenarios_only() {
        let mut plan = Plan {
            scenarios: grid_scenarios()
                .into_iter()
                .chain(fault_scenarios())
                .collect(),
            links: Link::ALL.to_vec(),
            contenders: Contender::ALL.to_vec(),
            runs: 2,
            workload: Workload::full(),
            seed: 1,
        };
        assert_eq!(plan.cells(), 22 * 2 * 4);
        plan.filter_scenarios("LOSS 30 %");
        assert_eq!(plan.scenarios.len(), 3);
        assert!(plan.scenarios.iter().all(|s| s.loss_percent == 30));
    }
}
