"""The known-answer weights, for the parity tests against the official code.

:func:`formula_state_dicts` follows the reference README: per entry, the ``parameter`` keys
sorted by official name and indexed i = 0, 1, ...; ``p = sin(0.731 k + 0.1 i) * s`` over the
flattened k in float64, with s from :func:`~.random_weights.fan_in_scale`. Buffers get their
constructed values (:func:`~.random_weights.with_buffers`). Random weights of the official
shapes, for everything else, are a product feature in :mod:`.random_weights`.
"""

from __future__ import annotations

import torch

from .checkpoint import ENTRIES, StateDicts, expected_parameters
from .checkpoint_spec import CHECKPOINT_SPEC
from .random_weights import fan_in_scale, with_buffers
from .renderer.testing import formula_tensor


def formula_state_dicts() -> StateDicts:
    """The known-answer weights as an official-format ``{entry: state_dict}``."""
    shapes = {(e, k): s for e, k, s, _ in CHECKPOINT_SPEC}
    state: StateDicts = {entry: {} for entry in ENTRIES}
    for entry in ENTRIES:
        for i, key in enumerate(expected_parameters(entry)):
            shape = shapes[(entry, key)]
            state[entry][key] = formula_tensor(shape, i, fan_in_scale(entry, key, shape)).to(torch.float32)
    return with_buffers(state, seed=0)
