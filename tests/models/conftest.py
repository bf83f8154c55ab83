"""Shared fixtures of the 3DPE model tests: the reference facts, the known-answer model and
one full-size official-format random checkpoint per session (~700 MB, built once)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
TESTDATA = SHARED / "testdata"
REFERENCE = SHARED / "reference"
KNOWN_ANSWER = REFERENCE / "3dpe_known_answer.pt"
KEYS_TSV = REFERENCE / "3dpe_checkpoint_keys.tsv"


@pytest.fixture(scope="session")
def known_answer() -> dict:
    if not KNOWN_ANSWER.is_file():
        pytest.skip(f"reference fixture missing: {KNOWN_ANSWER}")
    return torch.load(KNOWN_ANSWER, weights_only=True)


@pytest.fixture(scope="session")
def formula_model():
    """ThreeDPE (fp32) loaded through StreamFX's loader from the known-answer formula weights."""
    from streamfx.models import testing, threedpe
    from streamfx.models.checkpoint import validate

    state = testing.formula_state_dicts()
    validate(state, source="formula weights")
    return threedpe.from_state(state, device="cpu", dtype=torch.float32)


@pytest.fixture(scope="session")
def random_state():
    from streamfx.models import random_weights

    return random_weights.random_state_dicts(seed=7)


@pytest.fixture(scope="session")
def official_ckpt(tmp_path_factory, random_state) -> Path:
    """A full official-format ``3dpe.pt`` with random values (deleted after the session)."""
    path = tmp_path_factory.mktemp("official") / "3dpe.pt"
    torch.save(random_state, path)
    yield path
    path.unlink(missing_ok=True)
