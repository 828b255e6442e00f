#!/usr/bin/env python3
"""ResNet-50 (v1.5) at full size: PyTorch, resnetc and resnetc's ONNX export
in onnxruntime, on the same weights and input.

    python benches/export_full_size.py [target/release/resnetc]

Needs torch, torchvision, safetensors, onnx and onnxruntime. The weights are
torchvision's init with randomized BN statistics (no download).
"""

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torchvision
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]


def main():
    exe = sys.argv[1] if len(sys.argv) > 1 else str(ROOT / "target/release/resnetc")
    torch.manual_seed(0)
    m = torchvision.models.resnet50(weights=None).eval()
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.2, 0.2)
                mod.running_mean.uniform_(-0.2, 0.2)
                mod.running_var.uniform_(0.5, 1.5)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = m(x).numpy()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sd = {k: v.contiguous() for k, v in m.state_dict().items() if "num_batches" not in k}
        save_file(sd, str(tmp / "w.safetensors"))
        np.save(tmp / "x.npy", x.numpy())
        subprocess.run([exe, "export", "specs/resnet50_v1_5.rn", "--weights", tmp / "w.safetensors",
                        "-o", tmp / "r50.onnx"], cwd=ROOT, check=True)
        onnx.checker.check_model(onnx.load(str(tmp / "r50.onnx")), full_check=True)
        sess = ort.InferenceSession(str(tmp / "r50.onnx"), providers=["CPUExecutionProvider"])
        onnx_y = sess.run(["logits"], {"input": x.numpy()})[0]
        subprocess.run([exe, "run", "specs/resnet50_v1_5.rn", "--weights", tmp / "w.safetensors",
                        "--input", tmp / "x.npy", "--output", tmp / "y.npy", "--top", "1"],
                       cwd=ROOT, check=True, capture_output=True)
        rc_y = np.load(tmp / "y.npy")
    scale = np.abs(want).max()
    print(f"ResNet-50 v1.5, 2x3x224x224, torch {torch.__version__}, onnxruntime {ort.__version__}:")
    print(f"  exported model in onnxruntime vs PyTorch: max rel {np.abs(onnx_y - want).max() / scale:.2e}")
    print(f"  resnetc run vs PyTorch:                   max rel {np.abs(rc_y - want).max() / scale:.2e}")
    print(f"  exported model vs resnetc run:            max rel {np.abs(onnx_y - rc_y).max() / scale:.2e}")
    print(f"  top-1 agree: {bool((onnx_y.argmax(1) == want.argmax(1)).all() and (rc_y.argmax(1) == want.argmax(1)).all())}")


if __name__ == "__main__":
    main()
