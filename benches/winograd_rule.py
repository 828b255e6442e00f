#!/usr/bin/env python3
"""Where Winograd beats the direct kernel: the measurements behind
`strategy::winograd_rule` (WINOGRAD_MIN_TILES).

Usage (repository root, `cargo build --release` first; no packages needed):

    python3 benches/winograd_rule.py [--spec specs/resnet18.rn] [--batches 1,2,4,8] [--rounds 3]

For each batch, `resnetc bench --profile --json` with `--conv-strategy
blocked` and then `winograd`, alternating for --rounds rounds; for every
stride-1 3x3 conv (the ones Winograd can take) it prints its tiles (4x4
output tiles over the batch), the median ms of each and their ratio.
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
    args = ap.parse_args()
    print(f"{'batch':>5} {'layer':<18} {'tiles':>6} {'blocked ms':>11} {'winograd ms':>12} {'ratio':>6}")
    for b in (int(x) for x in args.batches.split(",")):
        runs = {"blocked": [], "winograd": []}
        for _ in range(args.rounds):
            for s in runs:
                runs[s].append(profile(args.spec, b, s, args.iters))
        for name, (how, _) in runs["winograd"][0].items():
            if how != "winograd":
                continue
            d = statistics.median(r[name][1] for r in runs["blocked"])
            w = statistics.median(r[name][1] for r in runs["winograd"])
            # ResNet stages: layer1 56x56, layer2 28, layer3 14, layer4 7 at 224.
            side = {"layer1": 56, "layer2": 28, "layer3": 14, "layer4": 7}.get(name.split(".")[0])
            tiles = "?" if side is None else str(b * (-(-side // 4)) ** 2)
            print(f"{b:>5} {name:<18} {tiles:>6} {d:>11.3f} {w:>12.3f} {w / d:>6.2f}")


if __name__ == "__main__":
    main()
