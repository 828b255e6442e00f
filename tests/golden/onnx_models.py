#!/usr/bin/env python3
"""ONNX models exported by PyTorch, for resnetc's binding by structure.

    python tests/golden/onnx_models.py

Writes tests/golden/cifar_resnet20/model.onnx: the golden case's network
and weights (tests/golden/make.py's CifarResNet, option A as strided slices
and F.pad) through torch.onnx.export (TorchScript exporter, opset 17, BN
folded into the convs, dynamic batch). Its option A shortcuts come out as
Slice, Shape, Gather, Concat, Pad and ConstantOfShape nodes: nothing
resnetc wrote. tests/onnx.rs binds it to specs/cifar/resnet20.rn and
compares with the case's logits.

With --check, also exports (to a temporary folder) ResNet-18, ResNet-50 and
ResNeXt-50 from torchvision with random weights and BN statistics and the
pre-activation ResNet-164 of make.py, and runs them through `resnetc run`
against PyTorch.
"""

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torchvision

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
ARGS = sys.argv[1:]
sys.argv = [sys.argv[0], "none"]  # make.py: remake no case on import
sys.path.insert(0, str(HERE))
import make  # noqa: E402
from safetensors.torch import load_file  # noqa: E402


def export(model, x, path):
    torch.onnx.export(model, (x,), str(path), input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "n"}}, dynamo=False, opset_version=17)


def main():
    d = HERE / "cifar_resnet20"
    m = make.CifarResNet(3)
    m.load_state_dict(load_file(str(d / "weights.safetensors")), strict=True)
    x = torch.from_numpy(np.load(d / "input.npy"))
    export(m.eval(), x, d / "model.onnx")
    print(f"wrote {d / 'model.onnx'}")
    if "--check" not in ARGS:
        return
    exe = ROOT / "target/release/resnetc"
    torch.manual_seed(0)
    nets = [
        ("specs/resnet18.rn", torchvision.models.resnet18(weights=None), 96),
        ("specs/resnet50_v1_5.rn", torchvision.models.resnet50(weights=None), 96),
        ("examples/resnext50_32x4d.rn", torchvision.models.resnext50_32x4d(weights=None), 96),
        ("examples/preact_resnet164.rn", make.PreActResNet164(), 32),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for spec, model, size in nets:
            model = make.randomize_bn_torch(model).eval()
            x = torch.randn(2, 3, size, size)
            export(model, x, tmp / "m.onnx")
            np.save(tmp / "x.npy", x.numpy())
            with torch.no_grad():
                want = model(x).numpy()
            subprocess.run([exe, "run", spec, "--weights", tmp / "m.onnx", "--input", tmp / "x.npy",
                            "--output", tmp / "y.npy", "--top", "1"], cwd=ROOT, check=True,
                           capture_output=True)
            got = np.load(tmp / "y.npy")
            print(f"{spec:30s} torch.onnx.export -> resnetc run: max rel "
                  f"{np.abs(got - want).max() / np.abs(want).max():.2e}")


if __name__ == "__main__":
    main()
