"""Small helpers for the face tests (no fixtures here)."""

from __future__ import annotations

import cv2
import numpy as np


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    d = (a.astype(np.float64) - b.astype(np.float64)) ** 2
    mse = d[mask > 0].mean() if mask is not None else d.mean()
    return float(10 * np.log10(255.0**2 / max(mse, 1e-12)))


def paste(crop: np.ndarray, scale: float, shift: tuple[float, float], size=(1280, 720), bg=(120, 110, 100)):
    """Paste ``crop`` into a (H, W) canvas with x' = scale * x + shift (pixel centres). Returns (canvas, P)."""
    w, h = size
    canvas = np.empty((h, w, 3), np.uint8)
    canvas[:] = bg
    p = np.array([[scale, 0, shift[0]], [0, scale, shift[1]]], dtype=np.float64)
    flags = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    cv2.warpAffine(crop, p, (w, h), dst=canvas, flags=flags, borderMode=cv2.BORDER_TRANSPARENT)
    return canvas, p


def face_mask(landmarks: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Filled face-outline polygon of (478, 3) landmarks."""
    from streamfx.face.mesh import face_oval

    m = np.zeros(shape, np.uint8)
    cv2.fillPoly(m, [np.round(landmarks[face_oval(), :2]).astype(np.int32)], 1)
    return m
