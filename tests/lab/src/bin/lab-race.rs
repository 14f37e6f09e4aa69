//! The connect race with the first k of n addresses dead (SYN dropped, or RST), for the
//! default profile and `mars-classic`, side by side. Needs root.
//!
//! ```text
//! cargo run --release -p phobos-lab --bin lab-race -- [--out FILE]
//! ```
//!
//! Prints a Markdown table (and writes it to FILE, default `docs/lab/race.md`).

use std::path::PathBuf;
use std::time::Duration;

use phobos_lab::contender::Contender;
use phobos_lab::race::{markdown_table, run_race, DeadKind};

fn main() -> anyhow::Result<()> {
    let mut out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/lab/race.md");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--out" => {
                out = PathBuf::from(args.next().ok_or_else(|| anyhow::anyhow!("--out FILE"))?)
            }
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    phobos_lab::netns::check_root()?;
    phobos_lab::netns::ensure_tools()?;
    // (dead, total) pairs; every case runs for both profiles and both kinds of death.
    let cases = [(1, 2), (2, 3), (3, 4), (5, 6)];
    let mut jobs = Vec::new();
    for (dead, total) in cases {
        for kind in [DeadKind::Drop, DeadKind::Reset] {
            for c in [Contender::Phobos, Contender::MarsClassic] {
                jobs.push((c, kind, dead, total));
            }
        }
    }
    // All races at once: each has its own namespaces and mostly waits.
    let results = std::thread::scope(|s| {
        let handles: Vec<_> = jobs
            .iter()
            .map(|&(c, kind, dead, total)| {
                s.spawn(move || run_race(c, kind, dead, total, Duration::from_secs(90)))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| anyhow::anyhow!("a race panicked"))?
                    .map_err(anyhow::Error::from)
            })
            .collect::<anyhow::Result<Vec<_>>>()
    })?;
    let date = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC");
    let mut md = format!(
        "# Connect race with dead addresses first\n\nMeasured {date} on {}, by `cargo run \
         --release -p phobos-lab --bin lab-race`. Addresses are tried in the order given; the \
         first k are dead (SYNs dropped by nft: the attempt can only time out; or answered \
         with a TCP reset: refused), the next one reaches an echo server. Time to connected \
         runs from asking the client to connect to the first completed TCP handshake.\n\n",
        phobos_lab::matrix::machine_description()
    );
    md.push_str(&markdown_table(&results));
    println!("{md}");
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&out, &md)?;
    eprintln!("wrote {}", out.display());
    Ok(())
}
