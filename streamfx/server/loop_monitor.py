"""Event-loop lag: how late a periodic timer fires, as a health signal of the server.

Everything the server does for every caller (signaling, control messages, RTP, stats)
runs on one asyncio loop. A handler that blocks it delays all callers at once, which is
what this measures: a task sleeps ``interval_s`` again and again, and the time it wakes
past its deadline is the lag. The p99 over the last minute is reported in stats,
``/api/info`` and ``/metrics``; a lag over ``warn_ms`` is logged (at most once a second).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

from .. import log

logger = log.get(__name__)


class LoopMonitor:
    def __init__(self, interval_s: float = 0.05, window_s: float = 60.0, warn_ms: float = 50.0) -> None:
        self.interval_s, self.warn_ms = interval_s, warn_ms
        self._lags: deque[float] = deque(maxlen=max(1, int(window_s / interval_s)))
        self._task: asyncio.Task | None = None
        self._last_warning = 0.0
        self.worst_ms = 0.0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _run(self) -> None:
        while True:
            due = time.perf_counter() + self.interval_s
            await asyncio.sleep(self.interval_s)
            lag_ms = max(0.0, (time.perf_counter() - due) * 1e3)
            self._lags.append(lag_ms)
            self.worst_ms = max(self.worst_ms, lag_ms)
            if lag_ms > self.warn_ms and time.monotonic() - self._last_warning > 1.0:
                self._last_warning = time.monotonic()
                logger.warning("event loop blocked", extra={"lag_ms": round(lag_ms, 1)})

    def p99_ms(self) -> float:
        """Lag p99 over the window (0 before the first sample)."""
        if not self._lags:
            return 0.0
        ordered = sorted(self._lags)
        return round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 2)
