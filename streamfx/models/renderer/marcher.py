"""MipRayMarcher: midpoint volume compositing of samples along each ray (EG3D).

EG3D composites interval midpoints: interval s between samples s and s+1 has density
``softplus((sigma_s + sigma_{s+1}) / 2 - 1)``, colour ``(c_s + c_{s+1}) / 2`` and weight
``alpha_s * T_s``. The colour sum can be rewritten per sample: sample s contributes
``c_s * (w_{s-1} + w_s) / 2`` (:func:`sample_coefficients`). The renderer uses that form so the
32-channel colours never have to be concatenated or reordered by depth; :func:`composite` is the
direct formulation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def alpha_weights(densities: torch.Tensor, depths: torch.Tensor) -> torch.Tensor:
    """Compositing weight of each sample interval.

    Args:
        densities: (..., S) raw densities at the samples.
        depths: (..., S) sample depths, ascending (broadcastable against ``densities``).

    Returns:
        (..., S - 1) weights: density ``softplus(mid - 1)`` at the interval midpoints, alpha
        ``1 - exp(-density * delta)``, times the transmittance in front of the interval.
    """
    deltas = depths[..., 1:] - depths[..., :-1]
    densities_mid = (densities[..., :-1] + densities[..., 1:]) / 2
    densities_mid = F.softplus(densities_mid - 1)
    alpha = 1 - torch.exp(-(densities_mid * deltas))
    transmittance = exclusive_cumprod(1 - alpha + 1e-10)
    return alpha * transmittance


def exclusive_cumprod(x: torch.Tensor) -> torch.Tensor:
    """``cumprod([1, x_0, ..., x_{S-2}])`` along the last dim for positive x: (..., S) -> (..., S).

    Computed as ``exp(cumsum(log x))``: ONNX has CumSum but no cumulative product.
    """
    log_x = torch.log(x[..., :-1])
    return torch.exp(torch.cat((torch.zeros_like(x[..., :1]), torch.cumsum(log_x, dim=-1)), dim=-1))


def sample_coefficients(weights: torch.Tensor) -> torch.Tensor:
    """Per-sample colour coefficients ``(w_{s-1} + w_s) / 2`` (w outside 0..S-2 is 0): (..., S-1) -> (..., S)."""
    return (F.pad(weights, (1, 0)) + F.pad(weights, (0, 1))) / 2


def composite_depth(weights: torch.Tensor, depths: torch.Tensor) -> torch.Tensor:
    """Expected depth of the interval midpoints, clamped to the range of all ``depths``.

    Args:
        weights: (..., S - 1); depths: (..., S).

    Returns:
        (...) depths; a ray with zero total weight gets the largest depth.
    """
    depths_mid = (depths[..., :-1] + depths[..., 1:]) / 2
    depth = torch.sum(weights * depths_mid, dim=-1) / weights.sum(dim=-1)
    # ``depth != depth`` is isnan written with an Equal-family op (no ONNX IsNaN in the graph).
    depth = torch.where(depth != depth, torch.full_like(depth, float("inf")), depth)
    return torch.clamp(depth, torch.min(depths), torch.max(depths))


def finish_rgb(rgb: torch.Tensor, weight_total: torch.Tensor, white_back: bool = False) -> torch.Tensor:
    """Optional white background, then map [0, 1] to [-1, 1]."""
    if white_back:
        rgb = rgb + 1 - weight_total
    return rgb * 2 - 1


def composite(
    colors: torch.Tensor, densities: torch.Tensor, depths: torch.Tensor, *, white_back: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Render the (depth-sorted) samples of each ray, EG3D's formulation.

    Args:
        colors: (B, C, R, S) per-sample colours/features in [0, 1].
        densities: (B, 1, R, S) raw densities.
        depths: (B, 1, R, S) ascending sample depths.

    Returns:
        features (B, C, R) mapped to [-1, 1], depth (B, 1, R) clamped to the sample range,
        weights (B, 1, R, S - 1).
    """
    weights = alpha_weights(densities, depths)
    colors_mid = (colors[..., :-1] + colors[..., 1:]) / 2
    rgb = torch.sum(weights * colors_mid, dim=-1)
    return finish_rgb(rgb, weights.sum(dim=-1), white_back), composite_depth(weights, depths), weights
