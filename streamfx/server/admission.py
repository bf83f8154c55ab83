"""Admission: a caller is admitted only while the machine can carry it without slowing the others.

Two measurements, taken over a few seconds of steady state (the caller count unchanged):

* **CPU.** The server process's CPU time per second of wall time, divided among its callers
  (decoding, tracking, inference, encoding: everything a caller costs), and the CPU that
  other processes on the machine use meanwhile (``/proc/stat``; on systems without it, none).
  One more caller fits while ``(callers + 1) * cost per caller + others`` stays within
  ``headroom`` of the usable cores.
* **Frames.** If the callers present already get fewer than ``min_delivery`` of their
  frames back, the machine is past its capacity whatever the CPU says: nobody more is admitted.

Before any measurement (no caller yet, or the first seconds of one) the server admits.
When it refuses, ``/offer`` answers 503 with a one-line reason: refusal, not a general
step-down, keeps every admitted caller at the frame rate it had. ``max_callers``
(``--max-callers``) is a hard cap on top.
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


def machine_busy_seconds() -> float | None:
    """CPU seconds all processes have used since boot (``/proc/stat``), or None."""
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            fields = fh.readline().split()[1:]
    except OSError:
        return None
    values = [int(v) for v in fields]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


@dataclass
class Sample:
    wall: float
    cpu: float                  # this process
    machine: float | None       # every process
    frames_in: int
    frames_out: int


class Admission:
    """Measures what callers cost and answers whether one more fits (module docstring)."""

    def __init__(self, max_callers: int | None = None, cores: int | None = None, headroom: float = 0.85,
                 min_window_s: float = 3.0, min_delivery: float = 0.9) -> None:
        self.max_callers = max_callers
        self.cores = cores or usable_cores()
        self.headroom = headroom
        self.min_window_s = min_window_s
        self.min_delivery = min_delivery
        self._start: Sample | None = None
        self._callers_since_start: int | None = None
        self.cpu_per_caller: float | None = None   # cores one caller uses, last measurement
        self.other_cpu = 0.0                       # cores other processes used meanwhile
        self.delivery: float | None = None         # frames out / frames in, last measurement

    def observe(self, callers: int, frames_in: int = 0, frames_out: int = 0) -> None:
        """Called every second or so with the caller count and their summed frame counters."""
        now = Sample(time.monotonic(), time.process_time(), machine_busy_seconds(), frames_in, frames_out)
        if self._start is None or callers != self._callers_since_start:
            self._start, self._callers_since_start = now, callers  # a new steady state starts
            return
        start, elapsed = self._start, now.wall - self._start.wall
        if callers == 0 or elapsed < self.min_window_s:
            return
        own = (now.cpu - start.cpu) / elapsed
        self.cpu_per_caller = own / callers
        if now.machine is not None and start.machine is not None:
            self.other_cpu = max(0.0, (now.machine - start.machine) / elapsed - own)
        arrived = now.frames_in - start.frames_in
        self.delivery = (now.frames_out - start.frames_out) / arrived if arrived > 0 else None
        self._start = now

    def capacity(self) -> int | None:
        """Callers the measured cost allows (None: not measured yet, no limit from it)."""
        measured = None
        if self.cpu_per_caller and self.cpu_per_caller > 0:
            budget = self.cores * self.headroom - self.other_cpu
            measured = max(1, int(budget / self.cpu_per_caller))
        if self.max_callers is None:
            return measured
        return self.max_callers if measured is None else min(measured, self.max_callers)

    def refusal(self, callers: int) -> str | None:
        """None when one more caller fits, else the one-line reason."""
        if self.max_callers is not None and callers >= self.max_callers:
            return f"server is full ({self.max_callers} callers, --max-callers)"
        if callers and self.delivery is not None and self.delivery < self.min_delivery:
            return (f"server is at capacity: its {callers} caller(s) already get only {self.delivery:.0%} of their "
                    "frames back; another would slow everyone down")
        limit = self.capacity()
        if limit is not None and callers >= limit:
            used = callers * self.cpu_per_caller + self.other_cpu
            return (f"server is at capacity: {callers} caller(s) and other programs use {used:.1f} of "
                    f"{self.cores} cores; another would slow everyone down")
        return None
