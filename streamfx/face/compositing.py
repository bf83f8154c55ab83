"""Paste a rendered EG3D crop back into the frame through a feathered head mask.

The mask is a soft ellipse over the head in the EG3D crop (the crop is canonical, so a
fixed shape fits every aligned face), or any (S, S) mask the caller passes.  Only the
frame region under the crop is touched.  Colour matching pulls the render towards the
frame near the seam only (a smooth correction fading to zero inside the head), so an
edit keeps its colours while the boundary does not show.
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

from .alignment import transform_points
from .types import AlignedFace, FaceError

# Head ellipse in the 512 EG3D crop: centre (x, y) and semi-axes (x, y), in pixels.
HEAD_CENTRE = (256.0, 244.0)
HEAD_AXES = (172.0, 210.0)
_COLOR_GRID = 64  # the seam colour correction is computed on a grid this size


@lru_cache(maxsize=8)
def _ellipse_mask(size: int, feather: float) -> np.ndarray:
    k = size / 512.0
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    r = np.sqrt(((xx - HEAD_CENTRE[0] * k) / (HEAD_AXES[0] * k)) ** 2 + ((yy - HEAD_CENTRE[1] * k) / (HEAD_AXES[1] * k)) ** 2)
    # smooth step from 1 inside to 0 outside over a band of ``feather * size`` pixels
    band = max(feather * size / (HEAD_AXES[0] * k), 1e-3)
    x = np.clip((1.0 - r) / band + 0.5, 0.0, 1.0)
    mask = x * x * (3.0 - 2.0 * x)
    mask.setflags(write=False)
    return mask


def crop_head_mask(size: int = 512, feather: float = 0.06) -> np.ndarray:
    """(size, size) float32 feathered head mask in EG3D-crop space, 1 = head (read-only)."""
    return _ellipse_mask(int(size), float(feather))


def _support(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of the mask's non-zero pixels (exclusive end)."""
    x, y, w, h = cv2.boundingRect((mask > 0).astype(np.uint8))
    return x, y, x + w, y + h


def _roi(aligned: AlignedFace, box: tuple[int, int, int, int] | None = None) -> tuple[int, int, int, int] | None:
    """Frame box under the crop box ``box`` (crop pixels of the aligned crop; default all)."""
    h, w = aligned.frame_shape
    s = aligned.size
    bx0, by0, bx1, by1 = box if box is not None else (0, 0, s, s)
    corners = transform_points(
        aligned.inverse, np.array([[bx0 - 1, by0 - 1], [bx1, by0 - 1], [bx0 - 1, by1], [bx1, by1]], dtype=np.float64)
    )
    x0, y0 = np.floor(corners.min(axis=0)).astype(int)
    x1, y1 = np.ceil(corners.max(axis=0)).astype(int) + 1
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if x1 <= x0 or y1 <= y0:
        return None
    return int(x0), int(y0), int(x1), int(y1)


def _to_roi(aligned: AlignedFace, image_size: int, roi: tuple[int, int, int, int]) -> np.ndarray:
    """(2, 3) matrix from an ``image_size`` crop to ROI pixels."""
    inv = np.array(aligned.inverse, dtype=np.float64)
    if image_size != aligned.size:  # crop of another resolution: map it to the aligned crop first
        f = aligned.size / image_size
        pre = np.array([[f, 0.0, 0.5 * f - 0.5], [0.0, f, 0.5 * f - 0.5], [0.0, 0.0, 1.0]])
        inv = inv @ pre
    inv[:, 2] -= roi[:2]
    return inv


def frame_head_mask(aligned: AlignedFace, mask: np.ndarray | None = None, feather: float = 0.06) -> np.ndarray:
    """(H, W) float32 head mask in frame space (the crop mask warped back)."""
    h, w = aligned.frame_shape
    out = np.zeros((h, w), dtype=np.float32)
    m = crop_head_mask(aligned.size, feather) if mask is None else np.asarray(mask, dtype=np.float32)
    roi = _roi(aligned, _scaled_support(m, aligned.size, float(feather) if mask is None else None))
    if roi is None:
        return out
    x0, y0, x1, y1 = roi
    out[y0:y1, x0:x1] = cv2.warpAffine(m, _to_roi(aligned, m.shape[0], roi), (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR)
    return out


@lru_cache(maxsize=8)
def _ellipse_support(size: int, feather: float) -> tuple[int, int, int, int]:
    return _support(_ellipse_mask(size, feather))


def _scaled_support(mask: np.ndarray, crop_size: int, feather: float | None = None) -> tuple[int, int, int, int]:
    """The mask's support box in pixels of a ``crop_size`` crop (``feather``: the default mask)."""
    x0, y0, x1, y1 = _support(mask) if feather is None else _ellipse_support(mask.shape[0], feather)
    f = crop_size / mask.shape[0]
    return int(np.floor(x0 * f)), int(np.floor(y0 * f)), int(np.ceil(x1 * f)), int(np.ceil(y1 * f))


def _seam_correction(original: np.ndarray, rendered: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(S, S, 3) uint8 colour offset + 128, pulling ``rendered`` towards ``original`` at the seam."""
    g = _COLOR_GRID
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
    roi = _roi(aligned, _scaled_support(m, aligned.size, default_feather))
    if roi is None:
        return out
    src = rendered
    if color_match:
        original = aligned.crop if aligned.size == s else cv2.resize(aligned.crop, (s, s), interpolation=cv2.INTER_AREA)
        src = cv2.addWeighted(rendered, 1.0, _seam_correction(original, rendered, m), 1.0, -128.0)
    x0, y0, x1, y1 = roi
    to_roi = _to_roi(aligned, s, roi)
    size = (x1 - x0, y1 - y0)
    warped = cv2.warpAffine(src, to_roi, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    alpha = cv2.warpAffine(m, to_roi, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    base = out[y0:y1, x0:x1]
    out[y0:y1, x0:x1] = cv2.blendLinear(warped, base, alpha, 1.0 - alpha)
    return out
