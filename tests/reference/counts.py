#!/usr/bin/env python3
"""Independent PyTorch reference for parameter / BN-buffer / MAC counts.

Usage (from the repository root, with the reference venv):

    /root/ref-venv/bin/python tests/reference/counts.py > tests/reference/counts.json

For every network below the script builds the model in PyTorch (random
init, eval mode, no weights are downloaded), runs one forward pass at
batch 1 and reports:

  params      sum of numel over model.parameters(): conv/fc weights and
              biases and BN weight/bias (running stats are buffers, so they
              are NOT included)
  bn_buffers  numel of BN running_mean + running_var (num_batches_tracked
              is not counted)
  macs        multiply-adds of Conv2d and Linear layers only, counted with
              forward hooks:
                conv   out_numel * (in_channels / groups) * kh * kw
                linear in_features * out_features  (batch 1)
  input       [C, H, W] of the input
  stages      [C, H, W] output shape of each residual stage (layer1..N)
  output      shape of the logits (without the batch dimension)

The JSON goes to stdout; a short human-readable stage summary goes to stderr.
Known published numbers are asserted so a wrong construction fails loudly.
"""

import json
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision.models as tvm
from torchvision.models.resnet import BasicBlock, Bottleneck

torch.set_num_threads(1)  # keep CPU use modest; these are tiny forward passes
torch.manual_seed(0)


# --------------------------------------------------------------------------
# Counting
# --------------------------------------------------------------------------

def count(model: nn.Module, input_chw, stage_names):
    """Return the count dict for `model` at input shape [C, H, W], batch 1."""
    model.eval()
    params = sum(p.numel() for p in model.parameters())
    bn_buffers = 0
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            bn_buffers += m.running_mean.numel() + m.running_var.numel()

    macs = 0
    stage_shapes = {}
    handles = []

    def conv_hook(m, inp, out):
        nonlocal macs
        assert out.shape[0] == 1
        kh, kw = m.kernel_size
        macs += out.numel() * (m.in_channels // m.groups) * kh * kw

    def linear_hook(m, inp, out):
        nonlocal macs
        assert inp[0].dim() == 2 and inp[0].shape[0] == 1
        macs += m.in_features * m.out_features

    def stage_hook(name):
        def hook(m, inp, out):
            stage_shapes[name] = list(out.shape[1:])
        return hook

    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    for name in stage_names:
        handles.append(getattr(model, name).register_forward_hook(stage_hook(name)))

    with torch.no_grad():
        out = model(torch.zeros(1, *input_chw))
    for h in handles:
        h.remove()

    return {
        "params": params,
        "bn_buffers": bn_buffers,
        "macs": macs,
        "input": list(input_chw),
        "stages": [stage_shapes[n] for n in stage_names],
        "output": list(out.shape[1:]),
    }


IMAGENET = (3, 224, 224)
CIFAR = (3, 32, 32)
TV_STAGES = ["layer1", "layer2", "layer3", "layer4"]
CIFAR_STAGES = ["layer1", "layer2", "layer3"]


# --------------------------------------------------------------------------
# Shortcut helpers
# --------------------------------------------------------------------------

def option_a(x, stride, out_channels):
    """Parameter-free option A shortcut (He et al. 2015).

    Spatial subsample by `stride` (x[:, :, ::2, ::2]) then zero-pad the new
    channels, split evenly before and after the existing ones.
    """
    if stride != 1:
        x = x[:, :, ::stride, ::stride]
    p = out_channels - x.shape[1]
    if p:
        x = F.pad(x, (0, 0, 0, 0, p // 2, p - p // 2))
    return x


# --------------------------------------------------------------------------
# (b) paper "v1" bottleneck: stride on the first 1x1 instead of the 3x3
# --------------------------------------------------------------------------

def to_v1(model):
    for m in model.modules():
        if isinstance(m, Bottleneck):
            s = m.conv2.stride
            m.conv1.stride = s
            m.conv2.stride = (1, 1)
    return model


# --------------------------------------------------------------------------
# (e) plain ImageNet nets: torchvision basic blocks with no shortcut at all
# --------------------------------------------------------------------------

class PlainBasicBlock(nn.Module):
    """A torchvision BasicBlock without downsample and without the add."""

    def __init__(self, block: BasicBlock):
        super().__init__()
        self.conv1, self.bn1 = block.conv1, block.bn1
        self.conv2, self.bn2 = block.conv2, block.bn2
        self.relu = block.relu

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(x)))


class OptionABasicBlock(PlainBasicBlock):
    """(f) BasicBlock with an option A (subsample + zero-pad) shortcut."""

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        sc = option_a(x, self.conv1.stride[0], out.shape[1])
        return self.relu(out + sc)


class OptionCBasicBlock(PlainBasicBlock):
    """(f) BasicBlock with a 1x1 conv + BN projection on every block."""

    def __init__(self, block: BasicBlock):
        super().__init__(block)
        cin, cout = block.conv1.in_channels, block.conv2.out_channels
        s = block.conv1.stride
        self.proj = nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride=s, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.proj(x))


