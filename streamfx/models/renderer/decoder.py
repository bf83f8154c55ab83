"""OSGDecoder: tri-plane features -> density and 32 colour/feature channels."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import EqualizedLinear

HIDDEN = 64
FEATURES = 32


class OSGDecoder(nn.Module):
    """Mean over the three planes, FC 32->64, softplus, FC 64->33.

    Output channel 0 is the raw density; channels 1..32 go through
    ``sigmoid * (1 + 2*0.001) - 0.001`` (MipNeRF's widened sigmoid).
    Module names (``net.0``, ``net.2``) match the official checkpoint.
    """

    def __init__(self, n_features: int = FEATURES, out_features: int = FEATURES, lr_multiplier: float = 1.0) -> None:
        super().__init__()
        self.net = nn.Sequential(
            EqualizedLinear(n_features, HIDDEN, lr_multiplier=lr_multiplier),
            nn.Softplus(),
            EqualizedLinear(HIDDEN, 1 + out_features, lr_multiplier=lr_multiplier),
        )

    def forward(self, plane_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            plane_features: (B, 3, C, M) features of M points on each plane.

        Returns:
            rgb (B, 32, M) in [-0.001, 1.001] and sigma (B, 1, M) (before the density activation).
        """
        x = plane_features.mean(dim=1)  # (B, C, M)
        x = self.net[0].forward_channels_first(x)
        x = F.softplus(x)
        x = self.net[2].forward_channels_first(x)
        rgb = torch.sigmoid(x[:, 1:]) * (1 + 2 * 0.001) - 0.001
        return rgb, x[:, :1]
