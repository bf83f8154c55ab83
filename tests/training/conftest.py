"""A 3DPE model with random weights of the official shapes, built once per test session."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def random_model():
    from streamfx.models import threedpe
    from streamfx.models.random_weights import random_state_dicts

    torch.manual_seed(0)
    return threedpe.from_state(random_state_dicts(0))
