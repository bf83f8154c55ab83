"""Where to sample along the rays: deterministic coarse depths and importance sampling.

The official code jitters the coarse depths and draws the importance samples at random.
StreamFX renders deterministically (the convention of the reference fixture):

- coarse depth j = linspace(start, end, N)[j] + 0.5 * (end - start) / (N - 1);
- importance sample k uses u = (k + 0.5) / N_importance in the inverse-CDF step.

Everything is batched over rays; the bin search is a comparison-sum (exportable, unlike
``torch.searchsorted``) that returns the same right-sided index.
"""

from __future__ import annotations

import torch


def coarse_depths(ray_start: float, ray_end: float, count: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Depths of the coarse samples, shared by every ray: (count,) float32."""
    delta = (ray_end - ray_start) / (count - 1)
    depths = torch.linspace(ray_start, ray_end, count, dtype=torch.float32, device=device)
    return depths + 0.5 * delta


def stratified_midpoints(count: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The fixed inverse-CDF inputs u_k = (k + 0.5) / count: (count,) float32."""
    return (torch.arange(count, dtype=torch.float64, device=device) + 0.5).div(count).float()


def searchsorted_right(sorted_rows: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Right-sided bin index without ``torch.searchsorted``.

    Args:
        sorted_rows: (N, K), each row non-decreasing.
        values: (N, Q) or (Q,) query values.

    Returns:
        (N, Q) int64: for each query the number of row entries ``<=`` it, which is what
        ``torch.searchsorted(sorted_rows, values, right=True)`` returns.
    """
    if values.ndim == 1:
        values = values.unsqueeze(0)
    return (sorted_rows.unsqueeze(1) <= values.unsqueeze(2)).sum(dim=2)


def smooth_weights(weights: torch.Tensor, floor: float = 0.01) -> torch.Tensor:
    """EG3D's weight smoothing: max-pool(2, stride 1, pad 1), avg-pool(2, stride 1), plus ``floor``.

    Args:
        weights: (N, L) compositing weights of the coarse pass.

    Returns:
        (N, L) smoothed weights.
    """
    pairwise_max = torch.maximum(weights[:, :-1], weights[:, 1:])
    pooled = torch.cat((weights[:, :1], pairwise_max, weights[:, -1:]), dim=1)  # (N, L + 1)
    return (pooled[:, :-1] + pooled[:, 1:]) / 2 + floor


def sample_pdf(bins: torch.Tensor, weights: torch.Tensor, u: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Inverse-CDF sampling of the piecewise-linear distribution given by ``weights``.

    Args:
        bins: (N, K + 2) or (1, K + 2) bin edges (EG3D passes one edge more than it uses).
        weights: (N, K) non-negative bin weights.
        u: (Q,) sample positions in [0, 1).
        eps: added to the weights; bins with a CDF step below it get denominator 1.

    Returns:
        (N, Q) sampled depths.
    """
    n_bins = weights.shape[1]
    weights = weights + eps
    pdf = weights / torch.sum(weights, dim=-1, keepdim=True)
    cdf = torch.cumsum(pdf, dim=-1)
    cdf = torch.cat((torch.zeros_like(cdf[:, :1]), cdf), dim=-1)  # (N, K + 1)

    inds = searchsorted_right(cdf, u)  # (N, Q)
    below = torch.clamp(inds - 1, min=0)
    above = torch.clamp(inds, max=n_bins)

    cdf_below = torch.gather(cdf, 1, below)
    cdf_above = torch.gather(cdf, 1, above)
    bins = bins.expand(cdf.shape[0], -1)
    bins_below = torch.gather(bins, 1, below)
    bins_above = torch.gather(bins, 1, above)

    denom = cdf_above - cdf_below
    denom = torch.where(denom < eps, torch.ones_like(denom), denom)
    return bins_below + (u - cdf_below) / denom * (bins_above - bins_below)


def importance_depths(
    depths: torch.Tensor, weights: torch.Tensor, count: int, *, floor: float = 0.01, eps: float = 1e-5
) -> torch.Tensor:
    """Depths of the fine pass, drawn where the coarse pass found density.

    Args:
        depths: (S,) coarse depths shared by every ray, or (N, S) per ray.
        weights: (N, S - 1) compositing weights of the coarse pass (one per sample interval).
        count: number of importance samples Q.

    Returns:
        (N, Q) fine depths, non-decreasing along each ray.
    """
    if depths.ndim == 1:
        depths = depths.unsqueeze(0)
    weights = smooth_weights(weights.float(), floor)
    mids = 0.5 * (depths[:, :-1] + depths[:, 1:])  # (N or 1, S - 1)
    u = stratified_midpoints(count, device=weights.device)
    return sample_pdf(mids, weights[:, 1:-1], u, eps)

