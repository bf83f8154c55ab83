"""Pairs with a known answer, for checking that training learns (tests, benchmarks, and a
user trying the tool chain without real weights).

The teacher is the base model plus a known low-rank change in the trainable modules; the
``after`` of a pair is the teacher's render of ``before`` at the pair's camera. Training
from the base on such pairs should move held-out outputs toward the teacher's. With random
weights only the image terms at the photo's camera are coherent (a random encoder does not
reconstruct a photo): train with :data:`IMAGE_ONLY`.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..models import threedpe
from ..models.renderer.cameras import look_at_camera
from ..runtime.adapters import LowRankAdapter, default_targets, per_sample, random_adapter
from .losses import LossWeights
from .pairs import Pair

IMAGE_ONLY = LossWeights.parse("image=1,raw=1,tri=0,mv=0,depth=0")
#: a change of about 0.1 in the rendered image ([-1, 1]) on random weights of seed 0
TEACHER_STD = 0.13


def make_teacher(model: threedpe.ThreeDPE, seed: int = 7, rank: int = 4, std: float = TEACHER_STD) -> LowRankAdapter:
    return random_adapter(model.encoder, default_targets(model.encoder), rank=rank, seed=seed, std=std)


def frontal_label() -> np.ndarray:
    return look_at_camera(math.pi / 2, math.pi / 2)[0].numpy()


@torch.no_grad()
def teacher_after(model: threedpe.ThreeDPE, teacher: LowRankAdapter, before: np.ndarray, camera: np.ndarray,
                  reference_rgb: np.ndarray, preset: str) -> np.ndarray:
    """The teacher's render of ``before`` (512 crop) at ``camera``, as a 512x512 uint8 image."""
    from PIL import Image

    tokens = model.reference_tokens(threedpe.prepare_reference(reference_rgb))
    with per_sample(model.encoder, [teacher]):
        planes = model.encode(threedpe.prepare_input(before), tokens)
    image = model.render(planes, torch.from_numpy(camera).float()[None], preset)["image"]
    rgb = ((image[0].float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return np.asarray(Image.fromarray(rgb).resize((512, 512), Image.Resampling.BICUBIC))


def teacher_pairs(model: threedpe.ThreeDPE, crops: list[np.ndarray], reference_rgb: np.ndarray, preset: str,
                  teacher: LowRankAdapter | None = None) -> list[Pair]:
    """Pairs ``face1..N`` of aligned 512 crops at the frontal camera, ``after`` by the teacher."""
    teacher = teacher or make_teacher(model)
    camera = frontal_label()
    return [Pair(f"face{i + 1}", crop, teacher_after(model, teacher, crop, camera, reference_rgb, preset),
                 camera, 0.0, 0.0) for i, crop in enumerate(crops)]
