"""The optional style fine-tuning losses (LPIPS-alex, IR-SE50 identity) on seeded random
weights written with the documented names: behaviour, gradients and weight-file errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from streamfx.training.criteria import (
    LPIPS, CriterionWeightsError, IdentityLoss, identity_state_names, load_identity, load_lpips,
    lpips_state_names)


def random_state(names: dict[str, tuple[int, ...]], seed: int) -> dict[str, torch.Tensor]:
    """Plausible random weights: fan-in scaled convs/linears, positive LPIPS heads, BatchNorm
    statistics near (0, 1)."""
    g, out = torch.Generator().manual_seed(seed), {}
    for name, shape in names.items():
        if len(shape) > 1:
            fan_in = 1
            for d in shape[1:]:
                fan_in *= d
            w = torch.randn(shape, generator=g) * (2.0 / fan_in) ** 0.5
            out[name] = w.abs() if name.startswith("lin") else w
        elif name.endswith("running_var"):
            out[name] = 1 + 0.1 * torch.rand(shape, generator=g)
        elif name.endswith(("running_mean", "bias")):
            out[name] = 0.1 * torch.randn(shape, generator=g)
        else:  # BatchNorm scale or PReLU slope
            out[name] = 1 + 0.1 * torch.randn(shape, generator=g)
    return out


@pytest.fixture(scope="module")
def lpips_file(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    state = random_state(lpips_state_names(), seed=1)
    path = tmp_path_factory.mktemp("lpips") / "lpips_alex.safetensors"
    save_file(state, str(path))
    return path, state


@pytest.fixture(scope="module")
def identity_file(tmp_path_factory) -> Path:
    state = random_state(identity_state_names(), seed=2)
    state["body.0.res_layer.0.num_batches_tracked"] = torch.tensor(7)  # optional, accepted
    path = tmp_path_factory.mktemp("ir") / "ir_se50.safetensors"
    save_file(state, str(path))
    return path


@pytest.fixture(scope="module")
def lpips(lpips_file) -> LPIPS:
    return load_lpips(lpips_file[0])


@pytest.fixture(scope="module")
def identity(identity_file) -> IdentityLoss:
    return load_identity(identity_file)


def images(size: int, batch: int = 2, seed: int = 0) -> torch.Tensor:
    """Smooth random images in [-1, 1]: (batch, 3, size, size)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(batch, 3, 8, 8, generator=g) * 2 - 1
    return torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)


def noisy(x: torch.Tensor, amplitude: float, seed: int = 5) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (x + amplitude * torch.randn(x.shape, generator=g)).clamp(-1, 1)


# ---------------------------------------------------------------------------- names


def test_state_names_follow_the_documented_layouts():
    convs = {0: (64, 3, 11, 11), 3: (192, 64, 5, 5), 6: (384, 192, 3, 3), 8: (256, 384, 3, 3), 10: (256, 256, 3, 3)}
    expected = {}
    for i, shape in convs.items():
        expected[f"features.{i}.weight"], expected[f"features.{i}.bias"] = shape, shape[:1]
    expected.update({f"lin{i}.weight": (1, c, 1, 1) for i, c in enumerate((64, 192, 384, 256, 256))})
    assert lpips_state_names() == expected
    ir = identity_state_names()
    assert ir["input_layer.0.weight"] == (64, 3, 3, 3) and ir["input_layer.2.weight"] == (64,)
    assert ir["body.0.res_layer.5.fc1.weight"] == (4, 64, 1, 1)
    assert ir["body.23.res_layer.5.fc2.weight"] == (512, 32, 1, 1)
    assert ir["output_layer.3.weight"] == (512, 512 * 7 * 7) and ir["output_layer.4.running_var"] == (512,)
    assert sorted({k.split(".")[1] for k in ir if ".shortcut_layer.0." in k}, key=int) == ["3", "7", "21"]
    assert max(int(k.split(".")[1]) for k in ir if k.startswith("body.")) == 23  # 3 + 4 + 14 + 3 units
    assert not any(k.endswith("num_batches_tracked") for k in ir)


def test_lpips_taps_the_five_alexnet_relus(lpips):
    shapes = [tuple(f.shape) for f in lpips._feats(images(224, batch=1))]
    assert shapes == [(1, 64, 55, 55), (1, 192, 27, 27), (1, 384, 13, 13), (1, 256, 13, 13), (1, 256, 13, 13)]