def replace_blocks(model, cls):
    """Replace every BasicBlock in layer1..layer4 by cls(block)."""
    for name in TV_STAGES:
        layer = getattr(model, name)
        setattr(model, name, nn.Sequential(*[cls(b) for b in layer]))
    return model


# --------------------------------------------------------------------------
# (d) CIFAR ResNets / plain nets, He et al. 2015 section 4.2, option A
# --------------------------------------------------------------------------

class CifarBlock(nn.Module):
    def __init__(self, cin, cout, stride, shortcut):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.stride, self.cout, self.shortcut = stride, cout, shortcut

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.shortcut:
            out = out + option_a(x, self.stride, self.cout)
        return F.relu(out)


class CifarResNet(nn.Module):
    def __init__(self, n, shortcut=True, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        cin = 16
        for i, (cout, s) in enumerate([(16, 1), (32, 2), (64, 2)], 1):
            blocks = []
            for j in range(n):
                blocks.append(CifarBlock(cin, cout, s if j == 0 else 1, shortcut))
                cin = cout
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(x)


# --------------------------------------------------------------------------
# (g) pre-activation ResNet-164 for CIFAR-10 (He et al. 2016)
# --------------------------------------------------------------------------

class PreActBottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin, planes, stride):
        super().__init__()
        cout = planes * self.expansion
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, cout, 1, bias=False)
        # Projection (no BN) on the pre-activated input when shapes change.
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x):
        pre = F.relu(self.bn1(x))
        sc = x if self.shortcut is None else self.shortcut(pre)
        out = self.conv1(pre)
        out = self.conv2(F.relu(self.bn2(out)))
        out = self.conv3(F.relu(self.bn3(out)))
        return out + sc  # no ReLU after the add


class PreActResNet164(nn.Module):
    def __init__(self, num_classes=10, n=18):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)  # no BN/ReLU after
        cin = 16
        for i, (planes, s) in enumerate([(16, 1), (32, 2), (64, 2)], 1):
            blocks = []
            for j in range(n):
                blocks.append(PreActBottleneck(cin, planes, s if j == 0 else 1))
                cin = planes * PreActBottleneck.expansion
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
        self.bn = nn.BatchNorm2d(cin)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.conv1(x)
        x = self.layer3(self.layer2(self.layer1(x)))
        x = F.relu(self.bn(x))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(x)


# --------------------------------------------------------------------------
# Build everything
# --------------------------------------------------------------------------

class NsfwBottleneck(nn.Module):
    """open_nsfw's block: BN folded into biased convs, stride on the 1x1."""

    def __init__(self, cin, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 1, stride, bias=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=True)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=True)
        self.downsample = None
        if stride != 1 or cin != planes * 4:
            self.downsample = nn.Sequential(nn.Conv2d(cin, planes * 4, 1, stride, bias=True))

    def forward(self, x):
        y = F.relu(self.conv1(x))
        y = F.relu(self.conv2(y))
        y = self.conv3(y)
        s = x if self.downsample is None else self.downsample(x)
        return F.relu(y + s)


