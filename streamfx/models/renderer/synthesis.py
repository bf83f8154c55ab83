"""StyleGAN2 synthesis layers and blocks ('skip' architecture), for a fixed style vector.

The 3DPE renderer modulates its super-resolution with one learned constant ``w``, the same for
every image, so the modulated (and demodulated) weights are computed from a (1, 512) ``w`` and
applied to the whole batch as an ordinary convolution. This equals EG3D's fused grouped
convolution with ``w`` repeated over the batch. Noise mode is 'none' (the noise buffers exist
only so that official checkpoints load) and ``conv_clamp`` is None as in EG3D's 512 model.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .layers import EqualizedLinear
from .resample import filter2d, setup_filter, upsample2d

LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0)


def modulate(weight: torch.Tensor, styles: torch.Tensor, demodulate: bool) -> torch.Tensor:
    """Scale conv weights by per-input-channel styles, optionally demodulating.

    Args:
        weight: (O, I, k, k); styles: (1, I).

    Returns:
        (O, I, k, k) modulated weights.
    """
    w = weight.unsqueeze(0) * styles.reshape(1, 1, -1, 1, 1)
    if demodulate:
        dcoefs = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()
        w = w * dcoefs.reshape(1, -1, 1, 1, 1)
    return w[0]


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv (optionally with x2 upsampling), bias, leaky ReLU * sqrt(2)."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, *, up: int = 1,
                 kernel_size: int = 3, conv_clamp: float | None = None) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.resolution = resolution
        self.up = up
        self.padding = kernel_size // 2
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", setup_filter())
        self.affine = EqualizedLinear(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        # Unused with noise mode 'none'; kept so that official checkpoints load unchanged.
        self.register_buffer("noise_const", torch.zeros(resolution, resolution))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """x: (B, I, H, W), w: (1, w_dim) -> (B, O, H*up, W*up).

        ``lrelu(y + b) * sqrt(2)`` is computed as ``lrelu(sqrt(2) * y + sqrt(2) * b)`` (leaky ReLU is
        positively homogeneous), with the gain folded into the weights and the bias added inside
        the last convolution, so the activation is a single in-place pass.
        """
        styles = self.affine(w.to(torch.float32))
        weight = (modulate(self.weight, styles, demodulate=True) * LRELU_GAIN).to(x.dtype)
        bias = (self.bias * LRELU_GAIN).to(x.dtype)
        if self.up == 1:
            x = F.conv2d(x, weight, bias, padding=self.padding)
        else:
            # Transposed strided conv, then the low-pass filter (EG3D's conv2d_resample order).
            x = F.conv_transpose2d(x, weight.transpose(0, 1), stride=2)
            x = filter2d(x, self.resample_filter, padding=1, gain=4.0, bias=bias)
        x = F.leaky_relu(x, LRELU_SLOPE, inplace=True)
        if self.conv_clamp is not None:
            x = x.clamp(-self.conv_clamp, self.conv_clamp)
        return x


class ToRGBLayer(nn.Module):
    """Modulated 1x1 conv to RGB, no demodulation, plus bias."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, *, conv_clamp: float | None = None) -> None:
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = EqualizedLinear(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = 1 / math.sqrt(in_channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """x: (B, I, H, W), w: (1, w_dim) -> (B, 3, H, W)."""
        styles = self.affine(w.to(torch.float32)) * self.weight_gain
        weight = modulate(self.weight, styles, demodulate=False).to(x.dtype)
        x = F.conv2d(x, weight, self.bias.to(x.dtype))
        if self.conv_clamp is not None:
            x = x.clamp(-self.conv_clamp, self.conv_clamp)
        return x


class SynthesisBlock(nn.Module):
    """Upsampling block: conv0 (x2), conv1, and a ToRGB added to the upsampled skip image."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, img_channels: int = 3,
                 *, conv_clamp: float | None = None) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.resolution = resolution
        self.register_buffer("resample_filter", setup_filter())
        self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=2, conv_clamp=conv_clamp)
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution, conv_clamp=conv_clamp)
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim, conv_clamp=conv_clamp)

    def forward(self, x: torch.Tensor, img: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            x: (B, in_channels, r/2, r/2) features; img: (B, 3, r/2, r/2) skip image; w: (1, w_dim).

        Returns:
            x (B, out_channels, r, r) and img (B, 3, r, r), r = ``resolution`` for the official input size.
        """
        x = self.conv0(x, w)
        x = self.conv1(x, w)
        img = upsample2d(img, self.resample_filter.to(img.dtype))
        return x, img + self.torgb(x, w).to(img.dtype)
