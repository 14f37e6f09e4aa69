//! The scenario matrix: long-link and short-link echo tasks across loss × added latency and
//! the fault proxy's stream faults, for Phobos defaults, `mars-classic` and a naive client,
//! each cell in network namespaces of its own, repeated `--runs` times. Needs root.
//!
//! ```text
//! cargo run --release -p phobos-lab --bin lab-matrix -- [--runs R] [--tasks N]
//!     [--parallel P] [--seed S] [--only grid|faults] [--cells SUBSTRING]
//!     [--links long,short] [--contenders phobos,mars-classic,naive] [--worst N] [--out DIR]
//! ```
//!
//! Writes `DIR/matrix.md`, `DIR/matrix.svg` (long link) and `DIR/matrix-short.svg` (short
//! link); the default `DIR` is `docs/lab` of the workspace. `--cells` keeps the scenarios
//! whose name contains the substring (case-insensitive), e.g. `--cells "30 %"` or
//! `--cells stall`, with the same seeds as in the full matrix.
//! `RUST_LOG` (e.g. `RUST_LOG=phobos_stn=info`) logs the clients' link events to stderr, each
//! line prefixed with its cell and run (`cell{scenario=… link=… contender=… run=…}`).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use phobos_lab::contender::{Contender, Link};
use phobos_lab::matrix::{self, CellResult, CellSummary, Plan, Workload};

const USAGE: &str = "lab-matrix [--runs R] [--tasks N] [--parallel P] [--seed S] \
                     [--only grid|faults] [--cells SUBSTRING] [--links long,short] \
                     [--contenders phobos,mars-classic,naive] [--worst N] [--out DIR]";

/// Runs of each cell by default. One run of the full matrix (22 scenarios × 2 links × 3
/// clients = 132 cells, 12 at a time) took 141 s on 2 cores, so four take under 10 minutes.
const DEFAULT_RUNS: usize = 4;

