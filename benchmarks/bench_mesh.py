"""Per-frame cost of the weight-free ``mesh`` engine at 640x480, tracking included.

The head-turn test video is placed in 640x480 frames and run through an engine session
in several configurations, all measured in the same run:

* ``track_only``: the face tracker alone (the baseline every configuration pays);
* ``passthrough``: the session with no prompt in follow mode (tracking + engine overhead);
* ``frontal``: re-posing to frontal;
* ``reference``: a reference-image edit in follow mode (``--style``, by default a
  stylised one: colours and its global look);
* ``frontal+reference``: both at once ("all edits on", the budget case);
* ``frontal+photo_reference``: re-posing with a photo reference (``--photo-style``: colours only);
* ``frontal+<look>``: re-posing with each named look.

For each it reports p50/p95/p99 ms per frame (wall time of ``session.process``), the
median of each sub-stage, the ratio of the p50 to the tracking baseline's p50 and, for an
edit, what it adds to the same pose without one (``edit_ms``: p50 difference; ``edit_ratio``),
and writes JSON (default ``benchmarks/results/mesh.json``).

    python -m benchmarks.bench_mesh [--frames 240] [--json OUT]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import av
import cv2
import numpy as np

from benchmarks.common import RESULTS, TESTDATA, machine, percentiles, write_json

BUDGET_MS = 15.0


def frames_640x480(video: Path) -> list[np.ndarray]:
    out = []
    with av.open(str(video)) as container:
        for frame in container.decode(video=0):
            canvas = np.full((480, 640, 3), (70, 80, 90), np.uint8)
            canvas[40:440, 120:520] = cv2.resize(frame.to_ndarray(format="rgb24"), (400, 400),
                                                 interpolation=cv2.INTER_AREA)
            out.append(canvas)
    return out


def bench_tracking(frames: list[np.ndarray], n: int, warmup: int) -> dict:
    from streamfx.face import FaceTracker

    tracker = FaceTracker()
    times = []
    for i in range(n + warmup):
        start = time.perf_counter()
        tracker.update(frames[i % len(frames)], i / 25.0)
        if i >= warmup:
            times.append((time.perf_counter() - start) * 1e3)
    tracker.close()
    return {"frame_ms": percentiles(times)}


def bench_session(engine, frames: list[np.ndarray], controls, prompt, n: int, warmup: int) -> dict:
    from streamfx.pipeline.timing import StageTimer

    session = engine.open_session()
    if prompt is not None:
        session.set_prompt(prompt)
    times, stages = [], {}
    for i in range(n + warmup):
        timer = StageTimer(timestamp_s=i / 25.0)
        start = time.perf_counter()
        session.process(frames[i % len(frames)], controls, timer)
        if i >= warmup:
            times.append((time.perf_counter() - start) * 1e3)
            for name, ms in timer.ms.items():
                stages.setdefault(name, []).append(ms)
    stats = session.stats()
    session.close()
    return {"frame_ms": percentiles(times),
            "stages_ms_p50": {k: round(float(np.median(v)), 2) for k, v in stages.items()},
            "last_stats": stats}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=240, help="measured frames per configuration")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--video", type=Path, default=TESTDATA / "video" / "head_turn_1.mp4")
    parser.add_argument("--style", type=Path, default=TESTDATA / "styles" / "style_3.png")
    parser.add_argument("--photo-style", type=Path, default=TESTDATA / "styles" / "style_6.png")
    parser.add_argument("--json", type=Path, default=RESULTS / "mesh.json")
    args = parser.parse_args(argv)

    from streamfx.pipeline.controls import Controls, PoseMode
    from streamfx.pipeline.engines.mesh import LOOKS, MeshEngine, MeshEngineConfig
    from streamfx.pipeline.prompts import image_prompt, preset_prompt

    frames = frames_640x480(args.video)
    engine = MeshEngine(MeshEngineConfig())
    reference = image_prompt(args.style.read_bytes(), name=args.style.stem)
    frontal = Controls(pose=PoseMode("frontal"))
    configs = {
        "passthrough": (Controls(), None),
        "frontal": (frontal, None),
        "reference": (Controls(), reference),
        "frontal+reference": (frontal, reference),
        "frontal+photo_reference": (frontal, image_prompt(args.photo_style.read_bytes(), name=args.photo_style.stem)),
        **{f"frontal+{look}": (frontal, preset_prompt(look)) for look in LOOKS},
    }
    results = {"track_only": bench_tracking(frames, args.frames, args.warmup)}
    base = results["track_only"]["frame_ms"]["p50"]
    print(f"{'configuration':<20} {'p50':>7} {'p95':>7} {'p99':>7} {'x track':>8}  stages (p50 ms)")
    print(f"{'track_only':<20} {base:7.2f} {results['track_only']['frame_ms']['p95']:7.2f} "
          f"{results['track_only']['frame_ms']['p99']:7.2f} {1.0:8.2f}")
    for name, (controls, prompt) in configs.items():
        res = bench_session(engine, frames, controls, prompt, args.frames, args.warmup)
        res["ratio_to_track_p50"] = round(res["frame_ms"]["p50"] / base, 2) if base else None
        plain = results.get("frontal" if name.startswith("frontal+") else "passthrough")
        if prompt is not None and plain is not None:  # the edit's own cost, against the same pose without it
            res["edit_ms"] = round(res["frame_ms"]["p50"] - plain["frame_ms"]["p50"], 2)
            res["edit_ratio"] = round(res["frame_ms"]["p50"] / plain["frame_ms"]["p50"], 3)
        results[name] = res
        fm = res["frame_ms"]
        stages = " ".join(f"{k}={v}" for k, v in res["stages_ms_p50"].items())
        print(f"{name:<20} {fm['p50']:7.2f} {fm['p95']:7.2f} {fm['p99']:7.2f} {res['ratio_to_track_p50']:8.2f}  {stages}")
    engine.close()
    budget_case = results["frontal+reference"]["frame_ms"]
    data = {
        "benchmark": "mesh engine, 640x480 frames, tracking included",
        "machine": machine(),
        "video": args.video.name,
        "style": args.style.name,
        "photo_style": args.photo_style.name,
        "frames": args.frames,
        "budget_ms": BUDGET_MS,
        "all_edits_p50_ms": budget_case["p50"],
        "all_edits_p95_ms": budget_case["p95"],
        "within_budget_p50": bool(budget_case["p50"] is not None and budget_case["p50"] <= BUDGET_MS),
        "results": results,
    }
    path = write_json(args.json, data)
    print(f"all edits on: p50 {budget_case['p50']} ms, p95 {budget_case['p95']} ms (budget {BUDGET_MS} ms) -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
