"""Random weights of the official 3DPE shapes and key names: a product feature.

They need no download and import like the real checkpoint, so demos, benchmarks
(``--random-weights``), ``streamfx weights random OUT.pt`` and tests all run the whole
network at its real size and cost. The images they give are not faces.

* :func:`random_state_dicts` - every official key and shape, seeded N(0, 1) values times a
  fan-in scale (1/sqrt(fan-in) for 2+ dims, else 0.1; 1 for the renderer's decoder), so
  activations stay in range through the depth of the network.
* :func:`save_official` - writes them as an official-format ``3dpe.pt``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Callable

import torch

from .checkpoint import ENTRIES, StateDicts
from .checkpoint_spec import CHECKPOINT_SPEC


def shape_scale(shape: tuple[int, ...]) -> float:
    """1/sqrt(fan-in) for 2+ dimensions, else 0.1."""
    return 1.0 / math.sqrt(math.prod(shape[1:])) if len(shape) >= 2 else 0.1


def fan_in_scale(entry: str, key: str, shape: tuple[int, ...]) -> float:
    """The scale of an official parameter's values (see the module docstring)."""
    if entry == "renderer_state_dict" and key.startswith("decoder."):
        return 1.0
    return shape_scale(shape)


def constructed_buffer(key: str, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """A renderer buffer's value: the normalised [1, 3, 3, 1] resample filter, or seeded noise
    constants (unused with noise mode ``none``)."""
    if key.endswith("resample_filter"):
        f = torch.tensor([1.0, 3.0, 3.0, 1.0])
        f2 = torch.outer(f, f)
        return f2 / f2.sum()
    return torch.randn(shape, generator=generator)


def with_buffers(state: StateDicts, seed: int) -> StateDicts:
    """Add every official buffer to ``state`` (in place) and return it."""
    generator = torch.Generator().manual_seed(seed)
    for entry, key, shape, kind in CHECKPOINT_SPEC:
        if kind == "buffer":
            state[entry][key] = constructed_buffer(key, shape, generator)
    return state


def random_state_dicts(seed: int = 0, progress: Callable[[int, int], None] | None = None) -> StateDicts:
    """Every official key and shape as ``{entry: state_dict}``, seeded; ``progress(done, total)``
    is called per tensor."""
    generator = torch.Generator().manual_seed(seed)
    state: StateDicts = {entry: {} for entry in ENTRIES}
    params = [spec for spec in CHECKPOINT_SPEC if spec[3] == "parameter"]
    for done, (entry, key, shape, _) in enumerate(params, 1):
        state[entry][key] = torch.randn(shape, generator=generator) * fan_in_scale(entry, key, shape)
        if progress is not None:
            progress(done, len(params))
    return with_buffers(state, seed=seed + 1)


def save_official(path: str | os.PathLike, seed: int = 0,
                  progress: Callable[[int, int], None] | None = None) -> Path:
    """Write random weights as an official-format checkpoint (``torch.save`` of the two
    state dicts), atomically; returns the path."""
    path = Path(path)
    state = random_state_dicts(seed, progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(state, tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
