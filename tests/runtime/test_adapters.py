"""Per-sample low-rank adapters: a batched run with hooks equals per-sample runs with the
adapter merged into the weights, and leaves the base model untouched."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from streamfx.runtime.adapters import (
    AdapterError,
    LowRankAdapter,
    LowRankUpdate,
    default_targets,
    load_adapter,
    per_sample,
    random_adapter,
    remap_for,
    save_adapter,
)


class Toy(nn.Module):
    """x (B, 6, 6, 5) -> Linear 5->4 -> (B, 4, 6, 6) -> conv 3x3/2 dilation 2 -> (B, 8, 3, 3)
    -> flatten -> Linear 72->10."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(5, 4)
        self.act = nn.ReLU()
        self.conv = nn.Conv2d(4, 8, 3, stride=2, padding=2, dilation=2)
        self.out = nn.Linear(72, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.fc(x)).permute(0, 3, 1, 2)
        return self.out(self.act(self.conv(x)).flatten(1))


TARGETS = ["fc", "conv", "out"]


@pytest.fixture()
def toy() -> Toy:
    torch.manual_seed(0)
    return Toy().eval().requires_grad_(False)


def inputs(batch: int) -> torch.Tensor:
    return torch.randn(batch, 6, 6, 5, generator=torch.Generator().manual_seed(1))


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def no_hooks(model: nn.Module) -> bool:
    return all(not m._forward_hooks for m in model.modules())


def test_mixed_batch_equals_merged_models_row_by_row(toy):
    a = random_adapter(toy, TARGETS, rank=2, seed=1, scale=20.0)
    b = random_adapter(toy, ["conv", "out"], rank=3, seed=2, scale=20.0)
    before, x = snapshot(toy), inputs(3)
    with per_sample(toy, [a, None, b]):
        assert not no_hooks(toy)
        got = toy(x)
    expected = [a.merged_into(toy)(x[:1]), toy(x[1:2]), b.merged_into(toy)(x[2:])]
    for i, want in enumerate(expected):
        torch.testing.assert_close(got[i:i + 1], want, atol=1e-5, rtol=0)
    assert (expected[0] - toy(x[:1])).abs().max() > 1e-2, "the adapter must change the output"
    assert (expected[2] - toy(x[2:])).abs().max() > 1e-2
    assert no_hooks(toy)
    after = snapshot(toy)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_rows_of_one_adapter_need_not_be_consecutive(toy):
    a = random_adapter(toy, TARGETS, rank=2, seed=1, scale=20.0)
    b = random_adapter(toy, TARGETS, rank=3, seed=2, scale=20.0)
    x, merged = inputs(6), {None: toy, a: a.merged_into(toy), b: b.merged_into(toy)}
    order = [a, b, a, a, None, b]
    with per_sample(toy, order):
        got = toy(x)
    expected = torch.cat([merged[m](x[i:i + 1]) for i, m in enumerate(order)])
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_one_adapter_for_all_rows_and_all_none(toy):
    a = random_adapter(toy, TARGETS, rank=2, seed=3, scale=20.0)
    x = inputs(4)
    with per_sample(toy, [a] * 4):
        got = toy(x)
    torch.testing.assert_close(got, a.merged_into(toy)(x), atol=1e-5, rtol=0)
    with per_sample(toy, [None] * 4):
        assert no_hooks(toy)
        got_none = toy(x)
    assert torch.equal(got_none, toy(x))


def test_errors_are_clear_and_leave_no_hooks(toy):
    a = random_adapter(toy, TARGETS, rank=2, seed=1)
    with pytest.raises(AdapterError, match="batch of 3 but 2 adapter entries"):
        with per_sample(toy, [a, None]):
            toy(inputs(3))
    assert no_hooks(toy)
    unknown = LowRankAdapter("u", {"nope": a.updates["fc"]})
    with pytest.raises(AdapterError, match="adapter 'u': no module 'nope' in Toy"):
        with per_sample(toy, [unknown]):
            pass
    wrong = LowRankAdapter("w", {"conv": a.updates["fc"]})
    with pytest.raises(AdapterError, match=r"module 'conv': down \(2, 5\) / up \(4, 2\) do not fit"):
        wrong.check(toy)
    with pytest.raises(AdapterError, match="ReLU is not nn.Linear"):
        LowRankAdapter("r", {"act": a.updates["fc"]}).check(toy)
    with pytest.raises(AdapterError, match=r"inconsistent low-rank update: down \(2, 5\), up \(4, 3\)"):
        LowRankUpdate(torch.zeros(2, 5), torch.zeros(4, 3))
    with pytest.raises(AdapterError, match="missing tensor 'fc.lora_up'"):
        LowRankAdapter.from_state_dict("m", {"fc.lora_down": torch.zeros(2, 5), "fc.alpha_scale": torch.tensor(1.0)})
    assert no_hooks(toy)


