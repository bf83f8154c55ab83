"""The two feature branches of the 3DPE encoder (LT mode).

* :class:`FeatureBranch` (3DPE's ``EncoderF``): low-resolution ASPP features
  (B, 256, 64, 64) -> overlapping patch embed (7x7, stride 2) to 32x32 tokens of 1024 ->
  2 SegFormer blocks (4 heads, MLP ratio 2, no spatial reduction) -> pixel shuffle x2
  (B, 256, 64, 64) -> bilinear x2 (align_corners=True) (B, 256, 128, 128) -> conv 3x3 to
  128, leaky ReLU, conv 3x3 -> (B, 128, 128, 128).
* :class:`HighBranch` (3DPE's ``EncoderEhigh``): the 5-channel input
  (B, 5, 512, 512) -> conv 7x7/2 to 64, conv 3x3/2 to 128, five more 3x3 convs at 128,
  leaky ReLU (slope 0.01) between them and none after the last -> (B, 128, 128, 128).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .segformer import OverlapPatchEmbed, SegFormerBlock, tokens_to_map

LEAK = 0.01


def upsample2x_aligned(x: torch.Tensor) -> torch.Tensor:
    """Bilinear x2 with align_corners=True (``nn.UpsamplingBilinear2d``), static size."""
    return F.interpolate(x, size=(x.shape[2] * 2, x.shape[3] * 2), mode="bilinear", align_corners=True)


def conv_chain(convs, x: torch.Tensor) -> torch.Tensor:
    """Apply ``convs`` in turn with a leaky ReLU between them (none after the last)."""
    last = len(convs) - 1
    for i, conv in enumerate(convs):
        x = conv(x)
        if i < last:
            x = F.leaky_relu(x, LEAK)
    return x

class FeatureBranch(nn.Module):
    def __init__(self, in_channels: int = 256, dim: int = 1024, blocks: int = 2) -> None:
        super().__init__()
        self.embed = OverlapPatchEmbed(in_channels, dim, kernel=7, stride=2)
        self.blocks = nn.ModuleList(SegFormerBlock(dim, heads=4, mlp_ratio=2, sr_ratio=1) for _ in range(blocks))
        self.conv1 = nn.Conv2d(dim // 4, 128, 3, padding=1)
        self.conv2 = nn.Conv2d(128, 128, 3, padding=1)

    def forward(self, low: torch.Tensor) -> torch.Tensor:
        """low: (B, 256, h, w) -> (B, 128, 2h, 2w)."""
        x, height, width = self.embed(low)
        for block in self.blocks:
            x = block(x, height, width)
        x = upsample2x_aligned(F.pixel_shuffle(tokens_to_map(x, height, width), 2))
        return self.conv2(F.leaky_relu(self.conv1(x), LEAK))


class HighBranch(nn.Module):
    def __init__(self, in_channels: int = 5) -> None:
        super().__init__()
        convs = [nn.Conv2d(in_channels, 64, 7, stride=2, padding=3), nn.Conv2d(64, 128, 3, stride=2, padding=1)]
        convs += [nn.Conv2d(128, 128, 3, padding=1) for _ in range(5)]
        self.convs = nn.ModuleList(convs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 5, H, W) -> (B, 128, H/4, W/4)."""
        return conv_chain(self.convs, x)
