"""Known-answer parity of the 3DPE encoder with the official code.

``../shared/reference/3dpe_known_answer.pt`` holds the official code's fp32 outputs for
weights set by a formula. The weights are rebuilt here by that formula, in the official
checkpoint format, and loaded through StreamFX's own loader (key map included).
Tolerances: ``KNOWN_ANSWER_ATOL`` in ``conftest.py`` (about 10x what the port reaches).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from streamfx.models import threedpe


def test_reference_tokens_match_official(formula_model, known_answer, known_answer_atol):
    tokens = formula_model.reference_tokens(known_answer["ref224"])
    assert tokens.shape == (1, 197, 768) and tokens.dtype == torch.float32
    err = (tokens - known_answer["tokens"]).abs().max().item()
    assert err <= known_answer_atol["tokens"], f"tokens differ by {err}"


def test_planes_match_official(formula_model, known_answer, known_answer_atol, planes_allowance):
    """The fixture stores the official fp32 planes rounded to fp16, so each stored value is off
    the official one by at most half an fp16 ulp at its magnitude (up to 1.2e-4 at 0.37).  Our
    planes may differ from the stored ones by that rounding plus our own fp32 error."""
    planes = formula_model.encode(known_answer["x"], known_answer["tokens"])
    assert planes.shape == (1, 96, 256, 256) and planes.dtype == torch.float32
    stored = known_answer["planes"]
    assert stored.dtype == torch.float16
    allowed = planes_allowance(stored)
    excess = ((planes - stored.float()).abs() - allowed).max().item()
    assert excess <= 0, f"planes differ by {excess} more than fp16 storage plus {known_answer_atol['planes']}"
    # The fixture's planes are not trivially small: a wrong network could not pass by accident.
    assert stored.float().abs().max().item() > 1000 * allowed.max().item()


def test_uint8_preprocessing_matches_fixture(known_answer, read_rgb):
    x = threedpe.prepare_input(read_rgb("faces/ffhq_1.png"))
    ref = threedpe.prepare_reference(read_rgb("styles/style_1.png"))
    assert (x - known_answer["x"]).abs().max().item() < 1e-6
    assert (ref - known_answer["ref224"]).abs().max().item() < 1e-5


def test_prompt_tokens_are_cached(formula_model, known_answer, known_answer_atol, read_rgb):
    style = read_rgb("styles/style_1.png")
    cache = formula_model.token_cache
    cache.clear()
    first = formula_model.prompt_tokens("style_1", style)
    second = formula_model.prompt_tokens("style_1", style)
    assert second is first and cache.misses >= 1 and cache.hits >= 1 and len(cache) == 1
    assert (first - known_answer["tokens"]).abs().max().item() <= known_answer_atol["tokens"]


def test_bfloat16_autocast_stays_close(formula_model, known_answer, fast_bf16):
    """Under bf16 autocast (the speed path) the planes stay within a few percent."""
    with torch.autocast("cpu", dtype=torch.bfloat16):
        planes = formula_model.encode(known_answer["x"], known_answer["tokens"])
    expected = known_answer["planes"].float()
    rel = ((planes.float() - expected).norm() / expected.norm()).item()
    assert rel < 0.05, f"bf16 planes off by {rel:.3%}"


def test_render_through_loaded_model(formula_model, known_answer, known_answer_atol):
    """The renderer half loads from the same official-format weights through threedpe."""
    h = torch.arange(256, dtype=torch.float64).view(1, 1, 256, 1) / 256
    w = torch.arange(256, dtype=torch.float64).view(1, 1, 1, 256) / 256
    c = torch.arange(96, dtype=torch.float64).view(1, 96, 1, 1)
    base = torch.sin(6.283 * ((1 + c % 5) * h + (1 + c % 7) * w) + c)
    blob = torch.exp(-((h - 0.5) ** 2 + (w - 0.5) ** 2) / 0.02)
    planes = (known_answer["plane_gain"] * (0.2 * base + blob)).float()
    out = formula_model.render(planes, known_answer["camera"], preset="full")
    for key in ("image_raw", "image_depth", "image"):
        assert out[key].shape == known_answer[key].shape, key
        err = (out[key] - known_answer[key]).abs().max().item()
        assert err <= known_answer_atol[key], f"{key} differs by {err}"


def test_bad_inputs_give_one_line_errors(formula_model):
    with pytest.raises(threedpe.ModelInputError, match=r"input: expected shape \(B, 3, 512, 512\)"):
        formula_model.encode(torch.zeros(1, 3, 256, 256), torch.zeros(1, 197, 768))
    with pytest.raises(threedpe.ModelInputError, match="RGB uint8"):
        threedpe.prepare_input(np.zeros((512, 512, 3), np.float32))
    with pytest.raises(threedpe.ModelInputError, match="512x512"):
        threedpe.prepare_input(np.zeros((256, 512, 3), np.uint8))
