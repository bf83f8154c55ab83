"""Reference images decode in a child process: results as in-process, errors as one line, and
a decode that takes too long is killed and answered while the next image still decodes."""

from __future__ import annotations

import asyncio
import io

import numpy as np
import pytest
from PIL import Image

from streamfx.pipeline.prompts import ReferenceError, ReferenceLimits, decode_reference
from streamfx.server.image_decoder import ImageDecoder


def _png(width: int, height: int) -> bytes:
    """A smooth RGB gradient (small as a PNG, slow to decode when large)."""
    yy, xx = np.mgrid[0:height, 0:width]
    rgb = np.stack([xx * 255 // width, yy * 255 // height, (xx + yy) % 256], axis=-1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG")
    return buf.getvalue()


def test_child_process_decodes_like_the_server_and_survives_a_slow_image():
    async def run() -> None:
        decoder = ImageDecoder(timeout_s=30.0)
        try:
            small = _png(300, 200)
            got = await decoder.decode(small, ReferenceLimits())
            assert np.array_equal(got, decode_reference(small))
            with pytest.raises(ReferenceError, match="not a readable image"):
                await decoder.decode(b"GIF89a not really", ReferenceLimits())
            big = _png(3000, 3000)
            decoder.timeout_s = 0.01  # far less than a 9-Mpixel decode takes
            with pytest.raises(ReferenceError, match="took longer"):
                await decoder.decode(big, ReferenceLimits())
            decoder.timeout_s = 30.0
            got = await decoder.decode(big, ReferenceLimits())  # a fresh worker took over
            assert got.shape == (1024, 1024, 3)
        finally:
            decoder.close()

    asyncio.run(run())
