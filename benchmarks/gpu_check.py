"""``python -m benchmarks.gpu_check``: one command for a bare CUDA machine.

Parity of each GPU backend against the float32 reference, per-stage p50/p95/p99 (CUDA
events), sustained frames/s and peak GPU memory, in one table and one JSON file.

* Needs only Python 3.10-3.12, a CUDA build of torch, numpy, pillow, safetensors and tqdm
  (no mediapipe, OpenCV, aiortc, PyAV or aiohttp), and nothing from ``../shared``: it makes
  its inputs (a smooth synthetic face-sized image and reference), uses the imported 3DPE
  weights when there are some, else random weights of the official shapes. ``--fixture``
  adds parity against the official known-answer outputs (with their formula weights).
* "Full frame" is what the GPU does per frame in a call: encode + tri-plane smoothing +
  render + the paste of the crop into a 1280x720 frame region. Tracking runs on the CPU
  and is reported by ``streamfx bench``.
* "Callers per device": simulated 25 fps callers (:mod:`benchmarks.callers`) through the
  model directly and through the frame batcher; the largest count whose callers all keep
  their frame rate with p95 latency within 40 ms.
* TensorRT rows are added where ``tensorrt`` imports (engines with a dynamic batch up to 8).
* ``--device cpu --quick`` runs the same code path on the CPU in float32 (CI, < 1 minute).

    python -m benchmarks.gpu_check [--device cuda] [--quick] [--json benchmarks/results/gpu_check.json]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from benchmarks.harness import percentiles, result, stage_times, time_ms, write

PRESETS = ("full", "balanced", "fast", "fastest")
RESULTS = Path(__file__).resolve().parent / "results"


def synthetic_inputs(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A 512x512 face-sized image (a lit ellipse on a gradient) and a 224x224 reference, uint8 RGB."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:512, 0:512].astype(np.float32) / 512
    head = np.exp(-(((xx - 0.5) / 0.33) ** 2 + ((yy - 0.48) / 0.41) ** 2) * 2.0)
    crop = np.stack([90 + 140 * head, 70 + 110 * head + 30 * yy, 60 + 90 * head + 40 * xx], axis=-1)
    crop = np.clip(crop + rng.normal(0, 2, crop.shape), 0, 255).astype(np.uint8)
    ref = np.clip(np.stack([200 * xx, 120 + 80 * yy, 255 - 200 * xx], -1)[::2, ::2][:224, :224], 0, 255)
    return crop, ref.astype(np.uint8)


def psnr(got: torch.Tensor, expected: torch.Tensor) -> float:
    peak = float(expected.max() - expected.min()) or 1.0
    mse = float(((got.float().cpu() - expected.float().cpu()) ** 2).mean())
    return round(10 * math.log10(peak**2 / max(mse, 1e-20)), 2)


def load_model(fixture: dict | None):
    from streamfx.models import threedpe
    from streamfx.models.checkpoint import find_imported_weights

    if fixture is not None:
        from streamfx.models import testing

        return threedpe.from_state(testing.formula_state_dicts()), "formula (known-answer)"
    path = find_imported_weights()
    if path is not None:
        return threedpe.load(path), f"imported ({path})"
    from streamfx.models.random_weights import random_state_dicts

    return threedpe.from_state(random_state_dicts(0)), "random (official shapes)"


@contextmanager
def true_fp32():
    """Float32 really float32 inside the block: no TF32 in matmuls or cuDNN convolutions (both
    may be on by default), so the reference is not itself rounded to 10 mantissa bits."""
    flags = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags


def reference_path(model, device):
    """The float32 reference (``torch-fp32``) on ``device``, from a copy of ``model``: the shared
    model stays where it is, so the paths built from it later start from the same weights."""
    from streamfx.models.threedpe import copy_on
    from streamfx.runtime.accelerated import load_accelerated

    return load_accelerated(copy_on(model, device), "torch-fp32", device=device)


def parity(path, reference, x, ref224, camera, presets) -> dict:
    """Backend vs float32 reference: tokens, planes and each preset's image, PSNR and max |diff|."""
    tokens_ref = reference.reference_tokens(ref224)
    planes_ref = reference.encode(x, tokens_ref)
    tokens = path.reference_tokens(ref224)
    planes = path.encode(x, tokens_ref)
    out = {"tokens_db": psnr(tokens, tokens_ref), "planes_db": psnr(planes, planes_ref)}
    for preset in presets:
        expected = reference.render(planes_ref, camera, preset)["image"]
        got = path.render(planes_ref, camera, preset)["image"]
        out[f"image_{preset}_db"] = psnr(got, expected)
        out[f"image_{preset}_max"] = round(float((got.float().cpu() - expected.float().cpu()).abs().max()), 5)
    return out


