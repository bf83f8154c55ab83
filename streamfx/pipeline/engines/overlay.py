"""The built-in ``overlay`` engine: cheap, obviously visible, needs no model.

It proves the whole streaming path: a magenta border and a label on every frame, and a
colour look chosen by the prompt (a preset, or the mean colour of a reference image).
"""

from __future__ import annotations

import cv2
import numpy as np

from ..controls import Controls, Prompt
from ..engine import Engine, EngineSession, PromptError
from ..timing import StageTimer

BORDER_RGB = (255, 0, 255)
BORDER_PX = 16
LOOKS = ("none", "mono", "invert", "warm", "cool")


def _border(frame: np.ndarray) -> None:
    b = min(BORDER_PX, frame.shape[0] // 4, frame.shape[1] // 4)
    frame[:b], frame[-b:], frame[:, :b], frame[:, -b:] = BORDER_RGB, BORDER_RGB, BORDER_RGB, BORDER_RGB


class OverlaySession(EngineSession):
    def __init__(self) -> None:
        self.look = "none"
        self.tint: np.ndarray | None = None

    def set_prompt(self, prompt: Prompt | None) -> None:
        if prompt is None:
            self.look, self.tint = "none", None
        elif prompt.kind == "preset":
            if prompt.name not in LOOKS:
                raise PromptError(f"unknown preset {prompt.name!r}; choose one of {', '.join(LOOKS)}")
            self.look, self.tint = prompt.name, None
        else:
            assert prompt.image is not None
            self.look = "reference"
            self.tint = prompt.image.reshape(-1, 3).mean(axis=0).astype(np.float32) / 255.0

    def process(self, frame: np.ndarray, controls: Controls, timer: StageTimer) -> np.ndarray:
        strength = float(np.clip(controls.strength, 0.0, 1.0))
        out = self._look(frame, strength)
        _border(out)
        h = out.shape[0]
        scale = max(h / 720.0, 0.35)
        cv2.putText(out, "StreamFX", (BORDER_PX + 8, h - BORDER_PX - 10), cv2.FONT_HERSHEY_SIMPLEX,
                    scale, BORDER_RGB, max(1, int(2 * scale)), cv2.LINE_AA)
        return out

    def _look(self, frame: np.ndarray, strength: float) -> np.ndarray:
        if self.look == "none" or strength == 0.0:
            return frame.copy()
        if self.look == "invert":
            target = 255 - frame
        elif self.look == "mono":
            target = np.repeat(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)
        else:
            gain = {"warm": np.array([1.15, 1.0, 0.8]), "cool": np.array([0.8, 1.0, 1.15])}.get(self.look)
            if gain is None:  # reference tint: scale channels toward the reference's mean colour
                gain = 0.5 + self.tint / max(float(self.tint.mean()), 1e-3) * 0.5
            target = cv2.transform(frame, np.diag(gain).astype(np.float32))  # saturating per-channel gain
        if strength >= 1.0:
            return np.ascontiguousarray(target)
        return cv2.addWeighted(frame, 1.0 - strength, target, strength, 0.0)


class OverlayEngine(Engine):
    name = "overlay"
    description = "Passthrough with a visible border and colour looks (no model; proves the stream path)."

    def presets(self) -> list[str]:
        return list(LOOKS)

    def open_session(self) -> EngineSession:
        return OverlaySession()
