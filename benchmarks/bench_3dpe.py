"""3DPE speed on this machine: fp32 vs bf16 vs ``auto``, per stage and preset, in one run.

The default run answers the user's question: is ``auto`` (what the server and ``streamfx
edit`` run) at least as fast as the fp32 reference path here, and what did it choose?

* ``fp32``: the reference PyTorch path (``torch-fp32``, the parity path);
* ``bf16``: the fast path forced to bf16 in every stage (``torch-bf16``);
* ``torch``: the PyTorch fast path in the probe's precision (what runs without OpenVINO);
* ``auto``: what ``load_accelerated(model, "auto")`` picks: the backend and, per stage, the
  precision the capability probe measured fastest (printed with the probe's reason).

Each is timed on a real face (ffhq_1) and reference (style_1) with the known-answer formula
weights: encode, and render at every preset, as milliseconds and as a ratio to fp32 measured
in the same run (higher is faster). Where the probe measured bf16 slower than fp32
(emulated, e.g. AVX2-only CPUs), forced bf16 would take minutes per frame: it is timed on
the ``fastest`` render only, and the rest is reported as skipped with the measured slowdown.

``--detail`` adds the older per-backend analysis (FLOPs per stage, fraction of peak, preset
PSNR, exported graphs on ONNX Runtime / OpenVINO with ``--backends``).

Writes ``benchmarks/results/3dpe.json``.

    python -m benchmarks.bench_3dpe [--reps 1] [--detail --backends torch-bf16,hybrid,openvino,onnxruntime]
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.common import RESULTS, TESTDATA, machine, write_json
from benchmarks.harness import result, stage_times

PRESETS = ("full", "balanced", "fast", "fastest")


def best_time(fn, reps: int, warmup: bool = True) -> float:
    """Best of ``reps`` runs (after one warm-up unless told), in seconds; best-of is robust to a
    loaded machine."""
    if warmup:
        fn()
    best = math.inf
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def measured_peak(dtype: torch.dtype, reps: int = 5) -> float:
    """GFLOP/s of the faster of a 2048^3 matmul (MKL for fp32, oneDNN for bf16) and a 3x3
    256->256 convolution at 128x128 (oneDNN; MKL's fp32 matmul is not at peak on AMD CPUs)."""
    n = 2048
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    matmul = 2 * n**3 / best_time(lambda: a @ b, reps) / 1e9
    x, w = torch.randn(1, 256, 128, 128).to(dtype), torch.randn(256, 256, 3, 3).to(dtype)
    conv = 2 * 256 * 256 * 9 * 128 * 128 / best_time(lambda: F.conv2d(x, w, padding=1), reps) / 1e9
    return max(matmul, conv)


def counted_gflop(fn) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() / 1e9


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR of two images in [-1, 1] (peak-to-peak 2); the larger is resized (antialiased) to the smaller."""
    if a.shape[-1] > b.shape[-1]:
        a, b = b, a
    if a.shape[-1] != b.shape[-1]:
        b = F.interpolate(b.float(), size=a.shape[-2:], mode="bilinear", align_corners=False, antialias=True)
    mse = (a.float().clamp(-1, 1) - b.float().clamp(-1, 1)).square().mean().item()
    return round(10 * math.log10(4.0 / max(mse, 1e-12)), 2)


def read_rgb(rel: str) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(TESTDATA / rel).convert("RGB"))


def stage_row(times: dict, flops: dict, peak: float) -> dict:
    """times (s) and GFLOP per stage -> ms, GFLOP, GFLOP/s and fraction of peak."""
    row = {}
    for stage, seconds in times.items():
        g = flops.get(stage)
        row[stage] = {"ms": round(seconds * 1e3, 1)}
        if g:
            row[stage] |= {"gflop": round(g, 2), "gflops": round(g / seconds, 1),
                           "peak_fraction": round(g / seconds / peak, 3)}
    return row


def compare_precisions(reps: int = 1) -> dict:
    """fp32 vs bf16 vs auto: encode and every preset's render (p50 ms, harness.stage_times) and
    the ratio to fp32 measured in the same run."""
    from streamfx.models import testing, threedpe
    from streamfx.models.renderer import look_at_camera
    from streamfx.runtime.accelerated import load_accelerated
    from streamfx.runtime.selection import resolve_backend
    from streamfx.runtime.probe import MIN_SPEEDUP, probe

    cpu = torch.device("cpu")
    caps = probe()
    model = threedpe.from_state(testing.formula_state_dicts())
    x = threedpe.prepare_input(read_rgb("faces/ffhq_1.png"))
    ref224 = threedpe.prepare_reference(read_rgb("styles/style_1.png"))
    camera = look_at_camera(math.pi / 2 + 0.25, math.pi / 2 - 0.05)
    bf16_slow = min(caps.measured.speedup("matmul"), caps.measured.speedup("conv")) < MIN_SPEEDUP
    auto_backend = resolve_backend("auto")
    print(f"probe: {caps.plan.reason}")
    print(f"auto = {auto_backend}, stages: " + ", ".join(f"{s} {getattr(caps.plan, s)}"
                                                        for s in ("vit", "encoder", "decoder", "superres")))
    rows: list[dict] = []
    reference_planes = model.encode(x, model.reference_tokens(ref224))
    for label, backend in (("fp32", "torch-fp32"), ("bf16", "torch-bf16"), ("torch", "torch"), ("auto", "auto")):
        path = load_accelerated(model, backend, list(PRESETS))
        row: dict = {"name": label, **path.describe()}
        if label == "bf16" and bf16_slow:
            row["skipped"] = (f"bf16 measured {caps.measured.speedup('matmul'):.2f}x (matmul) and "
                              f"{caps.measured.speedup('conv'):.2f}x (conv) fp32 here; only the fastest render is timed")
            row["stages_ms"] = stage_times(path, x, ref224, camera, ["fastest"], reps, cpu, planes=reference_planes)
        else:
            row["stages_ms"] = stage_times(path, x, ref224, camera, list(PRESETS), reps, cpu)
        rows.append(row)
        del path
    base = rows[0]["stages_ms"]
    for row in rows:
        row["x_fp32"] = {k: round(base[k]["p50"] / v["p50"], 2) for k, v in row["stages_ms"].items()}
    stages = ["encode"] + [f"render_{p}" for p in PRESETS]
    print(f"\n{'path':<6}{'backend':<12}" + "".join(f"{s:>17}{'x':>6}" for s in stages))
    for row in rows:
        line = f"{row['name']:<6}{row['backend']:<12}"
        for stage in stages:
            if stage in row["stages_ms"]:
                line += f"{row['stages_ms'][stage]['p50']:>14.1f} ms{row['x_fp32'][stage]:>6.2f}"
            else:
                line += f"{'-':>17}{'-':>6}"
        print(line)
        if "skipped" in row:
            print(f"      ({row['skipped']})")
    return result("bench_3dpe", cpu, rows, weights="formula (known-answer)", auto_backend=auto_backend,
                  probe={"measured": {"matmul": caps.measured.matmul, "conv": caps.measured.conv},
                         "reason": caps.plan.reason, "cpu": caps.cpu.model, "flags": list(caps.cpu.flags),
                         "torch_capability": caps.cpu.torch_capability})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=1, help="timed runs per measurement (after one warm-up)")
    parser.add_argument("--detail", action="store_true", help="also the per-backend, per-stage analysis")
    parser.add_argument("--backends", default="torch-bf16,hybrid,openvino,onnxruntime",
                        help="with --detail, comma-separated: torch-bf16, hybrid, openvino, onnxruntime")
    parser.add_argument("--out", type=Path, default=RESULTS / "3dpe.json")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    comparison = compare_precisions(args.reps)
    if not args.detail:
        comparison["seconds"] = round(time.perf_counter() - started, 1)
        print(f"wrote {write_json(args.out, comparison)} in {comparison['seconds']:.0f} s")
        return 0
    return detail(args, comparison)


def detail(args, comparison: dict) -> int:
    backends = [b for b in args.backends.split(",") if b]

    from streamfx.models import testing, threedpe
    from streamfx.models.renderer import look_at_camera
    from streamfx.models.renderer.flops import render_flops
    from streamfx.runtime.accelerated import load_accelerated

    started = time.perf_counter()
    torch.manual_seed(0)
    peak = {"fp32": round(measured_peak(torch.float32), 1), "bf16": round(measured_peak(torch.bfloat16), 1)}
    print(f"peak (best of matmul/conv): fp32 {peak['fp32']} GFLOP/s, bf16 {peak['bf16']} GFLOP/s "
          f"(bf16/fp32 {peak['bf16'] / peak['fp32']:.2f}x)")

    model = threedpe.from_state(testing.formula_state_dicts())
    x = threedpe.prepare_input(read_rgb("faces/ffhq_1.png"))
    ref224 = threedpe.prepare_reference(read_rgb("styles/style_1.png"))
    camera = look_at_camera(math.pi / 2 + 0.25, math.pi / 2 - 0.05)

    # ---------------------------------------------------------------- FLOPs
    flops = {"reference_tokens": counted_gflop(lambda: model.reference_tokens(ref224))}
    tokens = model.reference_tokens(ref224)
    results: dict = {"machine": machine() | {"peak_gflops": peak}, "weights": "formula (known-answer)",
                     "input": "faces/ffhq_1.png + styles/style_1.png", "paths": {}, "comparison": comparison}

    # ---------------------------------------------------------------- fp32 reference (parity) path
    t_tok = best_time(lambda: model.reference_tokens(ref224), 1)
    planes_ref = None

    def encode_ref():
        nonlocal planes_ref
        planes_ref = model.encode(x, tokens)

    flops["encoder"] = counted_gflop(encode_ref)
    t_enc = best_time(encode_ref, 1, warmup=False)  # the FLOP count ran it once
    with torch.inference_mode():
        t_vol = best_time(lambda: model.renderer.render_volume(planes_ref, camera, _preset("full")), 1, warmup=False)
    reference_out = {}

    def render_ref():
        reference_out.update(model.render(planes_ref, camera, "full"))

    t_render = best_time(render_ref, 1, warmup=False)
    rf = render_flops("full")
    stage_flops = {"reference_tokens": flops["reference_tokens"], "encoder": flops["encoder"],
                   "render_volume": (rf["sample"] + rf["decoder"]) / 1e9, "superres": rf["superres"] / 1e9}
    ref_times = {"reference_tokens": t_tok, "encoder": t_enc, "render_volume": t_vol,
                 "superres": max(t_render - t_vol, 1e-9)}
    ref_total = t_enc + t_render
    full_image, full_raw = reference_out["image"], reference_out["image_raw"]
    results["paths"]["reference-fp32"] = {
        "full": {"stages": stage_row(ref_times, stage_flops, peak["fp32"]),
                 "encode_render_ms": round(ref_total * 1e3, 1), "render_ms": round(t_render * 1e3, 1),
                 "psnr_vs_full_fp32": None}}
    print(f"reference fp32: tokens {t_tok * 1e3:.0f} ms, encode {t_enc * 1e3:.0f} ms, "
          f"render full {t_render * 1e3:.0f} ms ({time.perf_counter() - started:.0f} s so far)")

    # ---------------------------------------------------------------- fast paths
    for backend in backends:
        options = {"precision": "bf16"} if backend in ("openvino", "hybrid") else {}
        acc = load_accelerated(model, backend, list(PRESETS), **options)
        precision = "fp32" if backend == "onnxruntime" else "bf16"
        reps_heavy = max(1, args.reps - 1)
        t_tok = best_time(lambda: acc.reference_tokens(ref224), reps_heavy)
        planes = acc.encode(x, tokens)
        t_enc = best_time(lambda: acc.encode(x, tokens), reps_heavy)
        path: dict = {}
        for name in PRESETS:
            out = acc.render(planes, camera, name)
            reps = reps_heavy if name in ("full", "balanced") else args.reps + 2
            t_render = best_time(lambda: acc.render(planes, camera, name), reps)
            rf = render_flops(name)
            times = {"reference_tokens": t_tok, "encoder": t_enc}
            stage_fl = {"reference_tokens": flops["reference_tokens"], "encoder": flops["encoder"],
                        "render_volume": (rf["sample"] + rf["decoder"]) / 1e9, "superres": rf["superres"] / 1e9}
            renderer = getattr(acc, "renderer", None)
            if backend in ("torch-bf16", "hybrid") and renderer is not None:
                with torch.inference_mode():
                    channels = 3 if _preset(name).superres == "none" else 32
                    t_vol = best_time(lambda: renderer.render_volume(planes, camera, _preset(name), channels), reps)
                times |= {"render_volume": min(t_vol, t_render), "superres": max(t_render - t_vol, 0.0)}
            else:
                times |= {"render": t_render}
                stage_fl["render"] = rf["total"] / 1e9
            path[name] = {"stages": stage_row(times, stage_fl, peak[precision]),
                          "render_ms": round(t_render * 1e3, 1),
                          "encode_render_ms": round((t_enc + t_render) * 1e3, 1),
                          "speedup_vs_reference": round(ref_total / (t_enc + t_render), 2),
                          "render_speedup_vs_reference_full": round(results["paths"]["reference-fp32"]["full"]["render_ms"]
                                                                    / (t_render * 1e3), 2),
                          "psnr_vs_full_fp32": psnr(out["image"], full_image),
                          "raw_psnr_vs_full_fp32": psnr(out["image_raw"], full_raw),
                          "planes_rel_error": round(float((planes - planes_ref).norm() / planes_ref.norm()), 5)}
            print(f"{backend:<12} {name:<9} render {t_render * 1e3:8.1f} ms   encode {t_enc * 1e3:7.0f} ms   "
                  f"PSNR vs fp32 full: image {path[name]['psnr_vs_full_fp32']:6.2f} dB, "
                  f"raw {path[name]['raw_psnr_vs_full_fp32']:6.2f} dB")
        results["paths"][backend] = path
        del acc

    results["preset_psnr_structured"] = structured_psnr()
    print("preset PSNR on structured planes (random weights, analytic planes):", results["preset_psnr_structured"])
    results["seconds"] = round(time.perf_counter() - started, 1)
    results["goals"] = {"full_encode_render_ms_goal": 500, "fastest_render_ms_goal": 40}
    path = write_json(args.out, results)
    _table(results)
    print(f"wrote {path} in {results['seconds']:.0f} s")
    return 0


def structured_psnr() -> dict:
    """Each preset (torch-bf16 fast path) vs the fp32 reference full render, on a scene with
    depth structure: random weights (seed 0) and the known-answer analytic planes (gain 60).

    With formula weights the encoded face gives an almost uniform fog (depth std ~0), so the
    per-preset PSNR there mostly measures the super-resolution mode; this scene also measures
    the sampling (rays, samples per ray).
    """
    from streamfx.models import random_weights, threedpe
    from streamfx.models.renderer import look_at_camera
    from streamfx.models.renderer.scenes import analytic_planes
    from streamfx.runtime.accelerated import load_accelerated

    model = threedpe.from_state(random_weights.random_state_dicts(0))
    planes = analytic_planes(60.0)
    camera = look_at_camera(math.pi / 2 + 0.25, math.pi / 2 - 0.05)
    full = model.render(planes, camera, "full")
    fast = load_accelerated(model, "torch-bf16")
    out = {}
    for name in PRESETS:
        got = fast.render(planes, camera, name)
        out[name] = {"image_db": psnr(got["image"], full["image"]), "raw_db": psnr(got["image_raw"], full["image_raw"]),
                     "depth_max_err": round(float((F.interpolate(full["image_depth"], size=got["image_depth"].shape[-2:],
                                                                 mode="area") - got["image_depth"]).abs().max()), 4)}
    return out


def _preset(name: str):
    from streamfx.models.renderer.presets import get_preset

    return get_preset(name)


def _table(results: dict) -> None:
    print(f"\n{'path':<15}{'preset':<10}{'render ms':>10}{'enc+rend ms':>12}{'x ref':>7}{'PSNR dB':>9}{'raw dB':>8}")
    for backend, presets in results["paths"].items():
        for name, row in presets.items():
            psnr_value = row.get("psnr_vs_full_fp32")
            print(f"{backend:<15}{name:<10}{row['render_ms']:>10.1f}{row['encode_render_ms']:>12.1f}"
                  f"{row.get('speedup_vs_reference', 1.0):>7.2f}{psnr_value if psnr_value is not None else '-':>9}"
                  f"{row.get('raw_psnr_vs_full_fp32') or '-':>8}")


if __name__ == "__main__":
    raise SystemExit(main())
