"""Unit tests of the renderer pieces against straightforward reference formulations."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from streamfx.models.renderer import (
    PRESETS,
    RenderInputError,
    RenderPreset,
    TriplaneRenderer,
    UnknownPresetError,
    get_preset,
    look_at_camera,
)
from streamfx.models.renderer.cameras import camera_rays
from streamfx.models.renderer.flops import render_flops
from streamfx.models.renderer.marcher import alpha_weights, composite, composite_depth, exclusive_cumprod, sample_coefficients
from streamfx.models.renderer.resample import filter2d, setup_filter, upsample2d
from streamfx.models.renderer.sampling import (
    coarse_depths,
    importance_depths,
    sample_pdf,
    searchsorted_right,
    smooth_weights,
)
from streamfx.models.renderer.testing import renderer_formula_state_dict
from streamfx.models.renderer.triplane import project_onto_planes


# ----------------------------------------------------------------------------- sampling
def test_comparison_sum_equals_searchsorted_right():
    gen = torch.Generator().manual_seed(0)
    rows = torch.rand(64, 30, generator=gen).cumsum(-1)
    rows[:, 5:9] = rows[:, 5:6]  # repeated entries
    values = torch.rand(64, 17, generator=gen) * rows[:, -1:] * 1.1 - 0.05
    values[:, 0] = rows[:, 7]  # exactly on an entry
    values[:, 1] = rows[:, 0]
    expected = torch.searchsorted(rows, values, right=True)
    assert torch.equal(searchsorted_right(rows, values), expected)
    shared = torch.linspace(-0.1, 20.0, 11)
    assert torch.equal(searchsorted_right(rows, shared), torch.searchsorted(rows, shared.expand(64, -1).contiguous(), right=True))


def _reference_sample_pdf(bins, weights, u, eps=1e-5):
    """EG3D's inverse-CDF step with torch.searchsorted (the official formulation)."""
    n_rays, n_bins = weights.shape
    weights = weights + eps
    pdf = weights / torch.sum(weights, -1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[:, :1]), torch.cumsum(pdf, -1)], -1)
    u = u.expand(n_rays, -1).contiguous()
    inds = torch.searchsorted(cdf, u, right=True)
    below = torch.clamp_min(inds - 1, 0)
    above = torch.clamp_max(inds, n_bins)
    idx = torch.stack([below, above], -1).view(n_rays, -1)
    cdf_g = torch.gather(cdf, 1, idx).view(n_rays, -1, 2)
    bins_g = torch.gather(bins, 1, idx).view(n_rays, -1, 2)
    denom = cdf_g[..., 1] - cdf_g[..., 0]
    denom[denom < eps] = 1
    return bins_g[..., 0] + (u - cdf_g[..., 0]) / denom * (bins_g[..., 1] - bins_g[..., 0])


def test_sample_pdf_matches_searchsorted_formulation():
    gen = torch.Generator().manual_seed(1)
    weights = torch.rand(200, 45, generator=gen) ** 4
    weights[:20] = 0.0  # flat rays
    bins = torch.sort(torch.rand(200, 47, generator=gen) * 1.05 + 2.25, dim=-1).values
    u = (torch.arange(48, dtype=torch.float32) + 0.5) / 48
    ours = sample_pdf(bins, weights, u)
    assert torch.allclose(ours, _reference_sample_pdf(bins, weights, u), atol=1e-6, rtol=0)
    assert (ours[:, 1:] >= ours[:, :-1] - 1e-6).all()


def test_smooth_weights_is_maxpool_then_avgpool():
    w = torch.rand(33, 47)
    ref = F.max_pool1d(w.unsqueeze(1), 2, 1, padding=1)
    ref = F.avg_pool1d(ref, 2, 1).squeeze(1) + 0.01
    assert torch.allclose(smooth_weights(w), ref, atol=1e-7)


def test_coarse_depths_follow_the_deterministic_convention():
    depths = coarse_depths(2.25, 3.3, 48)
    j = torch.arange(48, dtype=torch.float64)
    expected = 2.25 + (j + 0.5) * (3.3 - 2.25) / 47
    assert depths.shape == (48,)
    assert torch.allclose(depths.double(), expected, atol=1e-6, rtol=0)


def test_importance_depths_concentrate_where_density_is():
    depths = coarse_depths(2.25, 3.3, 48)
    weights = torch.zeros(2, 47)
    weights[0, 20] = 1.0  # a surface at sample 20
    weights[1, 40] = 1.0
    fine = importance_depths(depths, weights, 48)
    assert fine.shape == (2, 48)
    assert ((fine[0] - depths[20]).abs() < 0.1).float().mean() > 0.7
    assert ((fine[1] - depths[40]).abs() < 0.1).float().mean() > 0.7


def test_exclusive_cumprod_matches_cumprod():
    x = torch.rand(5, 7, 40) * 0.99 + 0.01
    expected = torch.cumprod(torch.cat([torch.ones_like(x[..., :1]), x[..., :-1]], -1), -1)
    assert torch.allclose(exclusive_cumprod(x), expected, rtol=1e-5, atol=1e-7)


