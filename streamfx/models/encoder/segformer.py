"""SegFormer (mix-transformer) pieces used by the 3DPE encoder.

* :class:`OverlapPatchEmbed` - a strided convolution with "same" padding, then LayerNorm
  over channels; returns a token sequence and its grid size.
* :class:`SegFormerBlock` - pre-norm transformer block whose attention may shrink its
  keys/values spatially by ``sr_ratio`` (efficient self-attention) and whose MLP has a
  depth-wise 3x3 convolution between its two linear layers (Mix-FFN).

Conventions (as in the mix-transformer of segmentation_models.pytorch 0.3.3): LayerNorm
eps 1e-5, exact (erf) GELU, attention scale ``head_dim ** -0.5``, no bias on q and kv.
Token sequences are row-major over the (H, W) grid.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LN_EPS = 1e-5


def tokens_to_map(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, H*W, C) -> (B, C, H, W)."""
    return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], height, width)


def map_to_tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H*W, C)."""
    return x.flatten(2).transpose(1, 2)


class OverlapPatchEmbed(nn.Module):
    """Conv(k, stride, padding=k//2) then LayerNorm: (B, Cin, H, W) -> (B, H'*W', dim)."""

    def __init__(self, in_channels: int, dim: int, kernel: int = 7, stride: int = 4) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, kernel, stride=stride, padding=kernel // 2)
        self.norm = nn.LayerNorm(dim, eps=LN_EPS)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        x = self.proj(x)
        height, width = int(x.shape[2]), int(x.shape[3])
        return self.norm(map_to_tokens(x)), height, width


class EfficientSelfAttention(nn.Module):
    """Multi-head self-attention; keys/values come from a ``sr_ratio``-strided conv of the
    token map (plus LayerNorm) when ``sr_ratio > 1``."""

    def __init__(self, dim: int, heads: int, sr_ratio: int = 1) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.q = nn.Linear(dim, dim, bias=False)
        self.kv = nn.Linear(dim, 2 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)
        self.sr_ratio = sr_ratio
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, sr_ratio, stride=sr_ratio)
            self.sr_norm = nn.LayerNorm(dim, eps=LN_EPS)

    def forward(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """x: (B, N=H*W, C) -> (B, N, C)."""
        b, n, c = x.shape
        h, d = self.heads, c // self.heads
        q = self.q(x).reshape(b, n, h, d).transpose(1, 2)  # (B, h, N, d)
        source = x
        if self.sr_ratio > 1:
            source = self.sr_norm(map_to_tokens(self.sr(tokens_to_map(x, height, width))))
        kv = self.kv(source).reshape(b, -1, 2, h, d).permute(2, 0, 3, 1, 4)  # (2, B, h, M, d)
        out = F.scaled_dot_product_attention(q, kv[0], kv[1], scale=self.scale)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class MixFFN(nn.Module):
    """Linear -> depth-wise 3x3 conv on the token map -> GELU -> Linear."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """x: (B, H*W, C) -> (B, H*W, C)."""
        x = self.fc1(x)
        x = map_to_tokens(self.dwconv(tokens_to_map(x, height, width)))
        return self.fc2(F.gelu(x))


class SegFormerBlock(nn.Module):
    """x + attn(norm1(x)); x + ffn(norm2(x)) on a (B, H*W, C) token sequence."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 2.0, sr_ratio: int = 1) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = EfficientSelfAttention(dim, heads, sr_ratio)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = MixFFN(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), height, width)
        return x + self.mlp(self.norm2(x), height, width)
