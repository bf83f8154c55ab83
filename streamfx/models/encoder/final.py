"""The tri-plane head (3DPE's ``EncoderFinal``, LT mode).

cat(fused high (B, 128, 128, 128), F features (B, 128, 128, 128)) -> conv 3x3 256->256 ->
overlapping patch embed (7x7, stride 2) to 64x64 tokens of 1024 -> one SegFormer block
(2 heads, MLP ratio 2, spatial reduction 2) -> pixel shuffle x2 (B, 256, 128, 128) ->
conv 256, leaky, bilinear x2 (align_corners=True), conv 128, leaky, conv 128, leaky,
conv 96, leaky, conv 96 -> tri-planes (B, 96, 256, 256) = 3 planes x 32 channels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .branches import LEAK, upsample2x_aligned
from .segformer import OverlapPatchEmbed, SegFormerBlock, tokens_to_map


class TriplaneHead(nn.Module):
    def __init__(self, dim: int = 1024) -> None:
        super().__init__()
        self.fuse = nn.Conv2d(256, 256, 3, padding=1)
        self.embed = OverlapPatchEmbed(256, dim, kernel=7, stride=2)
        self.block = SegFormerBlock(dim, heads=2, mlp_ratio=2, sr_ratio=2)
        widths = [(dim // 4, 256), (256, 128), (128, 128), (128, 96), (96, 96)]
        self.head = nn.ModuleList(nn.Conv2d(i, o, 3, padding=1) for i, o in widths)

    def forward(self, high_ref: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """high_ref, features: (B, 128, h, w) -> planes (B, 96, 2h, 2w)."""
        x = self.fuse(torch.cat([high_ref, features], dim=1))
        x, height, width = self.embed(x)
        x = F.pixel_shuffle(tokens_to_map(self.block(x, height, width), height, width), 2)
        x = upsample2x_aligned(F.leaky_relu(self.head[0](x), LEAK))
        for conv in self.head[1:-1]:
            x = F.leaky_relu(conv(x), LEAK)
        return self.head[-1](x)
