"""Style adapters on the graph backends: an adapted encode runs on one torch fast encoder
built on first use, so a style pack never exports or builds a graph."""

from __future__ import annotations

import threading

import pytest
import torch

from streamfx.models import threedpe
from streamfx.runtime.accelerated import TorchAccelerated
from streamfx.runtime.adapters import default_targets, random_adapter
from streamfx.runtime.graph_paths import GraphAccelerated

pytestmark = pytest.mark.slow


class _NoBuilds:
    """A builder that fails any export or build: adapted encodes must not need one."""

    def __init__(self, model) -> None:
        self.model = model

    def build(self, graph, check=False):
        raise AssertionError(f"a style adapter made the {graph} graph build")

    load = build


def test_adapted_encodes_run_on_the_torch_encoder_without_building_anything(random_model):
    graphs = GraphAccelerated.__new__(GraphAccelerated)  # its graphs are never used here
    graphs.backend, graphs.max_batch, graphs.builder = "openvino", 1, _NoBuilds(random_model)
    graphs._runners, graphs._builds, graphs._state = {}, {}, threading.Lock()
    graphs._adapted, graphs._adapted_lock = None, threading.Lock()
    adapter = random_adapter(random_model.encoder, default_targets(random_model.encoder), rank=2, seed=1, std=0.1)
    x = torch.rand(2, 3, 512, 512) * 2 - 1
    tokens = torch.randn(1, 197, 768)
    planes = graphs.encode(x, tokens, adapters=[adapter, None])
    expected = TorchAccelerated(random_model, "torch", encoder_only=True).encode(x, tokens, adapters=[adapter, None])
    assert torch.allclose(planes, expected, atol=1e-4)
    first = graphs._adapted
    graphs.encode(x[:1], tokens, adapters=[adapter])
    assert graphs._adapted is first, "one torch encoder for every style"
    assert isinstance(threedpe.weights_sha256(random_model), str)
