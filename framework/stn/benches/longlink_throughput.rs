//! Long-link throughput and latency: Phobos vs two hand-written tokio clients, side by
//! side, plus memory per idle long link.
//!
//! Run: `cargo bench -p phobos-stn --bench longlink_throughput`
//!
//! All clients talk to the same echo server on loopback, run in a child process (this
//! binary started again with `PHOBOS_BENCH_SERVER=1`), so server work does not share the
//! client's address space or runtime. The server echoes bytes as they come, which answers
//! every Mars frame (requests and heartbeats) with itself. Every client sends the same
//! frames (`MarsCodec`, command 7, a 100-byte body, sequence = request number), keeps
//! exactly `N` requests outstanding, and counts a request done only when its response has
//! come back, been decoded and been matched to the request by sequence number (an
//! unexpected or repeated sequence, or a body other than the one sent, fails the run: the
//! bodies differ from request to request, see [`BODIES`]). Latency is from the request's
//! creation to the match.
//!
//! - **raw** (the ceiling): one tokio task owns the socket. It writes `N` frames, then on
//!   every read decodes the complete responses, matches each to its request, and writes
//!   one replacement per response, all replacements of one read in one write. No future,
//!   channel or allocation per request, one clock read per write (shared by its requests,
//!   as every client's are) and per response, responses read in place: the leanest client
//!   here, and not a shape an app can call (the requests are not independent callers).
//! - **raw-mux** (the same calling shape as Phobos, nothing else): `N` caller tasks, each
//!   encoding its frame, registering a oneshot under its sequence number in a shared map,
//!   queueing the frame to one writer task (which coalesces whatever is queued into one
//!   write) and awaiting its oneshot; one reader task decodes responses and completes the
//!   matching oneshot. No timeouts, retries, priorities, heartbeats, reconnects or
//!   metrics.
//! - **raw-hop** (pho-like's shape, nothing else): one caller task and one socket task. The
//!   caller sends its requests as one batch (a key, command and body each) over a channel;
//!   the socket task frames everything queued into one write, and on every read slices
//!   each response body out of the read buffer, finds its key by sequence number in a
//!   table, and sends the read's responses back as one batch. No timeouts, retries,
//!   heartbeats, reconnects, profiles, metrics or limits: what the engine and driver add
//!   is the difference between this row and pho-like.
//! - **phobos**: one `Client` (engine + driver, default config), `N` caller tasks each
//!   awaiting `start_task` in a loop (limits off, so the frequency limit does not refuse
//!   the identical bodies).
//!
//! - **phobos-batch** (the same shape as raw, through the public API): one caller keeping `N`
//!   tasks outstanding on one [`TaskBatch`](phobos_stn::TaskBatch): it starts `N`, then on
//!   every batch of ends it receives checks each end and starts one replacement per end,
//!   all replacements of one batch in one `start` call.
//! - **pho-like**: phobos-batch with its replacements started by `start_like` (one set of
//!   parameters, a command id and body per task) instead of one spec per task, and (from
//!   2026-11-28, 08:50 UTC) its ends read in place through `recv_group` instead of moved
//!   into `BatchEnd`s by `recv_many`.
//! - **pho-hdl** (from 2026-11-29, 08:00 UTC): pho-like's caller as an end handler run on
//!   the driver (`Client::run_on_driver`): the driver hands it each iteration's ends and
//!   its replacements leave in the same iteration, with no channel hop or second task (the
//!   raw client's shape, through the public API).
//! - **lean** (only with `PHOBOS_BENCH_ONLY=lean`): a design probe, not a Phobos client:
//!   raw-hop with a small sans-IO core doing the per-task work of Phobos's usual batch path
//!   (see the `lean` module).
//!
//! The ratio that isolates Phobos's own cost is phobos / raw-mux: both pay the per-request
//! task wake-ups, channel hops and oneshots of independent callers, which raw does not.
//! Likewise pho-like / raw-hop: both are one caller and one socket task trading batches.
//!
//! Besides tasks/s and latency, each run reports the client process's CPU time per task
//! (all its threads, from `/proc/self/task/*/schedstat`; the server is another process) and
//! the client's socket writes per 100 tasks (`w/100t`: how its requests were cut into
//! writes). On a machine shared with other work, wall-clock
//! throughput swings with the load while CPU per task barely moves, so the CPU ratios are
//! the steadier comparison. The clients of a round run one after another, and a throughput
//! ratio (`ratio`, and the summary lines under each level) is the median over the rounds of
//! that round's ratio (from 2026-11-28, 10:45 UTC; before, the ratio of the medians): a
//! change of the machine's load between rounds moves the clients of a round together.
//!
//! **Placement** (`place`). Client and server take turns, and whether they share a CPU
//! changes what a turn costs threefold on a small VM (see [`Placement`]). So each echo
//! server and client runtime is pinned: `same` runs the client's runtime threads and the
//! server on one CPU, `split` the client on one and the server on another, `free` leaves
//! both to the kernel. The default is `same` and `split`, side by side, where this process
//! may use two CPUs; `free` elsewhere.
//!
//! Knobs (environment): `PHOBOS_BENCH_TASKS` (20000 per run), `PHOBOS_BENCH_WORKERS` (client
//! runtime worker threads, 2), `PHOBOS_BENCH_IDLE_LINKS` (1000), `PHOBOS_BENCH_QUICK=1` (a
//! smoke run: 500 tasks, 20 idle links, 1 round), `PHOBOS_BENCH_ROUNDS` (5 alternating rounds,
//! medians reported), `PHOBOS_BENCH_ONLY=throughput|memory|phobos|phobos-batch|phobos-like|phobos-handler|raw|raw-mux|raw-hop|lean`,
//! `PHOBOS_BENCH_IN_FLIGHT=1,10,100`, `PHOBOS_BENCH_PLACEMENT=same,split` (any of `same`,
//! `split`, `free`).
//!
//! Two knobs price a round's footprint (`docs/lab/throughput.md`): they make raw-hop's socket
//! task do extra work once per write, which at 100 in flight is once per round of 100 tasks.
//! `PHOBOS_BENCH_HOP_CODE=<n>` runs `n` distinct functions (at most 512, about 250 bytes of
//! code each), `<n>:same` runs one of them `n` times (the same instructions, one function's
//! code); `PHOBOS_BENCH_HOP_DATA=<n>` stores a word into each of the next `n` cache lines of
//! a 256 KiB ring, `<n>:same` stores `n` words into one line. The difference between a
//! knob's two forms is what `n` more lines of code, or of data, touched per round cost.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use phobos_codec_mars::MarsCodec;
use phobos_plugin_api::{CmdId, Decoded, FrameHead, PacketCodec, Seq};
use phobos_stn::{
    BatchEnd, Client, ClientConfig, EndGroup, EndHandler, LinkStatus, Starter, TaskSpec,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

const BODY_LEN: usize = 100;

/// How many distinct request bodies there are. Request `i` of a run carries [`body_of`]`(i)`,
/// whose first 8 bytes are `i % BODIES`, and every client checks that its response echoes
/// exactly that body: an answer matched to the wrong request fails the run, for the Phobos
/// rows (whose matching happens inside the engine) as for the raw ones. (Before, every body
/// was the same and only its length was checked.)
const BODIES: u64 = 256;

/// The body of request `i` (see [`BODIES`]).
fn body_of(i: u64) -> &'static Bytes {
    static RING: std::sync::OnceLock<Vec<Bytes>> = std::sync::OnceLock::new();
    let ring = RING.get_or_init(|| {
        (0..BODIES)
            .map(|i| {
                let mut b = vec![0xABu8; BODY_LEN];
                b[..8].copy_from_slice(&i.to_le_bytes());
                Bytes::from(b)
            })
            .collect()
    });
    &ring[(i % BODIES) as usize]
}
const IN_FLIGHT: [usize; 3] = [1, 10, 100];

