"""Whole-pipeline benchmark on a video played in real time, with the latest-frame policy.

Frames "arrive" at the video's frame rate. Whenever the pipeline is free it takes the
newest arrived frame; older ones count as dropped, exactly as the server's track does.
Per-stage times come from the same :class:`StageTimer` the server uses.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from .processor import CallerPipeline
from .timing import StageTimer


@dataclass(frozen=True)
class BenchResult:
    engine: str
    size: str
    seconds: float
    frames_in: int
    frames_out: int
    stages_ms: dict[str, dict[str, float]]
    frame_ms: dict[str, float]
    engine_stats: dict

    def as_dict(self) -> dict:
        return {"engine": self.engine, "size": self.size, "seconds": round(self.seconds, 2),
                "frames_in": self.frames_in, "frames_out": self.frames_out,
                "dropped": self.frames_in - self.frames_out,
                "fps_in": round(self.frames_in / self.seconds, 2), "fps_out": round(self.frames_out / self.seconds, 2),
                "stages_ms": self.stages_ms, "frame_ms": self.frame_ms, "engine_stats": self.engine_stats}


def place(frame: np.ndarray, size: tuple[int, int], fill: int = 40) -> np.ndarray:
    """Put a square video frame at 80% of the canvas height, centred: a webcam-like framing."""
    import cv2

    w, h = size
    side = int(h * 0.8)
    canvas = np.full((h, w, 3), fill, np.uint8)
    small = cv2.resize(frame, (side, side), interpolation=cv2.INTER_AREA)
    y, x = (h - side) // 2, (w - side) // 2
    canvas[y:y + side, x:x + side] = small
    return canvas


def pct(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        return {}
    return {k: round(float(np.percentile(arr, p)), 2) for k, p in (("p50", 50), ("p95", 95), ("p99", 99))}


def run(pipeline: CallerPipeline, frames: list[np.ndarray], fps: float, seconds: float, size: tuple[int, int],
        warmup: int = 2) -> BenchResult:
    placed = [place(f, size) for f in frames]
    for frame in placed[:warmup]:
        pipeline.process(frame)
    stage_ms: dict[str, list[float]] = {}
    frame_ms: list[float] = []
    start = time.perf_counter()
    processed = 0
    last_taken = -1
    total = int(seconds * fps)
    while True:
        now = time.perf_counter() - start
        newest = min(int(now * fps), total - 1)
        if newest <= last_taken:
            if last_taken >= total - 1:
                break
            time.sleep((last_taken + 1) / fps - now)
            continue
        last_taken = newest
        timer = StageTimer()
        t0 = time.perf_counter()
        pipeline.process(placed[newest % len(placed)], timer)
        frame_ms.append((time.perf_counter() - t0) * 1e3)
        for name, ms in timer.ms.items():
            stage_ms.setdefault(name, []).append(ms)
        processed += 1
    elapsed = max(time.perf_counter() - start, total / fps)
    return BenchResult(engine=pipeline.engine.name, size=f"{size[0]}x{size[1]}", seconds=elapsed,
                       frames_in=total, frames_out=processed,
                       stages_ms={k: pct(v) for k, v in stage_ms.items()}, frame_ms=pct(frame_ms),
                       engine_stats=pipeline.session.stats())


def plot(results: list[dict], path, budget_ms: float = 40.0) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    labels = [f"{r['engine']}\n{r['size']}" for r in results]
    stages = sorted({s for r in results for s in r["stages_ms"] if s not in ("engine",)})
    bottom = np.zeros(len(results))
    for stage in stages:
        vals = np.array([r["stages_ms"].get(stage, {}).get("p50", 0.0) for r in results])
        ax.bar(labels, vals, bottom=bottom, label=stage)
        bottom += vals
    ax.plot(labels, [r["frame_ms"].get("p95", 0) for r in results], "kD", label="frame p95")
    ax.axhline(budget_ms, color="red", ls="--", label=f"{budget_ms:g} ms budget")
    ax.set_ylabel("ms per frame (p50 per stage)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
