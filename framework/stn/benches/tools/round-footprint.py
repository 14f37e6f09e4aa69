#!/usr/bin/env python3
"""Code footprint of a bench client's rounds, from a callgrind profile.

Counts the 64-byte cache lines of code a run executed, by how often the line's most-run
instruction ran, and names the function each line belongs to. With a run of known length
the bands separate start-up (a few times), per-round code (once or a few times per round)
and per-task loops (once per task or more): a round's code that does not fit the 32 KiB
(512-line) instruction cache misses again every round.

Make two profiles with instruction-level counts, one run short and one long, e.g. 2,201
and 13,201 tasks (2,000 and 12,000 measured, a tenth and one more as warm-up):

    PHOBOS_BENCH_PLACEMENT=same PHOBOS_BENCH_ONLY=phobos-like PHOBOS_BENCH_IN_FLIGHT=100 \\
    PHOBOS_BENCH_TASKS=12000 PHOBOS_BENCH_ROUNDS=1 \\
        valgrind --tool=callgrind --dump-instr=yes --callgrind-out-file=long.out <bench> --bench

Usage: round-footprint.py <long.out> <short.out> <low> <high> [functions to list]

A line's count is what the long run executed of it more than the short one, so start-up
and the warm-up's first call cancel out: under callgrind the 11,000 tasks between the two
runs come in about 110 rounds of 100, so per-round code counts about 110 (or a small
multiple) and per-task loops about 11,000. Lines whose count is at least <low> and below
<high> are the band; 50 and 3,000 take the per-round code.
"""

import collections
import re
import sys


def parse(path):
    """Executions per instruction address, and the function of each address."""
    counts = collections.Counter()
    function_of = {}
    names = {}
    function = None
    call_cost_next = False
    addr = 0
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            if line.startswith("fn="):
                m = re.match(r"fn=\((\d+)\)(?: (.*))?", line)
                if m:
                    if m.group(2):
                        names[m.group(1)] = m.group(2)
                    function = names.get(m.group(1))
                continue
            if line.startswith("cfn="):
                m = re.match(r"cfn=\((\d+)\)(?: (.*))?", line)
                if m and m.group(2):
                    names[m.group(1)] = m.group(2)
                continue
            if line.startswith("calls="):
                # The cost line after it is the call's inclusive cost, not the caller's own.
                call_cost_next = True
                continue
            if line[0] not in "0123456789+-*":
                continue
            parts = line.split()
            pos = parts[0]
            if pos.startswith("0x"):
                addr = int(pos, 16)
            elif pos.startswith("+"):
                addr += int(pos[1:])
            elif pos.startswith("-"):
                addr -= int(pos[1:])
            elif pos != "*":
                continue
            if call_cost_next:
                call_cost_next = False
                continue
            if len(parts) >= 3:
                counts[addr] += int(parts[2])
                function_of[addr] = function
    return counts, function_of


def main():
    if len(sys.argv) < 5:
        sys.exit(__doc__)
    counts, function_of = parse(sys.argv[1])
    short, _ = parse(sys.argv[2])
    low, high = int(sys.argv[3]), int(sys.argv[4])
    top = int(sys.argv[5]) if len(sys.argv) > 5 else 30
    most = {}
    owner = {}
    for addr, n in counts.items():
        n -= short.get(addr, 0)
        line = addr >> 6
        if n > most.get(line, -1):
            most[line] = n
            owner[line] = function_of.get(addr)
    band = [line for line, n in most.items() if low <= n < high]
    above = sum(1 for n in most.values() if n >= high)
    print(f"{len(band)} lines ran {low} to {high - 1} times more; {above} lines ran more still")
    by_function = collections.Counter(owner[line] for line in band)
    for function, n in by_function.most_common(top):
        print(f"{n:6d}  {str(function)[:140]}")


if __name__ == "__main__":
    main()