class OpenNsfw(nn.Module):
    """Yahoo's open_nsfw (ResNet-50-1by2), as shipped folded in ONNX."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=True)
        self.maxpool = nn.MaxPool2d(3, 2, ceil_mode=True)
        cin, layers = 64, []
        for planes, n, stride in [(32, 3, 1), (64, 4, 2), (128, 6, 2), (256, 3, 2)]:
            blocks = []
            for i in range(n):
                blocks.append(NsfwBottleneck(cin, planes, stride if i == 0 else 1))
                cin = planes * 4
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.fc = nn.Linear(1024, 2)

    def forward(self, x):
        x = self.maxpool(F.relu(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def main():
    results = {}

    def add(name, model, chw, stages):
        r = count(model, chw, stages)
        results[name] = r
        print(f"{name:22s} params={r['params']:>11,} bn_buf={r['bn_buffers']:>9,} "
              f"macs={r['macs']:>15,} stages={r['stages']} out={r['output']}",
              file=sys.stderr)
        return r

    # (a) torchvision ResNets, "v1.5" (stride on the bottleneck 3x3)
    expected_a = {
        "resnet18": (11_689_512, 1_814_073_344),
        "resnet34": (21_797_672, 3_663_761_408),
        "resnet50": (25_557_032, 4_089_184_256),
        "resnet101": (44_549_160, 7_801_405_440),
        "resnet152": (60_192_808, 11_513_626_624),
    }
    for name, (p, m) in expected_a.items():
        r = add(name, getattr(tvm, name)(weights=None), IMAGENET, TV_STAGES)
        assert (r["params"], r["macs"]) == (p, m), (name, r)

    # (b) paper layout "v1": stride on the first 1x1 of the bottleneck
    expected_b = {
        "resnet50": 3_857_973_248,
        "resnet101": 7_570_194_432,
        "resnet152": 11_282_415_616,
    }
    for name, m in expected_b.items():
        r = add(f"{name}_v1", to_v1(getattr(tvm, name)(weights=None)),
                IMAGENET, TV_STAGES)
        assert r["macs"] == m, (name, r)
        assert r["params"] == expected_a[name][0]  # layout does not change params

    # (c) wide / grouped variants
    add("wide_resnet50_2", tvm.wide_resnet50_2(weights=None), IMAGENET, TV_STAGES)
    add("resnext50_32x4d", tvm.resnext50_32x4d(weights=None), IMAGENET, TV_STAGES)

    # (d) CIFAR ResNets (option A) and their plain counterparts
    expected_d = {20: 269_722, 32: 464_154, 44: 658_586, 56: 853_018,
                  110: 1_727_962, 1202: 19_421_274}
    for depth, p in expected_d.items():
        n = (depth - 2) // 6
        r = add(f"resnet{depth}", CifarResNet(n), CIFAR, CIFAR_STAGES)
        assert r["params"] == p, (depth, r)
        if depth == 20:
            assert r["macs"] == 40_551_040, r
    for depth in (20, 32, 44, 56, 110):
        n = (depth - 2) // 6
        r = add(f"plain{depth}", CifarResNet(n, shortcut=False), CIFAR, CIFAR_STAGES)
        # option A shortcuts are parameter- and MAC-free
        assert (r["params"], r["macs"]) == (results[f"resnet{depth}"]["params"],
                                            results[f"resnet{depth}"]["macs"])

    # (e) plain ImageNet nets (no shortcut, no downsample)
    for depth in (18, 34):
        r = add(f"plain{depth}",
                replace_blocks(getattr(tvm, f"resnet{depth}")(weights=None),
                               PlainBasicBlock),
                IMAGENET, TV_STAGES)

    # (f) resnet34 with option A / option C shortcuts
    add("resnet34_optA", replace_blocks(tvm.resnet34(weights=None), OptionABasicBlock),
        IMAGENET, TV_STAGES)
    add("resnet34_optC", replace_blocks(tvm.resnet34(weights=None), OptionCBasicBlock),
        IMAGENET, TV_STAGES)
    assert results["resnet34_optA"]["params"] == results["plain34"]["params"]
    assert results["resnet34_optA"]["macs"] == results["plain34"]["macs"]

    # (g) pre-activation ResNet-164 for CIFAR-10
    add("preact_resnet164", PreActResNet164(), CIFAR, CIFAR_STAGES)

    # (h) constructs of released nets: dilation, ceil-mode pooling, biased
    # projections without BN
    add("resnet50_dilated",
        tvm.resnet50(weights=None, replace_stride_with_dilation=[False, True, True]),
        IMAGENET, TV_STAGES)
    add("open_nsfw", OpenNsfw(), IMAGENET, TV_STAGES)

    json.dump(results, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
