"""What each training step needs of a pair, computed once: the frozen encoder features of
``before``, the target of ``after``, and the random cameras of the multi-view terms.

Only the reference fusion and the tri-plane head train (the official recipe trains the
editing encoder's final head and reference branch), so the ResNet trunk, ASPP, feature
branch and high-frequency branch give the same output at every step: they run once per
pair, and a step runs the fusion and the head only.

Targets. 3dpe.pt carries no separate reconstruction encoder, so the target tri-planes are
the base model's encoding of ``after`` with ``after``'s own reference tokens (what the live
engine does without a prompt). The image terms at the photo's camera compare against the
``after`` photo itself (resized to the render's size; the raw image against ``after``
area-downsampled to the volume's resolution): the photo is the ground truth the target
render approximates. Depth has no photo, so it compares against the target render's depth,
and the multi-view terms against renders of the target tri-planes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..models import threedpe
from ..models.encoder.live_encoder import with_coordinates
from ..models.renderer.cameras import look_at_camera
from ..models.renderer.presets import get_preset
from .pairs import Pair

# The official multi-view camera ranges (coach.py): yaw +-49 deg, pitch +-26 deg around
# frontal, field of view 18.837 +- 1.2 deg, principal point 0.5 +- 0.1.
MV_YAW_DEG, MV_PITCH_DEG, MV_FOV_DEG, MV_FOV_RANGE, MV_CENTER_RANGE = 49.0, 26.0, 18.837, 1.2, 0.1


@dataclass
class PreparedPair:
    """Tensors of one pair (batch 1) on the training device.

    ``features``, ``high``: (1, 128, 128, 128) frozen encoder branches of ``before``;
    ``planes``: (1, 96, 256, 256) target tri-planes; ``camera``: (1, 25);
    ``image``: (1, 3, S, S) and ``raw``: (1, 3, R, R) the ``after`` photo in [-1, 1] at the
    preset's sizes; ``depth``: (1, 1, R, R) the target render's depth. ``planes`` and
    ``depth`` are None when no loss term needs them (tri, depth and mv all 0).
    """

    name: str
    features: torch.Tensor
    high: torch.Tensor
    planes: torch.Tensor | None
    camera: torch.Tensor
    image: torch.Tensor
    raw: torch.Tensor
    depth: torch.Tensor | None

    def photo_target(self) -> dict[str, torch.Tensor]:
        return {"image": self.image, "image_raw": self.raw, "image_depth": self.depth}


@torch.no_grad()
def prepare_pair(model: threedpe.ThreeDPE, pair: Pair, preset: str, device: torch.device,
                 autocast: torch.dtype | None = None, target_planes: bool = True) -> PreparedPair:
    """``target_planes=False``: skip the target encoding (no tri, depth or multi-view term)."""
    enc, p = model.encoder, get_preset(preset)
    camera = torch.from_numpy(pair.camera).float()[None].to(device)
    planes = depth = None
    with torch.autocast(device.type, dtype=autocast or torch.float32, enabled=autocast is not None):
        x5 = with_coordinates(threedpe.prepare_input(pair.before).to(device))
        features = enc.branch_f(enc.aspp(enc.trunk(x5))).float()
        high = enc.branch_high(x5).float()
        if target_planes:
            own = model.vit(threedpe.prepare_reference(pair.after).to(device))
            planes = enc(threedpe.prepare_input(pair.after).to(device), own).float()
    if planes is not None:
        depth = model.renderer(planes, camera, p)["image_depth"]
    after = threedpe.prepare_input(pair.after).to(device)
    image = F.interpolate(after, size=(p.output_size,) * 2, mode="area") if p.output_size != 512 else after
    raw = F.interpolate(after, size=(p.neural_resolution,) * 2, mode="area")
    return PreparedPair(pair.name, features, high, planes, camera, image, raw, depth)


def random_camera(generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """(1, 25) label of a random camera in the official multi-view ranges."""
    u = (torch.rand(5, generator=generator) * 2 - 1).tolist()
    yaw = math.pi / 2 + u[0] * math.radians(MV_YAW_DEG)
    pitch = math.pi / 2 + u[1] * math.radians(MV_PITCH_DEG)
    label = look_at_camera(yaw, pitch, fov_deg=MV_FOV_DEG + u[2] * MV_FOV_RANGE)
    label[0, 18] = 0.5 + u[3] * MV_CENTER_RANGE  # intrinsics cx, cy (row-major 3x3 after 16 values)
    label[0, 21] = 0.5 + u[4] * MV_CENTER_RANGE
    return label.to(device)
