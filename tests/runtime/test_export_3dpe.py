"""The 3DPE graphs export to ONNX, run on the CPU runtimes like PyTorch, and only use what
TensorRT 10 supports; the engine cache reuses them; ``load_accelerated`` switches backends.

Weights are random values of the official shapes (171 M parameters). The encoder graph is
exported once per module; renderers use the cheap presets.
"""

from __future__ import annotations

import math

import pytest
import torch

from streamfx.models import random_weights, threedpe
from streamfx.models.renderer import look_at_camera
from streamfx.models.renderer.scenes import analytic_planes
from streamfx.runtime import BackendUnavailable
from streamfx.runtime.accelerated import load_accelerated
from streamfx.runtime.builder import GraphBuilder
from streamfx.runtime.export import compare_outputs
from streamfx.runtime.engine_cache import EngineCache
from streamfx.runtime.graphs import example_inputs, graph_module, graph_names, graph_spec
from streamfx.runtime.onnx_ops import check_tensorrt_support

GRAPHS = ["reference", "encoder", "renderer-fastest", "renderer-fast"]


@pytest.fixture(scope="module")
def model():
    return threedpe.from_state(random_weights.random_state_dicts(seed=3))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return EngineCache(tmp_path_factory.mktemp("engines"))


@pytest.fixture(scope="module")
def ort_builds(model, cache):
    builder = GraphBuilder(model, "onnxruntime", cache)
    return builder, {g: builder.build(g, check=False) for g in GRAPHS}


def test_graph_names_and_specs():
    assert graph_names(["fast"]) == ["reference", "encoder", "renderer-fast"]
    spec = graph_spec("renderer-fast")
    assert [t.shape for t in spec.outputs] == [(1, 3, 256, 256), (1, 3, 64, 64), (1, 1, 64, 64)]
    with pytest.raises(ValueError, match="unknown graph"):
        graph_spec("decoder")


@pytest.mark.parametrize("graph", GRAPHS)
def test_onnxruntime_matches_pytorch(ort_builds, model, graph):
    builder, results = ort_builds
    runner = builder.load(graph, results[graph])
    errors = compare_outputs(runner, graph_module(model, graph), example_inputs(graph, seed=1))
    assert set(errors) == {t.name for t in graph_spec(graph).outputs}
    assert max(errors.values()) < 1e-4, errors


@pytest.mark.parametrize("graph", GRAPHS)
def test_exported_graphs_are_tensorrt_compatible(ort_builds, graph):
    report = check_tensorrt_support(ort_builds[1][graph].onnx)
    assert report.ok, report.problems
    assert "IsNaN" not in report.ops and not any("ATen" in op for op in report.ops)
    if graph.startswith("renderer"):
        assert report.ops.get("GridSample", 0) == 2  # coarse and fine pass, 4-D each


def test_openvino_f32_matches_pytorch(model, cache):
    builder = GraphBuilder(model, "openvino", cache, precision="f32")
    for graph in ("reference", "renderer-fastest"):
        errors = builder.build(graph, check=True).errors
        assert max(errors.values()) < 1e-4, (graph, errors)


def test_cache_reuses_exports_and_builds(ort_builds, model, cache):
    builder, results = ort_builds
    again = GraphBuilder(model, "onnxruntime", cache).build("renderer-fastest")
    assert again.reused and again.onnx == results["renderer-fastest"].onnx


def test_load_accelerated_switches_backends(model, cache):
    inputs = example_inputs("renderer-fast")
    expected = model.render(inputs["planes"], inputs["camera"], "fast")
    ort = load_accelerated(model, "onnxruntime", ["fast"], cache=cache)
    got = ort.render(inputs["planes"], inputs["camera"], "fast")
    assert (got["image"] - expected["image"]).abs().max() < 1e-4
    measured = load_accelerated(model, "torch")  # the precision the probe picked on this machine
    fast = measured.render(inputs["planes"], inputs["camera"], "fast")
    assert (fast["image_raw"] - expected["image_raw"]).abs().max() < 1e-2  # bf16 decoder, where chosen
    rel = ((fast["image"] - expected["image"]).norm() / expected["image"].norm()).item()
    assert rel < 0.02
    camera = look_at_camera(math.pi / 2, math.pi / 2)
    with pytest.raises(threedpe.ModelInputError, match="at most 1"):
        ort.render(inputs["planes"].expand(2, -1, -1, -1), camera.expand(2, -1), "fast")
    with pytest.raises(BackendUnavailable, match="unknown backend"):
        load_accelerated(model, "cuda-magic")


def psnr(got: torch.Tensor, expected: torch.Tensor) -> float:
    """PSNR in dB over the expected tensor's own value range."""
    peak = float(expected.max() - expected.min())
    return 10 * math.log10(peak ** 2 / float(((got.float() - expected) ** 2).mean()))


