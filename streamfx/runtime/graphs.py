"""The exportable 3DPE graphs, each with static shapes (batch 1, or a dynamic batch).

=====================  =====================================  ==========================================
graph                  inputs                                 outputs
=====================  =====================================  ==========================================
``reference``          ref224 (1, 3, 224, 224)                tokens (1, 197, 768)
``encoder``            x (1, 3, 512, 512), tokens (1,197,768)  planes (1, 96, 256, 256)
``renderer-<preset>``  planes (1, 96, 256, 256), camera (1,25) image (1, 3, S, S), image_raw (1, 3, R, R),
                                                              image_depth (1, 1, R, R)
=====================  =====================================  ==========================================

A graph exported for batching (``max_batch`` > 1) has a dynamic first dimension on every
input and output and is otherwise the same. S and R come from the preset (:mod:`streamfx.models.renderer.presets`). The modules wrap the
reference (float32) StreamFX modules: backends choose their own precision (OpenVINO bf16,
TensorRT FP16). The renderer graphs use 4-D GridSample only and no searchsorted.
"""

from __future__ import annotations

import torch
from torch import nn

from ..models.renderer.presets import PRESETS, get_preset
from ..models.threedpe import INPUT_SIZE, PLANES_SHAPE, REF_SIZE, TOKENS_SHAPE, ThreeDPE
from .base import GraphSpec, TensorSpec

RENDERER_PREFIX = "renderer-"


class UnknownGraphError(ValueError):
    """A graph name that is not ``reference``, ``encoder`` or ``renderer-<preset>``."""


def graph_names(presets: tuple[str, ...] | list[str] | None = None) -> list[str]:
    """``reference``, ``encoder`` and one renderer graph per preset (all presets by default)."""
    presets = list(PRESETS) if presets is None else list(presets)
    for p in presets:
        get_preset(p)  # raises UnknownPresetError on a bad name
    return ["reference", "encoder", *(RENDERER_PREFIX + p for p in presets)]


def graph_spec(name: str, max_batch: int = 1) -> GraphSpec:
    """I/O of a graph at batch 1; ``max_batch`` > 1 marks a graph exported with a dynamic
    batch dimension that backends build for 1..max_batch rows (``meta["max_batch"]``)."""
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    meta = {"max_batch": max_batch}
    if name == "reference":
        return GraphSpec(name, (TensorSpec("ref224", (1, 3, REF_SIZE, REF_SIZE)),),
                         (TensorSpec("tokens", (1, *TOKENS_SHAPE)),), meta=meta)
    if name == "encoder":
        return GraphSpec(name, (TensorSpec("x", (1, 3, INPUT_SIZE, INPUT_SIZE)), TensorSpec("tokens", (1, *TOKENS_SHAPE))),
                         (TensorSpec("planes", (1, *PLANES_SHAPE)),), meta=meta)
    if name.startswith(RENDERER_PREFIX):
        p = get_preset(name[len(RENDERER_PREFIX):])
        r = p.neural_resolution
        return GraphSpec(
            name,
            (TensorSpec("planes", (1, *PLANES_SHAPE)), TensorSpec("camera", (1, 25))),
            (TensorSpec("image", (1, 3, p.output_size, p.output_size)), TensorSpec("image_raw", (1, 3, r, r)),
             TensorSpec("image_depth", (1, 1, r, r))),
            meta={"preset": p.name, **meta},
        )
    raise UnknownGraphError(f"unknown graph {name!r}; use reference, encoder or {RENDERER_PREFIX}<preset>")


class ReferenceGraph(nn.Module):
    """ref224 (1, 3, 224, 224) ImageNet-normalised -> tokens (1, 197, 768)."""

    def __init__(self, model: ThreeDPE) -> None:
        super().__init__()
        self.vit = model.vit

    def forward(self, ref224: torch.Tensor) -> torch.Tensor:
        return self.vit(ref224)


class EncoderGraph(nn.Module):
    """x (1, 3, 512, 512) in [-1, 1], tokens (1, 197, 768) -> planes (1, 96, 256, 256).

    The coordinate-folded float32 encoder (:class:`~streamfx.models.encoder.fast.FastEncoder`):
    its pixel-index channels are a precomputed float32 map, so a backend that runs the graph
    in bf16 (OpenVINO on bf16 hardware) never rounds the indices 0..511 to bf16.
    """

    def __init__(self, model: ThreeDPE) -> None:
        super().__init__()
        from ..models.encoder.fast import FastEncoder

        self.encoder = FastEncoder(model.encoder, torch.float32)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return self.encoder(x, tokens)


class RendererGraph(nn.Module):
    """planes (1, 96, 256, 256), camera (1, 25) -> image, image_raw, image_depth at one preset."""

    def __init__(self, model: ThreeDPE, preset: str) -> None:
        super().__init__()
        self.renderer = model.renderer
        self.preset = get_preset(preset)

    def forward(self, planes: torch.Tensor, camera: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.renderer(planes, camera, self.preset)
        return out["image"], out["image_raw"], out["image_depth"]


def graph_module(model: ThreeDPE, name: str) -> nn.Module:
    """The export-ready module of graph ``name`` (positional inputs, outputs in spec order).

    The model should be float32: exported graphs carry float32 weights.
    """
    graph_spec(name)  # validates the name
    if name == "reference":
        module: nn.Module = ReferenceGraph(model)
    elif name == "encoder":
        module = EncoderGraph(model)
    else:
        module = RendererGraph(model, name[len(RENDERER_PREFIX):])
    return module.eval()


def example_inputs(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Plausible inputs for checking a graph: images in range, a frontal camera, smooth planes."""
    from ..models.renderer import look_at_camera
    from ..models.renderer.scenes import analytic_planes

    g = torch.Generator().manual_seed(seed)
    spec = graph_spec(name)
    out: dict[str, torch.Tensor] = {}
    for t in spec.inputs:
        if t.name == "camera":
            out[t.name] = look_at_camera(1.5708 + 0.2, 1.5708 - 0.05)
        elif t.name == "planes":
            out[t.name] = analytic_planes(1.0)
        elif t.name == "x":
            out[t.name] = torch.rand(t.shape, generator=g) * 2 - 1
        else:
            out[t.name] = torch.randn(t.shape, generator=g)
    return out
