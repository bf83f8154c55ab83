"""The caller's side of an edit: their region colours (held steady over frames) and where
their skin is, beyond what the face mesh covers.

The mesh ends at the face oval; ears, neck and other skin around it are found with a
skin colour model seeded from the tracked face's own skin (its Lab mean and spread), so
the whole visible skin takes the same change and no edge shows at the oval.  Region
statistics are exponential moving averages: a noisy frame moves them little, and the
edit does not flicker with them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from .config import MeshEngineConfig
from .fields import smoothstep
from .geometry import Grid
from .masks import face_alpha, opening_keep
from .raster import Raster
from .topology import RenderMesh

EMA_RATE = 0.2  # weight of the newest frame in the caller's region statistics
MIN_WEIGHT = 3.0  # a region needs this many grid pixels' worth of weight to be measured
SKIN_AB_SPREAD = (4.0, 2.5)  # floor of the skin model's a/b deviation, and how many deviations still count
SKIN_L_SPREAD = (8.0, 3.0)  # the same for lightness (loose: shading changes it)
FACE_FLOOR = 0.3  # what is not skin on the face (hair, glasses) still takes this much of the edit: no hard edge around it
FACE_AB_SCALE = 2.0  # on the face mesh the chroma tolerance is this much wider (flush, make-up); hair is told by lightness
REACH = (0.06, 0.22)  # skin outside the mesh is edited fully up to the first and not beyond the second distance, in F


@dataclass
class CallerState:
    """Per caller: {region: (mean (3,), std (3,))} in Lab, as moving averages."""

    stats: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def update(self, lab: np.ndarray, weights: np.ndarray, regions: tuple[int, ...]
               ) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """Fold this frame's Lab pixels ``lab`` (N, 3), weighted per region by ``weights``
        (N, K) for the K ``regions``, into the moving averages (one matrix product for all
        regions); return them (a region never measured is absent)."""
        lab = lab.astype(np.float32, copy=False)
        total = weights.sum(axis=0)
        first = weights.T @ lab
        second = weights.T @ (lab * lab)
        for k, region in enumerate(regions):
            if total[k] < MIN_WEIGHT:
                continue
            mean = first[k] / total[k]
            std = np.sqrt(np.maximum(second[k] / total[k] - mean * mean, 0.0))
            old = self.stats.get(region)
            if old is not None:
                mean = old[0] + EMA_RATE * (mean - old[0])
                std = old[1] + EMA_RATE * (std - old[1])
            self.stats[region] = (mean.astype(np.float32), std.astype(np.float32))
        return self.stats

    def reset(self) -> None:
        self.stats.clear()


def skin_likelihood(lab: np.ndarray, mean: np.ndarray, std: np.ndarray, ab_scale: float | np.ndarray = 1.0) -> np.ndarray:
    """(H, W) float32 in [0, 1]: how much each Lab pixel (H, W, 3) looks like the skin
    (``mean``, ``std`` (3,)); chroma counts most, lightness loosely (shading); ``ab_scale``
    (a number or per pixel) widens the chroma tolerance (on the face, where flushed cheeks
    are still skin)."""
    ab_floor, ab_n = SKIN_AB_SPREAD
    l_floor, l_n = SKIN_L_SPREAD
    sa = ab_n * max(float(std[1]), ab_floor)
    sb = ab_n * max(float(std[2]), ab_floor)
    sl = l_n * max(float(std[0]), l_floor)
    chroma = ((lab[..., 1] - mean[1]) / sa) ** 2 + ((lab[..., 2] - mean[2]) / sb) ** 2
    d2 = chroma / np.square(ab_scale) + ((lab[..., 0] - mean[0]) / sl) ** 2
    return np.clip(1.5 - d2, 0.0, 1.0).astype(np.float32)  # full up to ~1 deviation unit, 0 beyond ~1.2


def reach(covered: np.ndarray, grid: Grid) -> np.ndarray:
    """(gh, gw) float32: 1 on and near the mesh, falling smoothly to 0 at ``REACH[1]`` face
    sizes from it and at the grid's border."""
    dist = cv2.distanceTransform((~covered).astype(np.uint8), cv2.DIST_L2, 3)
    near, far = REACH[0] * grid.face_px, REACH[1] * grid.face_px
    out = 1.0 - smoothstep((dist - near) / max(far - near, 1e-3))
    ys, xs = np.arange(grid.gh)[:, None], np.arange(grid.gw)[None, :]
    border = np.minimum(np.minimum(xs, grid.gw - 1 - xs), np.minimum(ys, grid.gh - 1 - ys)).astype(np.float32)
    return (out * smoothstep(border / 3.0)).astype(np.float32)


def edit_alpha(raster: Raster, mesh: RenderMesh, grid: Grid, cfg: MeshEngineConfig, lab: np.ndarray,
               skin: tuple[np.ndarray, np.ndarray], features: np.ndarray, face: np.ndarray) -> np.ndarray:
    """(gh, gw) float32 in [0, 1]: where an edit applies, on the grid.

    Whatever looks like the caller's ``skin`` (mean, std) on the face and near it (ears,
    neck: no edge at the face oval), plus the face's ``features`` (gh, gw) weights (lips,
    eye surroundings, brows: not skin-coloured, edited all the same); never the open eyes
    and mouth, and only ``FACE_FLOOR`` of the caller's hair or glasses over the face.
    ``lab``: the caller on the grid (gh, gw, 3); ``face``: the soft face mask (``face_alpha``)."""
    covered = raster.covered
    scale = np.where(covered, np.float32(FACE_AB_SCALE), np.float32(1.0))
    like = cv2.GaussianBlur(skin_likelihood(lab, *skin, ab_scale=scale), (0, 0), 0.8)  # no grid-pixel blocks at hair edges
    alpha = np.maximum(like * reach(covered, grid), face * np.maximum(features, FACE_FLOOR))
    return alpha * opening_keep(raster, mesh, grid, cfg.opening_margin)


def shrink(roi: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``roi`` (h, w, 3) uint8 low-passed and resampled to ``size`` (w, h): halved by Gaussian
    pyramid steps while it is over twice as large, then bilinear (a fraction of the cost of
    one large area resize, and as free of aliasing)."""
    while roi.shape[1] >= 2 * size[0] and roi.shape[0] >= 2 * size[1]:
        roi = cv2.pyrDown(roi)
    return cv2.resize(roi, size, interpolation=cv2.INTER_LINEAR)


@dataclass(frozen=True)
class CallerView:
    """The caller on the grid, as every edit reads it: ``rgb`` (gh, gw, 3) float32 0..1,
    ``lab`` the same in Lab, ``face`` the soft face mask and ``features`` the lips / eye /
    brow weight (both (gh, gw) float32)."""

    rgb: np.ndarray
    lab: np.ndarray
    face: np.ndarray
    features: np.ndarray


def read_caller(roi: np.ndarray, raster: Raster, mesh: RenderMesh, grid: Grid, cfg: MeshEngineConfig,
                regions: np.ndarray) -> CallerView:
    """The caller in ``roi`` on the grid; ``regions``: (gh, gw, 3) lips, eye-surroundings and
    brow weights (``regions.vertex_regions`` interpolated over the mesh)."""
    rgb = shrink(roi, (grid.gw, grid.gh)).astype(np.float32) * (1.0 / 255.0)
    features = np.minimum(regions[..., 0] + regions[..., 1] + regions[..., 2], 1.0)
    return CallerView(rgb=rgb, lab=cv2.cvtColor(rgb, cv2.COLOR_RGB2Lab),
                      face=face_alpha(raster, mesh, grid, cfg.edge_feather), features=features)