fn main() {
    if std::env::var_os("PHOBOS_BENCH_SERVER").is_some() {
        serve();
        return;
    }
    let quick = std::env::var_os("PHOBOS_BENCH_QUICK").is_some();
    let total = env_usize("PHOBOS_BENCH_TASKS", if quick { 500 } else { 20_000 });
    let workers = env_usize("PHOBOS_BENCH_WORKERS", 2);
    let rounds = env_usize("PHOBOS_BENCH_ROUNDS", if quick { 1 } else { 5 }).max(1);
    let idle_links = env_usize("PHOBOS_BENCH_IDLE_LINKS", if quick { 20 } else { 1000 });
    let only = std::env::var("PHOBOS_BENCH_ONLY").unwrap_or_default();
    let levels: Vec<usize> = std::env::var("PHOBOS_BENCH_IN_FLIGHT")
        .ok()
        .map(|v| v.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| IN_FLIGHT.to_vec());

    // One echo server and one client runtime per placement, each pinned as it says.
    let allowed = cpus::allowed();
    let mut setups = Vec::new();
    for placement in placements(&allowed) {
        let Some((client_cpus, server_cpus)) = placement.cpus(&allowed) else {
            println!(
                "placement {}: skipped, it needs two CPUs this process may use ({} here)",
                placement.name(),
                allowed.len()
            );
            continue;
        };
        // Threads and processes inherit the affinity of the thread that starts them.
        if placement != Placement::Free && !cpus::pin(&server_cpus) {
            println!("placement {}: skipped, pinning refused", placement.name());
            continue;
        }
        let (server, addr) = start_server();
        if placement != Placement::Free && !cpus::pin(&client_cpus) {
            println!("placement {}: skipped, pinning refused", placement.name());
            stop_server(server);
            continue;
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
            .expect("runtime");
        cpus::pin(&allowed);
        println!(
            "placement {}: client runtime on CPUs {client_cpus:?}, echo server on CPUs {server_cpus:?}",
            placement.name()
        );
        setups.push((placement, server, addr, rt));
    }
    println!(
        "longlink_throughput: {total} tasks per run, {BODY_LEN}-byte bodies, loopback, \
         client runtime {workers} workers, echo server in a child process, medians of \
         {rounds} alternating rounds (ratios: the median of the rounds' ratios)"
    );
    println!(
        "{:>9} {:>8} {:>12} {:>10} {:>10} {:>8} {:>9} {:>7} {:>6}",
        "in flight",
        "client",
        "tasks/s",
        "p50 ms",
        "p99 ms",
        "ratio",
        "cpu µs/t",
        "w/100t",
        "place"
    );
    if matches!(
        only.as_str(),
        "phobos"
            | "phobos-batch"
            | "phobos-like"
            | "phobos-handler"
            | "raw"
            | "raw-mux"
            | "raw-hop"
            | "lean"
    ) {
        // Profiling aid: one client alone.
        for (placement, _, addr, rt) in &setups {
            let (addr, place) = (*addr, placement.name());
            rt.block_on(async {
                for &n in &levels {
                    match only.as_str() {
                        "phobos" => phobos_run(addr, n, total)
                            .await
                            .print(n, "phobos", None, place),
                        "raw" => raw_run(addr, n, total).await.print(n, "raw", None, place),
                        "raw-hop" => hop_run(addr, n, total)
                            .await
                            .print(n, "raw-hop", None, place),
                        "raw-mux" => mux_run(addr, n, total)
                            .await
                            .print(n, "raw-mux", None, place),
                        "lean" => lean::run(addr, n, total)
                            .await
                            .print(n, "lean", None, place),
                        "phobos-like" => phobos_batch_run(addr, n, total, true)
                            .await
                            .print(n, "pho-like", None, place),
                        "phobos-handler" => phobos_handler_run(addr, n, total)
                            .await
                            .print(n, "pho-hdl", None, place),
                        _ => phobos_batch_run(addr, n, total, false).await.print(
                            n,
                            "pho-batch",
                            None,
                            place,
                        ),
                    }
                }
            });
        }
    } else {
        // Memory first, in a process whose heap the throughput runs have not grown yet (the
        // idle clients would otherwise reuse freed memory, and RSS would hide what they cost).
        if let Some((_, _, addr, rt)) = setups.first().filter(|_| only != "throughput") {
            rt.block_on(idle_memory(*addr, idle_links));
        }
        for &n in levels.iter().filter(|_| only != "memory") {
            for (placement, _, addr, rt) in &setups {
                rt.block_on(throughput_level(*addr, n, total, rounds, placement.name()));
            }
        }
    }
    for (_, server, _, rt) in setups {
        drop(rt);
        stop_server(server);
    }
}

/// Asks the echo server process to exit (closing its stdin), and waits for it.
fn stop_server(mut server: std::process::Child) {
    if let Some(mut stdin) = server.stdin.take() {
        let _ = stdin.write_all(b"stop\n");
    }
    let _ = server.wait();
}

/// Every client at `n` in flight against the server at `addr`, in `rounds` alternating
/// rounds (so a load change on the machine hits all of them); prints each one's median.
async fn throughput_level(addr: SocketAddr, n: usize, total: usize, rounds: usize, place: &str) {
    let (mut raw, mut mux, mut hop, mut pho, mut bat, mut like, mut hdl) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    for _ in 0..rounds {
        raw.push(raw_run(addr, n, total).await);
        mux.push(mux_run(addr, n, total).await);
        hop.push(hop_run(addr, n, total).await);
        pho.push(phobos_run(addr, n, total).await);
        bat.push(phobos_batch_run(addr, n, total, false).await);
        like.push(phobos_batch_run(addr, n, total, true).await);
        hdl.push(phobos_handler_run(addr, n, total).await);
    }
    // Each round's ratios, then their median: a change of the machine's load between rounds
    // moves every client of a round together, so it leaves the ratios alone.
    let ratio_to = |of: &[RunResult], to: &[RunResult]| {
        let mut r: Vec<f64> = of
            .iter()
            .zip(to)
            .map(|(a, b)| a.tasks_per_sec / b.tasks_per_sec)
            .collect();
        r.sort_by(f64::total_cmp);
        r[r.len() / 2]
    };
    let (mux_raw, hop_raw, pho_raw) = (
        ratio_to(&mux, &raw),
        ratio_to(&hop, &raw),
        ratio_to(&pho, &raw),
    );
    let (bat_raw, like_raw) = (ratio_to(&bat, &raw), ratio_to(&like, &raw));
    let hdl_raw = ratio_to(&hdl, &raw);
    let (pho_mux, like_hop) = (ratio_to(&pho, &mux), ratio_to(&like, &hop));
    let (raw, mux, hop, pho) = (median(raw), median(mux), median(hop), median(pho));
    let (bat, like, hdl) = (median(bat), median(like), median(hdl));
    raw.print(n, "raw", None, place);
    mux.print(n, "raw-mux", Some(mux_raw), place);
    hop.print(n, "raw-hop", Some(hop_raw), place);
    pho.print(n, "phobos", Some(pho_raw), place);
    bat.print(n, "pho-batch", Some(bat_raw), place);
    like.print(n, "pho-like", Some(like_raw), place);
    hdl.print(n, "pho-hdl", Some(hdl_raw), place);
    println!(
        "{:>9} {:>8} phobos / raw-mux = {:.0} % of the throughput; CPU per task: \
         phobos / raw = {:.2}, phobos / raw-mux = {:.2}",
        "",
        "",
        pho_mux * 100.0,
        pho.cpu_us_per_task / raw.cpu_us_per_task,
        pho.cpu_us_per_task / mux.cpu_us_per_task,
    );
    println!(
        "{:>9} {:>8} CPU per task: phobos-batch / raw = {:.2}, pho-like / raw = {:.2}",
        "",
        "",
        bat.cpu_us_per_task / raw.cpu_us_per_task,
        like.cpu_us_per_task / raw.cpu_us_per_task,
    );
    println!(
        "{:>9} {:>8} pho-like / raw-hop = {:.0} % of the throughput; CPU per task: pho-like / \
         raw-hop = {:.2}",
        "",
        "",
        like_hop * 100.0,
        like.cpu_us_per_task / hop.cpu_us_per_task,
    );
}

/// Where the client's runtime threads and the echo server run.
///
/// Design: at 100 in flight client and server take turns, and where the kernel puts the two
/// processes decides how much a turn costs. On one CPU the hand-over is a local wake-up and
/// both keep their caches; on two, every turn wakes an idle CPU, which on a VM costs a trip
/// through the hypervisor. On the 2-CPU VM of `docs/lab/throughput.md` the raw client ran
/// at about 3.0 M tasks/s on one CPU and 1.0 M/s on two, and an unpinned run landed in
/// either regime by chance, so unpinned figures swung threefold between runs of the same
/// binary. Pinned, each regime is measured on purpose, side by side.
#[derive(Clone, Copy, PartialEq)]
enum Placement {
    /// Client and server on one CPU.
    Same,
    /// Client on one CPU, server on another.
    Split,
    /// Wherever the kernel puts them (unpinned).
    Free,
}

impl Placement {
    fn name(self) -> &'static str {
        match self {
            Placement::Same => "same",
            Placement::Split => "split",
            Placement::Free => "free",
        }
    }

    /// The client's and the server's CPUs, from the ones this process may use (`None`: not
    /// enough of them).
    fn cpus(self, allowed: &[usize]) -> Option<(Vec<usize>, Vec<usize>)> {
        match (self, allowed) {
            (Placement::Free, _) => Some((allowed.to_vec(), allowed.to_vec())),
            (Placement::Same, [a, ..]) => Some((vec![*a], vec![*a])),
            (Placement::Split, [a, b, ..]) => Some((vec![*a], vec![*b])),
            _ => None,
        }
    }
}

