"""Where an edit applies: a soft face mask on the grid, with open eyes and mouth kept."""

from __future__ import annotations

import cv2
import numpy as np

from .geometry import Grid
from .raster import Raster
from .topology import EYES, MOUTH, SKIN, RenderMesh


def _disk(radius: float) -> np.ndarray:
    r = max(int(round(radius)), 1)
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))


def groups(raster: Raster, mesh: RenderMesh) -> np.ndarray:
    """(gh, gw) int8: the triangle group under each grid pixel, -1 where uncovered."""
    return np.where(raster.covered, mesh.group[np.maximum(raster.tri, 0)], -1).astype(np.int8)


def opening_keep(raster: Raster, mesh: RenderMesh, grid: Grid, keep_dilate: float) -> np.ndarray:
    """(gh, gw) float32 in [0, 1]: 0 on the open eyes and mouth (their closing strips have area
    only when open) and a margin of ``keep_dilate`` face sizes around them, 1 elsewhere: what
    an edit is multiplied by so that the caller's own eyes and mouth show through."""
    g = groups(raster, mesh)
    keep = ((g == EYES) | (g == MOUTH)).astype(np.uint8)
    if not keep.any():
        return np.ones(g.shape, np.float32)
    radius = keep_dilate * grid.face_px
    if radius >= 0.5:
        keep = cv2.dilate(keep, _disk(radius))
    soft = cv2.GaussianBlur(keep.astype(np.float32), (0, 0), max(0.5 * radius, 0.5))
    return 1.0 - np.maximum(soft, keep)


def face_alpha(raster: Raster, mesh: RenderMesh, grid: Grid, feather: float) -> np.ndarray:
    """(gh, gw) float32 in [0, 1]: 1 inside the face, soft towards its border (``feather``
    face sizes wide), exactly 0 outside."""
    g = groups(raster, mesh)
    face = ((g == SKIN) | (g == EYES) | (g == MOUTH)).astype(np.uint8)
    sigma = max(feather * grid.face_px, 0.5)
    inner = cv2.erode(face, _disk(2.0 * sigma))
    return cv2.GaussianBlur(inner.astype(np.float32), (0, 0), sigma) * face


Box = tuple[int, int, int, int]


def grid_box(alpha: np.ndarray, pad: int = 2) -> Box | None:
    """(x0, y0, x1, y1) grid rectangle around the non-zero pixels of ``alpha``, padded."""
    ys, xs = np.nonzero(alpha > 0)
    if ys.size == 0:
        return None
    h, w = alpha.shape
    return max(int(xs.min()) - pad, 0), max(int(ys.min()) - pad, 0), min(int(xs.max()) + pad + 1, w), min(int(ys.max()) + pad + 1, h)


def upsample_to_box(values: np.ndarray, gbox: Box, grid: Grid, box: Box) -> np.ndarray:
    """Bilinear upsampling of grid ``values`` (gh', gw'[, C]), the grid rectangle ``gbox``,
    onto the ROI rectangle ``box``: exactly ``cv2.resize`` of the whole grid (zero outside
    ``gbox``) cropped to ``box``.  Returns a view (h, w[, C]), int16 for int16 values, else float32."""
    gx0, gy0, gx1, gy1 = gbox
    full = np.zeros((grid.gh, grid.gw) + values.shape[2:], values.dtype if values.dtype == np.int16 else np.float32)
    full[gy0:gy1, gx0:gx1] = values
    x0, y0, x1, y1 = box
    # resizing the small grid to the whole ROI is much cheaper than warpAffine onto the box
    return cv2.resize(full, grid.size, interpolation=cv2.INTER_LINEAR)[y0:y1, x0:x1]


def resample_box(values: np.ndarray, gbox: Box, grid: Grid, box: Box, size: tuple[int, int]) -> np.ndarray:
    """Grid ``values`` on ``gbox`` (as in :func:`upsample_to_box`) resampled onto the ROI
    rectangle ``box`` at a coarser ``size`` (w, h): the grid rectangle's frame footprint is
    mapped onto the box by one affine warp."""
    gx0, gy0, gx1, gy1 = gbox
    x0, y0, x1, y1 = box
    sx, sy = grid.scale
    kx, ky = size[0] / (x1 - x0), size[1] / (y1 - y0)
    # grid pixel j has its centre at frame x = (gx0 + j + 0.5) * sx - 0.5 (ROI coordinates)
    ax, ay = sx * kx, sy * ky
    bx = ((gx0 + 0.5) * sx - 0.5 - x0 + 0.5) * kx - 0.5
    by = ((gy0 + 0.5) * sy - 0.5 - y0 + 0.5) * ky - 0.5
    m = np.array([[ax, 0.0, bx], [0.0, ay, by]], np.float64)
    return cv2.warpAffine(np.ascontiguousarray(values, np.float32), m, size, flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT)


def frame_box(alpha: np.ndarray, grid: Grid) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) in ROI pixels covering every non-zero grid pixel of ``alpha`` (with its
    bilinear footprint), or None when ``alpha`` is all zero."""
    ys, xs = np.nonzero(alpha > 0)
    if ys.size == 0:
        return None
    sx, sy = grid.scale
    w, h = grid.size
    x0 = max(int(np.floor((xs.min() - 1 + 0.5) * sx - 0.5)), 0)
    y0 = max(int(np.floor((ys.min() - 1 + 0.5) * sy - 0.5)), 0)
    x1 = min(int(np.ceil((xs.max() + 1 + 0.5) * sx - 0.5)) + 1, w)
    y1 = min(int(np.ceil((ys.max() + 1 + 0.5) * sy - 0.5)) + 1, h)
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


def face_boxes(alpha: np.ndarray, grid: Grid) -> tuple[Box, tuple[int, int, int, int]] | None:
    """(grid_box, frame_box) of ``alpha``, or None when it is all zero."""
    gbox, box = grid_box(alpha), frame_box(alpha, grid)
    return None if gbox is None or box is None else (gbox, box)
