"""Deterministic test inputs shared by the known-answer tests (weights by formula, analytic planes).

The formula (reference README): within one checkpoint entry, take the parameters sorted by their
official key (Python string order) and number them i = 0, 1, ...; parameter i with n elements is
``sin(0.731 * k + 0.1 * i)`` for k = 0..n-1 (float64, reshaped), times s = 1/sqrt(prod(shape[1:]))
for 2+ dimensions, else 0.1 — except keys under ``unit_scale_prefixes`` (the renderer's
``decoder.``), where s = 1. Buffers are not part of the formula: they keep their constructed values.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import torch


def formula_tensor(shape: tuple[int, ...], index: int, scale: float) -> torch.Tensor:
    """``sin(0.731 * k + 0.1 * index) * scale`` over k = 0..n-1, float64, reshaped to ``shape``."""
    n = math.prod(shape)
    k = torch.arange(n, dtype=torch.float64)
    return (torch.sin(0.731 * k + 0.1 * index) * scale).reshape(shape)


def formula_scale(key: str, shape: tuple[int, ...], unit_scale_prefixes: tuple[str, ...] = ()) -> float:
    if key.startswith(unit_scale_prefixes):
        return 1.0
    if len(shape) >= 2:
        return 1.0 / math.sqrt(math.prod(shape[1:]))
    return 0.1


def formula_state_dict(
    parameters: Iterable[tuple[str, tuple[int, ...]]],
    *,
    unit_scale_prefixes: tuple[str, ...] = (),
    dtype: torch.dtype = torch.float32,
) -> dict[str, torch.Tensor]:
    """Formula weights for the given (key, shape) parameters of ONE checkpoint entry.

    Pass only parameters (not buffers). For ``renderer_state_dict`` use
    ``unit_scale_prefixes=("decoder.",)``.
    """
    out: dict[str, torch.Tensor] = {}
    for index, (key, shape) in enumerate(sorted(parameters)):
        shape = tuple(shape)
        out[key] = formula_tensor(shape, index, formula_scale(key, shape, unit_scale_prefixes)).to(dtype)
    return out


def renderer_formula_state_dict(renderer: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A full ``renderer_state_dict``: formula parameters plus the renderer's own buffers."""
    state = {k: v.detach().clone() for k, v in renderer.state_dict().items()}
    params = [(name, tuple(p.shape)) for name, p in renderer.named_parameters()]
    state.update(formula_state_dict(params, unit_scale_prefixes=("decoder.",)))
    return state


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


def read_key_table(path: str | Path) -> list[tuple[str, str, tuple[int, ...], str]]:
    """Rows (entry, key, shape, kind) of ``3dpe_checkpoint_keys.tsv``; shape ``scalar`` is ()."""
    rows = []
    for line in Path(path).read_text().splitlines():
        if not line.strip():
            continue
        entry, key, shape, kind = line.split("\t")
        if entry == "entry" or not entry.endswith("state_dict"):  # header row
            continue
        dims = () if shape == "scalar" else tuple(int(d) for d in shape.split("x"))
        rows.append((entry, key, dims, kind))
    return rows
