"""``--max-fps``: a frame loop that leaves the CPU idle between frames above a rate."""

from __future__ import annotations

import time


class FramePacer:
    """Spaces frame starts at least ``1 / max_fps`` apart (None: no limit).

    ``delay()`` says how long to wait before the next frame may start (for an async loop);
    ``wait()`` sleeps that long. Call ``started()`` when a frame starts.
    """

    def __init__(self, max_fps: float | None) -> None:
        if max_fps is not None and max_fps <= 0:
            raise ValueError("max_fps must be positive")
        self.interval = 0.0 if max_fps is None else 1.0 / max_fps
        self._last: float | None = None

    def delay(self) -> float:
        if self._last is None or not self.interval:
            return 0.0
        return max(0.0, self._last + self.interval - time.monotonic())

    def wait(self) -> None:
        pause = self.delay()
        if pause > 0:
            time.sleep(pause)

    def started(self) -> None:
        self._last = time.monotonic()
