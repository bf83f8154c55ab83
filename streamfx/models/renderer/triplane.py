"""Tri-plane feature lookup, with EG3D's plane axes exactly.

EG3D projects a point (x, y, z) onto its three planes with the inverse of the plane-axes
matrices, which gives the 2-D coordinates (x, y), (x, z) and (z, x). The third plane is read
as (z, x), not (y, z): that is EG3D's quirk, and the trained weights depend on it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Coordinate pairs (grid x = width axis, grid y = height axis) per plane, EG3D order.
PLANE_COORDS: tuple[tuple[int, int], ...] = ((0, 1), (0, 2), (2, 0))
N_PLANES = len(PLANE_COORDS)


def project_onto_planes(points: torch.Tensor) -> torch.Tensor:
    """2-D coordinates of ``points`` on the three planes.

    Args:
        points: (B, M, 3) coordinates already scaled to [-1, 1] over the box.

    Returns:
        (B, 3, M, 2) grid coordinates, plane-major.
    """
    # slices, not ``points[..., [a, b]]``: list indexing makes an index tensor on the host and
    # copies it to the device on every call, which a CUDA graph capture does not allow
    return torch.stack([torch.stack((points[..., a], points[..., b]), dim=-1) for a, b in PLANE_COORDS], dim=1)


def sample_triplanes(planes: torch.Tensor, points: torch.Tensor, box_warp: float = 1.0) -> torch.Tensor:
    """Bilinear features of the three planes at ``points`` (zeros outside the box).

    Args:
        planes: (B, 3, C, H, W) tri-planes.
        points: (B, M, 3) world coordinates; the box is [-box_warp/2, box_warp/2]^3.

    Returns:
        (B, 3, C, M) float32 features, channels before points (no transposes of the big tensor).
        Sampling is always done in float32: in bfloat16 the grid coordinates would be off by up to
        half a texel.
    """
    batch, n_planes, channels, height, width = planes.shape
    grid = project_onto_planes((2.0 / box_warp) * points.float())  # (B, 3, M, 2)
    grid = grid.reshape(batch * n_planes, 1, -1, 2)
    planes = planes.float()
    features = F.grid_sample(
        planes.reshape(batch * n_planes, channels, height, width),
        grid,
        mode="bilinear",
        padding_mode="zeros",
        align_corners=False,
    )  # (B*3, C, 1, M)
    return features.reshape(batch, n_planes, channels, -1)
