"""A camera that may be unplugged mid-call: while it is gone, a still "camera lost" frame;
when it is back, its frames again.

The call app on the other side of a virtual camera must keep receiving frames of the same
size, or it drops the camera. :class:`WatchedCamera` therefore turns a camera that stops
(:class:`~streamfx.io.errors.CameraError`) into a dimmed copy of its last frame with one
line of text, offered at the camera's rate, and tries to open the camera again every
``retry_s``. Each loss and each return is one log line. Files are not watched: a file that
fails is an error.
"""

from __future__ import annotations

import time
from typing import Callable, Protocol

import cv2
import numpy as np

from .. import log
from .errors import CameraError

logger = log.get(__name__)
LOST_TEXT = "camera lost: reconnecting..."


class Source(Protocol):
    size: tuple[int, int]
    fps: float

    def read(self) -> np.ndarray | None: ...
    def close(self) -> None: ...


def lost_frame(last: np.ndarray | None, size: tuple[int, int], text: str = LOST_TEXT) -> np.ndarray:
    """The still shown while the camera is gone: the last frame, dimmed, with ``text``."""
    width, height = size
    frame = np.zeros((height, width, 3), np.uint8) if last is None else (last // 3).astype(np.uint8)
    scale = max(0.5, width / 900)
    (w, h), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 2)
    cv2.putText(frame, text, ((width - w) // 2, (height + h) // 2), cv2.FONT_HERSHEY_SIMPLEX, scale,
                (255, 255, 255), 2, cv2.LINE_AA)
    return frame


class WatchedCamera:
    """Wraps ``open_source()`` (a camera); :meth:`read` gives ``(frame, live)``."""

    def __init__(self, open_source: Callable[[], Source], retry_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        self.open_source, self.retry_s = open_source, retry_s
        self.clock, self.sleep = clock, sleep
        self.source: Source | None = open_source()
        self.size, self.fps = self.source.size, self.source.fps
        self.is_file = False
        self.last: np.ndarray | None = None
        self.lost_at: float | None = None
        self.losses = 0
        self._next_try = 0.0
        self._still: np.ndarray | None = None

    @property
    def live(self) -> bool:
        return self.lost_at is None

    def read(self) -> tuple[np.ndarray, bool]:
        if self.source is not None:
            try:
                frame = self.source.read()
                if frame is None:
                    raise CameraError("the camera returned no frame")
                return self._fit(frame), self._back()
            except CameraError as exc:
                self._lose(str(exc))
        now = self.clock()
        if now >= self._next_try:
            self._next_try = now + self.retry_s
            try:
                self.source = self.open_source()
                return self.read()
            except CameraError:
                self.source = None
        self.sleep(1.0 / self.fps)
        return self._still, False

    def _fit(self, frame: np.ndarray) -> np.ndarray:
        """Frames keep the first size (the outputs were opened for it)."""
        if (frame.shape[1], frame.shape[0]) != self.size:
            frame = cv2.resize(frame, self.size, interpolation=cv2.INTER_AREA)
        self.last = frame
        return frame

    def _back(self) -> bool:
        if self.lost_at is not None:
            logger.warning("camera back", extra={"after_s": round(self.clock() - self.lost_at, 1)})
            self.lost_at = None
        return True

    def _lose(self, reason: str) -> None:
        if self.source is not None:
            try:
                self.source.close()
            except Exception:  # noqa: BLE001 - it is gone either way
                pass
            self.source = None
        if self.lost_at is None:
            self.lost_at, self.losses = self.clock(), self.losses + 1
            self._still = lost_frame(self.last, self.size)
            self._next_try = self.clock() + self.retry_s
            logger.warning("camera lost; showing a still and reopening it", extra={"reason": reason})

    def close(self) -> None:
        if self.source is not None:
            self.source.close()
