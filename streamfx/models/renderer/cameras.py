"""EG3D cameras: 25-value labels and the rays they cast.

A label is ``cam2world`` (4x4, OpenCV convention: x right, y down, z forward) flattened row-major,
followed by the 3x3 intrinsics normalised by the image size (so ``cx = cy = 0.5``).
"""

from __future__ import annotations

import math

import torch

from .errors import RenderInputError

LABEL_SIZE = 25


def check_camera(camera: torch.Tensor, batch_size: int | None = None) -> None:
    """Raise :class:`RenderInputError` unless ``camera`` is a float (B, 25) tensor (skipped while tracing)."""
    if torch.jit.is_tracing():
        return
    if not isinstance(camera, torch.Tensor) or camera.ndim != 2 or camera.shape[1] != LABEL_SIZE:
        shape = tuple(camera.shape) if isinstance(camera, torch.Tensor) else type(camera).__name__
        raise RenderInputError(f"camera must have shape (B, {LABEL_SIZE}), got {shape}")
    if not camera.is_floating_point():
        raise RenderInputError(f"camera must be a float tensor, got {camera.dtype}")
    if batch_size is not None and camera.shape[0] != batch_size:
        raise RenderInputError(f"camera batch {camera.shape[0]} does not match planes batch {batch_size}")


def camera_rays(camera: torch.Tensor, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays through the pixel centres of a ``resolution`` x ``resolution`` image.

    Args:
        camera: (B, 25) EG3D labels.
        resolution: rays per side R.

    Returns:
        origins (B, 1, 3), the camera centre (broadcast over rays), and unit directions
        (B, R*R, 3), ray ``i * R + j`` going through row i, column j.
    """
    check_camera(camera)
    camera = camera.float()
    batch = camera.shape[0]
    cam2world = camera[:, :16].reshape(batch, 4, 4)
    intrinsics = camera[:, 16:25].reshape(batch, 3, 3)
    fx, fy = intrinsics[:, 0, 0, None], intrinsics[:, 1, 1, None]
    cx, cy = intrinsics[:, 0, 2, None], intrinsics[:, 1, 2, None]
    skew = intrinsics[:, 0, 1, None]

    steps = torch.arange(resolution, dtype=torch.float32, device=camera.device) * (1.0 / resolution) + (0.5 / resolution)
    y_cam = steps.repeat_interleave(resolution).unsqueeze(0)  # (1, R*R): row coordinate
    x_cam = steps.repeat(resolution).unsqueeze(0)  # (1, R*R): column coordinate

    x_lift = (x_cam - cx + cy * skew / fy - skew * y_cam / fy) / fx
    y_lift = (y_cam - cy) / fy
    ones = torch.ones_like(x_lift).expand(batch, -1)
    points = torch.stack((x_lift, y_lift.expand(batch, -1), ones, ones), dim=1)  # (B, 4, R*R)

    world = torch.bmm(cam2world, points)[:, :3].transpose(1, 2)  # (B, R*R, 3)
    origins = cam2world[:, None, :3, 3]  # (B, 1, 3)
    directions = torch.nn.functional.normalize(world - origins, dim=2)
    return origins, directions


def fov_to_focal(fov_deg: float) -> float:
    """Normalised focal length of the 3DPE cameras (their constants 3.14159 and 1.414 kept)."""
    return float(1.0 / (math.tan(fov_deg * 3.14159 / 360.0) * 1.414))


def look_at_camera(
    yaw: float | torch.Tensor,
    pitch: float | torch.Tensor,
    *,
    radius: float = 2.7,
    pivot: tuple[float, float, float] = (0.0, 0.0, 0.2),
    fov_deg: float = 18.837,
    batch_size: int = 1,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """EG3D label of a camera on a sphere around ``pivot``, looking at it.

    ``yaw`` and ``pitch`` are EG3D's angles in radians: ``pi/2, pi/2`` is the frontal view;
    yaw grows towards the subject's left, pitch towards looking from below.

    Returns:
        (batch_size, 25) float32 labels.
    """
    h = torch.as_tensor(yaw, dtype=torch.float32, device=device).reshape(-1, 1).expand(batch_size, 1)
    v = torch.as_tensor(pitch, dtype=torch.float32, device=device).reshape(-1, 1).expand(batch_size, 1)
    v = torch.clamp(v, 1e-5, math.pi - 1e-5)
    phi = torch.arccos(1 - 2 * (v / math.pi))
    origin = torch.cat(
        (
            radius * torch.sin(phi) * torch.cos(math.pi - h),
            radius * torch.cos(phi),
            radius * torch.sin(phi) * torch.sin(math.pi - h),
        ),
        dim=1,
    )
    target = torch.tensor(pivot, dtype=torch.float32, device=device)
    forward = _normalize(target - origin)
    up = torch.tensor([0.0, 1.0, 0.0], device=device).expand_as(forward)
    right = -_normalize(torch.cross(up, forward, dim=-1))
    up = _normalize(torch.cross(forward, right, dim=-1))

    cam2world = torch.eye(4, device=device).repeat(batch_size, 1, 1)
    cam2world[:, :3, :3] = torch.stack((right, up, forward), dim=-1)
    cam2world[:, :3, 3] = origin
    focal = fov_to_focal(fov_deg)
    intrinsics = torch.tensor([focal, 0.0, 0.5, 0.0, focal, 0.5, 0.0, 0.0, 1.0], device=device)
    return torch.cat((cam2world.reshape(batch_size, 16), intrinsics.expand(batch_size, 9)), dim=1)


def _normalize(v: torch.Tensor) -> torch.Tensor:
    return v / torch.norm(v, dim=-1, keepdim=True)