/// The placements to run: `PHOBOS_BENCH_PLACEMENT` (a comma list of `same`, `split`,
/// `free`), else `same,split` where this process may use two CPUs and can pin, else `free`.
/// Exits with status 2 on a name it does not know.
fn placements(allowed: &[usize]) -> Vec<Placement> {
    let parse = |name: &str| match name.trim() {
        "same" => Placement::Same,
        "split" => Placement::Split,
        "free" => Placement::Free,
        other => {
            eprintln!(
                "PHOBOS_BENCH_PLACEMENT: unknown placement {other:?} (a comma list of same, \
                 split, free)"
            );
            std::process::exit(2);
        }
    };
    match std::env::var("PHOBOS_BENCH_PLACEMENT") {
        Ok(list) => list.split(',').map(parse).collect(),
        Err(_) if allowed.len() >= 2 && cpus::pin(allowed) => {
            vec![Placement::Same, Placement::Split]
        }
        Err(_) => vec![Placement::Free],
    }
}

/// CPU affinity of the calling thread (Linux; elsewhere every placement but `free` is
/// skipped).
#[cfg(target_os = "linux")]
mod cpus {
    use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
    use nix::unistd::Pid;

    /// The CPUs this thread may run on.
    pub(super) fn allowed() -> Vec<usize> {
        let Ok(set) = sched_getaffinity(Pid::from_raw(0)) else {
            return Vec::new();
        };
        (0..CpuSet::count())
            .filter(|&c| set.is_set(c).unwrap_or(false))
            .collect()
    }

    /// Pins the calling thread, and the threads and processes it starts from now on, to
    /// `cpus`; false where that is refused.
    pub(super) fn pin(cpus: &[usize]) -> bool {
        let mut set = CpuSet::new();
        if cpus.iter().any(|&c| set.set(c).is_err()) {
            return false;
        }
        sched_setaffinity(Pid::from_raw(0), &set).is_ok()
    }
}

#[cfg(not(target_os = "linux"))]
mod cpus {
    pub(super) fn allowed() -> Vec<usize> {
        Vec::new()
    }

    pub(super) fn pin(_: &[usize]) -> bool {
        false
    }
}

