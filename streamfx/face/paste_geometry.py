"""Where a rendered crop goes back into the frame: the feathered head mask in crop space,
the frame region under it, and the crop-to-region matrix. Numpy only, so that both the
OpenCV paste (:mod:`.compositing`) and the torch one (:mod:`.tensor_compositing`) use it.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from .types import AlignedFace

# Head ellipse in the 512 EG3D crop: centre (x, y) and semi-axes (x, y), in pixels.
HEAD_CENTRE = (256.0, 244.0)
HEAD_AXES = (172.0, 210.0)
COLOR_GRID = 64  # the seam colour correction is computed on a grid this size


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


def mask_support(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of the mask's non-zero pixels (exclusive end; all zero if none)."""
    ys, xs = np.nonzero(mask > 0)
    if xs.size == 0:
        return 0, 0, 0, 0
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def region_under(aligned: AlignedFace, box: tuple[int, int, int, int] | None = None) -> tuple[int, int, int, int] | None:
    """Frame box under the crop box ``box`` (crop pixels of the aligned crop; default all)."""
    h, w = aligned.frame_shape
    s = aligned.size
    bx0, by0, bx1, by1 = box if box is not None else (0, 0, s, s)
    inverse = np.asarray(aligned.inverse, dtype=np.float64)
    box = np.array([[bx0 - 1, by0 - 1], [bx1, by0 - 1], [bx0 - 1, by1], [bx1, by1]], dtype=np.float64)
    corners = box @ inverse[:, :2].T + inverse[:, 2]
    x0, y0 = np.floor(corners.min(axis=0)).astype(int)
    x1, y1 = np.ceil(corners.max(axis=0)).astype(int) + 1
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if x1 <= x0 or y1 <= y0:
        return None
    return int(x0), int(y0), int(x1), int(y1)


def crop_to_region(aligned: AlignedFace, image_size: int, roi: tuple[int, int, int, int]) -> np.ndarray:
    """(2, 3) matrix from an ``image_size`` crop to ROI pixels."""
    inv = np.array(aligned.inverse, dtype=np.float64)
    if image_size != aligned.size:  # crop of another resolution: map it to the aligned crop first
        f = aligned.size / image_size
        pre = np.array([[f, 0.0, 0.5 * f - 0.5], [0.0, f, 0.5 * f - 0.5], [0.0, 0.0, 1.0]])
        inv = inv @ pre
    inv[:, 2] -= roi[:2]
    return inv


@lru_cache(maxsize=8)
def ellipse_support(size: int, feather: float) -> tuple[int, int, int, int]:
    return mask_support(_ellipse_mask(size, feather))


def scaled_support(mask: np.ndarray, crop_size: int, feather: float | None = None) -> tuple[int, int, int, int]:
    """The mask's support box in pixels of a ``crop_size`` crop (``feather``: the default mask)."""
    x0, y0, x1, y1 = mask_support(mask) if feather is None else ellipse_support(mask.shape[0], feather)
    f = crop_size / mask.shape[0]
    return int(np.floor(x0 * f)), int(np.floor(y0 * f)), int(np.ceil(x1 * f)), int(np.ceil(y1 * f))
