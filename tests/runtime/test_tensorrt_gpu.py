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


def _psnr(got: torch.Tensor, expected: torch.Tensor) -> float:
    import math

    peak = float(expected.max() - expected.min()) or 1.0
    mse = float(((got.float().cpu() - expected.float().cpu()) ** 2).mean())
    return 10 * math.log10(peak**2 / max(mse, 1e-20))


@pytest.fixture(scope="module")
def trt_graphs(tmp_path_factory):
    """Every 3DPE graph built for TensorRT FP16 with a dynamic batch of up to 2 (random weights)."""
    from streamfx.models import random_weights, threedpe
    from streamfx.runtime.builder import GraphBuilder
    from streamfx.runtime.engine_cache import EngineCache
    from streamfx.runtime.graphs import graph_names

    model = threedpe.from_state(random_weights.random_state_dicts(seed=7))
    builder = GraphBuilder(model, "tensorrt", EngineCache(tmp_path_factory.mktemp("engines")), max_batch=2)
    return model, builder, {g: builder.load(g) for g in graph_names()}


@pytest.mark.parametrize("graph", ["reference", "encoder", "renderer-full", "renderer-balanced", "renderer-fast",
                                   "renderer-fastest"])
def test_every_engine_matches_float32_and_batches_like_single_calls(trt_graphs, graph):
    """Parity threshold: images and planes >= 35 dB PSNR against the float32 module
    (:data:`streamfx.runtime.contrib.trt_precision.IMAGE_PSNR_DB`); batch rows equal single calls."""
    from streamfx.runtime.contrib.trt_precision import IMAGE_PSNR_DB
    from streamfx.runtime.graphs import example_inputs, graph_module

    model, builder, runners = trt_graphs
    runner, module = runners[graph], graph_module(model, graph)
    one, two = example_inputs(graph, seed=1), example_inputs(graph, seed=2)
    if "planes" in two:  # a second caller: another scene and another pose
        from streamfx.models.renderer import look_at_camera

        two["planes"], two["camera"] = two["planes"].flip(-1), look_at_camera(1.2, 1.7)
    with torch.no_grad():
        expected = module(*one.values())
    expected = (expected,) if isinstance(expected, torch.Tensor) else expected
    single = runner(**{k: v.cuda() for k, v in one.items()})
    for spec, exp in zip(runner.spec.outputs, expected):
        assert _psnr(single[spec.name], exp) >= IMAGE_PSNR_DB, (graph, spec.name)
    both = runner(**{k: torch.cat([one[k], two[k]]).cuda() for k in one})
    second = runner(**{k: v.cuda() for k, v in two.items()})
    for name in single:
        assert _psnr(both[name][:1], single[name]) > 60 and _psnr(both[name][1:], second[name]) > 60, name
