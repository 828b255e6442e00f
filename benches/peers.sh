#!/bin/sh
# Make benches/.venv from PyPI (torch, torchvision, onnxruntime, OpenVINO...)
# once, then run compare_peers.py in it with the arguments given.
# VENV=DIR puts the venv elsewhere; TORCH_INDEX=URL takes torch and
# torchvision from another index (https://download.pytorch.org/whl/cpu has
# CPU-only wheels, a tenth the size, where it is reachable).
set -e
cd "$(dirname "$0")/.."
venv=${VENV:-benches/.venv}
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --upgrade pip
    if [ -n "$TORCH_INDEX" ]; then
        "$venv/bin/pip" install --quiet --index-url "$TORCH_INDEX" torch torchvision
    else
        "$venv/bin/pip" install --quiet torch torchvision
    fi
    "$venv/bin/pip" install --quiet numpy onnx onnxruntime openvino safetensors
fi
[ -x target/release/resnetc ] || cargo build --release
exec "$venv/bin/python" benches/compare_peers.py "$@"
