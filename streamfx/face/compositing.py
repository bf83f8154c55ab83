"""Paste a rendered EG3D crop back into the frame through a feathered head mask.

The mask is a soft ellipse over the head in the EG3D crop (the crop is canonical, so a
fixed shape fits every aligned face), or any (S, S) mask the caller passes.  Only the
frame region under the crop is touched.  Colour matching pulls the render towards the
frame near the seam only (a smooth correction fading to zero inside the head), so an
edit keeps its colours while the boundary does not show.
"""

from __future__ import annotations

import cv2
import numpy as np

from .paste_geometry import COLOR_GRID, region_under, scaled_support, crop_to_region, crop_head_mask
from .types import AlignedFace, FaceError

def frame_head_mask(aligned: AlignedFace, mask: np.ndarray | None = None, feather: float = 0.06) -> np.ndarray:
    """(H, W) float32 head mask in frame space (the crop mask warped back)."""
    h, w = aligned.frame_shape
    out = np.zeros((h, w), dtype=np.float32)
    m = crop_head_mask(aligned.size, feather) if mask is None else np.asarray(mask, dtype=np.float32)
    roi = region_under(aligned, scaled_support(m, aligned.size, float(feather) if mask is None else None))
    if roi is None:
        return out
    x0, y0, x1, y1 = roi
    out[y0:y1, x0:x1] = cv2.warpAffine(m, crop_to_region(aligned, m.shape[0], roi), (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR)
    return out


def _seam_correction(original: np.ndarray, rendered: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(S, S, 3) uint8 colour offset + 128, pulling ``rendered`` towards ``original`` at the seam."""
    g = COLOR_GRID
    o = cv2.resize(original, (g, g), interpolation=cv2.INTER_AREA).astype(np.float32)
    r = cv2.resize(rendered, (g, g), interpolation=cv2.INTER_AREA).astype(np.float32)
    m = cv2.resize(mask, (g, g), interpolation=cv2.INTER_AREA)
    band = (4.0 * m * (1.0 - m))[..., None]  # where the two images meet
    sigma = g / 10.0
    num = cv2.GaussianBlur((o - r) * band, (0, 0), sigma)
    den = cv2.GaussianBlur(band[..., 0], (0, 0), sigma).reshape(g, g, 1)
    offset = num / np.maximum(den, 1e-3) * (1.0 - m)[..., None]  # fades to 0 inside the head
    s = rendered.shape[0]
    biased = np.clip(offset + 128.0, 0, 255).astype(np.uint8)  # uint8 upsampling is much cheaper
    return cv2.resize(biased, (s, s), interpolation=cv2.INTER_LINEAR)


def composite(
    frame: np.ndarray,
    rendered: np.ndarray,
    aligned: AlignedFace,
    mask: np.ndarray | None = None,
    color_match: bool = True,
    feather: float = 0.06,
) -> np.ndarray:
    """Blend ``rendered`` (S, S, 3) uint8, an image of ``aligned``'s crop, into ``frame``.

    frame: (H, W, 3) uint8, the frame ``aligned`` was cut from; mask: optional (S, S)
    float in [0, 1] in crop space (default: the feathered head ellipse).  Returns a new
    (H, W, 3) uint8 frame; ``frame`` is not modified.
    """
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise FaceError(f"expected an (H, W, 3) uint8 frame, got {frame.shape} {frame.dtype}")
    if tuple(frame.shape[:2]) != tuple(aligned.frame_shape):
        raise FaceError(f"frame is {frame.shape[:2]} but the face was aligned on {aligned.frame_shape}")
    if rendered.ndim != 3 or rendered.shape[0] != rendered.shape[1] or rendered.shape[2] != 3:
        raise FaceError(f"expected a square (S, S, 3) rendered crop, got {rendered.shape}")
    s = rendered.shape[0]
    m = crop_head_mask(s, feather) if mask is None else np.asarray(mask, dtype=np.float32)
    default_feather = float(feather) if mask is None else None
    if m.shape != (s, s):
        raise FaceError(f"mask must be ({s}, {s}), got {m.shape}")
    out = frame.copy()
    roi = region_under(aligned, scaled_support(m, aligned.size, default_feather))
    if roi is None:
        return out
    src = rendered
    if color_match:
        original = aligned.crop if aligned.size == s else cv2.resize(aligned.crop, (s, s), interpolation=cv2.INTER_AREA)
        src = cv2.addWeighted(rendered, 1.0, _seam_correction(original, rendered, m), 1.0, -128.0)
    x0, y0, x1, y1 = roi
    to_roi = crop_to_region(aligned, s, roi)
    size = (x1 - x0, y1 - y0)
    warped = cv2.warpAffine(src, to_roi, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    alpha = cv2.warpAffine(m, to_roi, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    base = out[y0:y1, x0:x1]
    out[y0:y1, x0:x1] = cv2.blendLinear(warped, base, alpha, 1.0 - alpha)
    return out
