"""Semantic regions of the face in the shared UV atlas: skin, lips, eye surroundings, brows,
and the openings (eyeballs, mouth interior) that an edit never takes from a reference.

The regions are polygons of mesh landmarks drawn in UV space, so they mean the same on
every face tracked with the topology: a reference's lips and a caller's lips are the same
texels.  ``region_labels`` gives one label per atlas texel (how a reference is read);
``vertex_regions`` one weight per mesh vertex and region (how a caller's regions are
found each frame, by interpolation over their mesh).
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

from .raster import Raster, rasterize
from .topology import SKIRT_GROUP, render_mesh

# labels; SKIN is everything the face mesh covers that is none of the others
SKIN, LIPS, EYE_AROUND, BROWS, OPENING, OUTSIDE = 0, 1, 2, 3, 4, -1
NAMES = {SKIN: "skin", LIPS: "lips", EYE_AROUND: "eyes", BROWS: "brows"}

LIPS_OUTER = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 375, 321, 405, 314, 17, 84, 181, 91, 146)
LIPS_INNER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 324, 318, 402, 317, 14, 87, 178, 88, 95)
EYE_RINGS = ((33, 246, 161, 160, 159, 158, 157, 173, 133, 155, 154, 153, 145, 144, 163, 7),
             (263, 466, 388, 387, 386, 385, 384, 398, 362, 382, 381, 380, 374, 373, 390, 249))
BROW_RINGS = ((70, 63, 105, 66, 107, 55, 65, 52, 53, 46),
              (300, 293, 334, 296, 336, 285, 295, 282, 283, 276))
EYE_AROUND_REACH = 0.3  # the eye surroundings reach this many eye widths beyond the lid line


@lru_cache(maxsize=2)
def atlas_raster(size: int) -> Raster:
    """The UV atlas (size x size) rasterised once: which triangle and where, per texel."""
    mesh = render_mesh()
    uv = mesh.uv * (size - 1)
    keep = mesh.group != SKIRT_GROUP
    return rasterize(uv, np.zeros(len(uv)), mesh.tris, (size, size), keep=keep)


def _fill(size: int, rings, uv: np.ndarray) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    for ring in rings:
        pts = np.round(uv[list(ring)] * (size - 1) * 8).astype(np.int32)  # 3 fractional bits
        cv2.fillPoly(mask, [pts], 1, lineType=cv2.LINE_8, shift=3)
    return mask.astype(bool)


@lru_cache(maxsize=2)
def region_labels(size: int) -> np.ndarray:
    """(size, size) int8 label per atlas texel (u right, v down), read-only."""
    uv = render_mesh().uv
    covered = atlas_raster(size).covered
    mouth = _fill(size, [LIPS_INNER], uv)
    lips = _fill(size, [LIPS_OUTER], uv) & ~mouth
    eyes = _fill(size, EYE_RINGS, uv)
    brows = _fill(size, BROW_RINGS, uv)
    width = float(np.mean([np.ptp(uv[list(r), 0]) for r in EYE_RINGS])) * (size - 1)
    r = max(int(round(EYE_AROUND_REACH * width)), 1)
    grown = cv2.dilate(eyes.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
    around = grown.astype(bool) & ~eyes & ~brows
    labels = np.full((size, size), OUTSIDE, np.int8)
    labels[covered] = SKIN
    labels[around & covered] = EYE_AROUND
    labels[brows & covered] = BROWS
    labels[lips & covered] = LIPS
    labels[(eyes | mouth) & covered] = OPENING
    labels.setflags(write=False)
    return labels


@lru_cache(maxsize=2)
def vertex_regions(size: int) -> np.ndarray:
    """(V, 3) float32 per render-mesh vertex: 1 where it belongs to the lips, the eye
    surroundings or the brows (columns in that order), else 0.

    A vertex belongs to a region when its UV texel carries the region's label, or when it
    is on the region's contour (lip and lid lines, brow outline).  Interpolated over the
    caller's rasterised mesh, this is 1 inside each region and fades to 0 across the ring
    of triangles around it: the region's blending weight, at no cost beyond the mesh
    interpolation the frame does anyway.
    """
    mesh = render_mesh()
    labels = region_labels(size)
    texel = np.clip(np.round(mesh.uv * (size - 1)).astype(int), 0, size - 1)
    at = labels[texel[:, 1], texel[:, 0]]
    out = np.zeros((len(mesh.uv), 3), np.float32)
    contours = (LIPS_OUTER + LIPS_INNER, sum(EYE_RINGS, ()), sum(BROW_RINGS, ()))
    for col, (region, ring) in enumerate(zip((LIPS, EYE_AROUND, BROWS), contours)):
        out[at == region, col] = 1.0
        out[list(ring), col] = 1.0
    out[list(sum(EYE_RINGS, ())), 2] = 0.0  # a lid is eye surroundings, never brow
    out.setflags(write=False)
    return out
