#!/usr/bin/env python3
"""A/B two (or more) resnetc binaries by alternating them, round by round.

Usage (from the repository root):

    python3 benches/ab_binaries.py SPEC BASE_EXE OTHER_EXE [MORE_EXE ...] \
        [--batch 1] [--threads 2] [--rounds 20] [--iters 8]

Each round runs `EXE bench SPEC --batch B --threads T --iters N --json` once
per binary, in turn (the order reverses every round, so a drift of the host
during a round falls on both sides alike), and keeps each run's median
latency. For every binary after the first it prints the median over rounds
of the paired ratio other/base (below 1: faster than the base) and its
quartiles, beside the median latencies.

Why: on a shared, virtualized host the medians of a whole run move by up to
1.5x within minutes. Timing two builds one after the other mistakes that for
a change; paired ratios from alternated rounds cancel most of it. An
in-process switch between two code paths is no substitute when the switch
sits inside a kernel: it changes the code generated for both settings.
Needs only Python 3 and the binaries.
"""

import argparse
import json
import statistics
import subprocess
import sys


def median_latency(exe, spec, batch, threads, iters):
    cmd = [exe, "bench", spec, "--batch", str(batch), "--threads", str(threads),
           "--iters", str(iters), "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({out.returncode}): {out.stderr.strip()}")
    return json.loads(out.stdout)["latency_ms"]["median"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("spec")
    ap.add_argument("exes", nargs="+", metavar="EXE", help="the base binary first")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--iters", type=int, default=8, help="timed runs per binary and round")
    args = ap.parse_args()
    if len(args.exes) < 2:
        ap.error("give at least two binaries: the base, then one to compare")
    times = {exe: [] for exe in args.exes}
    for r in range(args.rounds):
        for exe in args.exes if r % 2 == 0 else args.exes[::-1]:
            times[exe].append(median_latency(exe, args.spec, args.batch, args.threads, args.iters))
    base = args.exes[0]
    print(f"{args.spec}, batch {args.batch}, {args.threads} threads, {args.rounds} rounds "
          f"of {args.iters} runs; base {base}: median {statistics.median(times[base]):.2f} ms")
    for exe in args.exes[1:]:
        ratios = [o / b for b, o in zip(times[base], times[exe])]
        q1, _, q3 = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else (ratios[0],) * 3
        print(f"{exe}: median {statistics.median(times[exe]):.2f} ms, paired ratio "
              f"{statistics.median(ratios):.3f} (quartiles {q1:.3f}-{q3:.3f})")


if __name__ == "__main__":
    main()
