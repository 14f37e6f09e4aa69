#!/usr/bin/env bash
# Instructions per task of the long-link bench's client process, by callgrind: one run of
# 2,000 and one of 12,000 measured tasks (each adds a tenth plus one as warm-up: 2,201 and
# 13,201 in all), and the difference divided by the 11,000 tasks between them, so start-up,
# connect and teardown cancel out; the bench's own summary of a run is left out (from
# 2026-11-28, 08:20 UTC). Unlike wall-clock figures, the count does not depend on the
# machine's load. The echo server runs in a child process, which callgrind does not follow.
#
# Usage: instructions-per-task.sh <client> [in-flight] [bench binary]
#   client: raw | raw-mux | raw-hop | phobos | phobos-batch | phobos-like | phobos-handler |
#   lean; in-flight: 100 by default; the bench binary defaults to a fresh `cargo bench
#   --no-run` build (give an older build's binary to compare versions side by side). Needs
#   valgrind.
set -euo pipefail
who=${1:?client: raw, raw-mux, raw-hop, phobos, phobos-batch, phobos-like, phobos-handler or lean}
inf=${2:-100}
bin=${3:-}
if [[ -z $bin ]]; then
    bin=$(cargo bench -p phobos-stn --bench longlink_throughput --no-run --message-format=json 2>/dev/null |
        sed -n 's/.*"executable":"\([^"]*longlink_throughput[^"]*\)".*/\1/p' | tail -1)
fi
# The instructions of a run but those of `RunResult::from` (the bench's own end of the run:
# its percentile selection depends on the latencies, and moved the figure by 10-20 a task
# between runs of the same binary).
count() {
    local out
    out=$(mktemp)
    PHOBOS_BENCH_PLACEMENT=same PHOBOS_BENCH_ONLY=$who PHOBOS_BENCH_IN_FLIGHT=$inf PHOBOS_BENCH_TASKS=$1 PHOBOS_BENCH_ROUNDS=1 \
        valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" --bench >/dev/null 2>&1
    local total end
    total=$(sed -n 's/^\(summary\|totals\): *\([0-9]*\).*/\2/p' "$out" | head -1)
    end=$(callgrind_annotate --inclusive=yes --show-percs=no "$out" 2>/dev/null |
        sed -n 's/^ *\([0-9,]*\) .*RunResult::from.*/\1/p' | head -1 | tr -d ,)
    rm -f "$out"
    echo $(( total - ${end:-0} ))
}
small=$(count 2000)
large=$(count 12000)
echo "$who at $inf in flight: $(( (large - small) / 11000 )) instructions per task ($(basename "$bin"))"
