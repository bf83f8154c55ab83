"""Building ``.y4m`` clips, e.g. Chromium's fake camera (``--use-file-for-fake-video-capture``).

:func:`write_y4m_from_video` scales a video, places it on a plain canvas of another size
and writes raw yuv420p frames through PyAV's ``yuv4mpegpipe`` muxer.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from .encoding import VideoWriter
from .errors import MediaError
from .video_file import open_input, stream_fps


def place(frame: np.ndarray, canvas: np.ndarray, scale: float, offset: tuple[int, int]) -> np.ndarray:
    """Draw ``frame`` (h, w, 3) scaled by ``scale`` with its top-left corner at ``offset``
    (x, y) on a copy of ``canvas`` (H, W, 3); parts outside the canvas are cut off."""
    out = canvas.copy()
    h, w = frame.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    if size != (w, h):
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        frame = cv2.resize(frame, size, interpolation=interp)
    x, y = offset
    ch, cw = out.shape[:2]
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + size[0], cw), min(y + size[1], ch)
    if x1 > x0 and y1 > y0:
        out[y0:y1, x0:x1] = frame[y0 - y:y1 - y, x0 - x:x1 - x]
    return out


def write_y4m_from_video(src: str | os.PathLike, dst: str | os.PathLike, canvas: tuple[int, int] = (640, 480), *,
                         scale: float | None = None, offset: tuple[int, int] | None = None,
                         background: tuple[int, int, int] = (32, 32, 32), max_frames: int | None = None) -> int:
    """Write ``src`` placed on a ``canvas`` = (width, height) background to ``dst`` (.y4m).

    ``scale`` None fits the video inside the canvas (never enlarging); ``offset`` None
    centres it; ``background`` is an RGB colour. Keeps the source frame rate. Returns the
    number of frames written.
    """
    dst = Path(dst)
    if dst.suffix.lower() != ".y4m":
        raise MediaError(f"{dst} must end with .y4m")
    width, height = canvas
    if width < 2 or height < 2 or width % 2 or height % 2:
        raise MediaError(f"canvas must have even sides of at least 2 pixels, got {width}x{height}")
    container = open_input(src)
    try:
        stream = container.streams.video[0]
        sw, sh = stream.codec_context.width, stream.codec_context.height
        k = scale if scale is not None else min(width / sw, height / sh, 1.0)
        pos = offset if offset is not None else ((width - round(sw * k)) // 2, (height - round(sh * k)) // 2)
        base = np.empty((height, width, 3), np.uint8)
        base[:] = background
        with VideoWriter(dst, width, height, stream_fps(stream)) as writer:
            for frame in container.decode(stream):
                writer.write(place(frame.to_ndarray(format="rgb24"), base, k, pos))
                if max_frames and writer.frames >= max_frames:
                    break
            return writer.frames
    finally:
        container.close()