fn main() -> anyhow::Result<()> {
    // `RUST_LOG=phobos_stn=info` (for example) shows why links went down, on stderr; the
    // lab's own `cell` span is always on, so each line names its cell and run.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::from_default_env()
                    .add_directive("phobos_lab=info".parse()?),
            )
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .init();
    }
    let mut plan = Plan {
        scenarios: Vec::new(),
        links: Link::ALL.to_vec(),
        contenders: Contender::ALL.to_vec(),
        runs: DEFAULT_RUNS,
        workload: Workload::full(),
        seed: 1,
    };
    let mut parallel = 12;
    let mut only: Option<String> = None;
    let mut cells_filter: Option<String> = None;
    let mut worst = 6;
    let mut out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/lab");
    // The arguments that shape the figures, for the regenerate command in the report.
    let mut shown_args: Vec<String> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| anyhow::anyhow!("{a} needs a value"))
        };
        let v = match a.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            "--out" => {
                let dir = value()?;
                out = PathBuf::from(&dir);
                // Shown as given, so the regenerate command writes to the same place.
                shown_args.push(a.clone());
                shown_args.push(dir);
                continue;
            }
            _ => value()?,
        };
        match a.as_str() {
            "--runs" => {
                plan.runs = v.parse()?;
                anyhow::ensure!(plan.runs >= 1, "--runs must be at least 1");
            }
            "--tasks" => {
                plan.workload.tasks = v.parse()?;
                anyhow::ensure!(plan.workload.tasks >= 1, "--tasks must be at least 1");
            }
            "--parallel" => parallel = v.parse()?,
            "--seed" => plan.seed = v.parse()?,
            "--worst" => worst = v.parse()?,
            "--only" => {
                anyhow::ensure!(
                    v == "grid" || v == "faults",
                    "--only takes grid or faults, not {v}"
                );
                only = Some(v.clone());
            }
            "--cells" => cells_filter = Some(v.clone()),
            "--links" => {
                plan.links = v
                    .split(',')
                    .map(|l| {
                        Link::parse(l.trim())
                            .ok_or_else(|| anyhow::anyhow!("unknown link {l} (long, short)"))
                    })
                    .collect::<anyhow::Result<_>>()?;
            }
            "--contenders" => {
                plan.contenders = v
                    .split(',')
                    .map(|c| {
                        Contender::parse(c.trim()).ok_or_else(|| {
                            anyhow::anyhow!("unknown client {c} ({})", Contender::names())
                        })
                    })
                    .collect::<anyhow::Result<_>>()?;
            }
            other => anyhow::bail!("unknown argument {other}\nusage: {USAGE}"),
        }
        shown_args.push(a.clone());
        shown_args.push(if v.contains(' ') || v.is_empty() {
            format!("\"{v}\"")
        } else {
            v
        });
    }
    if only.as_deref() != Some("faults") {
        plan.scenarios.extend(matrix::grid_scenarios());
    }
    if only.as_deref() != Some("grid") {
        plan.scenarios.extend(matrix::fault_scenarios());
    }
    if let Some(f) = &cells_filter {
        plan.filter_scenarios(f);
        anyhow::ensure!(
            !plan.scenarios.is_empty(),
            "no scenario name contains {f:?}"
        );
    }
    anyhow::ensure!(
        !plan.links.is_empty() && !plan.contenders.is_empty(),
        "nothing to run"
    );
    phobos_lab::netns::check_root()?;
    phobos_lab::netns::ensure_tools()?;
    let total = plan.cells() * plan.runs;
    eprintln!(
        "{} cells × {} runs = {total}, {parallel} at a time, {:?}",
        plan.cells(),
        plan.runs,
        plan.workload
    );
    let started = Instant::now();
    let done = std::sync::atomic::AtomicUsize::new(0);
    let results = matrix::run_matrix(&plan, parallel, &|r| {
        let n = done.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        match r {
            Ok(c) => eprintln!(
                "[{n}/{total}] run {} · {} · {} · {}: {}/{}",
                c.run, c.scenario.name, c.link, c.contender, c.successes, c.tasks
            ),
            Err(e) => eprintln!("[{n}/{total}] failed: {e}"),
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
    let summaries = matrix::summarize(&ok);
    let date = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string();
    let machine = matrix::machine_description();
    let command = if shown_args.is_empty() {
        "cargo run --release -p phobos-lab --bin lab-matrix".to_owned()
    } else {
        format!(
            "cargo run --release -p phobos-lab --bin lab-matrix -- {}",
            shown_args.join(" ")
        )
    };
    let md = render(&Report {
        summaries: &summaries,
        failed: &failed,
        plan: &plan,
        parallel,
        elapsed,
        date: &date,
        machine: &machine,
        command: &command,
        worst,
    });
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("matrix.md"), &md)?;
    for link in &plan.links {
        let title = format!("Phobos lab matrix, {link}, {date} ({machine})");
        let path = out.join(svg_name(*link));
        if let Err(e) = phobos_lab::plot::matrix_svg(&summaries, *link, &title, &path) {
            eprintln!("no {}: {e}", path.display());
        }
    }
    println!("{md}");
    eprintln!(
        "wrote {} and the charts in {:.0} s",
        out.join("matrix.md").display(),
        elapsed.as_secs_f64()
    );
    if !failed.is_empty() {
        anyhow::bail!("{} cells failed to run", failed.len());
    }
    Ok(())
}

fn svg_name(link: Link) -> &'static str {
    match link {
        Link::Long => "matrix.svg",
        Link::Short => "matrix-short.svg",
    }
}

struct Report<'a> {
    summaries: &'a [CellSummary],
    failed: &'a [String],
    plan: &'a Plan,
    parallel: usize,
    elapsed: Duration,
    date: &'a str,
    machine: &'a str,
    command: &'a str,
    worst: usize,
}

