"""Loss weights and the trainable adapter, on small tensors and modules."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from streamfx.runtime.adapters import per_sample
from streamfx.training.lora import TrainableAdapter
from streamfx.training.losses import LossSpecError, LossWeights, total_loss


def test_loss_spec_parses_over_the_official_defaults():
    w = LossWeights.parse("image=1,raw=1,tri=0,mv=0,depth=0")
    assert (w.tri, w.image, w.raw, w.depth, w.mv, w.lpips, w.id) == (0, 1, 1, 0, 0, 0.8, 0)
    assert LossWeights.parse(None) == LossWeights(tri=1, image=1, raw=1, depth=0.5, mv=1, lpips=0.8, id=0)
    for bad, message in (("gan=1", "NAME=WEIGHT"), ("tri", "NAME=WEIGHT"), ("tri=x", "not a number"),
                         ("tri=-1", ">= 0"), ("tri=inf", "finite"), ("tri=nan", "finite")):
        with pytest.raises(LossSpecError, match=message):
            LossWeights.parse(bad)


def _renders(value: float) -> dict:
    return {"image": torch.full((1, 3, 8, 8), float(value)), "image_raw": torch.full((1, 3, 4, 4), float(value)),
            "image_depth": torch.full((1, 1, 4, 4), float(value))}


def test_total_loss_sums_the_weighted_terms_and_skips_zero_weights():
    planes = torch.zeros(1, 96, 4, 4)
    w = LossWeights(tri=2, image=1, raw=0, depth=0.5, mv=3, lpips=0.8, id=0)
    total, terms = total_loss(planes + 1, planes, _renders(0.5), _renders(0.0), w, _renders(0.2), _renders(0.0))
    assert set(terms) == {"tri", "image", "depth", "mv_image", "mv_depth"}  # raw 0; no LPIPS given
    expected = 2 * 1 + 1 * 0.5 + 0.5 * 0.5 + 3 * (1 * 0.2 + 0.5 * 0.2)
    assert float(total) == pytest.approx(expected)
    with pytest.raises(LossSpecError, match="every term has weight 0"):
        total_loss(planes, planes, _renders(0), _renders(0), LossWeights(0, 0, 0, 0, 0, 0, 0))


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 5, 3, padding=1)
        self.fc = nn.Linear(5, 4)

    def forward(self, x):
        return self.fc(self.conv(x).mean((2, 3)))


@pytest.mark.parametrize("full", [False, True])
def test_trainable_adapter_starts_at_the_base_and_exports_what_it_learnt(full):
    torch.manual_seed(0)
    model, x = _Tiny().requires_grad_(False), torch.randn(2, 3, 6, 6)
    adapter = TrainableAdapter(model, ["conv", "fc"], rank=2, full=full, generator=torch.Generator().manual_seed(0))
    base = model(x)
    with adapter.applied(model):
        assert torch.equal(model(x), base)  # up (or the dense update) starts at zero
    optimizer = torch.optim.SGD(adapter.parameters(), lr=0.5)
    for _ in range(3):
        optimizer.zero_grad()
        with adapter.applied(model):
            loss = (model(x) - 1).pow(2).mean()
        loss.backward()
        optimizer.step()
    with adapter.applied(model), torch.no_grad():
        trained = model(x)
    assert not torch.allclose(trained, base, atol=1e-4)
    assert torch.equal(model(x), base)  # hooks removed: the base is untouched
    exported = adapter.export("tiny")
    with per_sample(model, [exported, None]), torch.no_grad():
        both = model(x)
    assert torch.allclose(both[0], trained[0], atol=1e-5) and torch.allclose(both[1], base[1], atol=1e-6)
    again = TrainableAdapter(model, ["conv", "fc"], rank=2, full=full)
    again.load_from(exported)
    with again.applied(model), torch.no_grad():
        assert torch.allclose(model(x), trained, atol=1e-5)
