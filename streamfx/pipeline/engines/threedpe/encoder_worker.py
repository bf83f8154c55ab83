"""Keyframing: the encoder runs in its own thread, at its own rate, on the newest crop.

On a CPU, encoding a frame takes far longer than the frame budget. The renderer then
renders every frame from the latest smoothed tri-planes at the live pose (head motion
stays live), while this worker encodes the newest submitted crop whenever it is free
(expression updates at the encoder's rate). A submitted crop replaces one not yet
started: the worker never queues.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ....log import get as get_logger

logger = get_logger(__name__)
EncodeFn = Callable[[np.ndarray, int], "torch.Tensor | None"]  # (crop, epoch) -> smoothed planes


@dataclass(frozen=True)
class Keyframe:
    planes: torch.Tensor  # (1, 96, 256, 256), smoothed
    frame_index: int      # the frame whose crop produced it
    epoch: int            # bumps on reset (face switch, prompt change): older results are dropped


class EncoderWorker:
    def __init__(self, encode: EncodeFn, name: str = "streamfx-encoder") -> None:
        self._encode = encode
        self._lock = threading.Condition()
        self._pending: tuple[np.ndarray, int, int] | None = None
        self._latest: Keyframe | None = None
        self._epoch = 0
        self._stop = False
        self._done: deque[float] = deque(maxlen=20)
        self.errors = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, crop: np.ndarray, frame_index: int) -> None:
        with self._lock:
            self._pending = (crop, frame_index, self._epoch)
            self._lock.notify()

    def latest(self) -> Keyframe | None:
        with self._lock:
            return self._latest

    def reset(self) -> None:
        """Drop pending work and the current keyframe; results of older epochs are discarded."""
        with self._lock:
            self._epoch += 1
            self._pending, self._latest = None, None

    def rate(self) -> float:
        """Keyframes per second over the last few."""
        with self._lock:
            stamps = list(self._done)
        if len(stamps) < 2:
            return 0.0
        return (len(stamps) - 1) / max(stamps[-1] - stamps[0], 1e-6)

    def _run(self) -> None:
        while True:
            with self._lock:
                while self._pending is None and not self._stop:
                    self._lock.wait()
                if self._stop:
                    return
                crop, index, epoch = self._pending
                self._pending = None
            try:
                planes = self._encode(crop, epoch)
            except Exception:  # noqa: BLE001 - a failed keyframe keeps the previous one
                self.errors += 1
                logger.exception("encoder failed on a keyframe")
                continue
            with self._lock:
                if planes is not None and epoch == self._epoch:
                    self._latest = Keyframe(planes, index, epoch)
                    self._done.append(time.monotonic())

    def close(self) -> None:
        with self._lock:
            self._stop = True
            self._lock.notify()
        self._thread.join(timeout=10)
