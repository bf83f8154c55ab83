"""Shared helpers for benchmarks: paths, percentiles, JSON and plot output."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TESTDATA = ROOT.parent / "shared" / "testdata"
RESULTS = ROOT / "benchmarks" / "results"


def percentiles(values, ps=(50, 95, 99)) -> dict:
    arr = np.asarray(list(values), dtype=np.float64)
    if arr.size == 0:
        return {f"p{p}": None for p in ps} | {"n": 0}
    return {f"p{p}": round(float(np.percentile(arr, p)), 2) for p in ps} | {"n": int(arr.size)}


def machine() -> dict:
    import os

    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "python": platform.python_version(), "when": time.strftime("%Y-%m-%dT%H:%M:%S")}


def write_json(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))
    return path
