"""Reading a reference face by region: the colour and tone of its skin, lips, eye
surroundings and brows, with what is not that region rejected.

The reference's face is unwrapped into the UV atlas (see ``appearance.unwrap``), where
every region is a fixed set of texels.  A texel counts for its region only if it passes,
in order:

1. **visible**: its triangle faces the camera and it lies inside the image;
2. **not an opening**: eyeballs and the mouth's interior (teeth, tongue) never count;
3. **symmetric**: a face's two sides carry the same make-up, while hair over one eye, a
   hand or a cast shadow rarely covers both; where a texel and its mirror differ by more
   than ``SYMMETRY_DE``, the one farther from the region's median is dropped;
4. **smooth** (skin only): hair strands, glasses frames and outlines are strong edges;
5. **typical**: within ``OUTLIER_SIGMAS`` robust deviations (median absolute deviation) of
   the region's median Lab, so the rest of an occluder and deep shadows go;
6. **not behind a band**: an occluder across both eyes (a hair band, dark glasses) is
   symmetric, but it also covers the skin beside the eyes (temples, the bridge of the
   nose).  When most of the skin in the rows an eye or brow region spans was rejected,
   and what was rejected has the region's colour, the region is taken as covered.

A region keeps its statistics only if enough of it survives; otherwise the caller's region
follows the skin's change.  An eye surround more than ``MAX_EYE_DEPTH`` darker than the
skin is pulled back to it (liner and shadow darken the lids; a black band is not make-up).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .regions import BROWS, EYE_AROUND, LIPS, OPENING, SKIN, region_labels

SYMMETRY_DE = 16.0  # Lab distance between mirrored texels that marks one of them as occluded
OUTLIER_SIGMAS = 2.5
MIN_SPREAD_DE = 6.0  # a robust deviation is never taken as smaller than this
EDGE_L = 6.0  # skin texels whose lightness gradient (per texel, 256-texel atlas) exceeds this are dropped
MIN_KEPT = 0.25  # a region needs this fraction of its texels (and MIN_TEXELS) to count
MIN_TEXELS = 24
BAND_SHARE = 0.5  # an eye / brow region is covered when this share of the skin in its rows was rejected ...
BAND_DE = 15.0  # ... and the rejected skin's median is this close to the region's median
MAX_EYE_DEPTH = 30.0  # L units the eye surroundings may be darker than the skin


@dataclass(frozen=True)
class RegionStats:
    """Lab mean and standard deviation of one region (each (3,) float32) and how much of
    the region they come from (``kept``: fraction of its visible texels)."""

    mean: np.ndarray
    std: np.ndarray
    kept: float


def robust_keep(lab: np.ndarray, sigmas: float = OUTLIER_SIGMAS) -> np.ndarray:
    """(N,) bool: samples (N, 3) within ``sigmas`` robust deviations of their median."""
    med = np.median(lab, axis=0)
    dist = np.linalg.norm(lab - med, axis=1)
    spread = max(1.4826 * float(np.median(dist)), MIN_SPREAD_DE)
    return dist <= sigmas * spread


def _stats(lab: np.ndarray, total: int) -> RegionStats | None:
    if len(lab) < MIN_TEXELS or len(lab) < MIN_KEPT * max(total, 1):
        return None
    return RegionStats(mean=lab.mean(axis=0).astype(np.float32), std=lab.std(axis=0).astype(np.float32),
                       kept=round(len(lab) / max(total, 1), 3))


def _asymmetric(texture: np.ndarray, valid: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(A, A) bool: texels that disagree with their mirror and are the odd one out."""
    mirror = texture[:, ::-1]
    both = valid & valid[:, ::-1]
    differ = both & (np.linalg.norm(texture - mirror, axis=-1) > SYMMETRY_DE)
    odd = np.zeros(valid.shape, bool)
    for region in (SKIN, LIPS, EYE_AROUND, BROWS):
        inside = (labels == region) & valid
        if inside.sum() < MIN_TEXELS:
            continue
        med = np.median(texture[inside], axis=0)
        own = np.linalg.norm(texture - med, axis=-1)
        odd |= differ & inside & (own > own[:, ::-1])
    return odd


def read_regions(texture: np.ndarray, valid: np.ndarray) -> dict[int, RegionStats]:
    """Region statistics of a reference unwrapped into the atlas.

    texture: (A, A, 3) float32 Lab; valid: (A, A) bool, texels the reference shows.
    Returns {region: stats} for the regions that survive.
    """
    size = texture.shape[0]
    labels = region_labels(size)
    usable = valid & (labels >= 0) & (labels != OPENING)
    usable &= ~_asymmetric(texture, usable, labels)
    gx = cv2.Sobel(texture[..., 0], cv2.CV_32F, 1, 0, ksize=3) / 8.0
    gy = cv2.Sobel(texture[..., 0], cv2.CV_32F, 0, 1, ksize=3) / 8.0
    edges = np.hypot(gx, gy) * (size / 256.0) > EDGE_L
    out: dict[int, RegionStats] = {}
    used = np.zeros(valid.shape, bool)
    for region in (SKIN, LIPS, EYE_AROUND, BROWS):  # skin first: the band test needs its rejections
        area = (labels == region) & valid
        cand = usable & (labels == region)
        if region == SKIN:
            cand &= ~edges
        if not cand.any():
            continue
        keep = np.zeros(cand.shape, bool)
        keep[cand] = robust_keep(texture[cand])
        if region in (EYE_AROUND, BROWS) and _behind_band(texture, labels, valid, used, keep):
            continue
        stats = _stats(texture[keep], int(area.sum()))
        if stats is None:
            continue
        out[region] = stats
        used |= keep
    if SKIN in out and EYE_AROUND in out:
        out[EYE_AROUND] = _limit_depth(out[EYE_AROUND], out[SKIN])
    return out


def _behind_band(texture: np.ndarray, labels: np.ndarray, valid: np.ndarray, used: np.ndarray,
                 region: np.ndarray) -> bool:
    """Whether the ``region`` texels (A, A) bool sit behind a band: most of the skin in the
    atlas rows they span was rejected (``used`` holds the skin that was kept), and what was
    rejected there has the region's colour."""
    rows = np.flatnonzero(region.any(axis=1))
    if rows.size == 0:
        return False
    skin = np.zeros(valid.shape, bool)
    skin[rows[0]:rows[-1] + 1] = True
    skin &= (labels == SKIN) & valid
    total = int(skin.sum())
    rejected = skin & ~used
    if total < MIN_TEXELS or rejected.sum() < BAND_SHARE * total:
        return False
    gap = np.linalg.norm(np.median(texture[rejected], axis=0) - np.median(texture[region], axis=0))
    return bool(gap < BAND_DE)


def _limit_depth(eyes: RegionStats, skin: RegionStats) -> RegionStats:
    depth = float(skin.mean[0] - eyes.mean[0])
    if depth <= MAX_EYE_DEPTH:
        return eyes
    mean = eyes.mean.copy()
    mean[0] = skin.mean[0] - MAX_EYE_DEPTH
    return RegionStats(mean=mean, std=eyes.std, kept=eyes.kept)


def image_colours(lab: np.ndarray) -> RegionStats:
    """Colour statistics of a whole image (N, 3) Lab, for a reference without a face: its
    typical colours, outliers rejected as for a region."""
    keep = lab[robust_keep(lab)]
    return RegionStats(mean=keep.mean(axis=0).astype(np.float32), std=keep.std(axis=0).astype(np.float32), kept=1.0)
