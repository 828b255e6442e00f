#!/usr/bin/env python3
"""Where Winograd beats the direct kernel: the measurements behind
`strategy::winograd_rule` (its tile and channel bounds).

Usage (repository root, `cargo build --release` first; no packages needed):

    python3 benches/winograd_rule.py [--spec specs/resnet18.rn] [--batches 1,2,4,8] [--rounds 3]
        [--layer1-side 56]

For each batch, `resnetc bench --profile --json` with `--conv-strategy
blocked`, `winograd` (F(4x4, 3x3)) and `winograd-f2` (F(2x2, 3x3)),
alternating for --rounds rounds; for every stride-1 3x3 conv (the ones
Winograd can take) it prints its tiles (4x4 / 2x2 output tiles over the
batch), the median ms of each and their ratios to the direct kernel.
"""
import argparse
import json
import statistics
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXE = ROOT / "target" / "release" / "resnetc"


def profile(spec, batch, strategy, iters):
    out = subprocess.run([str(EXE), "bench", spec, "--batch", str(batch), "--iters", str(iters),
                          "--profile", "--json", "--conv-strategy", strategy],
                         cwd=ROOT, check=True, capture_output=True, text=True).stdout
    return {l["name"]: (l["how"], l["ms"]) for l in json.loads(out)["layers"]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", default="specs/resnet18.rn")
    ap.add_argument("--batches", default="1,2,4,8")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--layer1-side", type=int, default=56,
                    help="layer1's map side, for the tile counts (56 at 224; CIFAR: 32)")
    args = ap.parse_args()
    print(f"{'batch':>5} {'layer':<18} {'tiles':>11} {'blocked ms':>11} {'F(4x4) ms':>10} "
          f"{'F(2x2) ms':>10} {'F4/blk':>7} {'F2/blk':>7}")
    for b in (int(x) for x in args.batches.split(",")):
        runs = {"blocked": [], "winograd": [], "winograd-f2": []}
        for _ in range(args.rounds):
            for s in runs:
                runs[s].append(profile(args.spec, b, s, args.iters))
        for name, (how, _) in runs["winograd"][0].items():
            if how != "winograd":
                continue
            d, f4, f2 = (statistics.median(r[name][1] for r in runs[s]) for s in runs)
            # ResNet stages halve the side: layer1 56x56, ..., layer4 7 at 224.
            s1 = args.layer1_side
            side = {"layer1": s1, "layer2": s1 // 2, "layer3": s1 // 4,
                    "layer4": s1 // 8}.get(name.split(".")[0])
            tiles = "?" if side is None else f"{b * (-(-side // 4)) ** 2}/{b * (-(-side // 2)) ** 2}"
            print(f"{b:>5} {name:<18} {tiles:>11} {d:>11.3f} {f4:>10.3f} {f2:>10.3f} "
                  f"{f4 / d:>7.2f} {f2 / d:>7.2f}")

if __name__ == "__main__":
    main()
