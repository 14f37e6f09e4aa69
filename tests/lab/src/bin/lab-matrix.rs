//! The scenario matrix: long-link echo tasks across loss × added latency and the fault
//! proxy's stream faults, for Phobos defaults, `mars-classic` and a naive client, each cell
//! in network namespaces of its own. Needs root.
//!
//! ```text
//! cargo run --release -p phobos-lab --bin lab-matrix -- [--tasks N] [--parallel P]
//!     [--only grid|faults] [--out DIR]
//! ```
//!
//! Writes `DIR/matrix.md` and `DIR/matrix.svg` (default `docs/lab` of the workspace).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use phobos_lab::contender::Contender;
use phobos_lab::matrix::{self, CellResult, Scenario, Workload};

fn main() -> anyhow::Result<()> {
    let mut workload = Workload::full();
    let mut parallel = 8;
    let mut only: Option<String> = None;
    let mut out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/lab");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| anyhow::anyhow!("{a} needs a value"))
        };
        match a.as_str() {
            "--tasks" => workload.tasks = value()?.parse()?,
            "--parallel" => parallel = value()?.parse()?,
            "--only" => only = Some(value()?),
            "--out" => out = PathBuf::from(value()?),
            "-h" | "--help" => {
                println!("lab-matrix [--tasks N] [--parallel P] [--only grid|faults] [--out DIR]");
                return Ok(());
            }
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    phobos_lab::netns::check_root()?;
    phobos_lab::netns::ensure_tools()?;
    let mut scenarios: Vec<Scenario> = Vec::new();
    if only.as_deref() != Some("faults") {
        scenarios.extend(matrix::grid_scenarios());
    }
    if only.as_deref() != Some("grid") {
        scenarios.extend(matrix::fault_scenarios());
    }
    let cells = scenarios.len() * Contender::ALL.len();
    eprintln!("{cells} cells, {parallel} at a time, {workload:?}");
    let started = Instant::now();
    let done = std::sync::atomic::AtomicUsize::new(0);
    let results = matrix::run_matrix(&scenarios, &Contender::ALL, workload, parallel, &|r| {
        let n = done.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        match r {
            Ok(c) => eprintln!(
                "[{n}/{cells}] {} / {}: {}/{}",
                c.scenario.name, c.contender, c.successes, c.tasks
            ),
            Err(e) => eprintln!("[{n}/{cells}] failed: {e}"),
        }
    });
    let elapsed = started.elapsed();
    let mut ok: Vec<CellResult> = Vec::new();
    let mut failed = Vec::new();
    for r in results {
        match r {
            Ok(c) => ok.push(c),
            Err(e) => failed.push(e),
        }
    }
    let date = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC");
    let machine = matrix::machine_description();
    let md = render(
        &ok,
        &failed,
        workload,
        parallel,
        elapsed,
        &date.to_string(),
        &machine,
    );
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("matrix.md"), &md)?;
    let title = format!("Phobos lab matrix, {date} ({machine})");
    if let Err(e) = phobos_lab::plot::matrix_svg(&ok, &title, &out.join("matrix.svg")) {
        eprintln!("no SVG: {e}");
    }
    println!("{md}");
    eprintln!(
        "wrote {} and matrix.svg in {:.0} s",
        out.join("matrix.md").display(),
        elapsed.as_secs_f64()
    );
    if !failed.is_empty() {
        anyhow::bail!("{} cells failed to run", failed.len());
    }
    Ok(())
}

fn render(
    ok: &[CellResult],
    failed: &[String],
    w: Workload,
    parallel: usize,
    elapsed: Duration,
    date: &str,
    machine: &str,
) -> String {
    let mut md = String::from("# Lab matrix\n\n");
    md.push_str(&format!(
        "Measured {date} on {machine}, by `cargo run --release -p phobos-lab --bin lab-matrix` \
         ({} cells, {parallel} at a time, {:.0} s in all).\n\n",
        ok.len() + failed.len(),
        elapsed.as_secs_f64()
    ));
    md.push_str(&format!(
        "Workload per cell: {} echo tasks of {} bytes, one every {} ms (open loop), each with a \
         total timeout of {} s; a task counts as a success only when its echo came back \
         intact within it. p50/p99 are over the successful tasks (nearest rank). Dials are \
         connect attempts; reconnects are completed handshakes beyond the first. Wire bytes \
         are what the veth pair carried (IP headers and retransmissions included).\n\n",
        w.tasks,
        w.body_len,
        w.interval.as_millis(),
        w.task_timeout.as_secs()
    ));
    md.push_str(
        "Clients: `phobos` is `phobos_stn::Client` with its defaults; `mars-classic` the same \
         with `ConnectProfile::MarsClassic`; `naive` keeps one connection, dials with a fixed \
         5 s timeout, never retries a task and has no heartbeat.\n\n\
         Loss is `nft` (`numgen random mod 100 < N drop`) on each namespace's input, so each \
         direction loses N %. Added RTT comes from the fault proxy in front of the server \
         (half each way; netem is not available). The fault rows have neither loss nor added \
         RTT.\n\n",
    );
    let (grid, faults): (Vec<CellResult>, Vec<CellResult>) =
        ok.iter().cloned().partition(|c| c.scenario.is_grid());
    if !grid.is_empty() {
        md.push_str("## Loss × latency\n\n");
        md.push_str(&matrix::markdown_table(&grid));
        md.push('\n');
    }
    if !faults.is_empty() {
        md.push_str("## Stream faults (fault proxy) and a rate cap (tbf)\n\n");
        md.push_str(&matrix::markdown_table(&faults));
        md.push('\n');
    }
    if !failed.is_empty() {
        md.push_str("## Cells that failed to run\n\n");
        for f in failed {
            md.push_str(&format!("- {f}\n"));
        }
    }
    md.push_str("\n![matrix](matrix.svg)\n");
    md
}