def test_per_sample_coefficients_equal_midpoint_compositing():
    gen = torch.Generator().manual_seed(4)
    colors = torch.rand(2, 5, 6, 20, generator=gen)
    densities = torch.randn(2, 1, 6, 20, generator=gen) * 5
    depths = torch.sort(torch.rand(2, 1, 6, 20, generator=gen) + 2.25, dim=-1).values
    rgb, depth, weights = composite(colors, densities, depths)
    coeffs = sample_coefficients(alpha_weights(densities, depths))
    assert torch.allclose(torch.sum(colors * coeffs, -1) * 2 - 1, rgb, atol=1e-6)
    assert torch.allclose(composite_depth(weights, depths), depth)
    assert (depth >= depths.min()).all() and (depth <= depths.max()).all()


# ----------------------------------------------------------------------------- geometry
def test_plane_projection_equals_eg3d_inverse_axes():
    axes = torch.tensor(
        [[[1, 0, 0], [0, 1, 0], [0, 0, 1]], [[1, 0, 0], [0, 0, 1], [0, 1, 0]], [[0, 0, 1], [1, 0, 0], [0, 1, 0]]],
        dtype=torch.float32,
    )
    points = torch.randn(2, 100, 3)
    n, m, _ = points.shape
    expanded = points.unsqueeze(1).expand(-1, 3, -1, -1).reshape(n * 3, m, 3)
    inv = torch.linalg.inv(axes).unsqueeze(0).expand(n, -1, -1, -1).reshape(n * 3, 3, 3)
    expected = torch.bmm(expanded, inv)[..., :2].reshape(n, 3, m, 2)
    assert torch.equal(project_onto_planes(points), expected)


def test_camera_rays_point_at_the_pivot_from_the_camera():
    camera = look_at_camera(torch.pi / 2, torch.pi / 2)
    origins, directions = camera_rays(camera, 8)
    assert origins.shape == (1, 1, 3) and directions.shape == (1, 64, 3)
    assert torch.allclose(directions.norm(dim=-1), torch.ones(1, 64), atol=1e-6)
    centre = directions[0, [27, 28, 35, 36]].mean(0)  # the 4 central rays
    to_pivot = torch.tensor([0.0, 0.0, 0.2]) - origins[0, 0]
    assert torch.allclose(centre / centre.norm(), to_pivot / to_pivot.norm(), atol=1e-3)
    # Row-major rays; the frontal camera sits on +z looking at -z with image right = world +x
    # and image down = world -y.
    assert directions[0, 7, 0] > directions[0, 0, 0]
    assert directions[0, 56, 1] < directions[0, 0, 1]


# ----------------------------------------------------------------------------- resampling
def _upfirdn_reference(x, f, up, pad, gain):
    """Zero insertion, padding and true convolution with the filter (StyleGAN2's reference)."""
    b, c, h, w = x.shape
    if up > 1:
        x = x.reshape(b, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1]).reshape(b, c, h * up, w * up)
    x = F.pad(x, [pad[0], pad[1], pad[0], pad[1]])
    weight = (f * gain).flip([0, 1])[None, None].repeat(c, 1, 1, 1)
    return F.conv2d(x, weight, groups=c)


def test_upsample2d_matches_upfirdn():
    x = torch.randn(2, 3, 9, 9)
    f = setup_filter()
    assert torch.allclose(upsample2d(x, f), _upfirdn_reference(x, f, 2, (2, 1), 4.0), atol=1e-6)


def test_filter2d_matches_upfirdn():
    x = torch.randn(1, 4, 11, 11)
    f = setup_filter()
    assert torch.allclose(filter2d(x, f, padding=1, gain=4.0), _upfirdn_reference(x, f, 1, (1, 1), 4.0), atol=1e-6)


# ----------------------------------------------------------------------------- renderer
@pytest.fixture(scope="module")
def renderer() -> TriplaneRenderer:
    r = TriplaneRenderer(512).eval()
    r.load_state_dict(renderer_formula_state_dict(r))
    return r


@pytest.fixture(scope="module")
def small_inputs():
    gen = torch.Generator().manual_seed(3)
    planes = torch.randn(2, 96, 64, 64, generator=gen) * 3
    camera = torch.cat([look_at_camera(torch.pi / 2 + 0.2, torch.pi / 2), look_at_camera(torch.pi / 2 - 0.3, torch.pi / 2 + 0.1)])
    return planes, camera


TINY = RenderPreset("tiny", neural_resolution=16, coarse_samples=8, importance_samples=8, superres="full",
                    output_size=64, sr_input_resolution=16)


@pytest.mark.parametrize("name", ["fast", "fastest"])
def test_presets_give_their_shapes(renderer, small_inputs, name):
    preset = PRESETS[name]
    planes, camera = small_inputs
    with torch.no_grad():
        out = renderer(planes, camera, name)
    r = preset.neural_resolution
    assert out["image"].shape == (2, 3, preset.output_size, preset.output_size)
    assert out["image_raw"].shape == (2, 3, r, r)
    assert out["image_depth"].shape == (2, 1, r, r)
    assert all(torch.isfinite(v).all() for v in out.values())
    assert (out["image_depth"] >= 2.25).all() and (out["image_depth"] <= 3.35).all()


