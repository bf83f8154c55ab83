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

import torch

from ..checkpoint_spec import read_key_table  # noqa: F401  (the tests read the reference table with it)
from ..random_weights import shape_scale
from .scenes import analytic_planes  # noqa: F401  (the fixture's planes)


def formula_tensor(shape: tuple[int, ...], index: int, scale: float) -> torch.Tensor:
    """``sin(0.731 * k + 0.1 * index) * scale`` over k = 0..n-1, float64, reshaped to ``shape``."""
    n = math.prod(shape)
    k = torch.arange(n, dtype=torch.float64)
    return (torch.sin(0.731 * k + 0.1 * index) * scale).reshape(shape)


def formula_scale(key: str, shape: tuple[int, ...], unit_scale_prefixes: tuple[str, ...] = ()) -> float:
    return 1.0 if key.startswith(unit_scale_prefixes) else shape_scale(shape)


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
