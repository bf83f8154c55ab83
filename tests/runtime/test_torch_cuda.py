"""The torch-cuda backend: its code on the CPU (float32, eager) matches the reference; on a GPU
(marked ``gpu``, skipped without one) its half-precision outputs and CUDA graphs are checked."""

from __future__ import annotations

import math

import pytest
import torch

from streamfx.models.renderer import look_at_camera
from streamfx.runtime.contrib.torch_cuda import TorchCudaAccelerated

GPU = torch.cuda.is_available()


@pytest.fixture(scope="module")
def model(random_model):
    return random_model


def _psnr(got, expected) -> float:
    peak = float(expected.max() - expected.min())
    return 10 * math.log10(peak**2 / max(float(((got.float().cpu() - expected.float().cpu()) ** 2).mean()), 1e-20))


def test_on_the_cpu_it_is_the_reference_in_float32(model):
    """Eager calls (the captured ones are checked with the graph stand-in in test_gpu_road.py
    and by ``gpu_check --device cpu --quick``)."""
    path = TorchCudaAccelerated(model, "cpu", ("fastest",))
    assert path.describe()["precision"] == "fp32" and path.describe()["device"] == "cpu"
    x = torch.rand(1, 3, 512, 512, generator=torch.Generator().manual_seed(1)) * 2 - 1
    ref224 = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    tokens = model.reference_tokens(ref224)
    assert (path.reference_tokens(ref224) - tokens).abs().max() < 1e-5
    planes = path.encode(x, tokens)
    expected = model.encode(x, tokens)
    assert (planes - expected).abs().max() < 1e-4
    camera = look_at_camera(math.pi / 2 + 0.2, math.pi / 2)
    for preset in ("fastest", "fast"):
        assert (path.render(expected, camera, preset)["image"] - model.render(expected, camera, preset)["image"]).abs().max() < 1e-5


@pytest.mark.gpu
@pytest.mark.skipif(not GPU, reason="torch-cuda GPU checks skipped: no CUDA GPU visible to torch")
def test_gpu_half_precision_parity_and_graphs(model):
    """Thresholds chosen from measurement on a GPU (README, GPU section)."""
    path = TorchCudaAccelerated(model, "cuda", ("full", "fastest"))
    captured = path.capture(lambda message: None)
    assert all(captured.values()), captured
    x = (torch.rand(1, 3, 512, 512, generator=torch.Generator().manual_seed(1)) * 2 - 1)
    ref224 = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    tokens = model.reference_tokens(ref224)
    planes_ref = model.encode(x, tokens)
    assert _psnr(path.reference_tokens(ref224), tokens) > 40
    planes = path.encode(x, tokens)
    assert _psnr(planes, planes_ref) > 35
    again = path.encode(x, tokens)
    assert torch.equal(planes, again) and planes.data_ptr() != again.data_ptr(), "replays return fresh outputs"
    camera = look_at_camera(math.pi / 2 + 0.2, math.pi / 2)
    for preset in ("full", "fastest"):
        got = path.render(planes_ref.cuda(), camera.cuda(), preset)["image"]
        assert _psnr(got, model.render(planes_ref, camera, preset)["image"]) > 40, preset


