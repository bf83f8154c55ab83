"""Training pairs: ``DIR/before/NAME.*`` (a photo) and ``DIR/after/NAME.*`` (the same photo in
the new style), paired by file stem.

Each photo is aligned to the EG3D crop with the face stack; ``after`` takes the alignment of
its ``before`` (a stylised face may not be trackable, and the pair must stay pixel-aligned).
A 512x512 image that already is an EG3D crop (its tracked face aligns to itself within a few
pixels) is used as it is; ``aligned=True`` forces that for every image. The camera of a pair
is the head pose tracked on ``before``.

Every refusal is one line (:class:`PairsError`). The face stack (mediapipe, OpenCV) is
imported when pairs are aligned, so the training loop imports without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..styles.images import ReferenceError, ReferenceLimits, decode_reference
from ..styles.library import IMAGE_SUFFIXES

MIN_PAIRS = 2
CROP = 512
#: an image is taken as an EG3D crop when aligning it moves it by at most this much
ALIGNED_SHIFT_PX = 24.0
PHOTO_LIMITS = ReferenceLimits(max_bytes=64 * 1024 * 1024, max_pixels=100_000_000)


class PairsError(ValueError):
    """The pairs folder cannot be used (one line)."""


@dataclass(frozen=True)
class Pair:
    """One aligned pair: ``before`` / ``after`` (512, 512, 3) uint8 RGB, ``camera`` (25,)
    EG3D label of the tracked pose (``yaw_deg``, ``pitch_deg``)."""

    name: str
    before: np.ndarray
    after: np.ndarray
    camera: np.ndarray
    yaw_deg: float
    pitch_deg: float


def _images(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise PairsError(f"{folder} is not a folder (a pairs folder holds before/ and after/)")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.is_dir():
            continue
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            raise PairsError(f"{path} is not an image (use {', '.join(IMAGE_SUFFIXES)})")
        if path.stem in found:
            raise PairsError(f"two images named {path.stem!r} in {folder}: {found[path.stem].name} and {path.name}")
        found[path.stem] = path
    return found


def find_pairs(folder: Path) -> list[tuple[str, Path, Path]]:
    """(name, before, after) paths by stem, sorted by name; PairsError on unmatched names or
    fewer than :data:`MIN_PAIRS` pairs."""
    before, after = _images(folder / "before"), _images(folder / "after")
    for a, b, side in ((before, after, "after"), (after, before, "before")):
        alone = sorted(set(a) - set(b))
        if alone:
            more = f" (and {len(alone) - 1} more)" if len(alone) > 1 else ""
            raise PairsError(f"{a[alone[0]]} has no match in {folder / side}/{more}")
    if len(before) < MIN_PAIRS:
        raise PairsError(f"{folder} holds {len(before)} pair(s); training needs at least {MIN_PAIRS}")
    return [(name, before[name], after[name]) for name in sorted(before)]


def read_image(path: Path) -> np.ndarray:
    try:
        return decode_reference(path.read_bytes(), PHOTO_LIMITS)
    except OSError as exc:
        raise PairsError(f"cannot read {path} ({exc.strerror or exc})") from None
    except ReferenceError as exc:
        raise PairsError(f"{path}: {exc}") from None


def _is_crop(image: np.ndarray, matrix: np.ndarray) -> bool:
    """Whether ``image`` already is the EG3D crop its alignment ``matrix`` would cut: a 512
    square whose corners the alignment moves by at most :data:`ALIGNED_SHIFT_PX`."""
    if image.shape[:2] != (CROP, CROP):
        return False
    corners = np.array([[0.0, 0.0], [CROP - 1, 0.0], [0.0, CROP - 1], [CROP - 1, CROP - 1]])
    moved = corners @ matrix[:, :2].T + matrix[:, 2]
    return float(np.abs(moved - corners).max()) <= ALIGNED_SHIFT_PX


def _resized(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize((shape[1], shape[0]), Image.Resampling.BICUBIC))


def align_pair(tracker, name: str, before_path: Path, after_path: Path, aligned: bool = False) -> Pair:
    from ..face import align_face, label_from_degrees
    from ..face.alignment import warp

    before, after = read_image(before_path), read_image(after_path)
    found = tracker.update(np.ascontiguousarray(before))
    if found.face is None:
        raise PairsError(f"no face found in {before_path}")
    pose = found.face.pose
    camera = label_from_degrees(pose.yaw_deg, pose.pitch_deg)
    if before.shape[:2] != after.shape[:2]:
        ratio = (before.shape[1] / before.shape[0]) / (after.shape[1] / after.shape[0])
        if abs(ratio - 1.0) > 0.01:
            raise PairsError(f"{after_path} is {after.shape[1]}x{after.shape[0]} but {before_path} is "
                             f"{before.shape[1]}x{before.shape[0]}: a pair is one photo in two styles")
        after = _resized(after, before.shape[:2])
    crop = align_face(before, found.face)
    if aligned or _is_crop(before, crop.matrix):
        if before.shape[:2] != (CROP, CROP):
            if before.shape[0] != before.shape[1]:
                raise PairsError(f"--aligned: {before_path} is not square")
            before, after = _resized(before, (CROP, CROP)), _resized(after, (CROP, CROP))
        return Pair(name, before, after, camera, pose.yaw_deg, pose.pitch_deg)
    return Pair(name, crop.crop, warp(after, crop.matrix, CROP), camera, pose.yaw_deg, pose.pitch_deg)


def load_pairs(folder: Path, aligned: bool = False, progress: Callable[[str], None] | None = None) -> list[Pair]:
    """Every pair of ``folder``, aligned (see the module docstring)."""
    from ..face import FaceTracker

    found = find_pairs(folder)
    pairs = []
    with FaceTracker(static_image=True) as tracker:
        for i, (name, before, after) in enumerate(found):
            if progress:
                progress(f"aligning pair {i + 1}/{len(found)}: {name}")
            pairs.append(align_pair(tracker, name, before, after, aligned))
    return pairs
