#!/bin/sh
# Make benches/.venv from PyPI (CPU wheels of PyTorch; onnxruntime, OpenVINO)
# once, then run compare_peers.py in it with the arguments given.
# VENV=DIR puts the venv elsewhere.
set -e
cd "$(dirname "$0")/.."
venv=${VENV:-benches/.venv}
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --upgrade pip
    "$venv/bin/pip" install --quiet --index-url https://download.pytorch.org/whl/cpu torch torchvision \
        || "$venv/bin/pip" install --quiet torch torchvision
    "$venv/bin/pip" install --quiet numpy onnx onnxruntime openvino safetensors
fi
[ -x target/release/resnetc ] || cargo build --release
exec "$venv/bin/python" benches/compare_peers.py "$@"