@pytest.mark.gpu
@pytest.mark.skipif(not GPU, reason="GPU session checks skipped: no CUDA GPU visible to torch")
def test_gpu_session_pastes_on_the_device_like_the_cpu(model):
    import numpy as np

    from streamfx.face.tensor_compositing import composite_region
    from streamfx.pipeline.engines.threedpe.gpu import GpuFrames

    from streamfx.runtime.device_ops import device_ops

    frames = GpuFrames(device_ops("cuda"))
    crop = np.random.default_rng(0).integers(0, 255, (512, 512, 3), dtype=np.uint8)
    with torch.cuda.stream(frames.stream):
        crop_t, x = frames.model_input(crop)
        again, _ = frames.model_input(crop[::-1].copy())
        torch.cuda.current_stream().synchronize()
    assert np.array_equal(crop_t.cpu().numpy(), crop) and np.array_equal(again.cpu().numpy(), crop[::-1])
    assert x.shape == (1, 3, 512, 512) and float(x.min()) >= -1 and float(x.max()) <= 1
    # the paste on the device against the same composite computed on the CPU
    from streamfx.face.tensor_compositing import paste_region
    from streamfx.face.types import AlignedFace

    scale, ox, oy = 512 / 410.0, 435.0, 130.0
    aligned = AlignedFace(crop=crop, matrix=np.array([[scale, 0.0, -ox * scale], [0.0, scale, -oy * scale]]),
                          inverse=np.array([[1 / scale, 0.0, ox], [0.0, 1 / scale, oy]]), frame_shape=(720, 1280))
    frame = np.random.default_rng(1).integers(0, 255, (720, 1280, 3), dtype=np.uint8)
    image = torch.rand(1, 3, 512, 512, generator=torch.Generator().manual_seed(4)) * 2 - 1
    with torch.cuda.stream(frames.stream):
        on_gpu = frames.paste(frame, image.cuda(), crop_t, aligned)
    x0, y0, x1, y1 = region = paste_region(aligned, 512)
    expected = frame.copy()
    expected[y0:y1, x0:x1] = composite_region(torch.from_numpy(np.ascontiguousarray(frame[y0:y1, x0:x1])), image,
                                              torch.from_numpy(crop), aligned, region).numpy()
    assert np.abs(on_gpu.astype(int) - expected).max() <= 1 and np.abs(on_gpu.astype(int) - frame).max() > 0


@pytest.mark.gpu
@pytest.mark.skipif(not GPU, reason="GPU batching checks skipped: no CUDA GPU visible to torch")
def test_gpu_batches_equal_per_caller_results(model):
    """Three callers through the frame batcher (padded to the captured batch of 4) get what
    each gets alone, and two threads on two streams sharing one captured graph do not mix."""
    import threading

    from streamfx.runtime.batching import BatchConfig, BatchedModel, FrameBatcher
    from streamfx.runtime.streams import CudaStreamOps

    path = TorchCudaAccelerated(model, "cuda", ("fast",))
    path.capture(lambda message: None, (1, 2, 4))
    g = torch.Generator().manual_seed(3)
    xs = [(torch.rand(1, 3, 512, 512, generator=g) * 2 - 1).cuda() for _ in range(3)]
    tokens = [torch.randn(1, 197, 768, generator=g).cuda() for _ in range(3)]
    cams = [look_at_camera(math.pi / 2 + d, math.pi / 2).cuda() for d in (-0.3, 0.0, 0.3)]
    alone = [path.render(path.encode(xs[i], tokens[i]), cams[i], "fast")["image"] for i in range(3)]
    ops = CudaStreamOps("cuda")
    batched = BatchedModel(path, FrameBatcher(path, BatchConfig(window_ms=1000, max_batch=3), ops))
    out: dict[int, torch.Tensor] = {}

    def caller(i: int) -> None:
        with ops.use(ops.new_stream()):
            planes = batched.encode(xs[i], tokens[i])
            out[i] = batched.render(planes, cams[i], "fast")["image"].cpu()

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert batched.batcher.stats()["sizes"] == {3: 2}
    for i in range(3):
        assert _psnr(out[i], alone[i]) > 45, i
    batched.close()


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs: graphs captured on cuda:1 "
                    "(finding 4) can only be checked there")
def test_graphs_on_the_second_gpu_replay_what_they_compute(model):
    """Captured on cuda:1 while device 0 is current: a replay for new inputs equals the eager
    result (an empty graph, captured on device 0's stream, returned the capture's zeros)."""
    path = TorchCudaAccelerated(model, "cuda:1", ("fastest",))
    assert all(path.capture(lambda m: None).values())
    x = (torch.rand(1, 3, 512, 512, generator=torch.Generator().manual_seed(1)) * 2 - 1).to("cuda:1")
    tokens = torch.randn(1, 197, 768, generator=torch.Generator().manual_seed(2)).to("cuda:1")
    assert _psnr(path.encode(x, tokens), path._encode_eager(x, tokens)) > 60
