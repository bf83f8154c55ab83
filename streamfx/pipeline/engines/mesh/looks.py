"""Looks: OpenCV non-photorealistic filters on the face, chosen by name or by a reference.

The face's box is resampled so that the face is ``cfg.look_face_px`` pixels across (the
filters' parameters then mean the same at every distance from the camera and cost the
same), filtered, resampled back and blended in where the edit applies: the face and the
caller's skin around it, ears and neck included, the open eyes and mouth kept (``skin.edit_alpha``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

from .config import MeshEngineConfig
from .geometry import Grid
from .fields import smoothstep
from .masks import face_boxes, upsample_to_box
from .regions import SKIN
from .skin import CallerState, edit_alpha, read_caller
from .raster import Raster
from .topology import RenderMesh


def _ink(grey: np.ndarray, sigma: float = 1.0, gain: float = 0.08) -> np.ndarray:
    """(H, W) float32 0..1: soft dark lines where ``grey`` (uint8) has a dark ridge or edge side
    (difference of Gaussians; continuous, so noise does not make lines blink)."""
    g = grey.astype(np.float32)
    dog = cv2.GaussianBlur(g, (0, 0), 1.6 * sigma) - cv2.GaussianBlur(g, (0, 0), sigma)
    return np.clip((dog - 2.0) * gain, 0.0, 1.0)


def _bands(step: float, softness: float) -> np.ndarray:
    """256-entry uint8 lookup table: lightness pulled into bands ``step`` wide, with smooth
    ramps (``softness`` of a step) between them instead of jumps."""
    x = np.arange(256, dtype=np.float32) / step
    base = np.floor(x)
    r = smoothstep((x - base - 0.5) / softness + 0.5)
    return np.clip((base + r) * step, 0, 255).astype(np.uint8)


_BANDS = _bands(32.0, 0.35)


def cartoon(rgb: np.ndarray) -> np.ndarray:
    """Flat colour areas (edge-preserving smoothing, luma in soft bands) with dark outlines."""
    ycc = cv2.cvtColor(cv2.bilateralFilter(rgb, 5, 60, 5), cv2.COLOR_RGB2YCrCb)
    luma = ycc[..., 0]
    ink = _ink(luma, 1.0, 0.12)
    ycc[..., 0] = cv2.LUT(luma, _BANDS).astype(np.float32) * (1.0 - 0.85 * ink)
    return cv2.cvtColor(ycc, cv2.COLOR_YCrCb2RGB)


def sketch(rgb: np.ndarray) -> np.ndarray:
    """Pencil drawing: the grey image divided by its blurred negative (colour dodge), a little tone kept."""
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    dodge = cv2.divide(gray, 255 - cv2.GaussianBlur(255 - gray, (0, 0), 4), scale=256)
    drawing = cv2.addWeighted(dodge, 0.85, cv2.equalizeHist(gray), 0.15, 0)
    return cv2.cvtColor(drawing, cv2.COLOR_GRAY2RGB)


def engraving(rgb: np.ndarray) -> np.ndarray:
    """Ink on paper: a steep tone curve around the face's median grey (dark shadows, white
    lights) and dark lines along the features."""
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    mid = float(np.median(gray)) + 8.0  # a little more ink than paper
    tone = 255.0 / (1.0 + np.exp(-(gray - mid) / 10.0))
    ink = _ink(gray.astype(np.uint8), 1.0, 0.12)
    out = np.clip(tone * (1.0 - 0.85 * ink), 0, 255).astype(np.uint8)
    return cv2.cvtColor(out, cv2.COLOR_GRAY2RGB)


def oil(rgb: np.ndarray) -> np.ndarray:
    """Oil-paint dabs (opencv-contrib xphoto) on a lightly smoothed face."""
    return cv2.xphoto.oilPainting(cv2.bilateralFilter(rgb, 5, 40, 5), 4, 2, cv2.COLOR_RGB2Lab)


FILTERS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "cartoon": cartoon, "sketch": sketch, "oil": oil, "engraving": engraving}
LOOKS: tuple[str, ...] = tuple(FILTERS)
WORK_SCALE = {"oil": 0.6}  # filters run with the face this fraction of cfg.look_face_px across (cost)


def look_scale(kind: str, face_frame_px: float, working_face_px: float) -> float:
    """Working pixels per frame pixel of the ``kind`` filter, for a face ``face_frame_px``
    across that the filter is to see ``working_face_px`` across."""
    return working_face_px * WORK_SCALE.get(kind, 1.0) / max(face_frame_px, 1.0)


def stylise(sub: np.ndarray, kind: str, face_frame_px: float, cfg: MeshEngineConfig) -> np.ndarray:
    """``sub`` (h, w, 3) uint8 through the ``kind`` filter, computed with the face
    ``cfg.look_face_px`` pixels across (same look and cost at any distance), same size out."""
    h, w = sub.shape[:2]
    k = look_scale(kind, face_frame_px, cfg.look_face_px)
    small_size = (max(int(round(w * k)), 8), max(int(round(h * k)), 8))
    small = cv2.resize(sub, small_size, interpolation=cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR)
    return cv2.resize(FILTERS[kind](small), (w, h), interpolation=cv2.INTER_LINEAR)


def blend_look(roi: np.ndarray, alpha: np.ndarray, gbox, box, grid: Grid, kind: str, amount: float,
               cfg: MeshEngineConfig) -> np.ndarray:
    """Blend the ``kind`` look into ``roi`` in place through the grid ``alpha`` (times ``amount``)."""
    x0, y0, x1, y1 = box
    sub = roi[y0:y1, x0:x1]
    styled = stylise(sub, kind, grid.face_px * grid.scale[0], cfg)
    a = upsample_to_box(alpha[gbox[1]:gbox[3], gbox[0]:gbox[2]], gbox, grid, box)
    diff = cv2.subtract(styled, sub, dtype=cv2.CV_32F)
    roi[y0:y1, x0:x1] = cv2.add(sub, diff * (a * float(amount))[..., None], dtype=cv2.CV_8U)
    return roi


@dataclass(frozen=True)
class Look:
    """A named look; ``apply`` edits the face in an ROI like a reference does."""

    name: str

    kind = "look"

    def apply(self, roi: np.ndarray, raster: Raster, grid: Grid, mesh: RenderMesh, strength: float,
              cfg: MeshEngineConfig, regions: np.ndarray, state: CallerState) -> np.ndarray:
        """Filter the caller's face and the skin around it (as a reference's look does: see
        ``skin.edit_alpha``) in ``roi`` (h, w, 3) uint8, in place, and return it."""
        view = read_caller(roi, raster, mesh, grid, cfg, regions)
        measure = ((1.0 - view.features) * (view.face > 0.5))[::2, ::2]
        own = state.update(np.ascontiguousarray(view.lab[::2, ::2]).reshape(-1, 3), measure.reshape(-1, 1), (SKIN,))
        if SKIN not in own:
            return roi
        alpha = edit_alpha(raster, mesh, grid, cfg, view.lab, own[SKIN], view.features, view.face) * float(strength)
        boxes = face_boxes(alpha, grid)
        if boxes is None:
            return roi
        return blend_look(roi, alpha, *boxes, grid, self.name, 1.0, cfg)
