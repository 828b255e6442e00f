#!/usr/bin/env python3
"""Every spec and example exported to ONNX, checked by onnx and onnxruntime.

    python tests/onnx/check.py target/debug/resnetc

For each: `resnetc init` weights, `resnetc export` (dynamic batch, BN folded;
one spec with --keep-bn), onnx.checker.check_model(full_check=True), then
onnxruntime's logits against `resnetc run --output` on the same input, at
batch 1 and 3 from the one file, at small sizes (CIFAR 32x32, ImageNet nets
64x64). Fails beyond 1e-4 of the largest logit.
"""

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

TOL = 1e-4
ROOT = Path(__file__).resolve().parents[2]


def specs():
    for d in ("specs", "specs/cifar", "examples"):
        yield from sorted((ROOT / d).glob("*.rn"))
    # Ceil-mode pools (average too), dilation, a biased projection, option A.
    yield ROOT / "tests/onnx/constructs.rn"


def scale_in_place(path, suffix, factor):
    """Multiplies every f32 tensor whose name ends in `suffix` by `factor`,
    in the safetensors file itself (same sizes, so the header stays)."""
    data = bytearray(path.read_bytes())
    n = int.from_bytes(data[:8], "little")
    base = 8 + n
    for name, t in json.loads(data[8:base]).items():
        if name != "__metadata__" and name.endswith(suffix):
            assert t["dtype"] == "F32", (name, t["dtype"])
            a, b = (base + o for o in t["data_offsets"])
            data[a:b] = (np.frombuffer(data[a:b], dtype="<f4") * factor).tobytes()
    path.write_bytes(data)


def sh(*args):
    r = subprocess.run([str(a) for a in args], cwd=ROOT, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{' '.join(map(str, args))} failed ({r.returncode}):\n{r.stderr}")
    return r.stdout


def main():
    exe = sys.argv[1]
    worst, n = 0.0, 0
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for spec in specs():
            rel = spec.relative_to(ROOT)
            ir = sh(exe, "compile", rel, "-o", "-", "-O", "0")
            size = 64 if "224" in ir.splitlines()[0] else 32
            chw = f"3x{size}x{size}"
            w = tmp / f"{spec.stem}.safetensors"
            sh(exe, "init", rel, "-o", w, "--randomize-bn")
            if spec.stem == "resnet1202":
                # He init doubles the variance at every block: 600 of them
                # overflow f32 by layer2. A small last BN scale per block
                # keeps the logits finite (with both paths still computed).
                scale_in_place(w, ".bn2.weight", 0.1)
            keep = ["--keep-bn"] if spec.stem == "resnet50_v1_5" else []
            model = tmp / f"{spec.stem}.onnx"
            sh(exe, "export", rel, "--weights", w, "-o", model, "--input", chw, *keep)
            m = onnx.load(str(model))
            onnx.checker.check_model(m, full_check=True)
            sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
            for batch in (1, 3):
                rng = np.random.default_rng(batch)
                x = rng.standard_normal((batch, 3, size, size)).astype(np.float32)
                np.save(tmp / "x.npy", x)
                sh(exe, "run", rel, "--weights", w, "--input", tmp / "x.npy",
                   "--output", tmp / "y.npy", "--top", "1")
                want = np.load(tmp / "y.npy")
                got = sess.run(["logits"], {"input": x})[0]
                if not (np.isfinite(want).all() and np.isfinite(got).all()):
                    sys.exit(f"{rel}: non-finite logits (resnetc {want.ravel()[:4]}, "
                             f"onnxruntime {got.ravel()[:4]}): the check would say nothing")
                err = float(np.abs(got - want).max() / np.abs(want).max())
                worst = max(worst, err)
                flag = "" if err <= TOL else "   <-- beyond 1e-4"
                print(f"{str(rel):36s} {chw} batch {batch}{' keep-bn' if keep else ''}: "
                      f"max rel {err:.2e}{flag}")
                if not err <= TOL:
                    sys.exit(f"{rel}: onnxruntime and resnetc differ by {err:.2e}")
            n += 1
            # CI's disk is small: ResNet-152's weights and model are 0.5 GB.
            w.unlink()
            model.unlink()
    print(f"{n} specs, examples and test nets: all specs and examples agree with onnxruntime {ort.__version__} "
          f"(worst {worst:.2e}); onnx {onnx.__version__} checker passes on all")


if __name__ == "__main__":
    main()
