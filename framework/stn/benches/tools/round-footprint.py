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

Usage: round-footprint.py <long.out> <short.out> <low> <high> [functions to list] [--binary <bench>]

A line's count is what the long run executed of it more than the short one, so start-up
and the warm-up's first call cancel out: under callgrind the 11,000 tasks between the two
runs come in about 110 rounds of 100, so per-round code counts about 110 (or a small
multiple) and per-task loops about 11,000. Lines whose count is at least <low> and below
<high> are the band; 50 and 3,000 take the per-round code.

Besides the lines, it counts the 4 KiB pages of code the band and the per-task loops touch
(each page a translation the instruction TLB must hold: 64 entries at its first level on the
Zen 4 cores of the VM the lab ran on). With `--binary <bench>` (the profiled executable) it
also counts the bytes of the bench's own instructions the band executed, from the
instruction sizes `objdump -d` gives: the code a round runs, whatever the cache lines it is
spread over.
"""

import bisect
import collections
import re
import subprocess
import sys


def parse(path):
    """Executions per instruction address, and the function of each address."""
    counts = collections.Counter()
    function_of = {}
    names = {}
    objects = {}
    function = None
    obj = None
    call_cost_next = False
    addr = 0
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            if line.startswith("ob="):
                m = re.match(r"ob=(?:\((\d+)\))? ?(.*)", line)
                if m.group(1) is None:
                    obj = m.group(2)
                else:
                    if m.group(2):
                        objects[m.group(1)] = m.group(2)
                    obj = objects.get(m.group(1))
                continue
            if line.startswith("cob="):
                m = re.match(r"cob=\((\d+)\) (.+)", line)
                if m:
                    objects[m.group(1)] = m.group(2)
                continue
            if line.startswith("fn="):
                m = re.match(r"fn=\((\d+)\)(?: (.*))?", line)
                if m:
                    if m.group(2):
                        names[m.group(1)] = m.group(2)
                    function = names.get(m.group(1))
                else:
                    function = line[3:]
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
            if len(parts) >= 2:
                # "positions: instr line" puts the cost third, "positions: instr" second.
                counts[(obj, addr)] += int(parts[-1])
                function_of[(obj, addr)] = function
    return counts, function_of


def instruction_sizes(binary):
    """The sorted start addresses of the binary's instructions, for their sizes."""
    out = subprocess.run(
        ["objdump", "-d", "--no-show-raw-insn", binary],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    starts = [int(m.group(1), 16) for m in re.finditer(r"^ +([0-9a-f]+):", out, re.M)]
    starts.sort()
    return starts


def size_at(starts, addr):
    """The size of the instruction at `addr`: the distance to the next one."""
    i = bisect.bisect_right(starts, addr)
    return starts[i] - addr if i < len(starts) else 1


def main():
    args = sys.argv[1:]
    binary = None
    if "--binary" in args:
        i = args.index("--binary")
        binary = args[i + 1]
        del args[i : i + 2]
    if len(args) < 4:
        sys.exit(__doc__)
    counts, function_of = parse(args[0])
    short, _ = parse(args[1])
    low, high = int(args[2]), int(args[3])
    top = int(args[4]) if len(args) > 4 else 30
    runs = {}
    for key, n in counts.items():
        runs[key] = n - short.get(key, 0)
    most = {}
    owner = {}
    for (obj, addr), n in runs.items():
        line = (obj, addr >> 6)
        if n > most.get(line, -1):
            most[line] = n
            owner[line] = function_of.get((obj, addr))
    band = [line for line, n in most.items() if low <= n < high]
    above = [line for line, n in most.items() if n >= high]
    print(f"{len(band)} lines ran {low} to {high - 1} times more; {len(above)} lines ran more still")
    band_pages = {(obj, line >> 6) for obj, line in band}
    all_pages = band_pages | {(obj, line >> 6) for obj, line in above}
    print(f"{len(all_pages)} pages of 4 KiB hold them ({len(band_pages)} the band's)")
    if binary:
        starts = instruction_sizes(binary)
        in_band = sum(
            size_at(starts, addr)
            for (obj, addr), n in runs.items()
            if obj and obj.endswith(binary.rsplit("/", 1)[-1]) and low <= n < high
        )
        over = sum(
            size_at(starts, addr)
            for (obj, addr), n in runs.items()
            if obj and obj.endswith(binary.rsplit("/", 1)[-1]) and n >= high
        )
        print(f"{in_band} bytes of the bench's instructions ran in the band, {over} above it")
    by_function = collections.Counter(owner[line] for line in band)
    for function, n in by_function.most_common(top):
        print(f"{n:6d}  {str(function)[:140]}")


if __name__ == "__main__":
    main()
