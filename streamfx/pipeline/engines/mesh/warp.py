"""Re-rendering the live face at the target pose: dense backward maps and ``cv2.remap``.

The target mesh is rasterised (z-buffered, back faces culled) on the coarse grid; each
covered grid pixel knows where its surface point lies in the live frame (the same
barycentrics on the live mesh).  Around the face that displacement is continued
(nearest value at the border, relaxing to a blur further out) and faded to zero over
``cfg.fade`` face sizes, so hair, ears and neck follow the head with no seam or tear and
the frame further away is untouched.  The grid map is upsampled to frame resolution and
applied with a single ``cv2.remap``.

Parts of the face the live frame sees edge-on (the far cheek of a turned head, where
mediapipe's points often sit on the background) are blended towards their mirror image
on the visible side of the face, with per-vertex weights so that the blend has no seams.
"""

from __future__ import annotations

import cv2
import numpy as np

from .config import MeshEngineConfig
from .fields import Extension, smoothstep
from .geometry import Grid
from .masks import frame_box, grid_box, upsample_to_box
from .topology import RenderMesh, vertex_cos

_MIN_MIRROR = 0.02  # mirror weights below this are ignored


def mirror_weights(source: np.ndarray, mesh: RenderMesh, cfg: MeshEngineConfig) -> np.ndarray:
    """(468,) float32 in [0, 1]: how much each vertex takes its texture from its mirror vertex.

    source: (468, 3) live landmarks.  A vertex borrows when the live frame sees it edge-on
    and its mirror vertex is seen well.
    """
    lo, hi = cfg.mirror_cos
    seen = smoothstep((vertex_cos(source, mesh) - lo) / (hi - lo))
    return ((1.0 - seen) * seen[mesh.mirror]).astype(np.float32)


_BASE = np.zeros((0, 0, 2), np.float32)  # _BASE[y, x] = (x, y), grown on demand


def _pixel_coords(x0: int, y0: int, w: int, h: int) -> np.ndarray:
    """(h, w, 2) float32 frame coordinates (x, y) of the rectangle starting at (x0, y0) (do not modify)."""
    global _BASE
    if _BASE.shape[0] < y0 + h or _BASE.shape[1] < x0 + w:
        bh, bw = max(_BASE.shape[0], y0 + h), max(_BASE.shape[1], x0 + w)
        xs, ys = np.meshgrid(np.arange(bw, dtype=np.float32), np.arange(bh, dtype=np.float32))
        _BASE = np.dstack([xs, ys])
    return _BASE[y0:y0 + h, x0:x0 + w]


def _remap(frame: np.ndarray, d: np.ndarray, x0: int, y0: int) -> np.ndarray:
    """Sample ``frame`` at ROI pixel + ``d`` (h, w, 2) for the rectangle starting at frame (x0, y0)."""
    h, w = d.shape[:2]
    xy = cv2.add(np.ascontiguousarray(d), _pixel_coords(x0, y0, w, h))  # (h, w, 2): one CV_32FC2 map
    return cv2.remap(frame, xy, None, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def render(frame: np.ndarray, grid: Grid, covered: np.ndarray, source: np.ndarray, mirrored: np.ndarray,
           mirror_weight: np.ndarray, cfg: MeshEngineConfig) -> np.ndarray:
    """(y1-y0, x1-x0, 3) uint8: the ROI of ``frame`` re-rendered with the target mesh.

    All inputs are on the grid, interpolated from the rasterised target mesh: ``covered``
    (gh, gw) bool; ``source`` (gh, gw, 2) where each surface point is in the live frame;
    ``mirrored`` (gh, gw, 2) where its mirror image is; ``mirror_weight`` (gh, gw) how much
    of the mirror image to use (see :func:`mirror_weights`).
    """
    ext = Extension(covered)
    centres = grid.centres()
    disp = ext.extend(source - centres, cfg.fade * grid.face_px)
    out = _remap(frame, cv2.resize(disp, grid.size, interpolation=cv2.INTER_LINEAR), grid.x0, grid.y0)
    if mirror_weight.max(initial=0.0) < _MIN_MIRROR:
        return out
    # the mirror blend continues a little past the mesh border, so the silhouette comes from
    # the mirrored texture's own edge rather than from the grid's staircase
    border_px = cfg.mirror_border * grid.face_px
    inner = grid_box(mirror_weight >= _MIN_MIRROR, pad=int(np.ceil(border_px)) + 1)
    if inner is None:
        return out
    gx0, gy0, gx1, gy1 = inner
    wm = ext.extend(mirror_weight[..., None], border_px, relax_px=0.0, box=inner)[..., 0]
    md = ext.extend(mirrored - centres, None, relax_px=0.0, box=inner)
    full = np.zeros((grid.gh, grid.gw), np.float32)
    full[gy0:gy1, gx0:gx1] = wm
    box = frame_box(full, grid)
    if box is None:
        return out
    x0, y0, x1, y1 = box
    up = upsample_to_box(np.dstack([md, wm]), inner, grid, box)  # (h, w, 3): mirror map, weight
    sub = _remap(frame, up[..., :2], grid.x0 + x0, grid.y0 + y0)
    a = np.ascontiguousarray(up[..., 2])
    out[y0:y1, x0:x1] = cv2.blendLinear(sub, out[y0:y1, x0:x1], a, 1.0 - a)
    return out
