"""Official-format weights that need no download, for tests and benchmarks.

* :func:`formula_state_dicts` - the known-answer weights of the reference README: per
  entry, the ``parameter`` keys sorted by official name and indexed i = 0, 1, ...;
  ``p = sin(0.731 k + 0.1 i) * s`` over the flattened k in float64, with
  s = 1/sqrt(prod(shape[1:])) for 2+ dims, else 0.1, and s = 1 for the renderer's
  ``decoder.*``.
* :func:`random_state_dicts` - the same keys and shapes with seeded random values.

Buffers (renderer only) get their constructed values: the normalised [1, 3, 3, 1] outer
product resample filter, and noise constants (unused with noise mode ``none``) from a
seeded normal.
"""

from __future__ import annotations

import math

import torch

from .checkpoint import ENTRIES, StateDicts, expected_parameters
from .checkpoint_spec import CHECKPOINT_SPEC


def _formula_scale(entry: str, key: str, shape: tuple[int, ...]) -> float:
    if entry == "renderer_state_dict" and key.startswith("decoder."):
        return 1.0
    return 1.0 / math.sqrt(math.prod(shape[1:])) if len(shape) >= 2 else 0.1


def formula_tensor(index: int, shape: tuple[int, ...], scale: float) -> torch.Tensor:
    """sin(0.731 k + 0.1 index) * scale for k over prod(shape), float64 -> float32."""
    k = torch.arange(math.prod(shape), dtype=torch.float64)
    return (torch.sin(0.731 * k + 0.1 * index) * scale).to(torch.float32).reshape(shape)


def _buffer(key: str, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    if key.endswith("resample_filter"):
        f = torch.tensor([1.0, 3.0, 3.0, 1.0])
        f2 = torch.outer(f, f)
        return f2 / f2.sum()
    return torch.randn(shape, generator=generator)


def _with_buffers(state: StateDicts, seed: int) -> StateDicts:
    generator = torch.Generator().manual_seed(seed)
    for entry, key, shape, kind in CHECKPOINT_SPEC:
        if kind == "buffer":
            state[entry][key] = _buffer(key, shape, generator)
    return state


def formula_state_dicts() -> StateDicts:
    """The known-answer weights as an official-format ``{entry: state_dict}``."""
    shapes = {(e, k): s for e, k, s, _ in CHECKPOINT_SPEC}
    state: StateDicts = {entry: {} for entry in ENTRIES}
    for entry in ENTRIES:
        for i, key in enumerate(expected_parameters(entry)):
            shape = shapes[(entry, key)]
            state[entry][key] = formula_tensor(i, shape, _formula_scale(entry, key, shape))
    return _with_buffers(state, seed=0)


def random_state_dicts(seed: int = 0) -> StateDicts:
    """Every official key and shape, filled with seeded N(0, 1) * formula scale."""
    generator = torch.Generator().manual_seed(seed)
    state: StateDicts = {entry: {} for entry in ENTRIES}
    for entry, key, shape, kind in CHECKPOINT_SPEC:
        if kind == "parameter":
            scale = _formula_scale(entry, key, shape)
            state[entry][key] = torch.randn(shape, generator=generator) * scale
    return _with_buffers(state, seed=seed + 1)
