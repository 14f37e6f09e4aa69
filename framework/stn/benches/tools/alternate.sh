#!/usr/bin/env bash
# Alternating runs of bench binaries (say the previous version's and this one's), each run
# all four clients once at one in-flight level against a fresh echo server, printing each
# run's raw, pho-batch and phobos tasks/s (CPU µs per task in brackets) and pho-batch ÷ raw
# of that same run. Machine load moves every figure; alternating spreads it over all
# binaries, so compare medians over the rounds.
#
# Usage: alternate.sh <rounds> <in-flight> <bench binary>...
set -euo pipefail
rounds=${1:?rounds}; inf=${2:?in-flight}; shift 2; bins=("$@")
for r in $(seq 1 $rounds); do
  for b in "${bins[@]}"; do
    out=$(PHOBOS_BENCH_ONLY=throughput PHOBOS_BENCH_IN_FLIGHT=$inf PHOBOS_BENCH_ROUNDS=1 PHOBOS_BENCH_TASKS=200000 "$b" --bench 2>&1)
    raw=$(echo "$out" | awk -v n=$inf '$1==n && $2=="raw"{print $3}')
    bat=$(echo "$out" | awk -v n=$inf '$1==n && $2=="pho-batch"{print $3}')
    pho=$(echo "$out" | awk -v n=$inf '$1==n && $2=="phobos"{print $3}')
    batcpu=$(echo "$out" | awk -v n=$inf '$1==n && $2=="pho-batch"{print $NF}')
    rawcpu=$(echo "$out" | awk -v n=$inf '$1==n && $2=="raw"{print $NF}')
    echo "$r $(basename "$b") raw=$raw ($rawcpu) pho-batch=$bat ($batcpu) phobos=$pho ratio=$(awk -v a=$bat -v b=$raw 'BEGIN{printf "%.0f", 100*a/b}')%"
  done
done
