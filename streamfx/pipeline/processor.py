"""One caller's frame pipeline: controls + engine session + stats.

The server, the file processor and the virtual camera all push frames through a
:class:`CallerPipeline`. It never raises for a frame: an engine failure is logged,
counted, and the frame passes through unedited.
"""

from __future__ import annotations

import numpy as np

from .. import log
from .controls import Controls, Prompt
from .engine import Engine
from .timing import RollingStats, StageTimer

logger = log.get(__name__)


class CallerPipeline:
    def __init__(self, engine: Engine, controls: Controls | None = None) -> None:
        self.engine = engine
        self.session = engine.open_session()
        self.controls = controls or Controls()
        self.stats = RollingStats()
        self._shape: tuple[int, ...] | None = None

    def set_prompt(self, prompt: Prompt | None) -> dict | None:
        """Raises :class:`~streamfx.pipeline.engine.PromptError`; the old prompt then stays.
        Returns the engine's ack fields for the prompt, if any."""
        note = self.session.set_prompt(prompt)
        self.controls.prompt = prompt
        return note

    def process(self, frame: np.ndarray, timer: StageTimer | None = None) -> np.ndarray:
        """Filter one RGB uint8 frame (H, W, 3). Returns a frame of the same shape."""
        timer = timer if timer is not None else StageTimer()
        if frame.shape != self._shape:
            if self._shape is not None:
                logger.info("resolution changed", extra={"old": self._shape, "new": frame.shape})
                self.session.reset()
            self._shape = frame.shape
        if self.controls.bypass:
            return frame
        try:
            with timer.stage("engine"):
                out = self.session.process(frame, self.controls, timer)
        except Exception:  # noqa: BLE001 - one bad frame must not end the call
            self.stats.errors += 1
            logger.exception("engine failed on a frame; passing it through")
            return frame
        if out.shape != frame.shape or out.dtype != np.uint8:
            self.stats.errors += 1
            logger.error("engine returned a bad frame", extra={"shape": out.shape, "dtype": str(out.dtype)})
            return frame
        return out

    def filter_at(self, frame: np.ndarray, timestamp_s: float) -> np.ndarray:
        """Filter one frame of a file or camera at ``timestamp_s``, counting it in the stats
        (the server's track does its own counting)."""
        timer = StageTimer(timestamp_s=timestamp_s)
        out = self.process(frame, timer)
        self.stats.frames_in += 1
        self.stats.frames_out += 1
        self.stats.record(timer, sum(timer.ms.values()))
        return out

    def summary(self) -> dict:
        data = self.stats.summary()
        data.update(self.session.stats())
        data["engine"] = self.engine.name
        data["bypass"] = self.controls.bypass
        return data

    def close(self) -> None:
        self.session.close()
