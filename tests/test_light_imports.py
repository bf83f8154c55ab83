"""What a bare CUDA machine has (torch, numpy, pillow, safetensors, tqdm) is enough to import
the model and runtime packages and the GPU benchmark: nothing pulls in mediapipe, OpenCV,
aiortc, PyAV or aiohttp on the way."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROBE = """
import importlib.abc, sys
BLOCKED = {"mediapipe", "cv2", "aiortc", "av", "aiohttp", "websockets", "onnx", "onnxruntime", "openvino", "scipy"}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is not on a bare CUDA machine")
sys.meta_path.insert(0, Block())
import streamfx.models, streamfx.runtime
from streamfx.models import threedpe, random_weights
from streamfx.runtime import accelerated, batching, device_ops, devices, probe, estimate, streams
from streamfx.runtime.contrib import torch_cuda
from streamfx.face import tensor_compositing
from streamfx.face import types
from streamfx.training import loop, losses, lora, criteria, targets
import benchmarks.gpu_check, benchmarks.harness
print("ok")
"""


def test_models_runtime_and_gpu_check_import_with_only_the_bare_packages():
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


RAY_PROBE = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] == "ray":
            raise ImportError("ray is optional (the cluster extra)")
sys.meta_path.insert(0, Block())
import streamfx.server, streamfx.pipeline.processor, streamfx.server.app
from streamfx.cli import build_parser
build_parser().parse_args(["node", "--address", "x:1"])   # the commands register without Ray
assert not any(m == "streamfx.cluster" or m.startswith("streamfx.cluster.") for m in sys.modules), "core imports the cluster"
print("ok")
"""


def test_the_server_and_the_cli_need_no_ray():
    out = subprocess.run([sys.executable, "-c", RAY_PROBE], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
