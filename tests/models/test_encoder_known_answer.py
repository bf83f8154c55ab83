"""Known-answer parity of the 3DPE encoder with the official code.

``../shared/reference/3dpe_known_answer.pt`` holds the official code's fp32 outputs for
weights set by a formula. The weights are rebuilt here by that formula, in the official
checkpoint format, and loaded through StreamFX's own loader (key map included).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from streamfx.models import threedpe

TESTDATA = Path(__file__).resolve().parents[2].parent / "shared" / "testdata"

TOKENS_ATOL = 1e-3
PLANES_ATOL = 2e-3  # planes are stored as fp16 in the fixture


def _rgb(path) -> np.ndarray:
    if not path.is_file():
        pytest.skip(f"test image missing: {path}")
    return np.asarray(Image.open(path).convert("RGB"))


def test_reference_tokens_match_official(formula_model, known_answer):
    tokens = formula_model.reference_tokens(known_answer["ref224"])
    assert tokens.shape == (1, 197, 768) and tokens.dtype == torch.float32
    err = (tokens - known_answer["tokens"]).abs().max().item()
    assert err <= TOKENS_ATOL, f"tokens differ by {err}"


def test_planes_match_official(formula_model, known_answer):
    planes = formula_model.encode(known_answer["x"], known_answer["tokens"])
    assert planes.shape == (1, 96, 256, 256)
    expected = known_answer["planes"].float()
    err = (planes - expected).abs().max().item()
    assert err <= PLANES_ATOL, f"planes differ by {err}"
    # The fixture's planes are not trivially small: a wrong network could not pass by accident.
    assert expected.abs().max().item() > 100 * PLANES_ATOL


def test_uint8_preprocessing_matches_fixture(known_answer):
    x = threedpe.prepare_input(_rgb(TESTDATA / "faces" / "ffhq_1.png"))
    ref = threedpe.prepare_reference(_rgb(TESTDATA / "styles" / "style_1.png"))
    assert (x - known_answer["x"]).abs().max().item() < 1e-6
    assert (ref - known_answer["ref224"]).abs().max().item() < 1e-5


def test_prompt_tokens_are_cached(formula_model, known_answer):
    style = _rgb(TESTDATA / "styles" / "style_1.png")
    cache = formula_model.token_cache
    cache.clear()
    first = formula_model.prompt_tokens("style_1", style)
    second = formula_model.prompt_tokens("style_1", style)
    assert second is first and cache.misses >= 1 and cache.hits >= 1 and len(cache) == 1
    assert (first - known_answer["tokens"]).abs().max().item() <= TOKENS_ATOL


def test_bfloat16_autocast_stays_close(formula_model, known_answer, fast_bf16):
    """Under bf16 autocast (the speed path) the planes stay within a few percent."""
    with torch.autocast("cpu", dtype=torch.bfloat16):
        planes = formula_model.encode(known_answer["x"], known_answer["tokens"])
    expected = known_answer["planes"].float()
    rel = ((planes.float() - expected).norm() / expected.norm()).item()
    assert rel < 0.05, f"bf16 planes off by {rel:.3%}"


def test_render_through_loaded_model(formula_model, known_answer):
    """The renderer half loads from the same official-format weights through threedpe."""
    if formula_model.renderer is None:
        pytest.skip("renderer not available (streamfx.models.renderer.TriplaneRenderer missing)")
    h = torch.arange(256, dtype=torch.float64).view(1, 1, 256, 1) / 256
    w = torch.arange(256, dtype=torch.float64).view(1, 1, 1, 256) / 256
    c = torch.arange(96, dtype=torch.float64).view(1, 96, 1, 1)
    base = torch.sin(6.283 * ((1 + c % 5) * h + (1 + c % 7) * w) + c)
    blob = torch.exp(-((h - 0.5) ** 2 + (w - 0.5) ** 2) / 0.02)
    planes = (known_answer["plane_gain"] * (0.2 * base + blob)).float()
    out = formula_model.render(planes, known_answer["camera"], preset="full")
    assert (out["image_raw"] - known_answer["image_raw"]).abs().max().item() <= 1e-4
    assert (out["image_depth"] - known_answer["image_depth"]).abs().max().item() <= 1e-5
    assert (out["image"] - known_answer["image"]).abs().max().item() <= 1e-3


def test_bad_inputs_give_one_line_errors(formula_model):
    with pytest.raises(threedpe.ModelInputError, match=r"input: expected shape \(B, 3, 512, 512\)"):
        formula_model.encode(torch.zeros(1, 3, 256, 256), torch.zeros(1, 197, 768))
    with pytest.raises(threedpe.ModelInputError, match="RGB uint8"):
        threedpe.prepare_input(np.zeros((512, 512, 3), np.float32))
    with pytest.raises(threedpe.ModelInputError, match="512x512"):
        threedpe.prepare_input(np.zeros((256, 512, 3), np.uint8))
