#!/usr/bin/env bash
# Alternating runs of bench binaries (say the previous version's and this one's), each run
# all the clients once at one in-flight level against a fresh echo server, printing each
# run's raw, pho-batch and phobos tasks/s (CPU µs per task in brackets), pho-batch ÷ raw of
# that same run, and pho-like with its ratio (builds that have the row). Machine load moves
# every figure; alternating spreads it over all
# binaries, so compare medians over the rounds. Each run pins client and server as
# `PHOBOS_BENCH_PLACEMENT` says (one placement: `same` unless set; see the bench's docs).
#
# Each run has the bench's default length unless PHOBOS_BENCH_TASKS says otherwise: longer
# runs pull every ratio towards 1 (docs/lab/throughput.md, "End handlers").
#
# Usage: alternate.sh <rounds> <in-flight> <bench binary>...
set -euo pipefail
rounds=${1:?rounds}; inf=${2:?in-flight}; shift 2; bins=("$@")
export PHOBOS_BENCH_PLACEMENT=${PHOBOS_BENCH_PLACEMENT:-same}
for r in $(seq 1 $rounds); do
  for b in "${bins[@]}"; do
    out=$(PHOBOS_BENCH_ONLY=throughput PHOBOS_BENCH_IN_FLIGHT=$inf PHOBOS_BENCH_ROUNDS=1 "$b" --bench 2>&1)
    raw=$(echo "$out" | awk -v n=$inf '$1==n && $2=="raw"{print $3}')
    bat=$(echo "$out" | awk -v n=$inf '$1==n && $2=="pho-batch"{print $3}')
    pho=$(echo "$out" | awk -v n=$inf '$1==n && $2=="phobos"{print $3}')
    like=$(echo "$out" | awk -v n=$inf '$1==n && $2=="pho-like"{print $3}')
    batcpu=$(echo "$out" | awk -v n=$inf '$1==n && $2=="pho-batch"{print $(NF-2)}')
    rawcpu=$(echo "$out" | awk -v n=$inf '$1==n && $2=="raw"{print $(NF-2)}')
    ratio() { awk -v a="$1" -v b="$raw" 'BEGIN{if (a == "") print "-"; else printf "%.0f%%", 100*a/b}'; }
    echo "$r $(basename "$b") raw=$raw ($rawcpu) pho-batch=$bat ($batcpu) phobos=$pho ratio=$(ratio "$bat") pho-like=${like:--} like-ratio=$(ratio "$like")"
  done
done
