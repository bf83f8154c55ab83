"""--device: which processor runs inference, checked at start, never a quiet CPU fallback."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest
import torch

from streamfx.cli import CliError
from streamfx.cli.common import checked_device
from streamfx.runtime.selection import resolve_backend
from streamfx.runtime.base import BackendUnavailable
from streamfx.runtime.devices import DeviceUnavailable, resolve_device

NO_GPU = not torch.cuda.is_available()


def test_cpu_and_auto_resolve_here():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(DeviceUnavailable, match="unknown device"):
        resolve_device("tpu")


@pytest.mark.skipif(not NO_GPU, reason="a GPU is present: asking for it must work, not fail")
def test_asking_for_a_missing_gpu_is_one_line():
    for name in ("cuda", "cuda:0", "cuda:3"):
        with pytest.raises(DeviceUnavailable, match="no CUDA GPU is visible"):
            resolve_device(name)


def test_each_device_takes_only_the_backends_that_run_there():
    gpu, cpu = torch.device("cuda:0"), torch.device("cpu")
    assert resolve_backend("auto", gpu) == "torch-cuda"
    assert resolve_backend("tensorrt", gpu) == "tensorrt"
    assert resolve_backend("torch-fp32", gpu) == "torch-fp32"
    for backend in ("hybrid", "openvino", "torch", "torch-bf16", "onnxruntime"):
        with pytest.raises(BackendUnavailable, match="runs on the CPU"):
            resolve_backend(backend, gpu)
    for backend in ("torch-cuda", "tensorrt"):
        with pytest.raises(BackendUnavailable, match="needs an NVIDIA GPU"):
            resolve_backend(backend, cpu)
    assert resolve_backend("auto", torch.device("mps")) == "torch-fp32"
    assert resolve_backend("auto", cpu) in ("hybrid", "torch")


def test_a_gpu_whose_backend_fails_stops_the_start_instead_of_falling_back(monkeypatch):
    """With a GPU present and --device left at auto, a backend that cannot load is one line
    telling the user to pass --device cpu; nothing runs on the CPU behind their back."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)

    def broken(backend, device):
        raise BackendUnavailable(f"{backend} cannot run on {device}: driver too old")

    monkeypatch.setattr("streamfx.runtime.selection.check_backend", broken)
    with pytest.raises(CliError, match=r"torch-cuda cannot run on cuda:0: driver too old \(pass --device cpu"):
        checked_device(argparse.Namespace(device="auto", backend="auto"))
    monkeypatch.setattr("streamfx.runtime.selection.check_backend", lambda backend, device: None)
    device, backend = checked_device(argparse.Namespace(device="cpu", backend="auto"))
    assert device.type == "cpu" and backend in ("hybrid", "torch")


@pytest.mark.skipif(not NO_GPU, reason="a GPU is present here")
@pytest.mark.parametrize("argv", [["serve", "--device", "cuda"], ["process", "in.mp4", "-o", "out.mp4", "--device", "cuda"],
                                  ["bench", "--device", "cuda:1"], ["serve", "--backend", "torch-cuda"]])
def test_cli_without_a_gpu_exits_2_with_one_line(argv):
    out = subprocess.run([sys.executable, "-m", "streamfx.cli", *argv], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
    assert "GPU" in out.stderr or "cuda" in out.stderr


@pytest.mark.parametrize("argv, message", [
    (["process", "in.mp4", "-o", "out.mp4", "--threads", "0"], "--threads must be at least 1"),
    (["process", "in.mp4", "-o", "out.mp4", "--keyframe-every", "0"], "--keyframe-every must be at least 1"),
    (["serve", "--max-fps", "0"], "--max-fps must be positive"),
    (["camera", "--output", "out.mp4", "--max-fps", "-2"], "--max-fps must be positive"),
    (["doctor", "--device", "tpu"], "unknown device"),
])
def test_runtime_options_out_of_range_are_one_line(argv, message, capsys):
    from streamfx.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err


def test_threads_apply_to_the_whole_process_whatever_the_engine():
    """--threads reaches torch for every engine (it is applied where engines are built)."""
    from streamfx.pipeline.options import EngineOptions
    from streamfx.pipeline.select import build_engine

    before = torch.get_num_threads()
    try:
        build_engine("overlay", EngineOptions(threads=1))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_callers_per_gpu_estimate_follows_the_rate_and_the_budget():
    """The README's estimates: an RTX 4090 (165 dense fp16 TFLOP/s) holds 3 callers at 25 fps
    unbatched and 4 batched; an H200 (about 800 measured) 9 and 15. More rate never means
    fewer callers, and a tighter budget never more."""
    from streamfx.runtime.estimate import gpu_callers_estimate

    rtx, h200 = gpu_callers_estimate(165), gpu_callers_estimate(800)
    assert (rtx["unbatched"], rtx["batched"]) == (3, 4)
    assert (h200["unbatched"], h200["batched"]) == (9, 15) and h200["batches_per_period"] == 2
    counts = [gpu_callers_estimate(t)["batched"] for t in (40, 80, 165, 400, 800, 1600)]
    assert counts == sorted(counts) and counts[0] >= 0
    assert gpu_callers_estimate(800, budget_ms=20)["batched"] < h200["batched"]
