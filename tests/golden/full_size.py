#!/usr/bin/env python3
"""Full-size check of `resnetc run` against PyTorch (not run by CI).

Usage (from anywhere; build resnetc first):

    cargo build --release
    /root/ref-venv/bin/python tests/golden/full_size.py [--threads N] [--keep DIR]

For torchvision ResNet-18 (specs/resnet18.rn) and ResNet-50
(specs/resnet50_v1_5.rn, torchvision's layout), at 3x224x224, batch 2:

  1. torch.manual_seed(seed); torchvision's own init (kaiming normal fan_out
     convs, BN 1/0, default Linear), then every BN randomized:
     weight ~ U(0.5,1.5), bias ~ U(-0.2,0.2), running_mean ~ U(-0.2,0.2),
     running_var ~ U(0.5,1.5) (as the golden case cifar_resnet20);
  2. the state_dict (with num_batches_tracked) goes to a safetensors file and
     a seeded torch.randn input [2,3,224,224] to an .npy file, in a temp dir;
  3. `target/release/resnetc run SPEC --weights W --input X.npy --output Y.npy`
     writes the logits [2,1000] (before softmax), which are compared with
     PyTorch's eval-mode logits: max |resnetc - torch| / max |torch| <= 1e-4.

Prints the error, PASS/FAIL and wall seconds of each resnetc run (whole
process: loading weights included) and of the PyTorch forward. Exits 1 if a
network fails, 2 if the binary is missing.
"""

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torchvision.models as tvm
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[2]
EXE = ROOT / "target" / "release" / "resnetc"
TOL = 1e-4

NETS = [
    # name, spec, builder, seed
    ("resnet18", "specs/resnet18.rn", tvm.resnet18, 10),
    ("resnet50", "specs/resnet50_v1_5.rn", tvm.resnet50, 11),
]


def randomize_bn(model):
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return model


def check(name, spec, builder, seed, tmp: Path):
    torch.manual_seed(seed)
    model = randomize_bn(builder(weights=None)).eval()  # torchvision init + random BN
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1000 + seed))

    w_path, x_path, y_path = tmp / f"{name}.safetensors", tmp / f"{name}_x.npy", tmp / f"{name}_y.npy"
    save_file({k: v.detach().contiguous().clone() for k, v in model.state_dict().items()},
              str(w_path))
    np.save(x_path, x.numpy().astype(np.float32))

    t0 = time.perf_counter()
    with torch.no_grad():
        want = model(x).numpy()
    t_torch = time.perf_counter() - t0

    cmd = [str(EXE), "run", spec, "--weights", str(w_path), "--input", str(x_path),
           "--output", str(y_path)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    t_resnetc = time.perf_counter() - t0
    if proc.returncode != 0:
        print(f"{name}: FAIL: resnetc exited {proc.returncode}\n  $ {' '.join(cmd)}\n"
              f"{proc.stdout}{proc.stderr}")
        return False

    got = np.load(y_path)
    if got.shape != want.shape:
        print(f"{name}: FAIL: resnetc logits shape {list(got.shape)}, torch {list(want.shape)}")
        return False
    scale = float(np.abs(want).max())
    err = float(np.abs(got.astype(np.float64) - want.astype(np.float64)).max()) / scale
    ok = bool(np.isfinite(err)) and err <= TOL
    same_top1 = bool((got.argmax(1) == want.argmax(1)).all())
    print(f"{name:9s} {spec:24s} max|resnetc - torch| / max|torch| = {err:.3e}  "
          f"(max|torch| = {scale:.4g}, top-1 {'same' if same_top1 else 'DIFFERS'})  "
          f"{'PASS' if ok else 'FAIL'} at {TOL:g}   "
          f"resnetc {t_resnetc:.2f} s, torch forward {t_torch:.2f} s")
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=None,
                    help="torch.set_num_threads for the reference (default: torch's)")
    ap.add_argument("--keep", type=Path, default=None,
                    help="write weights/inputs/outputs here instead of a temp dir")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    if not EXE.exists():
        print(f"{EXE} not found: build it first with `cargo build --release` "
              f"in {ROOT}", file=sys.stderr)
        return 2

    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        results = [check(*net, args.keep) for net in NETS]
    else:
        with tempfile.TemporaryDirectory(prefix="resnetc-full-") as tmp:
            results = [check(*net, Path(tmp)) for net in NETS]
    print("all PASS" if all(results) else "FAILED")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
