"""Adaptive quality: pick the render preset whose p95 frame time holds the budget.

Steps down (faster) when the recent p95 is over budget, up (better) when it has stayed
well under for a while, with a cool-down after every change so that it does not flap.
A pinned preset turns adaptation off.

The preset asked for (pinned or adapted) may not be ready to render: on a graph backend its
renderer graph may still be building (see ``streamfx.runtime.accelerated``). The session then
renders a :func:`stand_in` and tells :meth:`AdaptiveQuality.record` which preset it rendered;
the times of stand-in frames say nothing about the preset asked for and are not counted.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Collection, Sequence

import numpy as np


@dataclass(frozen=True)
class QualityConfig:
    budget_ms: float = 40.0
    window: int = 30           # frames in the p95 window
    headroom: float = 0.6      # step up only when p95 < headroom * budget
    cooldown: int = 45         # frames to wait after a change


def stand_in(wanted: str, presets_best_first: Sequence[str], ready: Collection[str]) -> str | None:
    """The preset to render while ``wanted`` is not ready.

    The best ready preset no better than ``wanted``, so that a stand-in never costs more than
    what was asked for (adaptation may have stepped down because a better preset was over
    budget); failing that, the ready preset closest above it. None when none is ready.
    """
    order = list(presets_best_first)
    at = order.index(wanted)
    for preset in order[at:]:
        if preset in ready:
            return preset
    for preset in reversed(order[:at]):
        if preset in ready:
            return preset
    return None


class AdaptiveQuality:
    def __init__(self, presets_best_first: list[str], config: QualityConfig = QualityConfig(),
                 start: str | None = None) -> None:
        if not presets_best_first:
            raise ValueError("at least one preset is needed")
        self.presets = list(presets_best_first)
        self.config = config
        self.index = self.presets.index(start) if start in self.presets else len(self.presets) - 1
        self.pinned: str | None = None
        self._times: deque[float] = deque(maxlen=config.window)
        self._since_change = 0

    @property
    def current(self) -> str:
        return self.pinned or self.presets[self.index]

    def pin(self, preset: str | None) -> None:
        """Pin a preset (None or "auto" resumes adaptation)."""
        if preset in (None, "auto"):
            self.pinned = None
            return
        if preset not in self.presets:
            raise ValueError(f"unknown quality {preset!r}; choose auto or one of {', '.join(self.presets)}")
        self.pinned = preset
        self.index = self.presets.index(preset)

    def p95(self) -> float | None:
        return float(np.percentile(self._times, 95)) if self._times else None

    def record(self, frame_ms: float, rendered: str | None = None) -> str:
        """Add one frame's time; returns the preset to use next.

        ``rendered``: the preset the frame was rendered at, when it may differ from
        :attr:`current` (a stand-in while ``current`` builds). Such a frame is not counted.
        """
        if rendered is not None and rendered != self.current:
            return self.current
        self._times.append(frame_ms)
        self._since_change += 1
        if self.pinned or len(self._times) < self.config.window or self._since_change < self.config.cooldown:
            return self.current
        p95 = self.p95()
        if p95 > self.config.budget_ms and self.index < len(self.presets) - 1:
            self._change(+1)
        elif p95 < self.config.headroom * self.config.budget_ms and self.index > 0:
            self._change(-1)
        return self.current

    def _change(self, step: int) -> None:
        self.index += step
        self._since_change = 0
        self._times.clear()