def frame_loop(path, device, x, tokens, camera, preset, frames, warmup) -> tuple[dict, float]:
    """``frames`` full frames (encode + smoothing + render + paste); per-frame percentiles and frames/s."""
    from streamfx.face.tensor_compositing import composite_region, paste_region
    from streamfx.face.types import AlignedFace

    # a 1280x720 frame whose face region maps to the 512 crop at scale 0.8
    scale, ox, oy = 512 / 410.0, 435.0, 130.0
    matrix = np.array([[scale, 0.0, -ox * scale], [0.0, scale, -oy * scale]])
    inverse = np.array([[1 / scale, 0.0, ox], [0.0, 1 / scale, oy]])
    crop_np = ((x[0].permute(1, 2, 0).float().cpu().numpy() + 1) * 127.5).round().astype(np.uint8)
    aligned = AlignedFace(crop=crop_np, matrix=matrix, inverse=inverse, frame_shape=(720, 1280))
    region = paste_region(aligned)
    x0, y0, x1, y1 = region
    frame_region = torch.full((y1 - y0, x1 - x0, 3), 90, dtype=torch.uint8, device=device)
    crop_t = torch.from_numpy(crop_np).to(device)
    average = path.encode(x, tokens).clone()

    def one_frame() -> None:
        planes = path.encode(x, tokens)
        average.lerp_(planes, 0.3)  # the smoother's per-frame work on the planes
        image = path.render(average, camera, preset)["image"]
        composite_region(frame_region, image, crop_t, aligned, region).cpu()  # the one copy back

    samples = time_ms(one_frame, frames, device, warmup)
    return percentiles(samples), round(1000.0 * len(samples) / max(sum(samples), 1e-9), 2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto (cuda when present), cuda, cuda:N or cpu")
    parser.add_argument("--quick", action="store_true", help="few repetitions and the fastest preset only (CI)")
    parser.add_argument("--backends", default=None,
                        help="comma-separated: torch-cuda, tensorrt (default: torch-cuda, and tensorrt where it imports)")
    parser.add_argument("--callers-seconds", type=float, default=4.0,
                        help="seconds per step of the callers-per-device row (0: skip it)")
    parser.add_argument("--fixture", type=Path, default=None, help="3dpe_known_answer.pt for parity against the official outputs")
    parser.add_argument("--frames", type=int, default=300, help="frames for the sustained rate (default 300)")
    parser.add_argument("--json", type=Path, default=RESULTS / "gpu_check.json")
    args = parser.parse_args(argv)

    from streamfx.models import threedpe
    from streamfx.models.renderer import look_at_camera
    from streamfx.runtime.accelerated import load_accelerated
    from streamfx.runtime.batching import batch_sizes_for
    from streamfx.runtime.device_ops import gpu_road
    from streamfx.runtime.devices import DeviceUnavailable, resolve_device

    started = time.perf_counter()
    try:
        device = resolve_device(args.device)
    except DeviceUnavailable as exc:
        print(f"gpu_check: {exc}", file=sys.stderr)
        return 2
    presets = ["fastest"] if args.quick else list(PRESETS)
    if args.backends is None:
        from importlib.util import find_spec

        args.backends = "torch-cuda" + (",tensorrt" if device.type == "cuda" and find_spec("tensorrt") else "")
    reps, frames, warmup = (1, 1, 0) if args.quick else (30, args.frames, 3)
    fixture = torch.load(args.fixture, weights_only=True) if args.fixture else None
    model, weights = load_model(fixture)
    crop, ref = synthetic_inputs()
    x = threedpe.prepare_input(crop).to(device)
    ref224 = threedpe.prepare_reference(ref).to(device)
    camera = look_at_camera(math.pi / 2 + 0.25, math.pi / 2 - 0.05).to(device)
    reference = reference_path(model, device)
    max_batch = 2 if args.quick else 8
    # off CUDA: the GPU's road (load_accelerated, capture with the CUDA graph stand-in, batching), in float32
    ops = gpu_road(device)
    rows = []
    for backend in [b for b in args.backends.split(",") if b]:
        path = load_accelerated(model, backend, presets, device=device, max_batch=max_batch, verify=False, ops=ops)
        captured = path.capture(lambda m: print(m, flush=True), batch_sizes_for(max_batch), warmup=1 if args.quick
                                else 3) if hasattr(path, "capture") else {}
        with true_fp32():
            row = {"name": backend, **path.describe(), "graphs_captured": captured,
                   "parity": parity(path, reference, x, ref224, camera, presets)}
        if fixture is not None:
            official = path.render(fixture["planes"].float().to(device), fixture["camera"].to(device), "full")
            row["parity_official_image_max"] = round(float((official["image"].cpu() - fixture["image"]).abs().max()), 6)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        row["stages_ms"] = stage_times(path, x, ref224, camera, presets, reps, device, warmup=warmup)
        tokens = path.reference_tokens(ref224)
        row["full_frame_ms"], row["sustained_fps"] = frame_loop(path, device, x, tokens, camera, presets[0], frames,
                                                                warmup)
        if args.callers_seconds > 0:
            from benchmarks.callers import callers_per_device

            counts, seconds = ((1, 2), min(args.callers_seconds, 1.0)) if args.quick else \
                ((1, 2, 4, 6, 8, 10, 12, 16), args.callers_seconds)
            row["callers_per_device"] = callers_per_device(path, device, x, tokens, camera, "full" if not args.quick
                                                           else presets[0], seconds=seconds, counts=counts)
        if device.type == "cuda":
            row["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
        rows.append(row)
        del path
    data = result("gpu_check", device, rows, weights=weights, quick=args.quick, preset_for_frames=presets[0],
                  seconds=round(time.perf_counter() - started, 1))
    _table(data)
    print(f"wrote {write(args.json, data)} in {data['seconds']:.0f} s")
    return 0


def _table(data: dict) -> None:
    print(f"\n{data['device']} ({data['machine'].get('gpu', data['machine']['cpu'])}), weights {data['weights']}")
    for row in data["rows"]:
        print(f"{row['name']}: precision {row['precision']}, graphs {row['graphs_captured'] or 'none'}")
        print("  parity vs fp32: " + ", ".join(f"{k} {v}" for k, v in row["parity"].items()))
        for stage, p in row["stages_ms"].items():
            print(f"  {stage:<18} p50 {p['p50']:9.2f}  p95 {p['p95']:9.2f}  p99 {p['p99']:9.2f} ms")
        f = row["full_frame_ms"]
        print(f"  full frame ({data['preset_for_frames']}) p50 {f['p50']:.2f}  p95 {f['p95']:.2f}  p99 {f['p99']:.2f} ms,"
              f" sustained {row['sustained_fps']} frames/s over {f['n']}"
              + (f", peak memory {row['peak_memory_gib']} GiB" if "peak_memory_gib" in row else ""))
        callers = row.get("callers_per_device")
        if callers:
            print(f"  callers at {callers['fps']:.0f} fps ({callers['preset']}, p95 <= {callers['budget_ms']:.0f} ms): "
                  f"{callers['unbatched']['callers_held']} unbatched, {callers['batched']['callers_held']} batched "
                  f"(window {callers['window_ms']} ms, up to {callers['max_batch']} per batch)")


if __name__ == "__main__":
    sys.exit(main())
