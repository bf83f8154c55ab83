"""TensorRT on a real GPU: build an FP16 engine from ONNX, cache it, run it on torch CUDA tensors.

Skipped, with the reason, where TensorRT or a CUDA GPU is missing (as on CI).
"""

from __future__ import annotations

import pytest
import torch

from streamfx.runtime import GraphSpec, TensorSpec
from streamfx.runtime.export import export_onnx

trt_backend = pytest.importorskip("streamfx.runtime.contrib.trt_backend")
_OK, _WHY = trt_backend.TensorRTBackend.availability()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not _OK, reason=f"TensorRT GPU tests skipped: {_WHY}")]


class Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(4, 8, 3, padding=1)

    def forward(self, planes, grid):
        return torch.nn.functional.grid_sample(self.conv(planes), grid, align_corners=False)


def test_fp16_engine_matches_torch_and_is_cached(tmp_path):
    from streamfx.runtime.engine_cache import CacheKey, EngineCache, file_sha256

    spec = GraphSpec("tiny", (TensorSpec("planes", (1, 4, 32, 32)), TensorSpec("grid", (1, 16, 16, 2))),
                     (TensorSpec("out", (1, 8, 16, 16)),))
    module = Tiny().eval()
    onnx_path = export_onnx(module, spec, tmp_path / "tiny.onnx")
    backend = trt_backend.TensorRTBackend()
    cache = EngineCache(tmp_path / "engines")
    key = CacheKey("tiny", file_sha256(onnx_path), "tensorrt", trt_backend.fingerprint())
    plan = backend.build(onnx_path, spec, cache.root)
    cache.record(key, plan)
    assert cache.lookup(key) == plan
    runner = backend.load(plan, spec)
    inputs = {"planes": torch.randn(1, 4, 32, 32, device="cuda"), "grid": torch.rand(1, 16, 16, 2, device="cuda") * 2 - 1}
    with torch.no_grad():
        expected = module.cuda()(*inputs.values())
    got = runner(**inputs)["out"]
    assert (got.float() - expected).abs().max() < 2e-2