# ---------------------------------------------------------------------------- LPIPS


@pytest.mark.parametrize("size", [256, 512])
def test_lpips_is_zero_for_identical_images_and_grows_with_noise(lpips, size):
    x = images(size, batch=2 if size <= 256 else 1)
    assert lpips(x, x.clone()).item() == pytest.approx(0.0, abs=1e-7)
    losses = [lpips(x, noisy(x, amp)).item() for amp in (0.02, 0.1, 0.4)]
    assert 0 < losses[0] < losses[1] < losses[2], losses


def test_lpips_matches_a_per_sample_computation(lpips):
    x, y = images(128, batch=3, seed=1), images(128, batch=3, seed=2)
    each = torch.stack([lpips(x[i:i + 1], y[i:i + 1]) for i in range(3)])
    assert lpips(x, y).shape == ()
    torch.testing.assert_close(lpips(x, y), each.mean())
    assert lpips(x, y).item() == pytest.approx(lpips(y, x).item(), rel=1e-5)  # symmetric


def reference_lpips(state: dict[str, torch.Tensor], a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """LPIPS-alex v0.1 written out with functional ops, straight from the weights."""
    F = torch.nn.functional
    shift, scale = torch.tensor([-0.030, -0.088, -0.188]), torch.tensor([0.458, 0.448, 0.450])

    def feats(x):
        x, out = (x - shift.view(1, 3, 1, 1)) / scale.view(1, 3, 1, 1), []
        for i, (stride, pad) in zip((0, 3, 6, 8, 10), ((4, 2), (1, 2), (1, 1), (1, 1), (1, 1))):
            if i in (3, 6):
                x = F.max_pool2d(x, 3, 2)
            x = F.relu(F.conv2d(x, state[f"features.{i}.weight"], state[f"features.{i}.bias"], stride, pad))
            out.append(x / (x.pow(2).sum(1, keepdim=True).sqrt() + 1e-10))
        return out

    per_layer = [F.conv2d((fa - fb) ** 2, state[f"lin{i}.weight"]).mean((2, 3)).squeeze(1)
                 for i, (fa, fb) in enumerate(zip(feats(a), feats(b)))]
    return torch.stack(per_layer).sum(0).mean()


def test_lpips_matches_a_functional_reference(lpips_file, lpips):
    x, y = images(160, batch=2, seed=6), images(160, batch=2, seed=7)
    torch.testing.assert_close(lpips(x, y), reference_lpips(lpips_file[1], x, y), rtol=1e-5, atol=1e-6)
    ones = {k: (torch.ones_like(v) if k.startswith("lin") else v) for k, v in lpips_file[1].items()}
    unit = LPIPS()
    unit.load_state_dict(ones)
    assert 0 < unit(x, y).item() <= 5 * 4  # each layer: spatial mean of |n_a - n_b|^2 <= 4


def test_lpips_gradient_reaches_the_input_only(lpips):
    x = images(256, batch=1).requires_grad_(True)
    lpips(x, noisy(x.detach(), 0.2)).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(not p.requires_grad and p.grad is None for p in lpips.parameters())


# ---------------------------------------------------------------------------- identity


def test_identity_is_zero_for_identical_images_and_grows_with_noise(identity):
    x = images(512, batch=1)
    assert identity(x, x.clone()).item() == pytest.approx(0.0, abs=1e-5)
    losses = [identity(x, noisy(x, amp)).item() for amp in (0.05, 0.5)]
    assert 1e-5 < losses[0] < losses[1] <= 2.0, losses


def test_identity_looks_only_at_the_face_crop(identity):
    x = images(256, batch=1, seed=8)  # at 256x256 the resize is exact: rows 35:223, cols 32:220 count
    outside, inside = x.clone(), x.clone()
    outside[:, :, :30], outside[:, :, :, 225:] = -1.0, 1.0
    inside[:, :, 100:160, 100:160] = 1.0
    with torch.no_grad():
        base = identity.embed(x)
        torch.testing.assert_close(identity.embed(outside), base, rtol=0, atol=1e-6)
        assert (identity.embed(inside) - base).abs().max() > 1e-3


def test_identity_gradient_reaches_the_rendered_image_only(identity):
    a = images(512, batch=2, seed=3).requires_grad_(True)
    b = images(512, batch=2, seed=4).requires_grad_(True)
    loss = identity(a, b)
    assert loss.shape == () and 0 < loss.item() <= 2.0
    loss.backward()
    assert a.grad is not None and torch.isfinite(a.grad).all() and a.grad.abs().sum() > 0
    assert b.grad is None  # the target is embedded without gradient
    assert all(not p.requires_grad and p.grad is None for p in identity.parameters())


def test_identity_embeddings_are_unit_length_and_criteria_stay_in_eval(identity, lpips):
    emb = identity.embed(images(512, batch=2))
    assert emb.shape == (2, 512)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(2))
    parent = torch.nn.ModuleDict({"id": identity, "lpips": lpips})
    parent.train()
    assert not any(m.training for m in parent["id"].modules())
    assert not any(m.training for m in parent["lpips"].modules())


