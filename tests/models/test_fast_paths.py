"""The fast CPU paths (FastEncoder, FastRenderer) compute what the reference modules compute.

In float32 they must meet the official known-answer tolerances themselves; in bfloat16 they
must stay close to float32.
"""

from __future__ import annotations

import math

import pytest
import torch

from streamfx.models.encoder.fast import FastEncoder
from streamfx.models.renderer import look_at_camera
from streamfx.models.renderer.fast import FastRenderer, bilinear_taps, padded_table
from streamfx.models.renderer.scenes import analytic_planes


def test_bilinear_taps_equal_grid_sample_including_outside_points():
    torch.manual_seed(0)
    planes = torch.randn(2, 96, 16, 16)
    points = torch.rand(2, 500, 3) * 1.6 - 0.8  # some points fall outside the [-0.5, 0.5] box
    texel = ((2 * points + 1) * 16 - 1) / 2
    rows, weights = bilinear_taps(texel, 16)
    got = torch.nn.functional.embedding_bag(rows, padded_table(planes), per_sample_weights=weights, mode="sum")  # mean
    grids = [points[..., [0, 1]], points[..., [0, 2]], points[..., [2, 0]]]
    expected = sum(
        torch.nn.functional.grid_sample(planes[:, 32 * p:32 * (p + 1)], (2 * g).unsqueeze(1), align_corners=False)
        for p, g in enumerate(grids)
    ).squeeze(2) / 3  # (B, 32, M)
    assert (got.reshape(2, 500, 32).transpose(1, 2) - expected).abs().max() < 1e-5
    assert (expected.abs().sum(1) == 0).any(), "the test must include points outside every plane"


@pytest.fixture(scope="module")
def fast_fp32_render(formula_model, known_answer):
    renderer = FastRenderer(formula_model.renderer, sr_dtype=torch.float32, decoder_dtype=torch.float32)
    planes = analytic_planes(float(known_answer["plane_gain"]))
    return renderer(planes, known_answer["camera"], "full")


def test_fast_renderer_fp32_meets_known_answer(fast_fp32_render, known_answer):
    """Measured: image_raw 7.2e-7, depth 1.2e-6, image 5.4e-7; tolerances about 10x that."""
    out = fast_fp32_render
    assert (out["image_raw"] - known_answer["image_raw"]).abs().max().item() <= 7e-6
    assert (out["image_depth"] - known_answer["image_depth"]).abs().max().item() <= 1.2e-5
    assert (out["image"] - known_answer["image"]).abs().max().item() <= 5e-6


@pytest.mark.parametrize("preset", ["fast", "fastest"])
def test_fast_renderer_bf16_presets_close_to_reference(formula_model, preset, fast_bf16):
    """bf16 decoder and super-resolution: a few 1e-3 off in [-1, 1], PSNR well above 40 dB."""
    planes = analytic_planes(60.0)
    camera = look_at_camera(math.pi / 2 + 0.3, math.pi / 2 + 0.1)
    expected = formula_model.render(planes, camera, preset)
    got = FastRenderer(formula_model.renderer)(planes, camera, preset)
    for key, tol in (("image_raw", 2e-2), ("image_depth", 1e-2)):
        assert got[key].shape == expected[key].shape
        assert (got[key] - expected[key]).abs().max().item() <= tol, key
    for key in ("image", "image_raw"):
        mse = (got[key] - expected[key]).square().mean().item()
        assert 10 * math.log10(4.0 / max(mse, 1e-12)) > 45, key


def test_fast_renderer_reuses_the_plane_table_until_planes_change(formula_model):
    renderer = FastRenderer(formula_model.renderer, decoder_dtype=torch.float32)
    planes = analytic_planes(1.0)
    camera = look_at_camera(math.pi / 2, math.pi / 2)
    first = renderer(planes, camera, "fastest")
    table = renderer._table_cache[2]
    renderer(planes, camera, "fastest")
    assert renderer._table_cache[2] is table
    planes.mul_(2)  # in place: same storage and address, new values
    second = renderer(planes, camera, "fastest")
    assert renderer._table_cache[2] is not table
    assert not torch.allclose(first["image"], second["image"])


def test_fast_encoder_fp32_meets_known_answer(formula_model, known_answer, planes_allowance):
    """The fixture stores planes in fp16: each value may differ by its own half fp16 ulp, plus
    the same margin as the reference encoder's test."""
    stored = known_answer["planes"]
    with torch.inference_mode():
        fp32 = FastEncoder(formula_model.encoder, torch.float32)(known_answer["x"], known_answer["tokens"])
    assert ((fp32 - stored.float()).abs() <= planes_allowance(stored)).all()


def test_fast_encoder_bf16_stays_close(formula_model, known_answer, fast_bf16):
    expected = known_answer["planes"].float()
    with torch.inference_mode():
        bf16 = FastEncoder(formula_model.encoder, torch.bfloat16)(known_answer["x"], known_answer["tokens"])
    assert bf16.dtype == torch.float32 and bf16.shape == expected.shape
    rel = ((bf16 - expected).norm() / expected.norm()).item()
    assert rel < 0.03, f"bf16 planes off by {rel:.3%}"
