"""A vectorised z-buffered triangle rasteriser (numpy, no per-triangle Python loop).

Every triangle's bounding box is expanded into candidate pixels with ``np.repeat``;
barycentric coordinates are computed for all candidates at once; the nearest candidate
per pixel wins through a ``np.minimum.at`` depth buffer.  Meant for small grids (a face
about 100 pixels across): the result is a triangle id and barycentrics per pixel, from
which any per-vertex attribute (source position, UV) is interpolated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_EDGE_EPS = 1e-4  # pixels exactly on a shared edge belong to both triangles; depth picks one


@dataclass(frozen=True)
class Raster:
    """``tri`` (H, W) int32 triangle index or -1; ``bary`` (H, W, 3) float32 (zero where
    ``tri`` is -1); ``covered`` (H, W) bool."""

    tri: np.ndarray
    bary: np.ndarray

    @property
    def covered(self) -> np.ndarray:
        return self.tri >= 0

    def interpolate(self, values: np.ndarray, tris: np.ndarray) -> np.ndarray:
        """Per-vertex ``values`` (V, C) -> (H, W, C) float32 (zero where uncovered)."""
        return self.interpolate_corners(np.take(np.asarray(values, dtype=np.float32), tris.astype(np.int64), axis=0))

    def interpolate_corners(self, corners: np.ndarray) -> np.ndarray:
        """Per-triangle-corner ``corners`` (T, 3, C) -> (H, W, C) float32 (zero where uncovered)."""
        h, w = self.tri.shape
        c = corners.shape[2]
        out = np.zeros((h * w, c), dtype=np.float32)
        idx = np.flatnonzero(self.tri.reshape(-1) >= 0)
        b = np.take(self.bary.reshape(-1, 3), idx, axis=0)  # (N, 3)
        tri = np.take(self.tri.reshape(-1), idx).astype(np.int64)
        v = np.take(np.ascontiguousarray(corners, dtype=np.float32), tri, axis=0)  # (N, 3, C)
        out[idx] = np.einsum("nk,nkc->nc", b, v)
        return out.reshape(h, w, c)


def rasterize(xy: np.ndarray, depth: np.ndarray, tris: np.ndarray, shape: tuple[int, int],
              keep: np.ndarray | None = None) -> Raster:
    """Rasterise triangles into an (H, W) grid.

    xy: (V, 2) vertex positions in grid pixels (pixel centres at integers); depth: (V,)
    smaller = nearer; tris: (T, 3) vertex indices; keep: optional (T,) bool, triangles to
    draw (e.g. the front-facing ones).
    """
    h, w = shape
    xy = np.asarray(xy, dtype=np.float64)
    a, b, c = xy[tris[:, 0]], xy[tris[:, 1]], xy[tris[:, 2]]
    e1, e2 = b - a, c - a
    det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    lo = np.minimum(np.minimum(a, b), c)
    hi = np.maximum(np.maximum(a, b), c)
    x0 = np.clip(np.ceil(lo[:, 0]), 0, w).astype(np.int64)
    y0 = np.clip(np.ceil(lo[:, 1]), 0, h).astype(np.int64)
    x1 = np.clip(np.floor(hi[:, 0]), -1, w - 1).astype(np.int64)
    y1 = np.clip(np.floor(hi[:, 1]), -1, h - 1).astype(np.int64)
    bw, bh = x1 - x0 + 1, y1 - y0 + 1
    ok = (np.abs(det) > 1e-9) & (bw > 0) & (bh > 0)
    if keep is not None:
        ok &= keep
    counts = np.where(ok, bw * bh, 0)
    total = int(counts.sum())
    tri_id = np.full(h * w, -1, dtype=np.int32)
    bary = np.zeros((h * w, 3), dtype=np.float32)
    if total == 0:
        return Raster(tri_id.reshape(h, w), bary.reshape(h, w, 3))

    # per triangle, l1, l2 and the depth are affine in the pixel's offset from its bounding
    # box corner: gather those few plane coefficients per candidate (contiguous float32
    # rows, int64 indices: the fast paths of numpy's gather)
    z = np.asarray(depth, dtype=np.float64)[tris]  # (T, 3)
    inv = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)
    c1x, c1y = e2[:, 1] * inv, -e2[:, 0] * inv
    c2x, c2y = -e1[:, 1] * inv, e1[:, 0] * inv
    ox, oy = x0 - a[:, 0], y0 - a[:, 1]  # planes relative to each bounding box's corner (precision)
    c10 = c1x * ox + c1y * oy
    c20 = c2x * ox + c2y * oy
    dz1, dz2 = z[:, 1] - z[:, 0], z[:, 2] - z[:, 0]
    coef = np.stack([c1x, c1y, c10, c2x, c2y, c20,
                     dz1 * c1x + dz2 * c2x, dz1 * c1y + dz2 * c2y, z[:, 0] + dz1 * c10 + dz2 * c20,
                     bw]).astype(np.float32)  # (10, T): contiguous rows gather fastest
    t = np.repeat(np.arange(len(tris), dtype=np.int64), counts)
    start = np.cumsum(counts) - counts
    local = (np.arange(total, dtype=np.int64) - start[t]).astype(np.float32)
    width = coef[9][t]
    row = np.floor((local + 0.5) / width)  # local // width, exact for these small integers
    lx = local - row * width
    l1 = coef[0][t] * lx + coef[1][t] * row + coef[2][t]
    l2 = coef[3][t] * lx + coef[4][t] * row + coef[5][t]
    l0 = 1.0 - l1 - l2
    sel = np.flatnonzero((l0 >= -_EDGE_EPS) & (l1 >= -_EDGE_EPS) & (l2 >= -_EDGE_EPS))
    t, lx, row, l0, l1, l2 = t[sel], lx[sel], row[sel], l0[sel], l1[sel], l2[sel]
    d = coef[6][t] * lx + coef[7][t] * row + coef[8][t]
    pix = (y0[t] + row.astype(np.int64)) * w + (x0[t] + lx.astype(np.int64))
    zbuf = np.full(h * w, np.inf, np.float32)
    np.minimum.at(zbuf, pix, d)
    win = np.flatnonzero(d <= zbuf[pix])
    pix = pix[win]
    tri_id[pix] = t[win]
    lam = np.clip(np.stack([l0[win], l1[win], l2[win]], axis=1), 0.0, None)
    bary[pix] = lam / lam.sum(axis=1, keepdims=True)
    return Raster(tri_id.reshape(h, w), bary.reshape(h, w, 3))