# ---------------------------------------------------------------------------- weight files


def _expect_error(load, path: Path, problem: str) -> None:
    with pytest.raises(CriterionWeightsError) as info:
        load(path)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message and problem in message, message


def test_lpips_file_missing_a_tensor(lpips_file, tmp_path):
    state = dict(lpips_file[1])
    del state["lin0.weight"]
    save_file(state, str(path := tmp_path / "no_lin0.safetensors"))
    _expect_error(load_lpips, path, "missing tensor 'lin0.weight'")
    assert isinstance(CriterionWeightsError("x"), ValueError)


def test_lpips_file_with_a_wrong_shape(lpips_file, tmp_path):
    state = dict(lpips_file[1], **{"features.3.weight": torch.zeros(192, 64, 3, 3)})
    save_file(state, str(path := tmp_path / "shape.safetensors"))
    _expect_error(load_lpips, path, "'features.3.weight' has shape (192, 64, 3, 3), expected (192, 64, 5, 5)")


def test_lpips_file_with_an_unexpected_or_integer_tensor(lpips_file, tmp_path):
    save_file(dict(lpips_file[1], **{"classifier.1.weight": torch.zeros(2, 2)}), str(p := tmp_path / "x.safetensors"))
    _expect_error(load_lpips, p, "unexpected tensor 'classifier.1.weight'")
    save_file(dict(lpips_file[1], **{"lin2.weight": torch.zeros(1, 384, 1, 1, dtype=torch.int32)}),
              str(p := tmp_path / "int.safetensors"))
    _expect_error(load_lpips, p, "'lin2.weight' has dtype torch.int32")


def test_not_a_safetensors_file_and_a_missing_path(tmp_path):
    junk = tmp_path / "model.pth"
    junk.write_bytes(b"PK\x03\x04 this is a zip-based torch pickle, not safetensors\n" * 10)
    _expect_error(load_lpips, junk, "not a readable safetensors file")
    _expect_error(load_identity, junk, "not a readable safetensors file")
    _expect_error(load_lpips, tmp_path / "absent.safetensors", "no such file")
    _expect_error(load_identity, tmp_path, "no such file")  # a directory


def test_truncated_file(lpips_file, tmp_path):
    data = lpips_file[0].read_bytes()
    (path := tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    _expect_error(load_lpips, path, "not a readable safetensors file")


def test_identity_file_missing_tensors(tmp_path):
    save_file({"input_layer.0.weight": torch.zeros(64, 3, 3, 3)}, str(path := tmp_path / "partial.safetensors"))
    _expect_error(load_identity, path, "identity weights")
    _expect_error(load_identity, path, "missing tensor 'input_layer.1.weight'")


def test_loaded_weights_are_the_file_weights(lpips_file, identity, identity_file):
    model = load_lpips(lpips_file[0])
    for name, tensor in lpips_file[1].items():
        torch.testing.assert_close(model.state_dict()[name], tensor)
    from safetensors.torch import load_file

    stored = load_file(str(identity_file))
    state = identity.state_dict()
    for name in ("input_layer.0.weight", "body.21.shortcut_layer.1.running_mean", "output_layer.3.weight"):
        torch.testing.assert_close(state[name], stored[name])
