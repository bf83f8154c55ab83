"""Known-answer test of the renderer half of 3DPE against the official code's outputs.

The fixture ``3dpe_known_answer.pt`` holds what the official EzioBy/3dpe renderer produces, in fp32
on the CPU, for formula weights and analytic planes (see ``../shared/reference/README.md``). Passing
it proves the port is faithful: camera rays, plane axes, decoder, deterministic sampling, ray
marching and super-resolution.  Tolerances: ``KNOWN_ANSWER_ATOL`` in ``conftest.py`` (about 10x
what the port reaches); a missing fixture skips locally and fails under CI.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from streamfx.models.renderer import TriplaneRenderer, look_at_camera
from streamfx.models.renderer.resample import setup_filter
from streamfx.models.renderer.testing import analytic_planes, formula_state_dict, read_key_table

KEY_TABLE = Path(__file__).resolve().parents[2].parent / "shared" / "reference" / "3dpe_checkpoint_keys.tsv"


@pytest.fixture(scope="module")
def fixture(known_answer) -> dict:
    return known_answer


@pytest.fixture(scope="module")
def renderer_rows(shared_file) -> list[tuple[str, tuple[int, ...], str]]:
    rows = read_key_table(shared_file(KEY_TABLE))
    return [(key, shape, kind) for entry, key, shape, kind in rows if entry == "renderer_state_dict"]


@pytest.fixture(scope="module")
def official_renderer_state(renderer_rows) -> dict[str, torch.Tensor]:
    """An official-format ``renderer_state_dict``: formula parameters, constructed buffers."""
    params = [(key, shape) for key, shape, kind in renderer_rows if kind == "parameter"]
    state = formula_state_dict(params, unit_scale_prefixes=("decoder.",))
    for key, shape, kind in renderer_rows:
        if kind == "buffer":
            state[key] = setup_filter() if key.endswith("resample_filter") else torch.zeros(shape)
    return state


@pytest.fixture(scope="module")
def rendered(fixture, official_renderer_state) -> dict[str, torch.Tensor]:
    renderer = TriplaneRenderer(img_resolution=512).eval()
    renderer.load_state_dict(official_renderer_state, strict=True)
    planes = analytic_planes(float(fixture["plane_gain"]))
    with torch.no_grad():
        return renderer(planes, fixture["camera"], preset="full")


def test_state_dict_matches_official_keys_and_shapes(renderer_rows):
    renderer = TriplaneRenderer(img_resolution=512)
    ours = {k: tuple(v.shape) for k, v in renderer.state_dict().items()}
    official = {key: shape for key, shape, _ in renderer_rows}
    assert ours == official
    params = {k for k, _ in renderer.named_parameters()}
    assert params == {key for key, _, kind in renderer_rows if kind == "parameter"}


def test_formula_weights_follow_the_readme():
    # Parameter i (in sorted key order: a.bias, b.w, decoder.x) is sin(0.731 k + 0.1 i) * s.
    state = formula_state_dict([("b.w", (4, 3, 2)), ("a.bias", (5,)), ("decoder.x", (2, 2))], unit_scale_prefixes=("decoder.",))
    k = torch.arange(24, dtype=torch.float64)
    assert torch.allclose(state["b.w"].double().flatten(), torch.sin(0.731 * k + 0.1) / math.sqrt(6), atol=1e-7)
    assert torch.allclose(state["a.bias"].double(), 0.1 * torch.sin(0.731 * k[:5]), atol=1e-8)
    assert torch.allclose(state["decoder.x"].double().flatten(), torch.sin(0.731 * k[:4] + 0.2), atol=1e-7)


def test_look_at_camera_reproduces_fixture_camera(fixture):
    camera = look_at_camera(math.pi / 2 + 0.3, math.pi / 2 + 0.1, radius=2.7, pivot=(0.0, 0.0, 0.2), fov_deg=18.837)
    assert camera.shape == (1, 25)
    assert (camera - fixture["camera"]).abs().max().item() <= 1e-5


@pytest.mark.parametrize("key,shape", [("image_raw", (1, 3, 128, 128)), ("image_depth", (1, 1, 128, 128)),
                                       ("image", (1, 3, 512, 512))])
def test_output_matches_official(fixture, rendered, known_answer_atol, key, shape):
    assert rendered[key].shape == shape and rendered[key].dtype == torch.float32
    err = (rendered[key] - fixture[key]).abs().max().item()
    assert err <= known_answer_atol[key], f"{key} differs by {err}"
