"""Equalized-learning-rate fully connected layer (StyleGAN2's ``FullyConnectedLayer``).

The stored weight is scaled at run time by ``lr_multiplier / sqrt(in_features)`` and the bias by
``lr_multiplier``, so checkpoints hold the unscaled values.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class EqualizedLinear(nn.Module):
    """``y = x @ (weight * gain).T + bias * bias_gain`` with ``weight: (out, in)``."""

    def __init__(self, in_features: int, out_features: int, *, lr_multiplier: float = 1.0, bias_init: float = 0.0) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init)))
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def scaled_weight(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """(out, in) weight with the run-time gain applied."""
        weight = self.weight if dtype is None else self.weight.to(dtype)
        return weight * self.weight_gain

    def scaled_bias(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """(out,) bias with the run-time gain applied."""
        bias = self.bias if dtype is None else self.bias.to(dtype)
        return bias if self.bias_gain == 1 else bias * self.bias_gain

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, in) -> (N, out)."""
        return torch.addmm(self.scaled_bias(x.dtype).unsqueeze(0), x, self.scaled_weight(x.dtype).t())

    def forward_channels_first(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, in, M) -> (B, out, M), the same map applied to every column."""
        return torch.matmul(self.scaled_weight(x.dtype), x) + self.scaled_bias(x.dtype).unsqueeze(-1)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"