/// Starts the echo server process; returns it and the address it listens on.
fn start_server() -> (std::process::Child, SocketAddr) {
    let exe = std::env::current_exe().expect("own path");
    let mut server = Command::new(exe)
        .env("PHOBOS_BENCH_SERVER", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the echo server process");
    let mut line = String::new();
    BufReader::new(server.stdout.take().expect("piped"))
        .read_line(&mut line)
        .expect("server address");
    let addr: SocketAddr = line.trim().parse().expect("server prints its address");
    (server, addr)
}

/// The result with the median throughput (its latencies come from that same run), with the
/// median CPU time per task over all runs.
fn median(mut runs: Vec<RunResult>) -> RunResult {
    let mut cpu: Vec<f64> = runs.iter().map(|r| r.cpu_us_per_task).collect();
    cpu.sort_by(f64::total_cmp);
    runs.sort_by(|a, b| a.tasks_per_sec.total_cmp(&b.tasks_per_sec));
    let mid = runs.len() / 2;
    let mut r = runs.swap_remove(mid);
    r.cpu_us_per_task = cpu[cpu.len() / 2];
    r
}

struct RunResult {
    tasks_per_sec: f64,
    p50: Duration,
    p99: Duration,
    /// Client CPU time (all threads) per task, in microseconds.
    cpu_us_per_task: f64,
    /// The client's socket writes per 100 tasks (`None`: not counted): how the windows of
    /// requests were cut.
    writes_per_100: Option<f64>,
}

impl RunResult {
    fn from(
        elapsed: Duration,
        cpu: Duration,
        writes: Option<u64>,
        mut latencies: Vec<Duration>,
    ) -> Self {
        // Design: two selections, not a sort: a sort's n log n made every per-task figure
        // of `instructions-per-task.sh` (two runs' difference over their tasks) about 230
        // instructions higher than the client's own, where a selection is linear and small.
        let n = latencies.len();
        let at = |p: f64| (n.saturating_sub(1) as f64 * p).round() as usize;
        let (p50, p99) = if n == 0 {
            (Duration::ZERO, Duration::ZERO)
        } else {
            let p99 = *latencies.select_nth_unstable(at(0.99)).1;
            // The ones before the 99th percentile's place are the smallest: the median is
            // among them (or is it).
            let p50 = *latencies[..=at(0.99)].select_nth_unstable(at(0.50)).1;
            (p50, p99)
        };
        RunResult {
            tasks_per_sec: n as f64 / elapsed.as_secs_f64(),
            p50,
            p99,
            cpu_us_per_task: cpu.as_secs_f64() * 1e6 / latencies.len() as f64,
            writes_per_100: writes.map(|w| w as f64 * 100.0 / latencies.len() as f64),
        }
    }

    fn print(&self, n: usize, client: &str, ratio: Option<f64>, place: &str) {
        println!(
            "{:>9} {:>8} {:>12.0} {:>10.3} {:>10.3} {:>8} {:>9.2} {:>7} {:>6}",
            n,
            client,
            self.tasks_per_sec,
            self.p50.as_secs_f64() * 1e3,
            self.p99.as_secs_f64() * 1e3,
            ratio.map_or(String::new(), |r| format!("{:.0} %", r * 100.0)),
            self.cpu_us_per_task,
            self.writes_per_100
                .map_or(String::new(), |w| format!("{w:.1}")),
            place,
        );
    }
}

/// CPU time used so far by all threads of this process (0 where unavailable).
fn cpu_time() -> Duration {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    let ns: u64 = dir
        .filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read_to_string(e.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    Duration::from_nanos(ns)
}

/// The baseline: hand-written pipelining over one socket.
async fn raw_run(addr: SocketAddr, in_flight: usize, total: usize) -> RunResult {
    // A runtime task like every other client's callers (not the `block_on` thread, whose
    // wake-ups cross threads).
    tokio::spawn(async move {
        let codec = MarsCodec::default();
        let mut sock = TcpStream::connect(addr).await.expect("connect");
        sock.set_nodelay(true).expect("nodelay");
        // Warm up with the same pattern, then measure.
        raw_pipeline(&codec, &mut sock, in_flight, total / 10 + 1).await;
        let (t0, c0) = (Instant::now(), cpu_time());
        let (lat, writes) = raw_pipeline(&codec, &mut sock, in_flight, total).await;
        RunResult::from(
            t0.elapsed(),
            cpu_time().saturating_sub(c0),
            Some(writes),
            lat,
        )
    })
    .await
    .expect("raw client")
}

async fn raw_pipeline(
    codec: &MarsCodec,
    sock: &mut TcpStream,
    in_flight: usize,
    total: usize,
) -> (Vec<Duration>, u64) {
    let mut writes = 1;
    // When each request was written. Design: one clock read per write, shared by the
    // requests it carries, and the response read in place, as every other client does
    // (`Outstanding::started`, raw-hop's `read_buf`): this client used to read the clock for
    // each request and copy each read once more, work the others do not do, which made the
    // baseline slower and every ratio to it higher (a review, 2026-11-29).
    let mut sent_at: Vec<Instant> = Vec::with_capacity(total + 1);
    // Whether request `seq - 1` still waits for its response.
    let mut waiting: Vec<bool> = Vec::with_capacity(total + 1);
    let mut latencies = Vec::with_capacity(total);
    let mut out = Vec::new();
    let mut sent = 0usize;
    let send_one = |out: &mut Vec<u8>, sent: &mut usize, waiting: &mut Vec<bool>| {
        *sent += 1;
        waiting.push(true);
        let body = body_of(*sent as u64 - 1);
        codec
            .encode(FrameHead::new(CmdId(7), Seq(*sent as u32)), body, &[], out)
            .expect("encode");
    };
    while sent < in_flight.min(total) {
        send_one(&mut out, &mut sent, &mut waiting);
    }
    sent_at.resize(sent, Instant::now());
    sock.write_all(&out).await.expect("write");
    let mut buf = bytes::BytesMut::with_capacity(64 * 1024);
    while latencies.len() < total {
        if buf.capacity() - buf.len() < 16 * 1024 {
            buf.reserve(64 * 1024);
        }
        let n = sock.read_buf(&mut buf).await.expect("read");
        assert!(n > 0, "server closed");
        out.clear();
        let mut at = 0;
        while let Ok(Decoded::Frame(f)) = codec.decode(&buf[at..]) {
            let seq = f.head.seq.0 as usize;
            let echoed = &buf[at + f.body.start..at + f.body.end];
            assert_eq!(
                echoed,
                &body_of(seq.wrapping_sub(1) as u64)[..],
                "response body"
            );
            at += f.len;
            // Match the response to its request.
            let slot = seq.checked_sub(1).and_then(|i| waiting.get_mut(i));
            assert!(
                slot.as_ref().is_some_and(|w| **w),
                "unexpected sequence {seq}"
            );
            if let Some(w) = slot {
                *w = false;
            }
            latencies.push(sent_at[seq - 1].elapsed());
            if sent < total {
                send_one(&mut out, &mut sent, &mut waiting);
            }
        }
        bytes::Buf::advance(&mut buf, at);
        if !out.is_empty() {
            writes += 1;
            sent_at.resize(sent, Instant::now());
            sock.write_all(&out).await.expect("write");
        }
    }
    (latencies, writes)
}

/// pho-like's shape without its engine: one caller task and one socket task, requests going
/// in and responses coming out in batches over channels, response bodies sliced from the
/// read buffer, sequence numbers matched through a table.
async fn hop_run(addr: SocketAddr, in_flight: usize, total: usize) -> RunResult {
    // A runtime task like every other client's callers (not the `block_on` thread).
    tokio::spawn(hop_client(addr, in_flight, total))
        .await
        .expect("raw-hop client")
}

async fn hop_client(addr: SocketAddr, in_flight: usize, total: usize) -> RunResult {
    let mut sock = TcpStream::connect(addr).await.expect("connect");
    sock.set_nodelay(true).expect("nodelay");
    let (req_tx, mut req_rx) = mpsc::unbounded_channel::<Vec<(u64, CmdId, Bytes)>>();
    let (end_tx, mut end_rx) = mpsc::unbounded_channel::<Vec<(u64, Bytes)>>();
    let writes = Arc::new(AtomicUsize::new(0));
    let counted = writes.clone();
    let io = tokio::spawn(async move {
        let codec = MarsCodec::default();
        let cap = (in_flight * 2).next_power_of_two();
        let mut table: Vec<(u32, u64)> = vec![(0, 0); cap];
        let mut next_seq: u32 = 1;
        let mut rbuf = bytes::BytesMut::with_capacity(64 * 1024);
        let mut out = Vec::new();
        let mut load = HopLoad::from_env();
        loop {
            keep_read_room(&mut rbuf);
            tokio::select! {
                reqs = req_rx.recv() => {
                    let Some(mut reqs) = reqs else { return };
                    out.clear();
                    loop {
                        for (key, cmd, body) in reqs.drain(..) {
                            let seq = next_seq;
                            next_seq += 1;
                            table[seq as usize & (cap - 1)] = (seq, key);
                            codec
                                .encode(FrameHead::new(cmd, Seq(seq)), &body, &[], &mut out)
                                .expect("encode");
                        }
                        match req_rx.try_recv() {
                            Ok(more) => reqs = more,
                            Err(_) => break,
                        }
                    }
                    load.run(out.len() as u64);
                    sock.write_all(&out).await.expect("write");
                    counted.fetch_add(1, Ordering::Relaxed);
                }
                r = sock.read_buf(&mut rbuf) => {
                    if r.expect("read") == 0 {
                        return;
                    }
                    let input = rbuf.split().freeze();
                    let mut ends = Vec::with_capacity(in_flight);
                    let mut at = 0;
                    while let Ok(Decoded::Frame(f)) = codec.decode(&input[at..]) {
                        let (seq, key) = table[f.head.seq.0 as usize & (cap - 1)];
                        assert_eq!(seq, f.head.seq.0, "unexpected sequence");
                        ends.push((key, input.slice(at + f.body.start..at + f.body.end)));
                        at += f.len;
                    }
                    rbuf.extend_from_slice(&input[at..]);
                    if !ends.is_empty() && end_tx.send(ends).is_err() {
                        return;
                    }
                }
            }
        }
    });
    let warm = total / 10 + 1;
    hop_pipeline(&req_tx, &mut end_rx, 0, in_flight, warm).await;
    let (t0, c0, w0) = (Instant::now(), cpu_time(), writes.load(Ordering::Relaxed));
    let lat = hop_pipeline(&req_tx, &mut end_rx, warm as u64, in_flight, total).await;
    let (elapsed, cpu) = (t0.elapsed(), cpu_time().saturating_sub(c0));
    let w = (writes.load(Ordering::Relaxed) - w0) as u64;
    let result = RunResult::from(elapsed, cpu, Some(w), lat);
    io.abort();
    result
}

/// **lean** (`PHOBOS_BENCH_ONLY=lean` only; a design probe, not a Phobos client): raw-hop's
/// shape with a small sans-IO core that keeps, for every task, what Phobos's batch lane
/// keeps on its usual path, written once where it can be: an id and the caller's tag, the
/// request body until the answer (for a retry), the attempt's first-packet timeout by queue
/// position, the frame sizes, a profile shared by the tasks of one call, the link's and the
/// estimator's counts, and a timer heap re-armed as the engine's is (total deadline per call,
/// earliest first packet, heartbeat and stall probe per pass). It has none of the paths off
/// the usual one (failures, retries, demotion, limits, auth, priorities): those cost
/// branches, not work, while the usual path runs. The row asks what the usual path could
/// cost: `docs/lab/throughput.md`, "A lean core, priced".
mod lean {
    use std::cmp::Reverse;
    use std::collections::{BinaryHeap, VecDeque};
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use bytes::{Bytes, BytesMut};
    use phobos_codec_mars::MarsCodec;
    use phobos_plugin_api::{CmdId, Decoded, FrameHead, FrameKind, PacketCodec, Seq};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio::sync::mpsc;

    use super::{cpu_time, Outstanding, RunResult, BODY_LEN};

    /// One task, held from admission to its answer.
    struct Member {
        held: bool,
        tag: u64,
        cmd: CmdId,
        body: Bytes,
        /// Set by the pass that sent it: frame length and first-packet timeout.
        sent_len: u32,
        first_packet: Duration,
    }

    /// What the tasks of one call share: their profile's common part.
    pub(super) struct Shared {
        pub(super) admitted: Instant,
        pub(super) sent_at: Option<Instant>,
        pub(super) answered_at: Instant,
        pub(super) link: Arc<str>,
    }

    /// One task's end: the parts of its profile that are its own.
    pub(super) struct End {
        pub(super) id: u32,
        pub(super) tag: u64,
        pub(super) cmd: CmdId,
        pub(super) body: Bytes,
        pub(super) sent_bytes: u32,
        pub(super) received_bytes: u32,
        pub(super) first_packet: Duration,
    }

    #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
    enum Timer {
        Total,
        FirstPacket,
        Heartbeat,
        StallProbe,
    }

    /// The sans-IO core: admission, the dispatch pass, responses; no IO, no clock.
    pub(super) struct Core {
        codec: Arc<dyn PacketCodec>,
        link: Arc<str>,
        next_id: u32,
        /// Task `base + i` at `i`.
        base: u32,
        members: VecDeque<Member>,
        unsent_from: usize,
        /// Admission instant of the last call and its first id.
        calls: VecDeque<(u32, Instant, Option<Instant>)>,
        timers: BinaryHeap<Reverse<(Instant, Timer, u32)>>,
        heartbeat_due: Option<Instant>,
        /// First-packet timeouts by queue position (the formula's inputs but the position are
        /// the same in the usual pass).
        memo: Vec<Option<Duration>>,
        running: u32,
        requests_sent: u64,
        tasks_succeeded: u64,
        bytes_sent: u64,
        bytes_received: u64,
        quick_meets: u64,
    }

    impl Core {
        pub(super) fn new(codec: Arc<dyn PacketCodec>) -> Self {
            Core {
                codec,
                link: Arc::from("default-longlink"),
                next_id: 1,
                base: 1,
                members: VecDeque::new(),
                unsent_from: 0,
                calls: VecDeque::new(),
                timers: BinaryHeap::new(),
                heartbeat_due: None,
                memo: vec![None; 64],
                running: 0,
                requests_sent: 0,
                tasks_succeeded: 0,
                bytes_sent: 0,
                bytes_received: 0,
                quick_meets: 0,
            }
        }

        /// Admits one call's tasks, each a tag, command and body; returns the first id.
        pub(super) fn admit(&mut self, now: Instant, tasks: Vec<(u64, CmdId, Bytes)>) -> u32 {
            let first = self.next_id;
            self.members.reserve(tasks.len());
            for (tag, cmd, body) in tasks {
                self.next_id += 1;
                self.members.push_back(Member {
                    held: true,
                    tag,
                    cmd,
                    body,
                    sent_len: 0,
                    first_packet: Duration::ZERO,
                });
            }
            self.calls.push_back((first, now, None));
            self.timers.push(Reverse((
                now + Duration::from_secs(30),
                Timer::Total,
                first,
            )));
            first
        }

        /// The formula of the first-packet timeout for a task with `ahead` tasks running.
        fn first_packet(&mut self, ahead: u32) -> Duration {
            let pos = (ahead as usize).min(self.memo.len() - 1);
            if let Some(t) = self.memo[pos] {
                return t;
            }
            let t = Duration::from_secs(5)
                + Duration::from_millis(BODY_LEN as u64 / 10)
                + Duration::from_millis(400) * pos as u32;
            self.memo[pos] = Some(t);
            t
        }

        /// The dispatch pass: frames every task not sent yet into `out`.
        pub(super) fn dispatch(&mut self, now: Instant, out: &mut Vec<u8>) {
            let mut earliest: Option<Duration> = None;
            let codec = self.codec.clone();
            for i in self.unsent_from..self.members.len() {
                let id = self.base + i as u32;
                let ahead = self.running;
                let t = self.first_packet(ahead);
                let m = &mut self.members[i];
                if !m.held {
                    continue;
                }
                let before = out.len();
                codec
                    .encode(FrameHead::new(m.cmd, Seq(id)), &m.body, &[], out)
                    .expect("encode");
                m.sent_len = (out.len() - before) as u32;
                m.first_packet = t;
                earliest = Some(earliest.map_or(t, |e| e.min(t)));
                self.running += 1;
                self.requests_sent += 1;
            }
            self.unsent_from = self.members.len();
            for call in self.calls.iter_mut().rev() {
                if call.2.is_some() {
                    break;
                }
                call.2 = Some(now);
            }
            if let Some(t) = earliest {
                self.timers.push(Reverse((now + t, Timer::FirstPacket, 0)));
                self.timers.push(Reverse((
                    now + Duration::from_secs(2),
                    Timer::StallProbe,
                    0,
                )));
                let due = now + Duration::from_secs(210);
                self.heartbeat_due = Some(due);
                self.timers.push(Reverse((due, Timer::Heartbeat, 0)));
                self.bytes_sent += out.len() as u64;
            }
        }

        /// The earliest timer still wanted; stale entries (their task or round gone, or
        /// re-armed since) are dropped on the way.
        pub(super) fn next_deadline(&mut self) -> Option<Instant> {
            while let Some(&Reverse((at, kind, id))) = self.timers.peek() {
                let live = match kind {
                    Timer::Total => self.calls.iter().any(|c| c.0 == id),
                    Timer::Heartbeat => self.heartbeat_due == Some(at),
                    Timer::FirstPacket | Timer::StallProbe => self.running > 0,
                };
                if live {
                    return Some(at);
                }
                self.timers.pop();
            }
            None
        }

        /// A read: every whole response ends its task into `ends`; returns the shared
        /// profile of the call the first one belonged to, and the bytes left undecoded.
        pub(super) fn on_data(
            &mut self,
            now: Instant,
            input: &Bytes,
            ends: &mut Vec<End>,
        ) -> (Option<Arc<Shared>>, usize) {
            self.bytes_received += input.len() as u64;
            let mut at = 0;
            let mut call = None;
            while let Ok(Decoded::Frame(f)) = self.codec.decode(&input[at..]) {
                let FrameKind::Response(seq) = self.codec.classify(&f.head) else {
                    break;
                };
                let Some(m) = seq
                    .0
                    .checked_sub(self.base)
                    .and_then(|i| self.members.get_mut(i as usize))
                    .filter(|m| m.held && m.sent_len > 0)
                else {
                    break;
                };
                ends.push(End {
                    id: seq.0,
                    tag: m.tag,
                    cmd: f.head.cmd_id,
                    body: input.slice(at + f.body.start..at + f.body.end),
                    sent_bytes: m.sent_len,
                    received_bytes: f.len as u32,
                    first_packet: m.first_packet,
                });
                m.held = false;
                m.body = Bytes::new();
                call.get_or_insert(seq.0);
                self.running -= 1;
                self.tasks_succeeded += 1;
                self.quick_meets += 1;
                at += f.len;
            }
            // Ended tasks leave from the front; a call leaves with its last task.
            while self.members.front().is_some_and(|m| !m.held) {
                self.members.pop_front();
                self.base += 1;
                self.unsent_from -= 1;
            }
            let shared = call.and_then(|id| {
                let c = self.calls.iter().rev().find(|c| c.0 <= id)?;
                Some(Arc::new(Shared {
                    admitted: c.1,
                    sent_at: c.2,
                    answered_at: now,
                    link: self.link.clone(),
                }))
            });
            while self.calls.len() > 1 && self.calls[1].0 <= self.base {
                self.calls.pop_front();
            }
            if self.members.is_empty() {
                self.calls.clear();
            }
            (shared, at)
        }
    }

    pub(super) async fn run(addr: SocketAddr, in_flight: usize, total: usize) -> RunResult {
        tokio::spawn(client(addr, in_flight, total))
            .await
            .expect("lean client")
    }

    type Batch = (Option<Arc<Shared>>, Vec<End>);

    async fn client(addr: SocketAddr, in_flight: usize, total: usize) -> RunResult {
        let mut sock = TcpStream::connect(addr).await.expect("connect");
        sock.set_nodelay(true).expect("nodelay");
        let (req_tx, mut req_rx) = mpsc::unbounded_channel::<Vec<(u64, CmdId, Bytes)>>();
        let (end_tx, mut end_rx) = mpsc::unbounded_channel::<Batch>();
        let io = tokio::spawn(async move {
            let mut core = Core::new(Arc::new(MarsCodec::default()));
            let mut rbuf = BytesMut::with_capacity(64 * 1024);
            let mut out = Vec::new();
            let sleep = tokio::time::sleep(Duration::from_secs(3600));
            tokio::pin!(sleep);
            let mut armed: Option<Instant> = None;
            loop {
                super::keep_read_room(&mut rbuf);
                tokio::select! {
                    reqs = req_rx.recv() => {
                        let Some(mut reqs) = reqs else { return };
                        let now = Instant::now();
                        loop {
                            core.admit(now, reqs);
                            match req_rx.try_recv() {
                                Ok(more) => reqs = more,
                                Err(_) => break,
                            }
                        }
                        out.clear();
                        core.dispatch(now, &mut out);
                        sock.write_all(&out).await.expect("write");
                    }
                    r = sock.read_buf(&mut rbuf) => {
                        if r.expect("read") == 0 {
                            return;
                        }
                        let now = Instant::now();
                        let input = rbuf.split().freeze();
                        let mut ends = Vec::with_capacity(in_flight);
                        let (shared, used) = core.on_data(now, &input, &mut ends);
                        rbuf.extend_from_slice(&input[used..]);
                        if !ends.is_empty() && end_tx.send((shared, ends)).is_err() {
                            return;
                        }
                    }
                    () = &mut sleep => {
                        armed = None;
                    }
                }
                // One timer, re-armed only for an earlier deadline (as the driver does).
                if let Some(at) = core.next_deadline() {
                    if armed.is_none_or(|a| at < a) {
                        armed = Some(at);
                        sleep.as_mut().reset(at.into());
                    }
                }
            }
        });
        let warm = total / 10 + 1;
        pipeline(&req_tx, &mut end_rx, 0, in_flight, warm).await;
        let (t0, c0) = (Instant::now(), cpu_time());
        let lat = pipeline(&req_tx, &mut end_rx, warm as u64, in_flight, total).await;
        let (elapsed, cpu) = (t0.elapsed(), cpu_time().saturating_sub(c0));
        let result = RunResult::from(elapsed, cpu, None, lat);
        io.abort();
        result
    }

    /// The caller: keeps `in_flight` of `total` requests (keys from `base`) outstanding,
    /// and reads every end's profile as an app would.
    async fn pipeline(
        req_tx: &mpsc::UnboundedSender<Vec<(u64, CmdId, Bytes)>>,
        end_rx: &mut mpsc::UnboundedReceiver<Batch>,
        base: u64,
        in_flight: usize,
        total: usize,
    ) -> Vec<Duration> {
        let start = |from: u64, index: u64, n: usize| super::send_requests(req_tx, from, index, n);
        let mut out = Outstanding::new(base, total);
        let first = in_flight.min(total);
        let t = Instant::now();
        start(base, 0, first);
        out.started(first, t);
        let mut seen = 0u64;
        while out.done() < total {
            let (shared, ends) = end_rx.recv().await.expect("io task");
            let shared = shared.expect("a profile for every batch of ends");
            for end in &ends {
                assert!(end.sent_bytes > 0 && end.received_bytes > 0 && end.cmd == CmdId(7));
                assert!(end.first_packet > Duration::ZERO && end.id > 0);
                out.ended(end.tag, &end.body);
            }
            seen += u64::from(shared.sent_at.is_some()) + shared.link.len() as u64;
            std::hint::black_box((seen, shared.admitted, shared.answered_at));
            out.replace(ends.len(), start);
        }
        out.latencies
    }
}

/// Keeps at least 16 KiB free at the end of a socket task's read buffer (growing it by 64
/// KiB), so one read can take a whole round of responses.
fn keep_read_room(rbuf: &mut bytes::BytesMut) {
    if rbuf.capacity() - rbuf.len() < 16 * 1024 {
        rbuf.reserve(64 * 1024);
    }
}

/// The extra work of `PHOBOS_BENCH_HOP_CODE` and `PHOBOS_BENCH_HOP_DATA` (see the module
/// docs): what raw-hop's socket task does once per write besides its own.
struct HopLoad {
    /// Functions to run, and whether they are all the same one.
    code: (usize, bool),
    /// Cache lines to store into, and whether they are all the same one.
    data: (usize, bool),
    ring: Vec<u64>,
    /// The ring's next line.
    at: usize,
}

/// The size of `PHOBOS_BENCH_HOP_DATA`'s ring: more than the L1 data cache, less than L2.
const RING_BYTES: usize = 256 * 1024;

/// Words in one 64-byte cache line.
const LINE_WORDS: usize = 8;

impl HopLoad {
    fn from_env() -> Self {
        let knob = |name: &str| -> (usize, bool) {
            let Ok(v) = std::env::var(name) else {
                return (0, false);
            };
            let (n, same) = match v.strip_suffix(":same") {
                Some(n) => (n, true),
                None => (v.as_str(), false),
            };
            let n = n
                .parse()
                .unwrap_or_else(|_| panic!("{name}: a count, or a count and `:same`"));
            (n, same)
        };
        let code = knob("PHOBOS_BENCH_HOP_CODE");
        assert!(
            code.0 <= fillers().len(),
            "PHOBOS_BENCH_HOP_CODE: at most {} functions",
            fillers().len()
        );
        let data = knob("PHOBOS_BENCH_HOP_DATA");
        let ring = if data.0 > 0 {
            vec![0; RING_BYTES / 8]
        } else {
            Vec::new()
        };
        HopLoad {
            code,
            data,
            ring,
            at: 0,
        }
    }

    /// One write's extra work, seeded with `x` so that none of it can be left out.
    fn run(&mut self, x: u64) {
        let (n, same) = self.code;
        let mut y = x;
        let fillers = fillers();
        for f in &fillers[..n] {
            let f = if same { fillers[0] } else { *f };
            y = std::hint::black_box(f)(y);
        }
        // Both forms run the same instructions: only the lines stored into differ.
        let (n, same) = self.data;
        let lines = self.ring.len() / LINE_WORDS;
        let step = usize::from(!same);
        let mut line = self.at;
        for i in 0..n {
            self.ring[line * LINE_WORDS] = std::hint::black_box(y.wrapping_add(i as u64));
            line += step;
            if line == lines {
                line = 0;
            }
        }
        self.at = line;
        std::hint::black_box(y);
    }
}

/// A filler multiplier or mask: odd, and different for every `k` and step `i`.
const fn mix(k: u64, i: u64) -> u64 {
    (k.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ i.wrapping_mul(0xBF58_476D_1CE4_E5B9)) | 1
}

/// A filler rotation, 1 to 63 bits.
const fn rot(k: u64, i: u64) -> u32 {
    ((k * 7 + i) % 63 + 1) as u32
}

/// One of [`fillers`]: eight dependent steps whose constants differ for every `K`, so every
/// instance is code of its own (about 250 bytes).
#[inline(never)]
fn filler<const K: u64>(x: u64) -> u64 {
    let mut y = x;
    y = y.wrapping_mul(mix(K, 1)).rotate_left(rot(K, 1)) ^ mix(K, 2);
    y = y.wrapping_mul(mix(K, 3)).rotate_left(rot(K, 3)) ^ mix(K, 4);
    y = y.wrapping_mul(mix(K, 5)).rotate_left(rot(K, 5)) ^ mix(K, 6);
    y = y.wrapping_mul(mix(K, 7)).rotate_left(rot(K, 7)) ^ mix(K, 8);
    y = y.wrapping_mul(mix(K, 9)).rotate_left(rot(K, 9)) ^ mix(K, 10);
    y = y.wrapping_mul(mix(K, 11)).rotate_left(rot(K, 11)) ^ mix(K, 12);
    y = y.wrapping_mul(mix(K, 13)).rotate_left(rot(K, 13)) ^ mix(K, 14);
    y = y.wrapping_mul(mix(K, 15)).rotate_left(rot(K, 15)) ^ mix(K, 16);
    y
}

/// Eight fillers, `8 * h` to `8 * h + 7`.
macro_rules! fillers8 {
    ($h:literal) => {
        [
            filler::<{ $h * 8 }> as Filler,
            filler::<{ $h * 8 + 1 }>,
            filler::<{ $h * 8 + 2 }>,
            filler::<{ $h * 8 + 3 }>,
            filler::<{ $h * 8 + 4 }>,
            filler::<{ $h * 8 + 5 }>,
            filler::<{ $h * 8 + 6 }>,
            filler::<{ $h * 8 + 7 }>,
        ]
    };
}

/// Fillers by groups of eight.
macro_rules! fillers {
    ($($h:literal)*) => {
        [$(fillers8!($h)),*]
    };
}

/// A filler's type.
type Filler = fn(u64) -> u64;

/// 512 distinct functions for `PHOBOS_BENCH_HOP_CODE`, by groups of eight.
static FILLER_GROUPS: [[Filler; 8]; 64] = fillers!(
    0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31
    32 33 34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55 56 57 58 59 60 61
    62 63
);

/// [`FILLER_GROUPS`] as one list.
fn fillers() -> &'static [Filler] {
    FILLER_GROUPS.as_flattened()
}

/// Sends requests `from..from + n` (key, command 7, `body`) to a socket task as one batch
/// (raw-hop's and lean's callers).
fn send_requests(
    req_tx: &mpsc::UnboundedSender<Vec<(u64, CmdId, Bytes)>>,
    from: u64,
    index: u64,
    n: usize,
) {
    let reqs: Vec<_> = (0..n as u64)
        .map(|j| (from + j, CmdId(7), body_of(index + j).clone()))
        .collect();
    req_tx.send(reqs).expect("io task");
}

/// raw-hop's caller: keeps `in_flight` of `total` requests (keys from `base`) outstanding.
async fn hop_pipeline(
    req_tx: &mpsc::UnboundedSender<Vec<(u64, CmdId, Bytes)>>,
    end_rx: &mut mpsc::UnboundedReceiver<Vec<(u64, Bytes)>>,
    base: u64,
    in_flight: usize,
    total: usize,
) -> Vec<Duration> {
    let start = |from: u64, index: u64, n: usize| send_requests(req_tx, from, index, n);
    let mut out = Outstanding::new(base, total);
    let first = in_flight.min(total);
    let t = Instant::now();
    start(base, 0, first);
    out.started(first, t);
    while out.done() < total {
        let mut ends = end_rx.recv().await.expect("io task");
        while let Ok(more) = end_rx.try_recv() {
            ends.extend(more);
        }
        for (key, resp) in &ends {
            out.ended(*key, resp);
        }
        out.replace(ends.len(), start);
    }
    out.latencies
}

/// The minimal multiplexing client: same caller shape as Phobos, no engine.
async fn mux_run(addr: SocketAddr, in_flight: usize, total: usize) -> RunResult {
    let sock = TcpStream::connect(addr).await.expect("connect");
    sock.set_nodelay(true).expect("nodelay");
    let (mut rd, mut wr) = sock.into_split();
    let pending: Arc<Mutex<HashMap<u32, oneshot::Sender<Bytes>>>> = Arc::default();
    let (wtx, mut wrx) = mpsc::unbounded_channel::<Vec<u8>>();
    // Socket writes, counted as every other client's are.
    let writes = Arc::new(AtomicUsize::new(0));
    let counted = writes.clone();
    let writer = tokio::spawn(async move {
        let mut batch = Vec::new();
        while let Some(first) = wrx.recv().await {
            batch.clear();
            batch.extend_from_slice(&first);
            while let Ok(more) = wrx.try_recv() {
                batch.extend_from_slice(&more);
            }
            if wr.write_all(&batch).await.is_err() {
                return;
            }
            counted.fetch_add(1, Ordering::Relaxed);
        }
    });
    let routes = pending.clone();
    let reader = tokio::spawn(async move {
        let codec = MarsCodec::default();
        let mut buf = Vec::with_capacity(64 * 1024);
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let n = match rd.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            buf.extend_from_slice(&chunk[..n]);
            let mut at = 0;
            while let Ok(Decoded::Frame(f)) = codec.decode(&buf[at..]) {
                let body = Bytes::copy_from_slice(&buf[at + f.body.start..at + f.body.end]);
                at += f.len;
                let tx = routes.lock().expect("lock").remove(&f.head.seq.0);
                let tx = tx.unwrap_or_else(|| panic!("unexpected sequence {}", f.head.seq.0));
                let _ = tx.send(body);
            }
            buf.drain(..at);
        }
    });
    let seq = Arc::new(AtomicUsize::new(1));
    let run = |total: usize| {
        let next = Arc::new(AtomicUsize::new(0));
        let mut callers = Vec::new();
        for _ in 0..in_flight {
            let (next, seq, pending, wtx) =
                (next.clone(), seq.clone(), pending.clone(), wtx.clone());
            callers.push(tokio::spawn(async move {
                let codec = MarsCodec::default();
                let mut lat = Vec::new();
                while next.fetch_add(1, Ordering::Relaxed) < total {
                    let t = Instant::now();
                    let s = seq.fetch_add(1, Ordering::Relaxed) as u32;
                    let body = body_of(u64::from(s));
                    let mut frame = Vec::with_capacity(BODY_LEN + 20);
                    codec
                        .encode(FrameHead::new(CmdId(7), Seq(s)), body, &[], &mut frame)
                        .expect("encode");
                    let (tx, rx) = oneshot::channel();
                    pending.lock().expect("lock").insert(s, tx);
                    wtx.send(frame).expect("writer");
                    let resp = rx.await.expect("response");
                    lat.push(t.elapsed());
                    assert_eq!(resp, body, "response body");
                }
                lat
            }));
        }
        callers
    };
    for c in run(total / 10 + 1) {
        c.await.expect("caller");
    }
    let (t0, c0, w0) = (Instant::now(), cpu_time(), writes.load(Ordering::Relaxed));
    let mut all = Vec::with_capacity(total);
    for c in run(total) {
        all.extend(c.await.expect("caller"));
    }
    let w = (writes.load(Ordering::Relaxed) - w0) as u64;
    let result = RunResult::from(t0.elapsed(), cpu_time().saturating_sub(c0), Some(w), all);
    writer.abort();
    reader.abort();
    result
}