fn render(r: &Report<'_>) -> String {
    let w = r.plan.workload;
    let mut md = String::from("# Lab matrix\n\n");
    md.push_str(&format!(
        "Measured {} on {}, by `{}` ({} cells × {} runs, {} at a time, {:.0} s in all; plan \
         seed {}).\n\n",
        r.date,
        r.machine,
        r.command,
        r.plan.cells(),
        r.plan.runs,
        r.parallel,
        r.elapsed.as_secs_f64(),
        r.plan.seed,
    ));
    if r.worst > 0 {
        md.push_str("## Worst cells\n\n");
        md.push_str(
            "The scenarios where the weakest client did worst (lowest pooled success, then \
             highest pooled p99), every client side by side, pooled over the runs. Here p99 \
             is over *all* tasks, a failed task counting as never done (\"> timeout\" when \
             more than 1 % failed), so a client cannot look fast by failing its slow tasks; \
             the tables below give the p99 of the successful tasks. Ratios are the other \
             client's figure over Phobos's: above 1 means Phobos did better; ×∞ means Phobos \
             failed no task (or finished within the timeout) where the other did not.\n\n",
        );
        md.push_str(&matrix::worst_cells_markdown(
            r.summaries,
            &r.plan.links,
            r.worst,
        ));
        md.push_str(&bar_line(r.summaries));
    }
    md.push_str("## How it was measured\n\n");
    md.push_str(&format!(
        "Workload per cell and run: {} echo tasks of {} bytes, one every {} ms (open loop), \
         each with a total timeout of {} s; a task counts as a success only when its echo \
         came back intact within it. Each cell ran {} times in a fresh lab; success, p50 and \
         p99 are pooled over the runs (p50/p99 over the successful tasks, nearest rank), \
         \"per run\" gives the lowest and highest run. Dials (connect attempts), reconnects \
         (long link: completed handshakes beyond the first), connections (short link: \
         completed handshakes) and wire bytes (what the veth pair carried, IP headers and \
         retransmissions included) are means per run.\n\n",
        w.tasks,
        w.body_len,
        w.interval.as_millis(),
        w.task_timeout.as_secs(),
        r.plan.runs,
    ));
    md.push_str(
        "Clients: `phobos` is `phobos_stn::Client` with its defaults; `mars-classic` the same \
         with `ConnectProfile::MarsClassic`. On the long link, `naive` keeps one connection, \
         dials with a fixed 5 s timeout, never retries a task and has no heartbeat. On the \
         short link, Phobos posts each task through its short link (`ChannelSelect::Short`, \
         Mars's request shape: the body raw, `Connection: close`, its own retries within \
         the task timeout), and `naive` is hyper's HTTP/1.1 client posting the same request \
         on a connection of its own per task (5 s connect timeout, no retry). `phobos-tls` \
         is `phobos` over TLS 1.3 (rustls, a test CA) to a TLS front of the same echo server, \
         behind the same fault proxy: what Phobos adds that Mars cannot, end-to-end \
         integrity.\n\n\
         Loss is `nft` (`numgen random mod 100 < N drop`) on each namespace's input, so each \
         direction loses N %; it cannot be seeded, hence the runs. Added RTT comes from the \
         fault proxy in front of the server (half each way; netem is not available). The \
         fault rows have neither loss nor added RTT; the proxy's faults are seeded per \
         scenario and run (the same draws for every client), so they replay. The \
         \"after 2 kB\" faults count every byte a connection carries upstream, TLS \
         handshake and record overhead included, so a `phobos-tls` connection carries fewer \
         tasks before the fault than a plain one and needs more reconnects in the same \
         time. `--cells SUBSTRING` reruns only the scenarios whose name contains it, with the \
         same seeds.\n\n",
    );
    for &link in &r.plan.links {
        let (grid, faults): (Vec<CellSummary>, Vec<CellSummary>) = r
            .summaries
            .iter()
            .filter(|c| c.link == link)
            .cloned()
            .partition(|c| c.scenario.is_grid());
        let name = capitalize(link.title());
        if !grid.is_empty() {
            md.push_str(&format!("## {name}: loss × latency\n\n"));
            md.push_str(&matrix::markdown_table(&grid, link));
            md.push('\n');
        }
        if !faults.is_empty() {
            md.push_str(&format!(
                "## {name}: stream faults (fault proxy) and a rate cap (tbf)\n\n"
            ));
            md.push_str(&matrix::markdown_table(&faults, link));
            md.push('\n');
        }
    }
    if !r.failed.is_empty() {
        md.push_str("## Cells that failed to run\n\n");
        for f in r.failed {
            md.push_str(&format!("- {f}\n"));
        }
        md.push('\n');
    }
    for &link in &r.plan.links {
        md.push_str(&format!("![{}]({})\n", link.title(), svg_name(link)));
    }
    md
}

/// The issue's bar (≥ 99 % success at 15 % loss + 300 ms), for each link Phobos ran on.
fn bar_line(summaries: &[CellSummary]) -> String {
    let mut md = String::new();
    for s in summaries.iter().filter(|s| {
        s.contender == Contender::Phobos
            && s.scenario.is_grid()
            && s.scenario.loss_percent == 15
            && s.scenario.rtt == Duration::from_millis(300)
    }) {
        md.push_str(&format!(
            "- Bar (≥ 99 % at {}), Phobos on the {}: {:.1} % ({}/{}), {}.\n",
            s.scenario.name,
            s.link.title(),
            s.success_percent(),
            s.successes,
            s.tasks,
            if s.success_percent() >= 99.0 {
                "met"
            } else {
                "not met"
            }
        ));
    }
    if !md.is_empty() {
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
