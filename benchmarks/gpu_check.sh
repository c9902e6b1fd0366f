#!/usr/bin/env bash
# The GPU checks in one device call, for a session lent an H100 or H200 (about 5 to 8 minutes):
#   device run, from the repository root:  bash benchmarks/gpu_check.sh   (timeout_s 540)
# Uses the device image's python3, which has torch, triton, torchvision, timm, rich, pytest and
# pytest-xdist; nothing is installed. dropblock runs from this tree (PYTHONPATH), without the C helper,
# which only the CPU path uses. Each step has its own time limit, so a slow step cannot starve the next.
# Writes to $OUT (or /tmp/gpu_check): gpu.txt (machine), tests.txt (the CUDA tests, Triton's included),
# bench_cuda.txt/.json (forward and forward+backward against the floor, torchvision and timm, the sweep's
# passes: images sharing a pass and the default grid's images per second, with the goals), sweep.txt/.json
# (the Triton kernels over tile sizes, to tune dropblock/_triton.py) and sweep_cuda.txt (`dropblock sweep
# --device cuda` in one process and in 2 torchrun ranks, with 16 masks, and with 2 masks and images sharing
# passes; their CSVs, JSON, figures).
set -uo pipefail
out=${OUT:-/tmp/gpu_check}
mkdir -p "$out"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 DROPBLOCK_BACKEND=auto
unset TRITON_INTERPRET
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee "$out/gpu.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)" \
    | tee -a "$out/gpu.txt"
workers=""
python3 -c "import xdist" 2>/dev/null && workers="-n 8"  # Triton compiles kernels on the CPU: in parallel
timeout 210 python3 -m pytest -q -p no:cacheprovider $workers -k "cuda or triton or hopper or fx or compile or export or fuzz" \
    tests/test_triton.py tests/test_ops.py tests/test_fuzz.py tests/test_functional.py tests/test_masks.py \
    tests/test_sampling.py tests/test_backends.py 2>&1 | tee "$out/tests.txt"
timeout 200 python3 benchmarks/bench.py --device cuda --skip-cli --json "$out/bench_cuda.json" \
    2>&1 | tee "$out/bench_cuda.txt"
timeout 90 python3 benchmarks/bench.py --device cuda --quick --tile-sweep --json "$out/sweep.json" \
    2>&1 | tee "$out/sweep.txt"
# sweep on CUDA (issue 19): one process, then 2 ranks under torchrun sharing this GPU (gloo carries the rows,
# NCCL is set up for tensors); resnet18 with torchvision's random weights (no download, no extra package). The
# two CSVs should be the same rows; sweep_cuda.txt says whether they are.
python3 -c "import torch, torchvision; torch.manual_seed(0); torch.save(torchvision.models.resnet18().state_dict(), '$out/r18.pth')"
sw=(sweep sample_images --model resnet18 --weights "$out/r18.pth" --layer layer3.1 --keep-probs 1,0.9,0.8
    --block-sizes 1,3,5 --methods dropblock,dropout,cutout --device cuda --workers 2 --json)
: > "$out/sweep_cuda.txt"
# the second case: 2 masks, so several images share each pass (--images-per-pass 3 of the 3 photos)
for case in "16 auto" "2 3"; do
    set -- $case
    per=(); [[ $2 != auto ]] && per=(--images-per-pass "$2")
    one="$out/sweep_cuda_n$1_1" two="$out/sweep_cuda_n$1_2"
    rm -f "$one".* "$two".*
    { time timeout 90 python3 -m dropblock "${sw[@]}" -n "$1" "${per[@]}" --csv "$one.csv" -o "$one.png" \
        > "$one.json"; } 2>&1 | tee -a "$out/sweep_cuda.txt"
    { time timeout 120 python3 -m torch.distributed.run --nproc-per-node 2 --master-addr 127.0.0.1 \
        --master-port 29533 -m dropblock "${sw[@]}" -n "$1" "${per[@]}" --csv "$two.csv" -o "$two.png" \
        > "$two.json"; } 2>&1 | tee -a "$out/sweep_cuda.txt"
    if [[ -s $one.csv && -s $two.csv ]] && cmp -s <(grep -v '^#' "$one.csv") <(grep -v '^#' "$two.csv"); then
        echo "sweep on cuda, -n $1: 1 process and 2 ranks wrote the same rows" | tee -a "$out/sweep_cuda.txt"
    else
        echo "sweep on cuda, -n $1: the CSVs of 1 process and 2 ranks DIFFER (or one is missing)" \
            | tee -a "$out/sweep_cuda.txt"
    fi
done
