"""Shared fixtures of the 3DPE model tests: the reference facts and their tolerances, the
known-answer model and one full-size official-format random checkpoint per session
(~700 MB, built once).  Missing reference files skip locally and fail under CI
(``shared_file`` in ``tests/conftest.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
TESTDATA = SHARED / "testdata"
REFERENCE = SHARED / "reference"
KNOWN_ANSWER = REFERENCE / "3dpe_known_answer.pt"
KEYS_TSV = REFERENCE / "3dpe_checkpoint_keys.tsv"


# Known-answer tolerances (max abs difference, fp32 on the CPU), about 10x what the port
# reaches (measured on a 2-core x86 CPU, the same with 1 thread): room for a different
# summation order (threads, kernels, a refactored renderer) at the 1e-7 level, and none
# for a real error.  The tri-planes are judged against their fp16 storage: see
# test_encoder_known_answer.py.
KNOWN_ANSWER_ATOL = {
    "tokens": 1e-6,  # measured 1.2e-7 (values up to 0.29)
    "planes": 1.5e-5,  # our fp32 error beyond the fixture's fp16 rounding; measured 1.4e-6 (values up to 0.37)
    "image_raw": 5e-6,  # measured 4.8e-7
    "image_depth": 1e-5,  # measured 9.5e-7 (depths up to 2.65)
    "image": 4e-6,  # measured 3.6e-7
}


@pytest.fixture(scope="session")
def known_answer_atol() -> dict[str, float]:
    return dict(KNOWN_ANSWER_ATOL)


@pytest.fixture(scope="session")
def known_answer(shared_file) -> dict:
    """The official code's outputs (``3dpe_known_answer.pt``); missing: skip locally, fail under CI."""
    return torch.load(shared_file(KNOWN_ANSWER), weights_only=True)


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


def fp16_half_ulp(stored: torch.Tensor) -> torch.Tensor:
    """The most that rounding an fp32 value to fp16 moves it, at each value of ``stored``
    (fp16): half the fp16 spacing 2^(e - 10) of a value in [2^e, 2^(e+1)); below 2^-14 fp16
    is subnormal with spacing 2^-24.  (At a power of two this is the larger of the two
    spacings meeting there, so it never understates the rounding.)"""
    a = stored.float().abs().clamp_min(2.0**-14)
    return torch.exp2(torch.floor(torch.log2(a)) - 11)


@pytest.fixture(scope="session")
def planes_allowance(known_answer_atol):
    """planes_allowance(stored) -> per-value tolerance of our planes against the fixture's fp16
    ones: the storage rounding (:func:`fp16_half_ulp`) plus the known-answer margin."""
    return lambda stored: fp16_half_ulp(stored) + known_answer_atol["planes"]
