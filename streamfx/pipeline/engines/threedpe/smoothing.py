"""Motion-adaptive temporal smoothing of tri-planes.

Per-frame encoding flickers. The smoother keeps an exponential moving average of the
tri-planes whose rate ``alpha`` follows how far the aligned input has moved away from
the input the current average stands for (a small grey thumbnail of the crop, averaged
with the same ``alpha``). With ``d`` that distance in grey levels,
``alpha = clip(1 - rest_level / d, alpha_min, alpha_max)``: at rest ``d`` is at the noise
level and ``alpha = alpha_min`` (strong smoothing); after a change of size ``D`` the
average jumps to within ``rest_level / D`` of the new input in one frame (weak smoothing in
motion) and then settles with ``alpha_min``. Small changes near the noise level are
followed more slowly, which is what keeps the image still at rest.

The camera is not smoothed here: it comes from the live pose every frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch


@dataclass(frozen=True)
class SmoothingConfig:
    alpha_min: float = 0.12     # update rate at rest (lower = smoother, more lag)
    alpha_max: float = 1.0      # update rate in fast motion
    rest_level: float = 1.5     # thumbnail distance (mean grey levels) treated as noise
    thumb: int = 48             # thumbnail side used to measure change
    enabled: bool = True


def thumbnail(crop: np.ndarray, side: int) -> np.ndarray:
    """(H, W, 3) uint8 crop -> (side, side) float32 grey thumbnail (area-averaged, so pixel noise cancels)."""
    grey = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
    return cv2.resize(grey, (side, side), interpolation=cv2.INTER_AREA).astype(np.float32)


class TriplaneSmoother:
    def __init__(self, config: SmoothingConfig = SmoothingConfig()) -> None:
        self.config = config
        self.planes: torch.Tensor | None = None
        self._thumb: np.ndarray | None = None
        self.last_alpha = 1.0

    def reset(self) -> None:
        """Forget the history (face switch, prompt change, resolution change)."""
        self.planes, self._thumb = None, None
        self.last_alpha = 1.0

    def alpha_for(self, thumb: np.ndarray) -> float:
        c = self.config
        if self._thumb is None or not c.enabled:
            return 1.0
        distance = float(np.abs(thumb - self._thumb).mean())
        alpha = 1.0 - c.rest_level / max(distance, 1e-6)
        return float(np.clip(alpha, c.alpha_min, c.alpha_max))

    def update(self, planes: torch.Tensor, crop: np.ndarray) -> torch.Tensor:
        """Blend new tri-planes ``planes`` (B, 96, 256, 256) encoded from ``crop`` into the average."""
        thumb = thumbnail(crop, self.config.thumb)
        alpha = self.alpha_for(thumb)
        self.last_alpha = alpha
        if self.planes is None or alpha >= 1.0 or self.planes.shape != planes.shape:
            self.planes, self._thumb = planes.clone(), thumb
            return self.planes
        self.planes.lerp_(planes.to(self.planes.dtype), alpha)
        self._thumb += alpha * (thumb - self._thumb)
        return self.planes
