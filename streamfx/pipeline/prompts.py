"""Turning user input into :class:`Prompt` values, with size and format limits.

Reference images arrive as bytes (an upload, a data URL, a file). They are decoded with
Pillow after checking the byte size, refused above a pixel budget (decompression bombs),
converted to RGB and shrunk to at most ``MAX_SIDE`` on the long side.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .controls import Prompt

MAX_SIDE = 1024
_DATA_URL = re.compile(r"^data:(image/[a-z0-9.+-]+)?(;base64)?,", re.IGNORECASE)


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


def decode_data_url(url: str, limits: ReferenceLimits = ReferenceLimits()) -> bytes:
    """``data:image/png;base64,...`` -> bytes, refusing oversized payloads before decoding."""
    match = _DATA_URL.match(url)
    if not match or not match.group(2):
        raise ReferenceError("reference must be a base64 data URL (data:image/...;base64,...)")
    payload = url[match.end():]
    if len(payload) * 3 // 4 > limits.max_bytes:
        raise ReferenceError(f"reference image is larger than {limits.max_bytes} bytes")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ReferenceError("reference data URL is not valid base64") from None


def image_prompt(data: bytes, name: str = "upload", limits: ReferenceLimits = ReferenceLimits(),
                 decoded: np.ndarray | None = None) -> Prompt:
    """A prompt of the image ``data`` (``decoded``: its :func:`decode_reference`, made elsewhere)."""
    image = decode_reference(data, limits) if decoded is None else decoded
    key = "image:" + hashlib.sha256(data).hexdigest()[:16]
    return Prompt(kind="image", name=name, image=image, key=key)


def preset_prompt(name: str) -> Prompt:
    return Prompt(kind="preset", name=name, key=f"preset:{name}")


def prompt_from_arg(text: str | None, limits: ReferenceLimits = ReferenceLimits()) -> Prompt | None:
    """A CLI ``--prompt``: an existing image file, or else a preset/style name."""
    if not text:
        return None
    path = Path(text).expanduser()
    if path.is_file():
        if path.stat().st_size > limits.max_bytes:
            raise ReferenceError(f"{path} is larger than {limits.max_bytes} bytes")
        return image_prompt(path.read_bytes(), name=path.stem, limits=limits)
    return preset_prompt(text)
