"""How many live callers one device holds, with and without the frame batcher.

Simulated callers: one thread per caller, each with its own stream, sends a frame every
1/fps seconds (encode + render at one preset + the image back to the host, what the GPU
does per frame in a call). A frame that finishes after the next tick skips the ticks it
missed, as the live track drops frames. A caller *holds* when it gets at least 95 % of its
frame rate with a p95 latency within the frame budget. Callers are added until they no
longer hold; the result is the largest count that held, per mode.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import torch


def _caller(model: Any, ops: Any, x: torch.Tensor, tokens: torch.Tensor, camera: torch.Tensor, preset: str,
            fps: float, seconds: float, budget_s: float, out: list[float], start: float) -> None:
    period = 1.0 / fps
    with ops.use(ops.new_stream()):
        tick = start
        while tick < start + seconds:
            delay = tick - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            began = time.perf_counter()
            kwargs = {"deadline": time.monotonic() + budget_s} if hasattr(model, "batcher") else {}
            planes = model.encode(x, tokens, **kwargs)
            image = model.render(planes, camera, preset, **kwargs)["image"]
            image.cpu()
            done = time.perf_counter()
            out.append(done - began)
            tick += period * max(1, int((done - tick) // period) + 1)  # skip the ticks this frame missed


def run_callers(model: Any, ops: Any, n: int, x, tokens, camera, preset: str, fps: float, seconds: float,
                budget_ms: float) -> dict:
    """``n`` callers for ``seconds``: per-caller frames/s and the latency percentiles of all frames."""
    results: list[list[float]] = [[] for _ in range(n)]
    start = time.perf_counter() + 0.05
    threads = [threading.Thread(target=_caller, args=(model, ops, x, tokens, camera, preset, fps, seconds,
                                                      budget_ms / 1e3, results[i], start)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rates = [len(r) / seconds for r in results]
    latencies = np.array([v for r in results for v in r] or [float("inf")]) * 1e3
    p95 = float(np.percentile(latencies, 95))
    return {"callers": n, "fps_min": round(min(rates), 2), "fps_mean": round(float(np.mean(rates)), 2),
            "latency_p50_ms": round(float(np.percentile(latencies, 50)), 2), "latency_p95_ms": round(p95, 2),
            "held": min(rates) >= 0.95 * fps and p95 <= budget_ms}


def callers_per_device(path: Any, device: torch.device, x: torch.Tensor, tokens: torch.Tensor, camera: torch.Tensor,
                       preset: str, *, fps: float = 25.0, seconds: float = 4.0, budget_ms: float = 40.0,
                       counts: tuple[int, ...] = (1, 2, 4, 6, 8, 10, 12, 16), window_ms: float = 4.0,
                       max_batch: int = 8) -> dict:
    """The largest caller count that held, unbatched (callers share the model, one frame per
    call) and batched (:class:`~streamfx.runtime.batching.FrameBatcher`), with every step."""
    from streamfx.runtime.batching import BatchConfig, BatchedModel, FrameBatcher
    from streamfx.runtime.streams import stream_ops_for

    ops = stream_ops_for(device)
    out: dict[str, Any] = {"fps": fps, "budget_ms": budget_ms, "preset": preset, "seconds": seconds,
                           "window_ms": window_ms, "max_batch": max_batch}
    for mode in ("unbatched", "batched"):
        model = path
        if mode == "batched":
            model = BatchedModel(path, FrameBatcher(path, BatchConfig(window_ms, max_batch), ops))
        steps, held = [], 0
        for n in counts:
            step = run_callers(model, ops, n, x, tokens, camera, preset, fps, seconds, budget_ms)
            steps.append(step)
            if not step["held"]:
                break
            held = n
        if mode == "batched":
            steps[-1]["batching"] = model.batcher.stats()
            model.close()
        out[mode] = {"callers_held": held, "steps": steps}
    return out
