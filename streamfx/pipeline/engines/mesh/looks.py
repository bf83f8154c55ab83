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
from .masks import face_region, upsample_to_box
from .raster import Raster
from .topology import RenderMesh


def cartoon(rgb: np.ndarray) -> np.ndarray:
    """Flat colour areas (edge-preserving smoothing, lightness in bands) with soft dark outlines."""
    smooth = cv2.bilateralFilter(cv2.bilateralFilter(rgb, 7, 50, 5), 7, 50, 5)
    lab = cv2.cvtColor(smooth, cv2.COLOR_RGB2Lab)
    lab[..., 0] = np.clip(np.round(lab[..., 0] / 28.0) * 28.0, 0, 255).astype(np.uint8)
    flat = cv2.cvtColor(lab, cv2.COLOR_Lab2RGB).astype(np.float32)
    edges = cv2.Canny(cv2.cvtColor(smooth, cv2.COLOR_RGB2GRAY), 40, 110)
    ink = cv2.GaussianBlur(edges, (3, 3), 0).astype(np.float32) / 255.0
    return np.clip(flat * (1.0 - 0.75 * ink[..., None]), 0, 255).astype(np.uint8)


def sketch(rgb: np.ndarray) -> np.ndarray:
    """Pencil drawing: the grey image divided by its blurred negative (colour dodge), a little tone kept."""
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    dodge = cv2.divide(gray, 255 - cv2.GaussianBlur(255 - gray, (0, 0), 4), scale=256)
    drawing = cv2.addWeighted(dodge, 0.85, cv2.equalizeHist(gray), 0.15, 0)
    return cv2.cvtColor(drawing, cv2.COLOR_GRAY2RGB)


def oil(rgb: np.ndarray) -> np.ndarray:
    """Oil-paint dabs (opencv-contrib xphoto) on a lightly smoothed face."""
    return cv2.xphoto.oilPainting(cv2.bilateralFilter(rgb, 5, 40, 5), 4, 2, cv2.COLOR_RGB2Lab)


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
        region = face_region(raster, mesh, grid, cfg.edge_feather, None, strength)
        if region is None:
            return roi
        alpha, gbox, box = region
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
