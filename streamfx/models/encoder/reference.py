"""Reference fusion (3DPE's ``EncoderRef`` without its ViT): parameter-free cross-attention
from the high-frequency features of the input to the reference tokens.

high (B, 128, 128, 128) -> 3x3 conv to 96 -> overlapping patch embed (7x7, stride 4) to
1024 query tokens of 768 -> single-head softmax(Q K^T / sqrt(768)) V with K = V = the
reference tokens (B, 197, 768) -> (B, 768, 32, 32) -> pixel shuffle x2 (B, 192, 64, 64)
-> 1x1 conv without bias (B, 512, 64, 64) -> pixel shuffle x2 -> (B, 128, 128, 128).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .segformer import OverlapPatchEmbed, tokens_to_map


class ReferenceFusion(nn.Module):
    def __init__(self, in_channels: int = 128, token_dim: int = 768) -> None:
        super().__init__()
        self.token_dim = token_dim
        self.pre_conv = nn.Conv2d(in_channels, 96, 3, padding=1)
        self.embed = OverlapPatchEmbed(96, token_dim, kernel=7, stride=4)
        self.proj_tail = nn.Conv2d(token_dim // 4, 512, 1, bias=False)

    def forward(self, high: torch.Tensor, ref_tokens: torch.Tensor) -> torch.Tensor:
        """high: (B, 128, H, W), ref_tokens: (B, T, 768) -> (B, 128, H, W)."""
        queries, height, width = self.embed(self.pre_conv(high))
        fused = F.scaled_dot_product_attention(
            queries.unsqueeze(1), ref_tokens.unsqueeze(1), ref_tokens.unsqueeze(1),
            scale=self.token_dim ** -0.5,
        ).squeeze(1)  # (B, h*w, 768)
        x = F.pixel_shuffle(tokens_to_map(fused, height, width), 2)
        return F.pixel_shuffle(self.proj_tail(x), 2)
