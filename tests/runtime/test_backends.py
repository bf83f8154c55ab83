"""CPU runtimes run exported graphs like PyTorch; the TensorRT checker flags what TensorRT 10 cannot take."""

from __future__ import annotations

import pytest
import torch

from streamfx.runtime import BackendUnavailable, GraphSpec, TensorSpec, get_backend
from streamfx.runtime.engine_cache import CacheKey, EngineCache
from streamfx.runtime.export import compare_outputs, export_onnx
from streamfx.runtime.onnx_ops import check_tensorrt_support


class Sampler(torch.nn.Module):
    """Conv + 4-D grid_sample + softplus: the kinds of ops the 3DPE graphs use."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(4, 8, 3, padding=1)

    def forward(self, planes, grid):
        feat = torch.nn.functional.grid_sample(self.conv(planes), grid, align_corners=False)
        return torch.nn.functional.softplus(feat - 1.0)


SPEC = GraphSpec("sampler", (TensorSpec("planes", (1, 4, 32, 32)), TensorSpec("grid", (1, 16, 16, 2))),
                 (TensorSpec("out", (1, 8, 16, 16)),))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    module = Sampler().eval()
    return module, export_onnx(module, SPEC, tmp_path_factory.mktemp("onnx") / "sampler.onnx")


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_cpu_runtime_matches_torch(exported, backend):
    module, path = exported
    runner = get_backend(backend, **({"precision": "f32"} if backend == "openvino" else {})).load(path, SPEC)
    inputs = {"planes": torch.randn(1, 4, 32, 32), "grid": torch.rand(1, 16, 16, 2) * 2 - 1}
    assert compare_outputs(runner, module, inputs, relative=False)["out"] < 1e-4


def test_checker_accepts_supported_graph(exported):
    report = check_tensorrt_support(exported[1])
    assert report.ok, report.problems
    assert report.ops["GridSample"] == 1


def test_checker_flags_searchsorted_5d_gridsample_and_float64(tmp_path):
    """A hand-built graph with what torch can emit for searchsorted (an ATen fallback),
    a 5-D GridSample and a float64 cast: each must be reported."""
    import onnx
    from onnx import TensorProto, helper

    f = TensorProto.FLOAT
    nodes = [
        helper.make_node("GridSample", ["volume", "grid"], ["sampled"], name="grid5d"),
        helper.make_node("ATen", ["edges", "values"], ["idx"], name="searchsorted", domain="org.pytorch.aten",
                         operator="searchsorted"),
        helper.make_node("Cast", ["sampled"], ["y"], name="to_double", to=TensorProto.DOUBLE),
    ]
    graph = helper.make_graph(nodes, "bad", [
        helper.make_tensor_value_info("volume", f, [1, 2, 4, 4, 4]),
        helper.make_tensor_value_info("grid", f, [1, 2, 2, 2, 3]),
        helper.make_tensor_value_info("edges", f, [1, 8]),
        helper.make_tensor_value_info("values", f, [1, 5]),
    ], [helper.make_tensor_value_info("y", TensorProto.DOUBLE, [1, 2, 2, 2, 2]),
        helper.make_tensor_value_info("idx", TensorProto.INT64, [1, 5])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20),
                                                    helper.make_opsetid("org.pytorch.aten", 1)])
    path = tmp_path / "bad.onnx"
    onnx.save(model, str(path))
    problems = " | ".join(check_tensorrt_support(path).problems)
    assert "5-D" in problems
    assert "org.pytorch.aten:ATen" in problems
    assert "element type 11" in problems  # float64


def test_engine_cache_keys_on_gpu_and_version(tmp_path):
    cache = EngineCache(tmp_path)
    a = CacheKey("renderer-fast", "abc", "tensorrt", "NVIDIA A10G|sm86|trt10.3.0")
    b = CacheKey("renderer-fast", "abc", "tensorrt", "NVIDIA L4|sm89|trt10.3.0")
    artefact = cache.path_for(a, ".plan")
    artefact.write_bytes(b"plan")
    cache.record(a, artefact)
    assert cache.lookup(a) == artefact
    assert cache.lookup(b) is None, "another GPU must rebuild, not reuse"
    assert cache.lookup(CacheKey("renderer-fast", "def", "tensorrt", a.fingerprint)) is None


_BUILDER = """
import sys
from pathlib import Path
from streamfx.runtime.engine_cache import CacheKey, EngineCache
cache = EngineCache(Path(sys.argv[1]))
for i in range(int(sys.argv[3])):
    key = CacheKey(f"graph-{sys.argv[2]}-{i}", "sha", "onnxruntime", "cpu")
    artefact = cache.path_for(key, ".onnx")
    artefact.write_bytes(b"x")
    cache.record(key, artefact)
"""


def test_two_processes_building_at_once_lose_no_manifest_entry(tmp_path):
    """The manifest is rewritten under a file lock: two builders racing keep every entry.
    (Without the lock this loses entries within a few dozen records on 2 cores.)"""
    import subprocess
    import sys

    count = 150
    procs = [subprocess.Popen([sys.executable, "-c", _BUILDER, str(tmp_path), name, str(count)])
             for name in ("a", "b")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    entries = EngineCache(tmp_path).manifest()["entries"]
    assert len(entries) == 2 * count
    assert not list(tmp_path.glob("*.tmp")), "no half-written manifest is left behind"


def test_tensorrt_backend_reports_why_it_cannot_run():
    try:
        import tensorrt  # noqa: F401
        has_trt = torch.cuda.is_available()
    except ImportError:
        has_trt = False
    if has_trt:
        pytest.skip("TensorRT and a GPU exist here; tests/runtime/test_tensorrt_gpu.py covers them")
    with pytest.raises(BackendUnavailable, match="TensorRT|CUDA"):
        get_backend("tensorrt")
