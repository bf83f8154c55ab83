"""SuperresolutionHybrid8XDC: EG3D's 128 -> 512 super-resolution, module names as official."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .synthesis import SynthesisBlock

W_DIM = 512


def resize(x: torch.Tensor, size: int, antialias: bool = True) -> torch.Tensor:
    """Bilinear resize (align_corners=False) of (B, C, H, W) to (B, C, size, size).

    Antialiasing is applied only when shrinking; when enlarging it is the same as plain bilinear.
    """
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    shrink = size < x.shape[-1] or size < x.shape[-2]
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=antialias and shrink)


class SuperresolutionHybrid8XDC(nn.Module):
    """Two StyleGAN2 'skip' blocks: 128 -> 256 (256 channels) -> 512 (128 channels)."""

    def __init__(self, channels: int = 32, img_resolution: int = 512, *, input_resolution: int = 128,
                 sr_antialias: bool = True, conv_clamp: float | None = None) -> None:
        super().__init__()
        if img_resolution != 512:
            raise ValueError(f"SuperresolutionHybrid8XDC needs img_resolution 512, got {img_resolution}")
        self.input_resolution = input_resolution
        self.sr_antialias = sr_antialias
        self.block0 = SynthesisBlock(channels, 256, W_DIM, resolution=256, conv_clamp=conv_clamp)
        self.block1 = SynthesisBlock(256, 128, W_DIM, resolution=512, conv_clamp=conv_clamp)

    def forward(self, rgb: torch.Tensor, x: torch.Tensor, w: torch.Tensor, *, blocks: int = 2,
                input_resolution: int | None = None) -> torch.Tensor:
        """
        Args:
            rgb: (B, 3, R, R) raw image; x: (B, 32, R, R) raw features; w: (1, 512) style.
            blocks: 2 = full (4x the input size), 1 = stop after block0 (2x).
            input_resolution: size both inputs are resized to first (default 128, as official).

        Returns:
            (B, 3, 4*in, 4*in) or (B, 3, 2*in, 2*in) image in about [-1, 1].
        """
        size = input_resolution or self.input_resolution
        x = resize(x, size, self.sr_antialias)
        rgb = resize(rgb, size, self.sr_antialias)
        x, img = self.block0(x, rgb, w)
        if blocks >= 2:
            x, img = self.block1(x, img, w)
        return img
