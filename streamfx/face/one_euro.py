"""A vectorised One-Euro filter (Casiez, Roussel, Vogel, CHI 2012).

The cutoff frequency rises with speed: at rest the filter smooths hard (low jitter),
in motion it follows quickly (little lag).  Here a whole array is filtered with *one*
shared cutoff, driven by a scalar speed, so that a landmark set moves rigidly and keeps
its shape instead of each point lagging by a different amount.
"""

from __future__ import annotations

import math

import numpy as np

from .config import OneEuroConfig


def _alpha(cutoff_hz: float, dt: float) -> float:
    tau = 1.0 / (2.0 * math.pi * cutoff_hz)
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """Filters arrays of a fixed shape sampled at (possibly irregular) timestamps.

    ``scale`` normalises the speed: speed = (median point displacement per second) / scale, so with
    landmarks in pixels and ``scale`` the face size in pixels, ``beta`` is per face size.
    """

    def __init__(self, cfg: OneEuroConfig) -> None:
        self.cfg = cfg
        self._x: np.ndarray | None = None
        self._dx = 0.0
        self._t = 0.0

    def reset(self) -> None:
        self._x = None
        self._dx = 0.0

    def __call__(self, x: np.ndarray, t: float, scale: float = 1.0) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if self._x is None or self._x.shape != x.shape:
            self._x, self._dx, self._t = x.copy(), 0.0, t
            return x.copy()
        dt = t - self._t
        if not dt > 0.0:  # repeated or backwards timestamp: assume a nominal 30 fps step
            dt = 1.0 / 30.0
        self._t = t
        step = x - self._x
        # rigid speed: median point displacement for a point set (N, D), the norm for a vector
        dist = np.median(np.linalg.norm(step, axis=-1)) if step.ndim >= 2 else np.linalg.norm(step)
        speed = float(dist) / dt / max(scale, 1e-9)
        a_d = _alpha(self.cfg.d_cutoff, dt)
        self._dx = a_d * speed + (1.0 - a_d) * self._dx
        cutoff = self.cfg.min_cutoff + self.cfg.beta * self._dx
        a = _alpha(cutoff, dt)
        self._x = a * x + (1.0 - a) * self._x
        return self._x.copy()