/// The client's long-link socket writes so far.
async fn writes(client: &Client) -> u64 {
    client.stats().await.expect("driver running").writes
}

/// Phobos: `in_flight` callers share one client and its one long link.
async fn phobos_run(addr: SocketAddr, in_flight: usize, total: usize) -> RunResult {
    phobos_timed(addr, total, |client, n| async move {
        phobos_callers(&client, in_flight, n).await
    })
    .await
}

/// One Phobos client's run against `addr`: a warm-up of a tenth of `total` tasks (plus one),
/// then `total` tasks timed, each part run by `run(client, body, tasks)`, which returns the
/// tasks' latencies.
async fn phobos_timed<F, Fut>(addr: SocketAddr, total: usize, run: F) -> RunResult
where
    F: Fn(Client, usize) -> Fut,
    Fut: std::future::Future<Output = Vec<Duration>>,
{
    let config = ClientConfig::builder(Arc::new(MarsCodec::default()))
        .link_addrs("default-longlink", [addr.into()])
        .build()
        .expect("config");
    let client = Client::start(config).expect("client");
    run(client.clone(), total / 10 + 1).await;
    let (t0, c0, w0) = (Instant::now(), cpu_time(), writes(&client).await);
    let lat = run(client.clone(), total).await;
    let (elapsed, cpu) = (t0.elapsed(), cpu_time().saturating_sub(c0));
    let writes = writes(&client).await - w0;
    let result = RunResult::from(elapsed, cpu, Some(writes), lat);
    client.shutdown().await;
    result
}

