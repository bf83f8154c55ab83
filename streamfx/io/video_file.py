"""Running a frame filter over a video file: PyAV decode -> filter -> PyAV encode.

The filter is any ``(rgb, timestamp_s) -> rgb`` callable (the command line passes a
caller pipeline's :meth:`~streamfx.pipeline.processor.CallerPipeline.filter_at`), so this
module knows nothing of engines. The output keeps the input's frame rate, size and frame
count; the first audio stream is carried over (copied when the output container can hold
its codec, else re-encoded).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable

import av
from tqdm import tqdm

import numpy as np

from .. import log
from .encoding import VideoWriter, error_text, output_format
from .errors import MediaError

logger = log.get(__name__)
DEFAULT_FPS = Fraction(25)
#: (RGB uint8 frame (H, W, 3), its time in seconds from the start) -> filtered frame, same shape
FrameFilter = Callable[[np.ndarray, float], np.ndarray]


@dataclass(frozen=True)
class ProcessResult:
    output: Path
    frames: int
    width: int
    height: int
    fps: float
    seconds: float          # wall time of the whole run
    engine_ms: float        # mean filter time per frame
    frame_ms: float         # mean wall time per frame: decode + engine + encode
    audio: str              # "none", "aac (copied)", "opus (re-encoded)", "dropped"

    def summary(self) -> str:
        return (f"{self.frames} frames {self.width}x{self.height} @ {self.fps:g} fps in {self.seconds:.1f} s: "
                f"engine {self.engine_ms:.1f} ms/frame, total {self.frame_ms:.1f} ms/frame, "
                f"audio {self.audio} -> {self.output}")


def open_input(path: str | os.PathLike) -> av.container.InputContainer:
    """Open a video file for decoding; :class:`MediaError` (one line) if it is not one."""
    path = Path(path)
    if not path.exists():
        raise MediaError(f"input not found: {path}")
    if not path.is_file():
        raise MediaError(f"input is not a file: {path}")
    try:
        container = av.open(str(path), "r")
    except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise MediaError(f"cannot read {path}: not a decodable video ({error_text(exc)})") from None
    if not container.streams.video:
        container.close()
        raise MediaError(f"cannot read {path}: it has no video stream")
    return container


def stream_fps(stream: av.video.stream.VideoStream) -> Fraction:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate or rate <= 0 or rate > 1000:
        logger.warning("unknown frame rate; assuming 25 fps")
        return DEFAULT_FPS
    return Fraction(rate)


def process_video(src: str | os.PathLike, dst: str | os.PathLike, filter_frame: FrameFilter, *,
                  audio: bool = True, max_frames: int | None = None, progress: bool = False) -> ProcessResult:
    """Filter every frame of ``src`` with ``filter_frame``, in order, and write ``dst``.

    Raises :class:`MediaError` for an unreadable input or an unwritable output; a partial
    output is deleted.
    """
    src, dst = Path(src), Path(dst)
    output_format(dst)  # refuse an unknown extension before decoding anything
    if dst.exists() and src.exists() and dst.resolve() == src.resolve():
        raise MediaError(f"output {dst} is the input file")
    container = open_input(src)
    try:
        return _run(container, src, dst, filter_frame, audio, max_frames, progress)
    finally:
        container.close()


def _run(container: av.container.InputContainer, src: Path, dst: Path, filter_frame: FrameFilter,
         audio: bool, max_frames: int | None, progress: bool) -> ProcessResult:
    video = container.streams.video[0]
    video.thread_type = "AUTO"
    fps = stream_fps(video)
    width, height = video.codec_context.width, video.codec_context.height
    if not width or not height:
        raise MediaError(f"cannot read {src}: the video stream has no size")
    start = float(video.start_time * video.time_base) if video.start_time is not None else 0.0
    sound = container.streams.audio[0] if (audio and container.streams.audio) else None
    total = min(filter(None, (video.frames, max_frames)), default=None)
    started = time.perf_counter()
    engine_ms = 0.0
    with VideoWriter(dst, width, height, fps) as writer:
        track = writer.add_audio(sound, start) if sound is not None else None
        streams = [video] + ([sound] if track is not None else [])
        bar = tqdm(total=total, unit="frame", desc=src.name, disable=not progress, leave=False)
        try:
            for packet in container.demux(*streams):
                if packet.stream is not video:
                    track.feed(packet)
                    continue
                for frame in packet.decode():
                    if max_frames and writer.frames >= max_frames:
                        break
                    t = None if frame.pts is None else float(frame.time) - start
                    rgb = frame.to_ndarray(format="rgb24")
                    began = time.perf_counter()
                    out = filter_frame(rgb, t if t is not None else writer.frames / float(fps))
                    engine_ms += (time.perf_counter() - began) * 1e3
                    writer.write(out, t)
                    bar.update(1)
                if max_frames and writer.frames >= max_frames:
                    break
        except av.FFmpegError as exc:
            raise MediaError(f"cannot decode {src} at frame {writer.frames}: {error_text(exc)}") from None
        finally:
            bar.close()
        if writer.frames == 0:
            raise MediaError(f"cannot read {src}: no video frames could be decoded")
    seconds = time.perf_counter() - started
    frames = writer.frames
    return ProcessResult(output=dst, frames=frames, width=width, height=height, fps=float(fps),
                         seconds=seconds, engine_ms=engine_ms / frames, frame_ms=seconds * 1e3 / frames,
                         audio=("none" if sound is None else track.describe() if track else "dropped"))