def test_bf16_weights_under_inference_mode(toy):
    a = random_adapter(toy, TARGETS, rank=2, seed=1, scale=20.0)
    b = random_adapter(toy, ["fc"], rank=2, seed=2, scale=20.0)
    model, x = toy.to(torch.bfloat16), inputs(3).to(torch.bfloat16)
    with torch.inference_mode(), per_sample(model, [a, None, b]):
        got = model(x)
        model(x)  # the second frame re-uses the cast weights
    assert got.dtype == torch.bfloat16
    assert list(a.updates["conv"]._cast) == [(torch.bfloat16, torch.device("cpu"))]
    with torch.inference_mode():
        expected = torch.cat([a.merged_into(model)(x[:1]), model(x[1:2]), b.merged_into(model)(x[2:])])
    torch.testing.assert_close(got.float(), expected.float(), atol=0.1, rtol=0.05)


def test_state_dict_and_safetensors_round_trip(toy, tmp_path):
    a = random_adapter(toy, TARGETS, rank=2, seed=1, scale=0.3)
    state = a.state_dict()
    assert set(state) == {f"{t}.{s}" for t in TARGETS for s in ("lora_down", "lora_up", "alpha_scale")}
    for copy in (LowRankAdapter.from_state_dict("a", state), None):
        if copy is None:
            save_adapter(a, tmp_path / "a.safetensors")
            copy = load_adapter(tmp_path / "a.safetensors")
            assert copy.name == a.name and load_adapter(tmp_path / "a.safetensors", "x").name == "x"
        assert set(copy.updates) == set(TARGETS) and copy.num_parameters() == a.num_parameters()
        for key, update in a.updates.items():
            assert torch.equal(copy.updates[key].down, update.down) and torch.equal(copy.updates[key].up, update.up)
            assert copy.updates[key].scale == update.scale


@pytest.fixture(scope="module")
def encoder_case():
    """The real encoder (random weights), an adapter on the default targets, a batch of 2 and
    the expected planes: sample 0 through the merged encoder, sample 1 through the base."""
    from streamfx.models import random_weights, threedpe

    model = threedpe.from_state(random_weights.random_state_dicts(seed=0))
    targets = default_targets(model.encoder)
    adapter = random_adapter(model.encoder, targets, rank=4, seed=1)
    generator = torch.Generator().manual_seed(2)
    x = torch.rand(2, 3, 512, 512, generator=generator) * 2 - 1
    tokens = torch.randn(2, 197, 768, generator=generator) * 0.3
    with torch.inference_mode():
        merged = adapter.merged_into(model.encoder)(x[:1], tokens[:1])
    expected = torch.cat([merged, model.encode(x[1:], tokens[1:])])
    return model, targets, adapter, x, tokens, expected


def test_real_encoder_batched_equals_merged(encoder_case):
    model, targets, adapter, x, tokens, expected = encoder_case
    modules = dict(model.encoder.named_modules())
    assert targets and all(type(modules[t]) in (nn.Conv2d, nn.Linear) for t in targets)
    assert {t.split(".")[0] for t in targets} == {"final", "fusion"}
    before = {k: v.clone() for k, v in model.encoder.state_dict().items() if k.startswith("final.head.4")}
    with per_sample(model.encoder, [adapter, None]):
        got = model.encode(x, tokens)
    assert (expected[0] - model.encode(x[:1], tokens[:1])).abs().max() > 1e-3, "the adapter must change the planes"
    torch.testing.assert_close(got, expected, atol=2e-5, rtol=0)
    assert no_hooks(model) and all(torch.equal(v, model.encoder.state_dict()[k]) for k, v in before.items())


def test_fast_encoder_takes_the_same_adapter(encoder_case):
    from streamfx.models.encoder.fast import FastEncoder

    model, targets, adapter, x, tokens, expected = encoder_case
    fast = FastEncoder(model.encoder, torch.float32)
    assert default_targets(fast) == targets and remap_for(adapter, fast) is adapter
    with torch.inference_mode(), per_sample(fast, [adapter, None]):
        got = fast(x, tokens)
    torch.testing.assert_close(got, expected, atol=2e-5, rtol=0)  # FastEncoder fp32 = reference within rounding
    high = random_adapter(model.encoder, ["branch_high.convs.3"], rank=2, seed=0)
    assert list(remap_for(high, fast).updates) == ["branch_high.rest.2"]
    with pytest.raises(AdapterError, match="coordinate-folded"):
        remap_for(LowRankAdapter("s", {"trunk.stem": high.updates["branch_high.convs.3"]}), fast)


def test_the_torch_paths_take_one_adapter_per_row(encoder_case):
    """What the frame batcher calls: ``encode(x, tokens, adapters=[...])`` on an execution path."""
    from streamfx.runtime.accelerated import load_accelerated

    model, targets, adapter, x, tokens, expected = encoder_case
    path = load_accelerated(model, "torch-fp32")
    assert path.per_sample_adapters
    torch.testing.assert_close(path.encode(x, tokens, adapters=[adapter, None]), expected, atol=2e-5, rtol=0)
    torch.testing.assert_close(path.encode(x[1:], tokens[1:]), expected[1:], atol=2e-5, rtol=0)
    assert no_hooks(model)
