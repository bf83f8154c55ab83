#!/usr/bin/env bash
# The prepared GPU check: one command, at most 10 minutes, for a bare CUDA machine.
#
#   PYTHONPATH=. bash benchmarks/gpu_session.sh [OUT_DIR]
#
# Needs Python 3.10-3.12 with a CUDA build of torch (2.11 or newer), numpy, pillow,
# safetensors, tqdm and pytest; no TensorRT, mediapipe, PyAV or aiortc (TensorRT rows are
# added where it imports). Runs `python -m benchmarks.gpu_check` (parity of every backend
# against a true float32 reference, per-stage p50/p95/p99, sustained frames/s, callers per
# GPU batched and not, peak memory) and the `gpu`-marked tests that need only these packages.
# Writes gpu_check.json, gpu_check.log and gpu_tests.log to OUT_DIR (default: $OUT, else
# benchmarks/results). Put the table in the README's GPU section with the date and the GPU.
set -u -o pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="${PYTHONPATH:-.}" PYTHONUNBUFFERED=1
out="${1:-${OUT:-benchmarks/results}}"
mkdir -p "$out"
python3 - <<'PY' || exit 2
import torch
assert torch.cuda.is_available(), "no CUDA GPU visible to torch"
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}")
PY
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>/dev/null || true
status=0
timeout 420 python3 -m benchmarks.gpu_check --json "$out/gpu_check.json" --frames 300 --callers-seconds 3 \
  2>&1 | tee "$out/gpu_check.log" || status=1
timeout 150 python3 -m pytest -q -p no:cacheprovider -o addopts="" -m gpu \
  tests/runtime/test_torch_cuda.py tests/runtime/test_tensorrt_gpu.py 2>&1 | tee "$out/gpu_tests.log" || status=1
exit $status
