"""Frames from a local camera or a video file, read with OpenCV, as RGB uint8 (H, W, 3).

A file behaves like a camera: it loops forever and is paced at its own frame rate.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

from .. import log
from .closing import ClosesOnExit
from .errors import CameraError

logger = log.get(__name__)


def parse_source(text: str | int) -> int | Path:
    """``"0"`` -> camera index 0; anything else is a file path that must exist."""
    if isinstance(text, int) or str(text).isdigit():
        return int(text)
    path = Path(text).expanduser()
    if not path.is_file():
        raise CameraError(f"no such camera or video file: {text}")
    return path


class CameraSource(ClosesOnExit):
    """Read frames from a camera index or a video file.

    ``width``/``height``/``fps`` are requests to a camera (it may choose otherwise; see
    :attr:`size` and :attr:`fps`). A file loops when ``loop`` and is paced at its frame
    rate when ``pace``; ``clock``/``sleep`` are injectable for tests.
    """

    def __init__(self, source: str | int | Path, *, width: int | None = None, height: int | None = None,
                 fps: float | None = None, loop: bool = True, pace: bool = True,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        self.source = parse_source(source) if not isinstance(source, Path) else source
        self.is_file = isinstance(self.source, Path)
        self.loop, self.pace = loop, pace and self.is_file
        self._clock, self._sleep = clock, sleep
        self.capture = self._open(width, height, fps)
        self.fps = float(self.capture.get(cv2.CAP_PROP_FPS) or 0.0)
        if not 0 < self.fps <= 240:
            self.fps = float(fps or 30.0)
        self.size = (int(self.capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(self.capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        self.frames = 0      # frames returned so far
        self.loops = 0       # times a file wrapped around
        self._t0: float | None = None
        logger.info("source opened", extra={"source": str(self.source), "size": self.size, "fps": self.fps})

    def _open(self, width: int | None, height: int | None, fps: float | None) -> cv2.VideoCapture:
        if not self.is_file and sys.platform.startswith("linux") and not Path(f"/dev/video{self.source}").exists():
            raise CameraError(f"no camera at index {self.source} (/dev/video{self.source} does not exist)")
        level = cv2.getLogLevel()
        cv2.setLogLevel(0)  # OpenCV prints its own warnings on failure; we report one line instead
        try:
            capture = cv2.VideoCapture(str(self.source) if self.is_file else self.source)
        finally:
            cv2.setLogLevel(level)
        if not capture.isOpened():
            what = f"video file {self.source}" if self.is_file else f"camera {self.source}"
            raise CameraError(f"cannot open {what}")
        if not self.is_file:
            for prop, value in ((cv2.CAP_PROP_FRAME_WIDTH, width), (cv2.CAP_PROP_FRAME_HEIGHT, height),
                                (cv2.CAP_PROP_FPS, fps)):
                if value:
                    capture.set(prop, value)
        return capture

    def read(self) -> np.ndarray | None:
        """The next RGB frame (H, W, 3); None when a non-looping file ends.

        Raises :class:`CameraError` when a camera stops delivering frames."""
        ok, bgr = self.capture.read()
        if not ok and self.is_file and self.loop and self.frames:
            self.capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
            self.loops += 1
            ok, bgr = self.capture.read()
        if not ok:
            if self.is_file and not self.loop:
                return None
            raise CameraError(f"{'video file' if self.is_file else 'camera'} {self.source} stopped delivering frames")
        self._wait()
        self.frames += 1
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def _wait(self) -> None:
        """Hold a file's frame until its time; never burst to catch up after a stall."""
        if not self.pace:
            return
        now = self._clock()
        if self._t0 is None:
            self._t0 = now - self.frames / self.fps
        due = self._t0 + self.frames / self.fps
        if due > now:
            self._sleep(due - now)
        elif now - due > 1.0 / self.fps:
            self._t0 = now - self.frames / self.fps  # fell behind: restart the schedule

    def __iter__(self) -> Iterator[np.ndarray]:
        while (frame := self.read()) is not None:
            yield frame

    def close(self) -> None:
        self.capture.release()
