"""The 3DPE image-to-tri-plane encoder (``Live3DEditingEncoder``, LT mode), minus the
reference ViT, which runs separately (once per prompt) in :mod:`.vit`.

Data flow for x (B, 3, 512, 512) in [-1, 1] and reference tokens (B, 197, 768):

* x5 = cat(x, row index, column index): (B, 5, 512, 512); the coordinate channels are the
  raw pixel indices 0..511 (channel 3 varies along H, channel 4 along W);
* low = ASPP(ResNet trunk(x5)): (B, 256, 64, 64);  features = FeatureBranch(low): (B, 128, 128, 128);
* high = HighBranch(x5): (B, 128, 128, 128);  fused = ReferenceFusion(high, tokens);
* planes = TriplaneHead(fused, features): (B, 96, 256, 256).
"""

from __future__ import annotations

import torch
from torch import nn

from .branches import FeatureBranch, HighBranch
from .final import TriplaneHead
from .reference import ReferenceFusion
from .resnet import ASPPHead, ResNetTrunk


def with_coordinates(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 5, H, W): append the row and column pixel indices."""
    b, _, height, width = x.shape
    rows = torch.arange(height, dtype=x.dtype, device=x.device).view(1, 1, height, 1).expand(b, 1, height, width)
    cols = torch.arange(width, dtype=x.dtype, device=x.device).view(1, 1, 1, width).expand(b, 1, height, width)
    return torch.cat([x, rows, cols], dim=1)


class LiveEncoder(nn.Module):
    """(B, 3, 512, 512) image in [-1, 1] + (B, 197, 768) reference tokens -> (B, 96, 256, 256)."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = ResNetTrunk(in_channels=5)
        self.aspp = ASPPHead(in_channels=128, channels=256)
        self.branch_f = FeatureBranch(in_channels=256, dim=1024, blocks=2)
        self.branch_high = HighBranch(in_channels=5)
        self.fusion = ReferenceFusion(in_channels=128, token_dim=768)
        self.final = TriplaneHead(dim=1024)

    def forward(self, x: torch.Tensor, ref_tokens: torch.Tensor) -> torch.Tensor:
        x5 = with_coordinates(x)
        features = self.branch_f(self.aspp(self.trunk(x5)))
        fused = self.fusion(self.branch_high(x5), ref_tokens)
        return self.final(fused, features)
