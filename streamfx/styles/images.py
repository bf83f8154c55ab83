"""Reading reference images from bytes, with size and format limits.

Bytes (an upload, a data URL, a file) are decoded with Pillow after checking the byte size,
refused above a pixel budget (decompression bombs), converted to RGB and shrunk to at most
``MAX_SIDE`` on the long side.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

MAX_SIDE = 1024


class ReferenceError(ValueError):
    """A reference image that cannot be used; the message is one line for the user."""


@dataclass(frozen=True)
class ReferenceLimits:
    max_bytes: int = 8 * 1024 * 1024
    max_pixels: int = 40_000_000


def decode_reference(data: bytes, limits: ReferenceLimits = ReferenceLimits()) -> np.ndarray:
    """Bytes of a PNG/JPEG/WebP/... image -> RGB uint8 (H, W, 3), long side <= MAX_SIDE."""
    if not data:
        raise ReferenceError("reference image is empty")
    if len(data) > limits.max_bytes:
        raise ReferenceError(f"reference image is {len(data)} bytes; the limit is {limits.max_bytes}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > limits.max_pixels:
                raise ReferenceError(f"reference image is {width}x{height}; the limit is {limits.max_pixels} pixels")
            image.draft("RGB", (MAX_SIDE, MAX_SIDE))  # JPEG: decode at reduced size
            image = image.convert("RGB")
    except ReferenceError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as exc:
        raise ReferenceError(f"reference is not a readable image ({type(exc).__name__})") from None
    if min(image.size) < 16:
        raise ReferenceError(f"reference image is too small ({image.size[0]}x{image.size[1]})")
    if max(image.size) > MAX_SIDE:
        image.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.BICUBIC)
    return np.asarray(image, dtype=np.uint8).copy()
