"""Reference-image appearance transfer through the shared mesh topology.

Preparing a reference (once per prompt): its face is tracked with the same 478-point
mesh, and its texture is unwrapped into the shared UV atlas (the canonical face seen
from the front), in Lab.  Texels the reference shows edge-on or not at all are filled
from their surroundings.

Per frame, the caller's rasterised mesh gives every grid pixel a UV position, so the
reference's face lands on the caller's face triangle by triangle.  The colour (a, b) is
the reference's; the lightness is the reference's pattern (its detail above the shading
scale) on the caller's own shading, brought to the reference's brightness, plus the
caller's fine detail (everything finer than the grid): the edit moves and is lit like
the caller.  All of that is a smooth Lab offset computed on the grid, upsampled and
added to the caller's pixels through the soft face mask (open eyes and mouth excluded),
scaled by the strength.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from .config import MeshEngineConfig
from .fields import masked_blur, push_pull
from .geometry import Grid
from .masks import face_region, groups, upsample_to_box
from .raster import Raster, rasterize
from .topology import SKIN, SKIRT_GROUP, RenderMesh, facing_cos, render_mesh, with_skirt


def to_lab(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 RGB -> float32 Lab (L 0..100)."""
    return cv2.cvtColor(rgb.astype(np.float32) * (1.0 / 255.0), cv2.COLOR_RGB2Lab)


def from_lab(lab: np.ndarray) -> np.ndarray:
    """float32 Lab -> uint8 RGB."""
    rgb = cv2.cvtColor(lab, cv2.COLOR_Lab2RGB)
    return np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8)


@lru_cache(maxsize=2)
def atlas_raster(size: int) -> Raster:
    """The UV atlas (size x size) rasterised once: which triangle and where, per texel."""
    mesh = render_mesh()
    uv = mesh.uv * (size - 1)
    keep = mesh.group != SKIRT_GROUP
    return rasterize(uv, np.zeros(len(uv)), mesh.tris, (size, size), keep=keep)


@dataclass(frozen=True)
class ReferenceAppearance:
    """A prepared reference: ``texture`` (A, A, 3) float32 Lab in the UV atlas and the mean
    Lab colour of its visible face, ``face_lab`` (3,)."""

    name: str
    texture: np.ndarray
    face_lab: np.ndarray

    kind = "reference"

    def apply(self, roi: np.ndarray, raster: Raster, grid: Grid, mesh: RenderMesh, strength: float,
              cfg: MeshEngineConfig, uv: np.ndarray) -> np.ndarray:
        return transfer(roi, raster, grid, mesh, self, strength, cfg, uv)


def unwrap(image: np.ndarray, landmarks: np.ndarray, name: str, cfg: MeshEngineConfig) -> ReferenceAppearance:
    """Reference RGB uint8 (H, W, 3) and its (478, 3) landmarks -> its face in the UV atlas."""
    mesh = render_mesh()
    size = cfg.atlas_size
    atlas = atlas_raster(size)
    verts = with_skirt(landmarks, mesh)
    pos = atlas.interpolate(verts[:, :2], mesh.tris)
    texture = cv2.remap(image, pos[..., 0], pos[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    visible = facing_cos(verts, mesh) >= cfg.min_visible_cos
    visible |= mesh.feature
    h, w = image.shape[:2]
    inside = (pos[..., 0] >= 0) & (pos[..., 0] <= w - 1) & (pos[..., 1] >= 0) & (pos[..., 1] <= h - 1)
    valid = atlas.covered & visible[np.maximum(atlas.tri, 0)] & inside
    lab = to_lab(texture)
    if valid.any():
        face_lab = lab[valid & (mesh.group[np.maximum(atlas.tri, 0)] == SKIN)].mean(axis=0)
    else:
        face_lab = lab.reshape(-1, 3).mean(axis=0)
    filled = push_pull(lab, valid.astype(np.float32))
    filled.setflags(write=False)
    return ReferenceAppearance(name=name, texture=filled, face_lab=np.asarray(face_lab, np.float32))


def transfer(roi: np.ndarray, raster: Raster, grid: Grid, mesh: RenderMesh, ref: ReferenceAppearance,
             strength: float, cfg: MeshEngineConfig, uv: np.ndarray) -> np.ndarray:
    """Put ``ref``'s appearance on the face in ``roi`` (y1-y0, x1-x0, 3) uint8 (modified in place and returned).

    raster: the face mesh as drawn in ``roi``, on ``grid``; uv: (gh, gw, 2) its UV
    coordinates in [0, 1] (interpolated from ``mesh.uv``).  The work is done on the grid
    rectangle around the face; only the RGB offset is upsampled to frame resolution.
    """
    region = face_region(raster, mesh, grid, cfg.edge_feather, cfg.feature_keep_dilate, strength)
    if region is None:
        return roi
    alpha_all, gbox, box = region
    gx0, gy0, gx1, gy1 = gbox
    alpha = alpha_all[gy0:gy1, gx0:gx1]
    # the caller on the grid rectangle only: area-average the ROI pixels under those grid cells
    sx, sy = grid.scale
    rw, rh = grid.size
    cx0, cy0 = int(round(gx0 * sx)), int(round(gy0 * sy))
    cx1, cy1 = min(int(round(gx1 * sx)), rw), min(int(round(gy1 * sy)), rh)
    caller_rgb = cv2.resize(roi[cy0:cy1, cx0:cx1], (gx1 - gx0, gy1 - gy0), interpolation=cv2.INTER_AREA)
    caller_rgb = caller_rgb.astype(np.float32) * (1.0 / 255.0)
    caller = cv2.cvtColor(caller_rgb, cv2.COLOR_RGB2Lab)
    size = ref.texture.shape[0]
    tex_xy = uv[gy0:gy1, gx0:gx1] * float(size - 1)
    refg = cv2.remap(ref.texture, tex_xy[..., 0], tex_xy[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    skin = (groups(raster, mesh)[gy0:gy1, gx0:gx1] == SKIN).astype(np.float32)
    if skin.sum() < 4:
        return roi
    sigma = max(cfg.shading_sigma * grid.face_px, 1.0)
    c_low = masked_blur(caller[..., 0], skin, sigma)
    r_low = masked_blur(refg[..., 0], skin, sigma)
    gain = float(cv2.sumElems(refg[..., 0] * skin)[0] / max(cv2.sumElems(caller[..., 0] * skin)[0], 1e-3))
    target = refg  # reuse: the reference's colour, its lightness re-lit with the caller's shading
    target[..., 0] += gain * c_low - r_low
    delta = (cv2.cvtColor(target, cv2.COLOR_Lab2RGB) - caller_rgb) * (255.0 * alpha)[..., None]
    x0, y0, x1, y1 = box
    full = upsample_to_box(delta, gbox, grid, box)
    roi[y0:y1, x0:x1] = cv2.add(roi[y0:y1, x0:x1], full, dtype=cv2.CV_8U)
    return roi