def test_full_and_balanced_preset_shapes():
    assert {"full", "balanced", "fast", "fastest"} <= set(PRESETS)
    full = PRESETS["full"]
    assert (full.neural_resolution, full.coarse_samples, full.importance_samples, full.superres, full.output_size) == (
        128, 48, 48, "full", 512)
    assert full.sr_output_size == 512
    assert PRESETS["fast"].sr_output_size == 256
    assert PRESETS["fastest"].sr_output_size == PRESETS["fastest"].neural_resolution


def test_batch_renders_like_single_images(renderer, small_inputs):
    planes, camera = small_inputs
    with torch.no_grad():
        both = renderer(planes, camera, TINY)
        second = renderer(planes[1:], camera[1:], TINY)
    for key in ("image", "image_raw", "image_depth"):
        assert both[key].shape[0] == 2
        assert torch.allclose(both[key][1:], second[key], atol=1e-5), key


def test_views_differ_between_cameras(renderer, small_inputs):
    planes, camera = small_inputs
    with torch.no_grad():
        a = renderer(planes[:1], camera[:1], TINY)["image_raw"]
        b = renderer(planes[:1], camera[1:], TINY)["image_raw"]
    assert (a - b).abs().max() > 1e-2


def test_bfloat16_autocast_renders_close_to_fp32(renderer, small_inputs, fast_bf16):
    planes, camera = small_inputs
    with torch.no_grad():
        ref = renderer(planes[:1], camera[:1], TINY)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = renderer(planes[:1], camera[:1], TINY)
    for key in ("image", "image_raw"):
        assert torch.isfinite(out[key]).all()
        assert (out[key].float() - ref[key]).abs().mean() < 0.05, key


def test_bfloat16_model_renders_close_to_fp32(renderer, small_inputs, fast_bf16):
    planes, camera = small_inputs
    bf16 = TriplaneRenderer.from_official_state_dict(renderer.state_dict(), dtype=torch.bfloat16)
    with torch.no_grad():
        ref = renderer(planes[:1], camera[:1], TINY)
        out = bf16(planes[:1].bfloat16(), camera[:1], TINY)
    for key in ("image", "image_raw", "image_depth"):
        assert out[key].dtype == torch.float32
        assert (out[key] - ref[key]).abs().mean() < 0.05, key


def test_from_official_state_dict_rejects_wrong_keys(renderer):
    state = dict(renderer.state_dict())
    state.pop("const")
    with pytest.raises(RuntimeError, match="const"):
        TriplaneRenderer.from_official_state_dict(state)


def test_flops_scale_with_the_preset():
    full, fastest = render_flops("full"), render_flops("fastest")
    assert fastest["superres"] == 0 and full["superres"] > 1e11
    assert full["sample"] == pytest.approx(128 * 128 * 96 * 3 * 32 * 8)
    assert render_flops("full", batch=2)["total"] == pytest.approx(2 * full["total"])


def test_onnx_export_matches_pytorch(renderer, small_inputs, tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")

    class Wrapped(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, planes, camera):
            out = self.inner(planes, camera, TINY)
            return out["image"], out["image_raw"], out["image_depth"]

    planes, camera = small_inputs
    path = tmp_path / "renderer.onnx"
    with torch.no_grad():
        torch.onnx.export(Wrapped(renderer), (planes[:1], camera[:1]), str(path), opset_version=17, dynamo=False,
                          input_names=["planes", "camera"], output_names=["image", "image_raw", "image_depth"])
        expected = Wrapped(renderer)(planes[:1], camera[:1])
    model = onnx.load(str(path))
    ops = {node.op_type for node in model.graph.node}
    assert "GridSample" in ops and not any("searchsorted" in op.lower() for op in ops)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"planes": planes[:1].numpy(), "camera": camera[:1].numpy()})
    for ours, theirs in zip(got, expected):
        assert ours.shape == tuple(theirs.shape)
        assert abs(ours - theirs.numpy()).max() < 1e-4


def test_bad_inputs_raise_one_line_errors(renderer, small_inputs):
    planes, camera = small_inputs
    with pytest.raises(RenderInputError, match=r"planes must have shape \(B, 96, H, W\)"):
        renderer(planes[:, :95], camera)
    with pytest.raises(RenderInputError, match=r"camera must have shape \(B, 25\)"):
        renderer(planes, camera[:, :16])
    with pytest.raises(RenderInputError, match="does not match"):
        renderer(planes, camera[:1])
    with pytest.raises(UnknownPresetError, match="unknown render preset 'ultra'"):
        renderer(planes, camera, "ultra")
    with pytest.raises(UnknownPresetError):
        RenderPreset("bad", superres="half")
    for err in (RenderInputError("x"), UnknownPresetError("y")):
        assert "\n" not in str(err)


def test_get_preset_passes_presets_through():
    assert get_preset(TINY) is TINY
    assert get_preset("full") is PRESETS["full"]
