"""FIR resampling of StyleGAN2 (``upfirdn2d``) with plain, exportable convolutions.

All filters here are the separable low-pass ``[1, 3, 3, 1]`` (outer product, normalised to sum 1).
Because it is symmetric, true convolution and correlation coincide, so the functions below take
the filter as is (no flip; a flip would also block ONNX constant folding). They assume a
symmetric filter.

- ``upsample2d``: insert zeros (x2), pad (2, 1), filter with gain 4 — one depthwise
  ``conv_transpose2d`` with stride 2 and padding 1.
- ``filter2d``: pad and filter — one depthwise ``conv2d``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

LOWPASS_TAPS = (1.0, 3.0, 3.0, 1.0)


def setup_filter(taps: tuple[float, ...] = LOWPASS_TAPS) -> torch.Tensor:
    """2-D filter from 1-D taps: (K, K) outer product normalised to sum 1, float32."""
    f = torch.tensor(taps, dtype=torch.float32)
    f = torch.outer(f, f)
    return f / f.sum()


def _depthwise(f: torch.Tensor, channels: int, gain: float, dtype: torch.dtype) -> torch.Tensor:
    return (f * gain).to(dtype)[None, None].expand(channels, 1, *f.shape)


def upsample2d(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """x2 upsampling with the FIR filter ``f`` (K = 4): (B, C, H, W) -> (B, C, 2H, 2W)."""
    channels = int(x.shape[1])  # static, also in graphs exported with a dynamic batch
    weight = _depthwise(f, channels, 4.0, x.dtype)
    return F.conv_transpose2d(x, weight, stride=2, padding=1, groups=channels)


def filter2d(
    x: torch.Tensor, f: torch.Tensor, padding: int, gain: float = 1.0, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """Zero-pad by ``padding`` on every side and convolve with ``f * gain``, per channel, plus ``bias`` (C,)."""
    channels = int(x.shape[1])
    weight = _depthwise(f, channels, gain, x.dtype)
    return F.conv2d(x, weight, bias, padding=padding, groups=channels)
