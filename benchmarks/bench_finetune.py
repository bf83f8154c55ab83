"""``python -m benchmarks.bench_finetune``: what style fine-tuning costs and how fast it learns.

Runs on random weights of the official shapes (no download), on the teacher task of
:mod:`streamfx.training.teacher` (pairs whose answer is known), on the CPU or a GPU:

* **speed**: seconds per training step and peak memory for ``--render fast`` and ``full``,
  each against the baseline of one inference frame (encode + render at the same preset)
  measured in the same run, and the FLOPs of a step (``torch.utils.flop_counter``);
* **learning**: held-out image L1 against steps for each adapter rank (the rank is chosen
  by this curve and the adapter's size);
* **fast vs full**: the held-out error at ``full`` of adapters trained with the losses
  rendered at ``fast`` and at ``full`` (what the cheaper CPU setting costs in quality);
* **projection**: minutes for 10 pairs to the plateau of the learning curve, on this
  device, and estimated from the step's FLOPs for GPUs not at hand.

```
python -m benchmarks.bench_finetune [--device cpu|cuda] [--quick] [--json benchmarks/results/finetune.json]
```
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.harness import result, write

RESULTS = Path(__file__).resolve().parent / "results"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "testdata"
#: half-precision matmul rates (TFLOP/s) of GPUs for the projection (see the README's GPU table)
GPU_TFLOPS = {"RTX 4090": 165.0, "H100/H200": 800.0}


def _crops(count: int) -> tuple[list[np.ndarray], np.ndarray]:
    from PIL import Image

    faces = [np.asarray(Image.open(SHARED / f"faces/ffhq_{1 + i % 8}.png").convert("RGB")) for i in range(count)]
    return faces, np.asarray(Image.open(SHARED / "styles/style_1.png").convert("RGB"))


def _peak_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        try:  # Linux: reset the process's peak resident set size (VmHWM)
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            pass


def _peak_mib(device: torch.device) -> float | None:
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def _trainer(model, pairs, reference, device, precision, **config):
    from streamfx.training.loop import TrainConfig, Trainer
    from streamfx.training.teacher import IMAGE_ONLY

    config.setdefault("weights", IMAGE_ONLY)
    return Trainer(model, pairs, reference, TrainConfig(device=str(device), precision=precision, **config))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def speed_row(model, pairs, reference, device, precision, render: str, steps: int) -> dict:
    """Seconds per step (after one warm-up step) and peak memory, against one inference frame."""
    from torch.utils.flop_counter import FlopCounterMode

    from streamfx.models import threedpe
    from streamfx.training.losses import LossWeights

    gc.collect()
    _peak_reset(device)
    trainer = _trainer(model, pairs, reference, device, precision, steps=steps + 1, render=render,
                       weights=LossWeights())  # every term of the recipe (no LPIPS/ID weights here)
    trainer.train_step()
    times = []
    for _ in range(steps):
        _sync(device)
        began = time.perf_counter()
        trainer.train_step()
        _sync(device)
        times.append(time.perf_counter() - began)
    peak = _peak_mib(device)
    with FlopCounterMode(display=False) as counter:
        trainer.train_step()
    x = threedpe.prepare_input(pairs[0].before).to(device)
    camera = trainer.train_pairs[0].camera

    def frame():
        with torch.no_grad():
            planes = model.encoder(x, trainer.tokens)
            model.renderer(planes, camera, render)

    frame()
    frames = []
    for _ in range(max(2, steps // 2)):
        _sync(device)
        began = time.perf_counter()
        frame()
        _sync(device)
        frames.append(time.perf_counter() - began)
    step_s, frame_s = float(np.median(times)), float(np.median(frames))
    return {"render": render, "precision": precision, "step_s": round(step_s, 3), "steps_timed": steps,
            "inference_frame_s": round(frame_s, 3), "step_vs_frame": round(step_s / frame_s, 2),
            "step_tflop": round(counter.get_total_flops() / 1e12, 3), "peak_memory_mib": peak}


def learning_curve(model, pairs, reference, device, precision, rank: int, steps: int, every: int,
                   render: str) -> dict:
    trainer = _trainer(model, pairs, reference, device, precision, steps=steps, rank=rank, lr=3e-3, render=render)
    curve = [(0, trainer.heldout_error())]
    began = time.perf_counter()
    while trainer.step < steps:
        trainer.train_step()
        if trainer.step % every == 0 or trainer.step == steps:
            curve.append((trainer.step, trainer.heldout_error()))
    return {"rank": rank, "parameters": trainer.adapter.export("x").num_parameters(),
            "adapter_mib": round(trainer.adapter.export("x").num_parameters() * 4 / 2**20, 2),
            "train_pairs": len(trainer.train_pairs), "seconds": round(time.perf_counter() - began, 1),
            "heldout_l1": [{"step": s, "l1": e} for s, e in curve],
            "final_vs_start": round(curve[-1][1] / curve[0][1], 3)}


def late_error(curve: dict) -> float:
    """Mean held-out error over the second half of a curve (one seed's curve is noisy)."""
    points = [p["l1"] for p in curve["heldout_l1"][1:]]
    return float(np.mean(points[len(points) // 2:]))


def plateau_step(curve: list[dict], within: float = 1.1) -> int:
    """The first step whose held-out error is within ``within`` x the last one."""
    last = curve[-1]["l1"]
    return next(point["step"] for point in curve if point["l1"] <= within * last)


def fast_vs_full(model, crops, reference, device, precision, steps: int, time_ratio: float) -> dict:
    """Adapters trained with losses at ``fast`` and at ``full`` (pairs made by the teacher at
    ``full``), all judged at ``full`` on the held-out pair: ``fast`` for as many steps as
    ``full`` and for as long (``time_ratio`` = full's seconds per step over fast's)."""
    from streamfx.training.teacher import make_teacher, teacher_pairs

    pairs = teacher_pairs(model, crops, reference, "full", make_teacher(model))
    out = {}
    for label, render, n in (("fast_equal_steps", "fast", steps), ("fast_equal_time", "fast", round(steps * time_ratio)),
                             ("full", "full", steps)):
        trainer = _trainer(model, pairs, reference, device, precision, steps=n, lr=3e-3, render=render)
        before = _heldout_at(trainer, "full")
        for _ in range(n):
            trainer.train_step()
        out[label] = {"steps": n, "heldout_l1_at_full_before": before,
                      "heldout_l1_at_full_after": _heldout_at(trainer, "full")}
    full = out["full"]["heldout_l1_at_full_after"]
    out["fast_vs_full_error_equal_steps"] = round(out["fast_equal_steps"]["heldout_l1_at_full_after"] / full, 3)
    out["fast_vs_full_error_equal_time"] = round(out["fast_equal_time"]["heldout_l1_at_full_after"] / full, 3)
    return out


@torch.no_grad()
def _heldout_at(trainer, preset: str) -> float:
    """Image L1 of the held-out pair rendered at ``preset`` against its ``after`` at that size."""
    import torch.nn.functional as F

    from streamfx.models import threedpe

    pair = trainer.heldout_pair
    image = trainer.model.renderer(trainer._planes(pair), pair.camera, preset)["image"]
    after = next(p for p in trainer.source_pairs if p.name == pair.name).after
    target = threedpe.prepare_input(after).to(image)
    if target.shape[-1] != image.shape[-1]:
        target = F.interpolate(target, size=image.shape[-2:], mode="area")
    return round(float(F.l1_loss(image, target)), 5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="fewer steps and ranks (a smoke run)")
    parser.add_argument("--steps", type=int, default=None, help="steps of the learning curves (default 24; quick 6)")
    parser.add_argument("--ranks", default=None, help="ranks to compare (default 2,4,8,16; quick 8)")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    parser.add_argument("--json", type=Path, default=RESULTS / "finetune.json")
    args = parser.parse_args(argv)

    from streamfx.models import threedpe
    from streamfx.models.random_weights import random_state_dicts
    from streamfx.runtime.devices import DeviceUnavailable, resolve_device
    from streamfx.training.job import auto_precision
    from streamfx.training.teacher import teacher_pairs

    try:
        device = resolve_device(args.device)
    except DeviceUnavailable as exc:
        print(f"bench_finetune: {exc}", file=sys.stderr)
        return 2
    if not SHARED.is_dir():
        print(f"bench_finetune: test data not found at {SHARED}", file=sys.stderr)
        return 2
    precision = auto_precision(device) if args.precision == "auto" else args.precision
    steps = args.steps or (6 if args.quick else 24)
    ranks = [int(r) for r in (args.ranks or ("8" if args.quick else "2,4,8,16")).split(",")]
    model = threedpe.from_state(random_state_dicts(0)).to(device)
    crops, reference = _crops(5)
    say = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    say(f"teacher pairs ({len(crops)}, one held out) on {device}, {precision}")
    pairs = teacher_pairs(model, crops, reference, "fastest")
    rows = []
    for render in ("fast",) if args.quick else ("fast", "full"):
        say(f"speed at render {render}")
        rows.append(speed_row(model, pairs, reference, device, precision, render, 2 if args.quick else 4))
    curves = []
    for rank in ranks:
        say(f"learning curve, rank {rank}")
        curves.append(learning_curve(model, pairs, reference, device, precision, rank, steps, max(1, steps // 6),
                                     "fastest"))
    for c in curves:
        c["late_heldout_l1"] = round(late_error(c), 5)
    best = min(curves, key=lambda c: (c["late_heldout_l1"], c["parameters"]))
    quality = None
    if not args.quick:
        say("fast vs full")
        ratio = rows[1]["step_s"] / rows[0]["step_s"]
        quality = fast_vs_full(model, crops, reference, device, precision, max(4, steps // 3), ratio)
    epochs = plateau_step(best["heldout_l1"]) / best["train_pairs"]
    projection = {"epochs_to_plateau": round(epochs, 2), "pairs": 10,
                  "minutes_here": {row["render"]: round(epochs * 10 * row["step_s"] / 60, 1) for row in rows}}
    full_row = next((r for r in rows if r["render"] == "full"), rows[0])
    from streamfx.runtime.estimate import GPU_EFFICIENCY

    step_ms = {gpu: full_row["step_tflop"] / (tflops * GPU_EFFICIENCY) * 1e3 for gpu, tflops in GPU_TFLOPS.items()}
    projection["step_ms_estimated_gpu"] = {gpu: round(ms, 1) for gpu, ms in step_ms.items()}
    projection["minutes_estimated_gpu"] = {gpu: round(epochs * 10 * ms / 6e4, 3) for gpu, ms in step_ms.items()}
    projection["paper_budget_steps_estimated_gpu"] = {gpu: int(5 * 6e4 / ms) for gpu, ms in step_ms.items()}
    projection["paper_budget_hours_here"] = {
        gpu: round(n * full_row["step_s"] / 3600, 1) for gpu, n in projection["paper_budget_steps_estimated_gpu"].items()}
    projection["note"] = (
        "epochs_to_plateau is of the teacher task (a known, nearly input-independent change): a lower bound for "
        "a real style. GPU step times are the step's FLOPs at render "
        f"{full_row['render']} over {GPU_EFFICIENCY:.0%} of the GPU's half-precision matmul rate: estimates, not "
        "measurements. paper_budget_*: the steps the paper's 5 minutes would be on that GPU, and how long those "
        "steps take on this device.")
    data = result("bench_finetune", device, rows, precision=precision, curves=curves, chosen_rank=best["rank"],
                  fast_vs_full=quality, projection=projection, quick=args.quick)
    print(f"wrote {write(args.json, data)}")
    for row in rows:
        print(f"render {row['render']:<5} {row['step_s']:6.2f} s/step ({row['step_vs_frame']}x an inference frame), "
              f"{row['step_tflop']} TFLOP/step, peak {row['peak_memory_mib']} MiB")
    for c in curves:
        print(f"rank {c['rank']:<3} held-out L1 {c['heldout_l1'][0]['l1']:.4f} -> {c['heldout_l1'][-1]['l1']:.4f} "
              f"in {c['heldout_l1'][-1]['step']} steps, {c['late_heldout_l1']:.4f} over the second half "
              f"({c['adapter_mib']} MiB)")
    print(f"chosen rank {best['rank']}; 10 pairs to the teacher plateau: {projection['minutes_here']} min here; "
          f"estimated GPU step {projection['step_ms_estimated_gpu']} ms; the paper's 5 GPU minutes would take "
          f"{projection['paper_budget_hours_here']} h here")
    if quality:
        print(f"losses rendered at fast: held-out error at full x{quality['fast_vs_full_error_equal_steps']} of "
              f"training at full for as many steps, x{quality['fast_vs_full_error_equal_time']} for as long")
    return 0


if __name__ == "__main__":
    sys.exit(main())
