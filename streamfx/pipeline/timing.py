"""Per-stage timing of the frame pipeline and the rolling stats sent to callers."""

from __future__ import annotations

import time
from collections import defaultdict, deque
from contextlib import contextmanager
from typing import Iterator

import numpy as np


class StageTimer:
    """Collects the milliseconds each named stage took for one frame.

    Engines time their own sub-stages (``track``, ``align``, ``encode``, ``render`` ...)
    with ``with timer.stage("render"):``; a stage entered twice adds up.

    ``timestamp_s`` is the frame's time in seconds, for temporal filters: a file's
    presentation time when processing a file (so smoothing does not depend on how fast
    the machine is), else the monotonic clock when the frame arrived.
    """

    def __init__(self, timestamp_s: float | None = None) -> None:
        self.ms: dict[str, float] = {}
        self.timestamp_s = time.monotonic() if timestamp_s is None else float(timestamp_s)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, (time.perf_counter() - start) * 1e3)

    def add(self, name: str, ms: float) -> None:
        self.ms[name] = self.ms.get(name, 0.0) + ms


class RollingStats:
    """A window of recent per-frame timings and counters, summarised about once a second."""

    def __init__(self, window: int = 120) -> None:
        self.stage_ms: dict[str, deque[float]] = defaultdict(lambda: deque(maxlen=window))
        self.latency_ms: deque[float] = deque(maxlen=window)
        self.frames_in = 0
        self.frames_out = 0
        self.dropped = 0
        self.errors = 0
        self._rate_marks: deque[tuple[float, int, int]] = deque(maxlen=window)
        self.extra: dict[str, object] = {}

    def record(self, timer: StageTimer, latency_ms: float) -> None:
        for name, ms in timer.ms.items():
            self.stage_ms[name].append(ms)
        self.latency_ms.append(latency_ms)

    def summary(self) -> dict:
        now = time.monotonic()
        self._rate_marks.append((now, self.frames_in, self.frames_out))
        # Rates over the last ~2 s of marks.
        t0, in0, out0 = next((m for m in self._rate_marks if now - m[0] <= 2.5), self._rate_marks[0])
        span = max(now - t0, 1e-6)
        lat = np.asarray(self.latency_ms, dtype=np.float64)
        return {
            "stages_ms": {k: round(float(np.median(v)), 2) for k, v in self.stage_ms.items() if v},
            "fps_in": round((self.frames_in - in0) / span, 1) if span > 0.2 else 0.0,
            "fps_out": round((self.frames_out - out0) / span, 1) if span > 0.2 else 0.0,
            "frames_in": self.frames_in,
            "frames_out": self.frames_out,
            "dropped": self.dropped,
            "errors": self.errors,
            "latency_ms": {
                "p50": round(float(np.percentile(lat, 50)), 2) if lat.size else None,
                "p95": round(float(np.percentile(lat, 95)), 2) if lat.size else None,
                "p99": round(float(np.percentile(lat, 99)), 2) if lat.size else None,
            },
            **self.extra,
        }
