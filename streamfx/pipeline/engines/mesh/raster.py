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
        return self.interpolate_corners(np.asarray(values, dtype=np.float32)[tris])

    def interpolate_corners(self, corners: np.ndarray) -> np.ndarray:
        """Per-triangle-corner ``corners`` (T, 3, C) -> (H, W, C) float32 (zero where uncovered)."""
        h, w = self.tri.shape
        out = np.zeros((h, w, corners.shape[2]), dtype=np.float32)
        cov = self.covered
        b = self.bary[cov]
        v = corners.astype(np.float32, copy=False)[self.tri[cov]]  # (N, 3, C)
        out[cov] = np.einsum("nk,nkc->nc", b, v)
        return out


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

    t = np.repeat(np.arange(len(tris)), counts)
    start = np.cumsum(counts) - counts
    local = np.arange(total) - start[t]
    px = x0[t] + local % bw[t]
    py = y0[t] + local // bw[t]
    dx, dy = px - a[t, 0], py - a[t, 1]
    inv = 1.0 / det[t]
    l1 = (e2[t, 1] * dx - e2[t, 0] * dy) * inv
    l2 = (e1[t, 0] * dy - e1[t, 1] * dx) * inv
    l0 = 1.0 - l1 - l2
    inside = (l0 >= -_EDGE_EPS) & (l1 >= -_EDGE_EPS) & (l2 >= -_EDGE_EPS)
    t, px, py, l0, l1, l2 = t[inside], px[inside], py[inside], l0[inside], l1[inside], l2[inside]
    z = np.asarray(depth, dtype=np.float64)
    d = l0 * z[tris[t, 0]] + l1 * z[tris[t, 1]] + l2 * z[tris[t, 2]]
    pix = py * w + px
    zbuf = np.full(h * w, np.inf)
    np.minimum.at(zbuf, pix, d)
    win = d <= zbuf[pix]
    pix = pix[win]
    tri_id[pix] = t[win]
    lam = np.clip(np.stack([l0[win], l1[win], l2[win]], axis=1), 0.0, None)
    bary[pix] = lam / lam.sum(axis=1, keepdims=True)
    return Raster(tri_id.reshape(h, w), bary.reshape(h, w, 3))
