"""The GPU road on a CPU: the torch-cuda path's capture, padding, locking, precision and
memory rules, the graph stand-in's rules, and the whole GPU session path on a second
(virtual) device, so that a tensor made on the wrong device fails here as it would on a GPU.

Cheap tests swap the encoder and renderer of one torch-cuda path for tiny modules (the code
around them, which is what these tests guard, is unchanged); the session test runs the
real model once, at batch 1 and the fastest preset.
"""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest
import torch
from stream_recorder import RecordingStreamOps
from torch import nn
from virtual_device import DEVICE, DeviceMismatch, OnDevice, VirtualDevice

from streamfx.models.renderer import look_at_camera
from streamfx.runtime.adapters import LowRankAdapter, LowRankUpdate
from streamfx.runtime.base import BackendUnavailable
from streamfx.runtime.contrib.torch_cuda import BF16_MARGIN, TorchCudaAccelerated, pick_half
from streamfx.runtime.device_ops import DeviceOps, GraphRuleError, GraphStandIn, gpu_road


class TinyEncoder(nn.Module):
    """(B, 3, 512, 512), tokens -> planes (B, 96, 256, 256): a linear map of a few pixels."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        y = self.head(x[:, 0, 0, :4]) + tokens[:, 0, :4]
        return y.sum(-1).view(-1, 1, 1, 1).expand(-1, 96, 256, 256).contiguous()


class TinyRenderer(nn.Module):
    def forward(self, planes: torch.Tensor, camera: torch.Tensor, preset) -> dict[str, torch.Tensor]:
        v = planes[:, :1, :8, :8] + camera[:, :1, None, None]
        return {"image": v.expand(-1, 3, -1, -1).contiguous(), "image_raw": v.clone(), "image_depth": v * 2}


@pytest.fixture(scope="module")
def tiny_path(random_model):
    """One torch-cuda path (CPU, float32) whose heavy modules are tiny; the test restores what it changes."""
    path = TorchCudaAccelerated(random_model, "cpu", ("fastest",), encoder_only=True)
    path.encoder, path.renderer = TinyEncoder().eval(), TinyRenderer()
    return path


def _rows(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 512, 512, generator=g) * 2 - 1, torch.randn(n, 197, 768, generator=g)


def test_captured_batches_are_padded_and_each_row_gets_its_own_result(tiny_path):
    """Batch sizes 1, 2 and 4 captured with the stand-in: a batch of 3 replays the graph of 4
    (padded), and every call, padded or not, equals the eager result of its own rows."""
    path = TorchCudaAccelerated.__new__(TorchCudaAccelerated)
    path.__dict__.update(tiny_path.__dict__)
    path._encode, path._render, path.pool = {}, {}, None
    captured = path.capture(lambda m: None, (1, 2, 4), warmup=1)
    assert all(captured.values()) and sorted(path._encode) == [1, 2, 4], captured
    for n, seed in ((3, 1), (1, 2), (3, 3), (2, 4)):
        x, tokens = _rows(n, seed)
        got = path.encode(x, tokens)
        assert got.shape[0] == n and torch.allclose(got, path._encode_eager(x, tokens), atol=1e-6), n
        camera = look_at_camera(math.pi / 2 + 0.1, math.pi / 2).repeat(n, 1) + seed
        out = path.render(got, camera, "fastest")
        assert torch.allclose(out["image"], path._render_eager(got, camera, "fastest")["image"], atol=1e-6), n
    assert path._encode[4].graph.replays == 2, "the batches of 3 ran on the graph of 4"
    first = path.encode(*_rows(1, 5))
    path.encode(*_rows(1, 6))
    assert not torch.equal(first, path.encode(*_rows(1, 6))) and torch.equal(first, path.encode(*_rows(1, 5))), \
        "a replay's outputs are cloned: an earlier result is not overwritten"


def test_the_graph_stand_in_keeps_the_graph_rules():
    """A replay reads the captured buffers and rewrites the same outputs; swapping a buffer
    (instead of copying into it) or reallocating one is an error, not a silent stale result."""
    static = [torch.ones(4)]
    graph = GraphStandIn().capture(lambda t: t * 2, static, None, warmup=3)
    out = graph.outputs
    static[0].copy_(torch.full((4,), 3.0))
    graph.replay()
    assert graph.outputs is out and torch.equal(out, torch.full((4,), 6.0)), "outputs are rewritten in place"
    graph.inputs[0] = torch.full((4,), 5.0)
    with pytest.raises(GraphRuleError):
        graph.replay()
    graph.inputs[0] = static[0]
    static[0].resize_(8)
    with pytest.raises(GraphRuleError):
        graph.replay()


def test_an_eager_encode_waits_while_another_callers_adapter_is_hooked(tiny_path):
    """Caller A's adapter sits on the shared encoder; caller B's plain encode, started
    meanwhile, must wait for A and then get the base result (without the lock it ran under
    A's style)."""
    x, tokens = _rows(1, 7)
    base = tiny_path.encode(x, tokens)
    adapter = LowRankAdapter("a", {"head": LowRankUpdate(torch.ones(1, 4), torch.full((4, 1), 5.0))})
    inside, b_done, got = threading.Event(), threading.Event(), {}

    def a_run():
        inside.set()
        b_done.wait(1.0)  # B would finish here if nothing kept it out
        return tiny_path._encode_eager(x, tokens)

    def caller_b():
        inside.wait(5)
        got["b"] = tiny_path.encode(x, tokens)
        b_done.set()

    thread = threading.Thread(target=caller_b)
    thread.start()
    adapted = tiny_path._with_adapters(tiny_path.encoder, [adapter], a_run)
    thread.join(10)
    assert not torch.equal(adapted, base), "the adapter changes the result (else this test shows nothing)"
    assert torch.equal(got["b"], base), "caller B ran under caller A's style adapter"


def test_bf16_is_taken_only_when_clearly_faster_and_native():
    assert pick_half({"fp16": 990.0, "bf16": 1000.0}, bf16_native=True)[0] == "fp16"   # equal peaks: not noise
    assert pick_half({"fp16": 1000.0, "bf16": 990.0}, bf16_native=True)[0] == "fp16"
    assert pick_half({"fp16": 100.0, "bf16": 100.0 * BF16_MARGIN}, bf16_native=True)[0] == "bf16"
    assert pick_half({"fp16": 100.0, "bf16": 300.0}, bf16_native=False)[0] == "fp16"  # emulated bf16


def test_the_reported_decoder_precision_is_the_one_that_runs(random_model):
    """The decoder reads float32 tri-plane samples and runs in float32 whatever the weights'
    dtype; the plan must say so (it said fp16 before)."""
    path = TorchCudaAccelerated(random_model, "cpu", ("fastest",), precision="bf16")
    seen = []
    hook = path.renderer.decoder.register_forward_pre_hook(lambda m, a: seen.append(a[0].dtype))
    try:
        planes = torch.randn(1, 96, 256, 256) * 0.1
        path.render(planes, look_at_camera(math.pi / 2, math.pi / 2), "fastest")
    finally:
        hook.remove()
    stages = path.describe()["stages"]
    assert seen and {path.plan.dtype("decoder")} == set(seen), (stages, seen)
    assert stages["superres"] == "bf16" and stages["encoder"] == "bf16"


class _Tight(DeviceOps):
    def free_memory(self) -> int:
        return 1 << 30


def test_a_capture_that_would_not_fit_says_so_before_capturing(tiny_path):
    path = TorchCudaAccelerated.__new__(TorchCudaAccelerated)
    path.__dict__.update(tiny_path.__dict__)
    path._encode, path._render, path.pool = {}, {}, None
    road = gpu_road("cpu")
    path.ops = _Tight(road.device, road.streams, road.graphs, True)
    need = path.graph_memory((1, 2, 4, 8), ("full", "balanced", "fast", "fastest"))
    assert need["graphs"] == 20 and 2 < need["total_gib"] < 24, need
    with pytest.raises(BackendUnavailable) as info:
        path.capture(lambda m: None, (1, 2, 4, 8), ("full", "balanced", "fast", "fastest"))
    assert "\n" not in str(info.value) and "GiB" in str(info.value) and not path._encode
    assert path.graph_memory((1,), ("fastest",))["total_gib"] < need["total_gib"] / 4


# -------------------------------------------------------------- a second device on the CPU


@pytest.fixture
def virtual_device(monkeypatch):
    """The virtual device in this thread and in every thread started meanwhile (the batcher's)."""
    run = threading.Thread.run

    def run_on_device(self):
        with VirtualDevice():
            run(self)

    monkeypatch.setattr(threading.Thread, "run", run_on_device)
    with VirtualDevice():
        yield


def test_the_virtual_device_catches_a_tensor_left_on_the_host(virtual_device):
    """The means the session test relies on: a host tensor meeting a device tensor fails."""
    w = torch.ones(3).to(DEVICE)
    assert isinstance(w, OnDevice) and torch.equal((w * 2).cpu(), torch.full((3,), 2.0))
    with pytest.raises(DeviceMismatch):
        w + torch.ones(3)


def test_the_gpu_paths_helpers_make_their_tensors_on_the_models_device(random_model, virtual_device):
    """Findings 1-3: the folded coordinate map is made where the conv's weights are; the
    float32 reference (torch-fp32, gpu_check's) moves its inputs to its device and is built from
    a copy (the shared model stays put); style adapters on graph backends run where the graphs do."""
    from benchmarks.gpu_check import reference_path

    from streamfx.models.encoder.fast import CoordinateFoldedConv
    from streamfx.runtime.graph_paths import adapted_encoder

    conv = nn.Conv2d(5, 4, 3, padding=1).to(DEVICE)
    folded = CoordinateFoldedConv(conv, 16, torch.float32)
    assert isinstance(folded.const, OnDevice)
    reference = reference_path(random_model, DEVICE)
    assert next(random_model.parameters()).device.type == "cpu", "the shared model was moved in place"
    tokens = reference.reference_tokens(torch.randn(1, 3, 224, 224))
    assert isinstance(tokens, OnDevice)
    adapted = adapted_encoder(random_model, gpu_road(DEVICE))
    assert adapted.backend == "torch-cuda" and adapted.device == DEVICE
    assert isinstance(next(adapted.encoder.parameters()), OnDevice)


@pytest.mark.slow
def test_the_gpu_session_path_makes_every_tensor_on_the_device(random_model, read_rgb, tmp_path, virtual_device):
    """Weights, tokens, a reference prompt, a style pack at part strength, the frame batcher,
    capture with the stand-in, uploads and the paste, with the model on a second device:
    any tensor made on the host and not moved fails an op here, as it would on a GPU.

    Try it: in ``PinnedUploader.__call__`` (pipeline/engines/threedpe/gpu.py) replace
    ``host.to(self.ops.device, non_blocking=True)`` by ``host`` (the crop and the frame region
    stay on the host) and this test fails with a DeviceMismatch in the paste.

    The recording stream fake also shows the hand-overs outside the batcher: the prompt's
    tokens are finished (recorded and synchronised) on the thread that made them, and the
    session hands them over to its own stream before its frames read them."""
    from streamfx.models import threedpe
    from streamfx.pipeline.controls import Controls, PoseMode
    from streamfx.pipeline.engines.threedpe.config import ThreeDPEConfig
    from streamfx.pipeline.engines.threedpe.engine import ThreeDPEEngine
    from streamfx.pipeline.prompts import preset_prompt
    from streamfx.pipeline.timing import StageTimer
    from streamfx.runtime.adapters import default_targets, random_adapter
    from streamfx.styles.pack import write_pack

    adapter = random_adapter(random_model.encoder, default_targets(random_model.encoder), rank=2, seed=1, std=0.1)
    write_pack(tmp_path / "pack", read_rgb("styles/style_3.png"),
               {"kind": "trained", "base_sha256": threedpe.weights_sha256(random_model)}, adapter)
    streams = RecordingStreamOps()
    config = ThreeDPEConfig(device=str(DEVICE), presets_best_first=("fastest",), max_batch=1, batch_window_ms=1.0,
                            styles_dir=tmp_path)
    engine = ThreeDPEEngine(config, model=random_model, ops=gpu_road(DEVICE, streams))
    try:
        assert engine.backend == "torch-cuda" and hasattr(engine.model, "batcher")
        path = engine.model.model
        assert sorted(path._encode) == [1] and sorted(path._render) == [("fastest", 1)], "captured, not eager"
        session = engine.open_session()
        assert session.gpu is not None and session.worker is None, "the GPU's choices, on the GPU's road"
        before = len(streams.log)
        session.set_prompt(preset_prompt("pack"))
        prompt_syncs = [e for e in streams.log[before:] if e[0] == "synchronize" and e[1].endswith("@default")]
        assert len(prompt_syncs) == 2, "the pack's tokens and its adapter are each finished on the prompt's thread"
        frame = np.full((480, 640, 3), 40, np.uint8)
        frame[112:368, 192:448] = read_rgb("faces/ffhq_3.png")[::2, ::2]
        controls = Controls(pose=PoseMode("frontal"), quality="fastest", strength=0.5)
        out = session.process(frame, controls, StageTimer())
        assert session.edited == 1 and out.shape == frame.shape
        assert np.abs(out.astype(int) - frame).max() > 0, "the render was pasted"
        session.close()
    finally:
        engine.close()
    log = streams.log
    finished = [e for e in log if e[0] == "synchronize" and e[1] and e[1].endswith("@default")]
    assert finished, "the prompt's tokens are finished on their thread's stream before they are shared"
    session_stream = session.gpu.stream
    handed = [i for i, e in enumerate(log) if e == ("hand_over", session_stream)]
    assert handed and log.index(finished[0]) < handed[0], "the session hands the tokens to its stream"


def test_the_float32_reference_turns_tf32_off_while_it_runs():
    """gpu_check's reference is float32, not TF32 (cuDNN allows TF32 by default)."""
    from benchmarks.gpu_check import true_fp32

    torch.backends.cudnn.allow_tf32 = True
    with true_fp32():
        assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
    assert torch.backends.cudnn.allow_tf32
