"""Running the frame pipeline over a video file: PyAV decode -> pipeline -> PyAV encode.

The output keeps the input's frame rate, size and frame count; the first audio stream is
carried over (copied when the output container can hold its codec, else re-encoded).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
from tqdm import tqdm

from .. import log
from ..pipeline.processor import CallerPipeline
from ..pipeline.timing import StageTimer
from .encoding import VideoWriter, error_text, output_format
from .errors import MediaError

logger = log.get(__name__)
DEFAULT_FPS = Fraction(25)


@dataclass(frozen=True)
class ProcessResult:
    output: Path
    frames: int
    width: int
    height: int
    fps: float
    seconds: float          # wall time of the whole run
    engine_ms: float        # mean pipeline (engine) time per frame
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


def process_video(src: str | os.PathLike, dst: str | os.PathLike, pipeline: CallerPipeline, *,
                  audio: bool = True, max_frames: int | None = None, progress: bool = False) -> ProcessResult:
    """Filter every frame of ``src`` with ``pipeline`` and write ``dst``.

    Raises :class:`MediaError` for an unreadable input or an unwritable output; a partial
    output is deleted.
    """
    src, dst = Path(src), Path(dst)
    output_format(dst)  # refuse an unknown extension before decoding anything
    if dst.exists() and src.exists() and dst.resolve() == src.resolve():
        raise MediaError(f"output {dst} is the input file")
    container = open_input(src)
    try:
        return _run(container, src, dst, pipeline, audio, max_frames, progress)
    finally:
        container.close()


def _run(container: av.container.InputContainer, src: Path, dst: Path, pipeline: CallerPipeline,
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
                    timer = StageTimer(timestamp_s=t if t is not None else writer.frames / float(fps))
                    with timer.stage("decode"):
                        rgb = frame.to_ndarray(format="rgb24")
                    out = pipeline.process(rgb, timer)
                    with timer.stage("encode"):
                        writer.write(out, t)
                    engine_ms += timer.ms.get("engine", 0.0)
                    pipeline.stats.frames_in += 1
                    pipeline.stats.frames_out += 1
                    pipeline.stats.record(timer, sum(timer.ms.values()))
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