async fn phobos_callers(client: &Client, in_flight: usize, total: usize) -> Vec<Duration> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut callers = Vec::new();
    for _ in 0..in_flight {
        let client = client.clone();
        let next = next.clone();
        callers.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(total / in_flight + 1);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let body = body_of(i as u64);
                let spec = TaskSpec::new(CmdId(7), body.clone()).with_limits(false, false);
                let t = Instant::now();
                let resp = client.start_task(spec).await.expect("task");
                lat.push(t.elapsed());
                assert_eq!(resp.body, body, "response body");
            }
            lat
        }));
    }
    let mut all = Vec::with_capacity(total);
    for c in callers {
        all.extend(c.await.expect("caller"));
    }
    all
}

/// Phobos through the batch API: one caller keeps `in_flight` tasks outstanding on one
/// `TaskBatch`, replacing each batch of ends with one `start` call.
/// The phobos-batch client (`like`: the pho-like one).
async fn phobos_batch_run(
    addr: SocketAddr,
    in_flight: usize,
    total: usize,
    like: bool,
) -> RunResult {
    phobos_timed(addr, total, |client, n| async move {
        phobos_batch(&client, in_flight, n, like).await
    })
    .await
}

async fn phobos_batch(
    client: &Client,
    in_flight: usize,
    total: usize,
    like: bool,
) -> Vec<Duration> {
    // A runtime task like the callers of the `phobos` row (not the `block_on` thread).
    let client = client.clone();
    tokio::spawn(async move { phobos_batch_caller(&client, in_flight, total, like).await })
        .await
        .expect("caller")
}

