"""A deterministic tri-plane scene with depth structure: the known-answer fixture's planes.

Used wherever planes are needed without an encoder: checking exported renderer graphs,
benchmarks, and the known-answer test of the official renderer.
"""

from __future__ import annotations

import torch


def analytic_planes(plane_gain: float = 60.0, batch: int = 1, size: int = 256, channels: int = 96) -> torch.Tensor:
    """The fixture's renderer input: (batch, 96, 256, 256) float32 (built in float64).

    base = sin(6.283 * ((1 + c mod 5) h/256 + (1 + c mod 7) w/256) + c),
    blob = exp(-((h/256 - 0.5)^2 + (w/256 - 0.5)^2) / 0.02), planes = gain * (0.2 base + blob).
    """
    c = torch.arange(channels, dtype=torch.float64).reshape(-1, 1, 1)
    h = (torch.arange(size, dtype=torch.float64) / 256).reshape(1, -1, 1)
    w = (torch.arange(size, dtype=torch.float64) / 256).reshape(1, 1, -1)
    base = torch.sin(6.283 * ((1 + c % 5) * h + (1 + c % 7) * w) + c)
    blob = torch.exp(-((h - 0.5) ** 2 + (w - 0.5) ** 2) / 0.02)
    planes = plane_gain * (0.2 * base + blob)
    return planes.float().unsqueeze(0).expand(batch, -1, -1, -1).contiguous()
