"""Named looks without a reference: OpenCV non-photorealistic filters on the face only.

The face's box is resampled so that the face is ``cfg.look_face_px`` pixels across (the
filters' parameters then mean the same at every distance from the camera and cost the
same), filtered, resampled back and blended in through the soft face mask.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

from .config import MeshEngineConfig
from .geometry import Grid
from .masks import face_alpha, frame_box, grid_box, upsample_to_box
from .raster import Raster
from .topology import RenderMesh


def cartoon(rgb: np.ndarray) -> np.ndarray:
    """Flat colour areas (edge-preserving smoothing, quantised) with dark outlines."""
    smooth = cv2.bilateralFilter(cv2.bilateralFilter(rgb, 7, 60, 5), 7, 60, 5)
    flat = (smooth // 32) * 32 + 16
    gray = cv2.medianBlur(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), 5)
    edges = cv2.adaptiveThreshold(gray, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY, 9, 4)
    return cv2.bitwise_and(flat.astype(np.uint8), flat.astype(np.uint8), mask=edges)


def sketch(rgb: np.ndarray) -> np.ndarray:
    """Grey pencil strokes."""
    gray, _ = cv2.pencilSketch(rgb, sigma_s=15, sigma_r=0.08, shade_factor=0.04)
    return cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB)


def oil(rgb: np.ndarray) -> np.ndarray:
    """Oil-paint dabs (opencv-contrib xphoto)."""
    return cv2.xphoto.oilPainting(rgb, 5, 1, cv2.COLOR_RGB2Lab)


FILTERS: dict[str, Callable[[np.ndarray], np.ndarray]] = {"cartoon": cartoon, "sketch": sketch, "oil": oil}
LOOKS: tuple[str, ...] = tuple(FILTERS)


@dataclass(frozen=True)
class Look:
    """A named look; ``apply`` edits the face in an ROI like a reference does."""

    name: str

    kind = "look"

    def apply(self, roi: np.ndarray, raster: Raster, grid: Grid, mesh: RenderMesh, strength: float,
              cfg: MeshEngineConfig, uv: np.ndarray | None = None) -> np.ndarray:
        """Filter the face in ``roi`` (h, w, 3) uint8 in place and return it."""
        alpha = face_alpha(raster, mesh, grid, cfg.edge_feather, None) * float(strength)
        gbox = grid_box(alpha)
        box = frame_box(alpha, grid)
        if gbox is None or box is None:
            return roi
        x0, y0, x1, y1 = box
        sub = roi[y0:y1, x0:x1]
        face_frame_px = grid.face_px * grid.scale[0]
        k = cfg.look_face_px / max(face_frame_px, 1.0)
        small_size = (max(int(round((x1 - x0) * k)), 8), max(int(round((y1 - y0) * k)), 8))
        small = cv2.resize(sub, small_size, interpolation=cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR)
        styled = cv2.resize(FILTERS[self.name](small), (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
        a = upsample_to_box(alpha[gbox[1]:gbox[3], gbox[0]:gbox[2]], gbox, grid, box)
        diff = cv2.subtract(styled, sub, dtype=cv2.CV_32F)
        roi[y0:y1, x0:x1] = cv2.add(sub, diff * a[..., None], dtype=cv2.CV_8U)
        return roi
