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
    """What a user sees: the headline is edited frames (rendered by the engine, whatever the
    age of their tri-planes) per second and their latency; frames passed through unedited
    (no face yet, or the first keyframe still encoding) and tri-plane age are beside them."""

    engine: str
    size: str
    seconds: float
    frames_in: int
    frames_out: int
    frames_edited: int
    stages_ms: dict[str, dict[str, float]]
    frame_ms: dict[str, float]          # every processed frame, pass-through included
    edited_ms: dict[str, float]         # edited frames only
    planes_age: dict[str, float]        # frames between an edited frame and its keyframe (3dpe)
    engine_stats: dict
    offline: bool = False

    def as_dict(self) -> dict:
        return {"engine": self.engine, "size": self.size, "offline": self.offline,
                "seconds": round(self.seconds, 2),
                "edited_fps": round(self.frames_edited / self.seconds, 2), "edited_ms": self.edited_ms,
                "frames_in": self.frames_in, "frames_out": self.frames_out, "frames_edited": self.frames_edited,
                "frames_passed": self.frames_out - self.frames_edited,
                "dropped": self.frames_in - self.frames_out,
                "fps_in": round(self.frames_in / self.seconds, 2), "fps_out": round(self.frames_out / self.seconds, 2),
                "planes_age": self.planes_age,
                "stages_ms": self.stages_ms, "frame_ms": self.frame_ms, "engine_stats": self.engine_stats}

    def headline(self) -> str:
        d = self.as_dict()
        e, f = d["edited_ms"], d["frame_ms"]
        age = f"  planes age p50 {d['planes_age']['p50']:g}" if d["planes_age"] else ""
        return (f"{self.engine:8s} {self.size:>9s}  edited {d['edited_fps']} fps, "
                f"p50/p95 {e.get('p50', 0):.1f}/{e.get('p95', 0):.1f} ms  |  passed through {d['frames_passed']}, "
                f"dropped {d['dropped']}, all frames p50/p95 {f.get('p50', 0):.1f}/{f.get('p95', 0):.1f} ms{age}")


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


def _edited_count(pipeline: CallerPipeline, processed: int) -> int:
    """Frames the engine edited so far: its own count where it keeps one, else every frame."""
    return int(pipeline.session.stats().get("frames_edited", processed))


def run(pipeline: CallerPipeline, frames: list[np.ndarray], fps: float, seconds: float, size: tuple[int, int],
        warmup: int = 2, offline: bool = False) -> BenchResult:
    """Play ``frames`` for ``seconds`` at ``fps`` (latest-frame policy), or, ``offline``, process
    ``seconds * fps`` frames in order with none dropped."""
    placed = [place(f, size) for f in frames]
    for frame in placed[:warmup]:
        pipeline.process(frame)
    stage_ms: dict[str, list[float]] = {}
    frame_ms: list[float] = []
    edited_ms: list[float] = []
    ages: list[float] = []
    start = time.perf_counter()
    processed = 0
    edited_before = _edited_count(pipeline, 0)
    last_taken = -1
    total = int(seconds * fps)
    while True:
        now = time.perf_counter() - start
        newest = last_taken + 1 if offline else min(int(now * fps), total - 1)
        if offline and newest >= total:
            break
        if newest <= last_taken:
            if last_taken >= total - 1:
                break
            time.sleep((last_taken + 1) / fps - now)
            continue
        last_taken = newest
        timer = StageTimer(timestamp_s=newest / fps if offline else None)
        t0 = time.perf_counter()
        pipeline.process(placed[newest % len(placed)], timer)
        ms = (time.perf_counter() - t0) * 1e3
        frame_ms.append(ms)
        for name, value in timer.ms.items():
            stage_ms.setdefault(name, []).append(value)
        processed += 1
        stats = pipeline.session.stats()
        if int(stats.get("frames_edited", processed)) > edited_before:
            edited_before = int(stats.get("frames_edited", processed))
            edited_ms.append(ms)
            if stats.get("planes_age") is not None:
                ages.append(float(stats["planes_age"]))
    elapsed = time.perf_counter() - start if offline else max(time.perf_counter() - start, total / fps)
    return BenchResult(engine=pipeline.engine.name, size=f"{size[0]}x{size[1]}", seconds=elapsed,
                       frames_in=total, frames_out=processed, frames_edited=len(edited_ms),
                       stages_ms={k: pct(v) for k, v in stage_ms.items()}, frame_ms=pct(frame_ms),
                       edited_ms=pct(edited_ms), planes_age=pct(ages),
                       engine_stats=pipeline.session.stats(), offline=offline)


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
