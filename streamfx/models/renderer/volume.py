"""Volume rendering along camera rays: the one ray marcher of the reference and the fast renderer.

Both renderers march the same rays with the same samples and composite them the same way;
they differ only in how a batch of points becomes colours and densities (a
:data:`PointDecoder`): the reference reads the tri-planes with ``grid_sample`` and runs the
official decoder module, the fast path reads them as one ``embedding_bag`` and runs the
decoder as matrix products in the precision it was given.

Per ray: coarse samples at the bin midpoints of [ray_start, ray_end]; if the preset asks,
importance samples drawn deterministically from the coarse weights; all samples sorted by
depth (only the 1-channel density and the depths are reordered, the colours stay in sample
order and each gets its compositing coefficient scattered back); EG3D's midpoint compositing.
Sampling, weights and compositing are float32 whatever the decoder's precision.
"""

from __future__ import annotations

from typing import Callable

import torch

from .cameras import camera_rays
from .config import RenderingOptions
from .marcher import alpha_weights, composite_depth, finish_rgb, sample_coefficients
from .presets import RenderPreset
from .sampling import coarse_depths, importance_depths

#: (origins (B, 1, 1, 3), directions (B, R*R, 1, 3), depths (B or 1, R*R or 1, S)), world units
#: -> colours (B*R*R, S, C) float32 in about [0, 1] and raw densities (B*R*R, S) float32
PointDecoder = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def render_volume(decode: PointDecoder, camera: torch.Tensor, preset: RenderPreset, options: RenderingOptions,
                  channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Ray-march ``preset.neural_resolution``^2 rays of ``camera`` through what ``decode`` reads.

    Args:
        decode: the renderer's point decoder (see :data:`PointDecoder`), giving ``channels`` colours.
        camera: (B, 25) EG3D labels.
        preset: rays and samples per ray.
        options: the scene's fixed options (depth range, importance sampling, background).
        channels: colour channels the decoder returns (32 for super-resolution, 3 without).

    Returns:
        features (B, channels, R, R) in about [-1, 1] and depth (B, 1, R, R).
    """
    batch, res = camera.shape[0], preset.neural_resolution
    origins, directions = camera_rays(camera, res)  # (B, 1, 3), (B, R*R, 3)
    origins, directions = origins.unsqueeze(2), directions.unsqueeze(2)  # (B, 1, 1, 3), (B, RR, 1, 3)
    rays = directions.shape[1]
    depths = coarse_depths(options.ray_start, options.ray_end, preset.coarse_samples, device=camera.device)
    colors, sigma = decode(origins, directions, depths.view(1, 1, -1))
    depths_all = depths.view(1, -1)  # shared by every ray
    weights = alpha_weights(sigma, depths_all)  # (B*RR, S - 1)
    if preset.importance_samples == 0:
        rgb = torch.bmm(sample_coefficients(weights).unsqueeze(1), colors).squeeze(1)
    else:
        fine = importance_depths(depths, weights, preset.importance_samples,
                                 floor=options.weight_floor, eps=options.importance_eps)  # (B*RR, Q)
        colors_fine, sigma_fine = decode(origins, directions, fine.view(batch, rays, -1))
        unsorted = torch.cat((depths_all.expand(batch * rays, -1), fine), dim=-1)
        depths_all, order = torch.sort(unsorted, dim=-1)
        weights = alpha_weights(torch.gather(torch.cat((sigma, sigma_fine), dim=-1), -1, order), depths_all)
        coeffs = torch.zeros_like(unsorted).scatter(-1, order, sample_coefficients(weights))
        n = preset.coarse_samples
        rgb = (torch.bmm(coeffs[:, None, :n], colors) + torch.bmm(coeffs[:, None, n:], colors_fine)).squeeze(1)
    features = finish_rgb(rgb, weights.sum(dim=-1, keepdim=True), options.white_back)  # (B*RR, C)
    depth = composite_depth(weights, depths_all)  # (B*RR,)
    features = features.reshape(batch, res, res, channels).permute(0, 3, 1, 2)
    return features, depth.reshape(batch, 1, res, res)