async fn phobos_batch_caller(
    client: &Client,
    in_flight: usize,
    total: usize,
    like: bool,
) -> Vec<Duration> {
    let spec = |i: u64| TaskSpec::new(CmdId(7), body_of(i).clone()).with_limits(false, false);
    let params = TaskSpec::new(CmdId(7), Bytes::new()).with_limits(false, false);
    let mut batch = client.task_batch();
    // `n` more tasks from request `i` on, by one spec each or one set of parameters.
    let start = |batch: &mut phobos_stn::TaskBatch, i: u64, n: usize| {
        let requests = i..i + n as u64;
        if like {
            batch.start_like(&params, requests.map(|i| (CmdId(7), body_of(i).clone())))
        } else {
            batch.start(requests.map(spec))
        }
    };
    let first = in_flight.min(total);
    let t = Instant::now();
    let keys = start(&mut batch, 0, first);
    // This caller is the client's only one, so its keys are consecutive.
    let mut out = Outstanding::new(keys.first().expect("at least one task").get(), total);
    out.started(first, t);
    let mut ends: Vec<BatchEnd> = Vec::with_capacity(in_flight);
    while out.done() < total {
        // pho-like reads its ends in place (`recv_group`); pho-batch as `BatchEnd`s.
        let n = if like {
            let group = batch.recv_group().await.expect("tasks outstanding");
            for end in &group {
                let resp = end.outcome().expect("task");
                out.ended(end.key().get(), &resp.body);
            }
            group.len()
        } else {
            ends.clear();
            assert!(batch.recv_many(&mut ends).await > 0, "tasks outstanding");
            for end in &ends {
                let resp = end.outcome.as_ref().expect("task");
                out.ended(end.key.get(), &resp.body);
            }
            ends.len()
        };
        out.replace(n, |next, i, n| {
            let keys = start(&mut batch, i, n);
            assert_eq!(keys.first().map(|k| k.get()), Some(next));
        });
    }
    out.latencies
}

