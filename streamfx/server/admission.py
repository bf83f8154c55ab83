"""Admission: a caller is admitted only while the server can carry it without slowing the others.

The cost of a caller is measured, not configured: the process's CPU time per second of
wall time (decoding, tracking, inference, encoding: everything a caller costs), sampled
every few seconds and divided among the callers present. A new caller is admitted while
``(callers + 1) * cost per caller`` stays within ``headroom`` of the cores this process may
use. Before any measurement (no caller yet, or the first seconds of one) the server admits.
When it refuses, ``/offer`` answers 503 with a one-line reason: refusal, not a general
step-down, keeps every admitted caller at the frame rate it had.

``max_callers`` (``--max-callers``) is a hard cap on top.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


@dataclass
class Sample:
    wall: float
    cpu: float


class Admission:
    """Counts CPU per caller and answers whether one more fits (module docstring)."""

    def __init__(self, max_callers: int | None = None, cores: int | None = None, headroom: float = 0.85,
                 min_window_s: float = 3.0) -> None:
        self.max_callers = max_callers
        self.cores = cores or usable_cores()
        self.headroom = headroom
        self.min_window_s = min_window_s
        self._start: Sample | None = None
        self._callers_since_start: int | None = None
        self.cpu_per_caller: float | None = None   # cores one caller uses, last measurement

    def observe(self, callers: int) -> None:
        """Called every second or so with the current caller count."""
        now = Sample(time.monotonic(), time.process_time())
        if self._start is None or callers != self._callers_since_start:
            self._start, self._callers_since_start = now, callers  # a new steady state starts
            return
        elapsed = now.wall - self._start.wall
        if callers > 0 and elapsed >= self.min_window_s:
            self.cpu_per_caller = (now.cpu - self._start.cpu) / elapsed / callers
            self._start = now

    def capacity(self) -> int | None:
        """Callers the measured cost allows (None: not measured yet, no limit from it)."""
        measured = None
        if self.cpu_per_caller and self.cpu_per_caller > 0:
            measured = max(1, int(self.cores * self.headroom / self.cpu_per_caller))
        if self.max_callers is None:
            return measured
        return self.max_callers if measured is None else min(measured, self.max_callers)

    def refusal(self, callers: int) -> str | None:
        """None when one more caller fits, else the one-line reason."""
        if self.max_callers is not None and callers >= self.max_callers:
            return f"server is full ({self.max_callers} callers, --max-callers)"
        limit = self.capacity()
        if limit is not None and callers >= limit:
            return (f"server is at capacity: {callers} caller(s) use {callers * self.cpu_per_caller:.1f} of "
                    f"{self.cores} cores; another would slow everyone down")
        return None
