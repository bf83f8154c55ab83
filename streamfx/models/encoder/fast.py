"""The fast CPU encoder path (opt-in): bfloat16 weights, channels-last convolutions, and the
constant coordinate channels folded into a precomputed float32 map.

The two first convolutions of the encoder (the ResNet stem and the high branch's first conv)
read 5 channels: RGB and the raw pixel indices 0..511. The index channels are the same for
every frame, so their contribution (plus the bias) is a constant map, computed once in
float64 and kept in float32; per frame only the RGB part runs. Besides saving 2/5 of those
convolutions, this keeps the coordinates exact: bfloat16 cannot hold 0..511 (it rounds 511
to 512), so the plain bfloat16 model loses them.

Everything else is the reference :class:`~.live_encoder.LiveEncoder` with its weights cast
to ``dtype`` and its activations in channels-last memory format (oneDNN's fast layout).
In float32 it is also the exported ``encoder`` graph (:mod:`streamfx.runtime.graphs`), so
that a runtime that lowers the graph to bf16 (OpenVINO) never holds the coordinates in bf16.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from .branches import LEAK, conv_chain
from .live_encoder import LiveEncoder, with_coordinates


class CoordinateFoldedConv(nn.Module):
    """A conv over cat(rgb, rows, cols) computed as conv(rgb) + a constant map.

    Args:
        conv: the 5-channel conv (its weights are read, not kept).
        size: input height = width (512).
        dtype: dtype of the RGB convolution.

    ``forward(rgb (B, 3, H, W)) -> (B, out, H/s, W/s)`` float32 (pre-activation).
    """

    def __init__(self, conv: nn.Conv2d, size: int, dtype: torch.dtype) -> None:
        super().__init__()
        self.stride, self.padding = conv.stride, conv.padding
        device = conv.weight.device  # the map is made where the weights are (a GPU model's on the GPU)
        weight = conv.weight.detach().double()
        self.register_buffer("weight", weight[:, :3].to(dtype).contiguous(memory_format=torch.channels_last))
        coords = with_coordinates(torch.zeros(1, 3, size, size, dtype=torch.float64, device=device))
        coords[:, :3] = 0
        bias = None if conv.bias is None else conv.bias.detach().double()
        const = F.conv2d(coords, weight, bias, stride=conv.stride, padding=conv.padding)
        self.register_buffer("const", const.float().contiguous(memory_format=torch.channels_last))

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        return F.conv2d(rgb, self.weight, None, stride=self.stride, padding=self.padding).float() + self.const


class _FoldedTrunk(nn.Module):
    """ResNet trunk whose stem is a :class:`CoordinateFoldedConv`."""

    def __init__(self, trunk: nn.Module, stem: CoordinateFoldedConv, dtype: torch.dtype) -> None:
        super().__init__()
        self.stem, self.layer1, self.layer2, self.dtype = stem, trunk.layer1, trunk.layer2, dtype

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(rgb)).to(self.dtype)
        x = F.max_pool2d(x, 3, stride=2, padding=1)
        return self.layer2(self.layer1(x))


class _FoldedHighBranch(nn.Module):
    """High branch whose first conv is a :class:`CoordinateFoldedConv`."""

    def __init__(self, branch: nn.Module, first: CoordinateFoldedConv, dtype: torch.dtype) -> None:
        super().__init__()
        self.first, self.rest, self.dtype = first, branch.convs[1:], dtype

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        return conv_chain(self.rest, F.leaky_relu(self.first(rgb), LEAK).to(self.dtype))


class FastEncoder(nn.Module):
    """(B, 3, 512, 512) in [-1, 1] + tokens (B, 197, 768) -> planes (B, 96, 256, 256) float32,
    channels-last memory (what :class:`~streamfx.models.renderer.fast.FastRenderer` reads best).

    Args:
        encoder: a loaded reference encoder (copied, not modified).
        dtype: compute dtype (bfloat16 for speed; float32 gives the reference within rounding).
        size: input size (512).
    """

    def __init__(self, encoder: LiveEncoder, dtype: torch.dtype = torch.bfloat16, size: int = 512,
                 channels_last: bool = False) -> None:
        super().__init__()
        source = copy.deepcopy(encoder).float()
        self.dtype = dtype
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        stem = CoordinateFoldedConv(source.trunk.stem, size, dtype)
        first = CoordinateFoldedConv(source.branch_high.convs[0], size, dtype)
        converted = source.to(dtype).to(memory_format=self.memory_format)
        self.trunk = _FoldedTrunk(converted.trunk, stem, dtype)
        self.branch_high = _FoldedHighBranch(converted.branch_high, first, dtype)
        self.aspp, self.branch_f = converted.aspp, converted.branch_f
        self.fusion, self.final = converted.fusion, converted.final
        self.requires_grad_(False).eval()

    def forward(self, x: torch.Tensor, ref_tokens: torch.Tensor) -> torch.Tensor:
        """Traceable for ONNX export; run it under ``torch.inference_mode()`` for speed."""
        rgb = x.to(self.dtype).contiguous(memory_format=self.memory_format)
        tokens = ref_tokens.to(self.dtype).expand(x.shape[0], -1, -1)
        features = self.branch_f(self.aspp(self.trunk(rgb)))
        fused = self.fusion(self.branch_high(rgb), tokens)
        return self.final(fused, features).float().contiguous(memory_format=torch.channels_last)