/// Phobos through an end handler run on the driver (`Client::run_on_driver`): pho-like's
/// caller as an [`EndHandler`], which the driver calls with each iteration's ends and whose
/// replacements leave in the same iteration (the raw client's shape through the public API).
async fn phobos_handler_run(addr: SocketAddr, in_flight: usize, total: usize) -> RunResult {
    phobos_timed(addr, total, |client, n| async move {
        phobos_handler(&client, in_flight, n).await
    })
    .await
}

async fn phobos_handler(client: &Client, in_flight: usize, total: usize) -> Vec<Duration> {
    let handler = Keeper {
        params: TaskSpec::new(CmdId(7), Bytes::new()).with_limits(false, false),
        in_flight: in_flight.min(total),
        out: None,
        total,
    };
    let done = client.run_on_driver(handler).await.expect("handler");
    done.out.expect("started").latencies
}

/// pho-hdl's handler: keeps `in_flight` tasks outstanding until `total` have ended.
struct Keeper {
    params: TaskSpec,
    in_flight: usize,
    total: usize,
    out: Option<Outstanding>,
}

impl EndHandler for Keeper {
    fn start(&mut self, tasks: &mut Starter<'_>) {
        let t = Instant::now();
        let keys = tasks.start_like(
            &self.params,
            (0..self.in_flight as u64).map(|i| (CmdId(7), body_of(i).clone())),
        );
        // The client's only starter, so its keys are consecutive.
        let mut out = Outstanding::new(keys.first().expect("at least one task").get(), self.total);
        out.started(self.in_flight, t);
        self.out = Some(out);
    }

    fn on_ends(&mut self, ends: EndGroup, tasks: &mut Starter<'_>) {
        let out = self.out.as_mut().expect("started");
        for end in &ends {
            let resp = end.outcome().expect("task");
            out.ended(end.key().get(), &resp.body);
        }
        let params = &self.params;
        out.replace(ends.len(), |next, i, n| {
            let requests = i..i + n as u64;
            let keys = tasks.start_like(params, requests.map(|i| (CmdId(7), body_of(i).clone())));
            assert_eq!(keys.first().map(|k| k.get()), Some(next));
        });
    }
}

/// What a caller keeping requests outstanding in batches knows of them, indexed by key less
/// the first key (its keys are consecutive): when each started, whether each still waits for
/// its end, and the latencies of those that ended.
struct Outstanding {
    base: u64,
    /// Requests the run makes in all.
    total: usize,
    started_at: Vec<Instant>,
    waiting: Vec<bool>,
    latencies: Vec<Duration>,
}

impl Outstanding {
    fn new(base: u64, total: usize) -> Self {
        Outstanding {
            base,
            total,
            started_at: Vec::with_capacity(total + 1),
            waiting: Vec::with_capacity(total + 1),
            latencies: Vec::with_capacity(total),
        }
    }

    /// Requests started so far.
    fn sent(&self) -> usize {
        self.started_at.len()
    }

    /// Requests that ended so far.
    fn done(&self) -> usize {
        self.latencies.len()
    }

    /// Replaces `ended` requests that ended, as far as the run's total goes: `start(first
    /// key, first index, n)` starts `n` more (request `i` with [`body_of`]`(i)`).
    fn replace(&mut self, ended: usize, start: impl FnOnce(u64, u64, usize)) {
        let more = ended.min(self.total - self.sent());
        if more > 0 {
            let t = Instant::now();
            let i = self.sent() as u64;
            start(self.base + i, i, more);
            self.started(more, t);
        }
    }

    /// `n` more requests started at `t`.
    fn started(&mut self, n: usize, t: Instant) {
        let to = self.sent() + n;
        self.started_at.resize(to, t);
        self.waiting.resize(to, true);
    }

    /// The request of key `key` ended with `body`: it must be one of this caller's, still
    /// waiting, answered with the body it sent ([`body_of`] its index).
    fn ended(&mut self, key: u64, body: &[u8]) {
        let i = key.checked_sub(self.base).expect("own key") as usize;
        assert_eq!(body, &body_of(i as u64)[..], "response body");
        let slot = self.waiting.get_mut(i).expect("own key");
        assert!(*slot, "one end per task");
        *slot = false;
        self.latencies.push(self.started_at[i].elapsed());
    }
}

/// RSS of this process with `n` idle, connected long links (one `Client` each), against the
/// RSS before they existed.
async fn idle_memory(addr: SocketAddr, n: usize) {
    let before = rss_bytes();
    let mut clients = Vec::with_capacity(n);
    let mut events = Vec::with_capacity(n);
    for _ in 0..n {
        let config = ClientConfig::builder(Arc::new(MarsCodec::default()))
            .link_addrs("default-longlink", [addr.into()])
            .build()
            .expect("config");
        let client = Client::start(config).expect("client");
        events.push(client.link_events());
        client.make_sure_connected("default-longlink");
        clients.push(client);
    }
    for ev in &mut events {
        ev.wait_for("default-longlink", |e| {
            matches!(e.status, LinkStatus::Connected(_))
        })
        .await
        .expect("connected");
    }
    // Let the first heartbeat of every link be answered, so the links are truly idle.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = rss_bytes();
    let one_client_process = {
        // The process RSS with a single idle link, for comparison with Mars's 6.5 MB.
        before + (after.saturating_sub(before)) / n as u64
    };
    println!(
        "idle long links: {n} connected clients, RSS {:.1} MB -> {:.1} MB: {:.1} KB per idle \
         link (process with one idle link ≈ {:.1} MB)",
        before as f64 / 1e6,
        after as f64 / 1e6,
        (after.saturating_sub(before)) as f64 / n as f64 / 1e3,
        one_client_process as f64 / 1e6,
    );
    for c in &clients {
        c.shutdown().await;
    }
}

/// Resident set size from `/proc/self/statm` (0 where unavailable).
fn rss_bytes() -> u64 {
    let Ok(s) = std::fs::read_to_string("/proc/self/statm") else {
        return 0;
    };
    let pages: u64 = s
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The echo server process: prints its address, echoes every connection's bytes, exits when
/// its stdin closes.
fn serve() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        println!("{}", listener.local_addr().expect("addr"));
        std::io::stdout().flush().expect("flush");
        let stop = tokio::task::spawn_blocking(|| {
            let mut s = String::new();
            let _ = std::io::stdin().read_line(&mut s);
        });
        let accept = async {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    continue;
                };
                let _ = sock.set_nodelay(true);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        match sock.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                if sock.write_all(&buf[..n]).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        };
        tokio::select! {
            _ = stop => {}
            () = accept => {}
        }
    });
}
