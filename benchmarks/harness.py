"""The one timing harness and result schema of the 3DPE benchmarks.

``bench_3dpe`` (CPU paths) and ``gpu_check`` (GPU backends) both time 3DPE stages with
:func:`time_ms` and report them with :func:`stage_times` and :func:`result`, so their JSON
files read the same way: ``{"benchmark", "schema", "machine", "device", "rows": [...]}``
with one row per path or backend, each stage as p50/p95/p99 milliseconds.

On a CUDA device a call is timed with CUDA events on the current stream (what the GPU
spent, not Python's launch time); elsewhere with ``time.perf_counter``. Imports only torch
and numpy, so it runs on a bare CUDA machine.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

SCHEMA = 1


def time_ms(fn: Callable[[], Any], reps: int, device: torch.device, warmup: int = 1) -> list[float]:
    """Milliseconds of ``reps`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(reps):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            samples.append(start.elapsed_time(end))
        else:
            began = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - began) * 1e3)
    return samples


def percentiles(samples: list[float]) -> dict[str, float]:
    """p50/p95/p99 in ms (and the count) of a list of samples."""
    arr = np.asarray(samples, dtype=np.float64)
    if arr.size == 0:
        return {"n": 0}
    return {"p50": round(float(np.percentile(arr, 50)), 3), "p95": round(float(np.percentile(arr, 95)), 3),
            "p99": round(float(np.percentile(arr, 99)), 3), "n": int(arr.size)}


def stage_times(path: Any, x: torch.Tensor, ref224: torch.Tensor, camera: torch.Tensor, presets: list[str],
                reps: int, device: torch.device, warmup: int = 1,
                planes: torch.Tensor | None = None) -> dict[str, dict]:
    """Reference tokens, encode and render per preset of one execution path, as percentiles
    (the first encode, which gives the planes to render, doubles as the encoder's warm-up).
    Given ``planes``, only the renders are timed (for a path too slow to encode here)."""
    out: dict[str, dict] = {}
    if planes is None:
        tokens = path.reference_tokens(ref224)
        out["reference_tokens"] = percentiles(time_ms(lambda: path.reference_tokens(ref224), reps, device, warmup))
        planes = path.encode(x, tokens)
        out["encode"] = percentiles(time_ms(lambda: path.encode(x, tokens), reps, device, max(warmup - 1, 0)))
    for preset in presets:
        out[f"render_{preset}"] = percentiles(
            time_ms(lambda p=preset: path.render(planes, camera, p), reps, device, warmup))
    return out


def machine(device: torch.device) -> dict:
    info = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "python": platform.python_version(), "torch": torch.__version__,
            "when": time.strftime("%Y-%m-%dT%H:%M:%S")}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info |= {"gpu": props.name, "gpu_memory_gib": round(props.total_memory / 2**30, 1),
                 "compute_capability": f"{props.major}.{props.minor}", "cuda": torch.version.cuda}
    return info


def result(benchmark: str, device: torch.device, rows: list[dict], **extra: Any) -> dict:
    """The shared JSON document: one row per path or backend."""
    return {"benchmark": benchmark, "schema": SCHEMA, "machine": machine(device), "device": str(device),
            "rows": rows, **extra}


def write(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))
    return path
