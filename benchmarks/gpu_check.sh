#!/usr/bin/env bash
# The GPU checks in one device call, for a session lent an H100 or H200:
#   device run, from the repository root:  bash benchmarks/gpu_check.sh   (timeout_s 540 leaves room)
# Uses the device image's python3, which has torch, torchvision, timm, rich and pytest; dropblock
# runs from this tree (PYTHONPATH), without the C helper, which the CUDA path does not use.
# Writes gpu.txt, tests.txt, bench_cuda.txt and bench_cuda.json to $OUT (or /tmp/gpu_check).
set -uo pipefail
out=${OUT:-/tmp/gpu_check}
mkdir -p "$out"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$out/gpu.txt"
timeout 180 python3 -m pytest -q -p no:cacheprovider -k "cuda" tests/test_devices.py tests/test_functional.py \
    2>&1 | tee "$out/tests.txt"
timeout 300 python3 benchmarks/bench.py --device cuda --skip-cli --json "$out/bench_cuda.json" \
    2>&1 | tee "$out/bench_cuda.txt"