def test_hybrid_default_path_keeps_its_accuracy(model, cache, read_rgb):
    """The default CPU path (OpenVINO, bf16 where the probe chose it) against the fp32 reference,
    on a real face and style. The encoder graph is the coordinate-folded one, so bf16 never
    holds the pixel indices. Measured on the AVX-512/bf16 development machine with OpenVINO
    in bf16: tokens 77 dB, tri-planes 64.8 dB (0.35 % relative); fp32 is higher still."""
    hybrid = load_accelerated(model, "hybrid", cache=cache)
    x = threedpe.prepare_input(read_rgb("faces/ffhq_1.png"))
    ref224 = threedpe.prepare_reference(read_rgb("styles/style_3.png"))
    expected_tokens = model.reference_tokens(ref224)
    assert psnr(hybrid.reference_tokens(ref224), expected_tokens) > 60
    planes = hybrid.encode(x, expected_tokens)
    reference = model.encode(x, expected_tokens)
    assert planes.shape == reference.shape
    assert psnr(planes, reference) > 55
    render_inputs = example_inputs("renderer-fastest")
    got = hybrid.render(render_inputs["planes"], render_inputs["camera"], "fastest")
    torch_path = load_accelerated(model, "torch").render(render_inputs["planes"], render_inputs["camera"], "fastest")
    assert torch.equal(got["image"], torch_path["image"]), "light presets run on the torch fast renderer"


def _tensorrt_ready() -> tuple[bool, str]:
    try:
        from streamfx.runtime.contrib.trt_backend import TensorRTBackend
    except ImportError as exc:  # pragma: no cover - the module itself imports nothing optional
        return False, str(exc)
    return TensorRTBackend.availability()


@pytest.mark.gpu
@pytest.mark.skipif(not _tensorrt_ready()[0], reason=f"TensorRT 3DPE engines skipped: {_tensorrt_ready()[1]}")
def test_tensorrt_fp16_renderer_engine_matches_pytorch(model, cache):
    """FP16 engine of a renderer graph, cached under the GPU fingerprint, verified against PyTorch."""
    builder = GraphBuilder(model, "tensorrt", cache)
    result = builder.build("renderer-fastest", check=True)
    assert result.artefact.suffix == ".plan" and builder.fingerprint in cache.manifest_path.read_text()
    assert max(result.errors.values()) < 0.1
    assert builder.build("renderer-fastest").reused


@pytest.mark.full
def test_default_path_full_quality_image_against_the_fp32_reference(model, cache, read_rgb):
    """``auto`` at full quality (OpenVINO super-resolution graph) against the fp32 reference on a
    real face: the image must stay above 40 dB. Longer than the rest (a full-quality export and
    fp32 render), so it runs in ``make test-full``."""
    from streamfx.face import label_from_degrees

    auto = load_accelerated(model, "auto", ["full"], cache=cache)
    x = threedpe.prepare_input(read_rgb("faces/ffhq_2.png"))
    tokens = model.reference_tokens(threedpe.prepare_reference(read_rgb("styles/style_4.png")))
    camera = torch.from_numpy(label_from_degrees(12.0, -4.0)).float()[None]
    expected = model.render(model.encode(x, tokens), camera, "full")["image"]
    got = auto.render(auto.encode(x, tokens), camera, "full")["image"]
    assert psnr(got, expected) > 40


def test_dynamic_batch_graphs_run_several_callers_as_one_batch(model, tmp_path):
    """Graphs built for batching (what TensorRT builds with an optimisation profile) take
    1..max_batch rows, and each row equals that caller's own batch-1 result."""
    builder = GraphBuilder(model, "onnxruntime", EngineCache(tmp_path), max_batch=2)
    runner = builder.load("renderer-fast")
    assert runner.spec.meta["max_batch"] == 2
    planes = torch.cat([analytic_planes(1.0), analytic_planes(1.0).flip(-1)])
    cameras = torch.cat([look_at_camera(math.pi / 2 + 0.3, math.pi / 2), look_at_camera(math.pi / 2 - 0.2, math.pi / 2)])
    both = runner(planes=planes, camera=cameras)
    for i in range(2):
        alone = model.render(planes[i:i + 1], cameras[i:i + 1], "fast")
        for key in ("image", "image_raw", "image_depth"):
            assert (both[key][i:i + 1] - alone[key]).abs().max() < 1e-4, key
    assert not torch.allclose(both["image"][0], both["image"][1])
    static = GraphBuilder(model, "onnxruntime", EngineCache(tmp_path))
    assert static.build("renderer-fast").onnx != builder.build("renderer-fast").onnx  # two exports, never mixed
