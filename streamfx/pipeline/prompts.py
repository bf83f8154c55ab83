"""Turning user input into :class:`Prompt` values, with size and format limits.

Reference images arrive as bytes (an upload, a data URL, a file) and are decoded by
:func:`streamfx.styles.images.decode_reference` (byte and pixel limits, RGB, long side at
most ``MAX_SIDE``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from pathlib import Path

import numpy as np

from ..styles.images import MAX_SIDE, ReferenceError, ReferenceLimits, decode_reference
from .controls import Prompt

__all__ = ["MAX_SIDE", "ReferenceError", "ReferenceLimits", "decode_reference", "decode_data_url",
           "image_prompt", "preset_prompt", "prompt_from_arg"]

_DATA_URL = re.compile(r"^data:(image/[a-z0-9.+-]+)?(;base64)?,", re.IGNORECASE)


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
