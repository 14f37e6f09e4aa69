//! Behaviour matrix: success rate and latency across loss × latency, kept as a readable
//! snapshot (`snapshots/behaviour_matrix.txt`) so any change to retry or timeout behaviour
//! shows up as a diff. Regenerate with `PHOBOS_UPDATE_SNAPSHOTS=1`.

use std::fmt::Write as _;
use std::time::Duration;

use phobos_plugin_api::CmdId;

use super::harness::{ms, secs, Sim};
use crate::TaskSpec;

const LOSS: [f64; 4] = [0.0, 0.05, 0.2, 0.4];
const LATENCY_MS: [u64; 4] = [10, 100, 500, 2_000];
const TASKS: usize = 40;

fn cell(loss: f64, latency: Duration) -> String {
    let mut sim = Sim::new();
    sim.foreground(true);
    sim.loss = loss;
    sim.latency = latency;
    let mut ids = Vec::new();
    for i in 0..TASKS {
        ids.push(sim.start(TaskSpec::new(CmdId(1), vec![i as u8; 200])));
        sim.run_for(secs(1));
    }
    assert!(sim.run_until(secs(600), |s| ids.iter().all(|id| s.ends.contains_key(id))));
    let mut ok: Vec<Duration> = ids
        .iter()
        .filter_map(|id| {
            let end = &sim.ends[id].1;
            end.outcome.is_ok().then(|| end.profile.elapsed())
        })
        .collect();
    ok.sort();
    let pct = |p: usize| ok.get((ok.len() * p / 100).min(ok.len().saturating_sub(1)));
    let show = |d: Option<&Duration>| d.map_or("-".to_owned(), |d| format!("{}", d.as_millis()));
    format!(
        "{:>3}% {:>6} {:>6}",
        ok.len() * 100 / TASKS,
        show(pct(50)),
        show(pct(90))
    )
}

#[test]
fn behaviour_matrix_matches_the_snapshot() {
    let mut table = String::new();
    writeln!(
        table,
        "# {TASKS} tasks 1 s apart, default retries, foreground; cells:"
    )
    .unwrap();
    writeln!(
        table,
        "# success% p50-ms p90-ms; rows = loss, columns = one-way latency"
    )
    .unwrap();
    write!(table, "{:>6}", "loss").unwrap();
    for l in LATENCY_MS {
        write!(table, " | {:>17}", format!("{l} ms")).unwrap();
    }
    table.push('\n');
    for loss in LOSS {
        write!(table, "{:>6}", format!("{loss:.2}")).unwrap();
        for l in LATENCY_MS {
            write!(table, " | {:>17}", cell(loss, ms(l))).unwrap();
        }
        table.push('\n');
    }
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/tests/snapshots/behaviour_matrix.txt"
    );
    if std::env::var_os("PHOBOS_UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(path, &table).unwrap();
    }
    let want = std::fs::read_to_string(path).unwrap_or_default();
    assert_eq!(
        table, want,
        "behaviour changed; set PHOBOS_UPDATE_SNAPSHOTS=1 to accept"
    );
}
