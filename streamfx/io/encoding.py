"""Encoding RGB frames to a video file; the output's extension chooses container and codec.

=========  ==============  ===========================  ===================
extension  container       video codec (first usable)   audio re-encoded to
=========  ==============  ===========================  ===================
.mp4       mp4             libx264, mpeg4               aac
.mov       mov             libx264, mpeg4               aac
.mkv       matroska        libx264, mpeg4               aac
.webm      webm            libvpx, libvpx-vp9           opus
.y4m       yuv4mpegpipe    rawvideo (yuv420p)           (no audio)
=========  ==============  ===========================  ===================
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Optional

import av
import cv2
import numpy as np

from .. import log
from .audio import AudioTrack
from .errors import MediaError

logger = log.get(__name__)


@dataclass(frozen=True)
class OutputFormat:
    muxer: Optional[str]                 # None: ffmpeg guesses from the extension
    video_codecs: tuple[str, ...]        # in order of preference
    audio_codecs: tuple[str, ...]        # re-encode targets; empty: the container holds no audio


FORMATS: dict[str, OutputFormat] = {
    ".mp4": OutputFormat(None, ("libx264", "mpeg4"), ("aac",)),
    ".mov": OutputFormat(None, ("libx264", "mpeg4"), ("aac",)),
    ".mkv": OutputFormat(None, ("libx264", "mpeg4"), ("aac", "libopus")),
    ".webm": OutputFormat(None, ("libvpx", "libvpx-vp9"), ("libopus", "opus")),
    ".y4m": OutputFormat("yuv4mpegpipe", ("rawvideo",), ()),
}


def output_format(path: str | os.PathLike) -> OutputFormat:
    """The format for an output path, from its extension; :class:`MediaError` if unknown."""
    ext = Path(path).suffix.lower()
    if ext not in FORMATS:
        raise MediaError(f"unsupported output extension {ext or '(none)'!r} for {path}; "
                         f"use one of {', '.join(FORMATS)}")
    return FORMATS[ext]


def has_encoder(name: str) -> bool:
    try:
        av.codec.Codec(name, "w")
    except Exception:  # noqa: BLE001 - UnknownCodecError and friends
        return False
    return True


def _configure(stream: av.video.stream.VideoStream, codec: str, width: int, height: int, fps: Fraction) -> None:
    """Pixel format, rate control and speed settings per encoder."""
    odd = width % 2 or height % 2
    stream.width, stream.height = width, height
    stream.pix_fmt = "yuv444p" if (odd and codec == "libx264") else "yuv420p"
    bits = int(max(1_000_000, width * height * float(fps) * 0.2))
    if codec == "libx264":
        stream.options = {"crf": "18", "preset": "veryfast"}
    elif codec in ("libvpx", "libvpx-vp9"):
        stream.bit_rate = bits
        stream.options = {"deadline": "realtime", "cpu-used": "8", "crf": "10"}
    elif codec == "mpeg4":
        stream.bit_rate = bits


class VideoWriter:
    """Encodes RGB uint8 frames (H, W, 3) of one size at a nominal rate ``fps`` to ``path``.

    Timestamps are in the encoder's time base ``1/fps`` and strictly increase. Use as a
    context manager: leaving it with an exception deletes the partial file. Add an audio
    track with :meth:`add_audio` before writing the first frame.
    """

    def __init__(self, path: str | os.PathLike, width: int, height: int, fps: float | Fraction) -> None:
        self.path = Path(path)
        self.format = output_format(self.path)
        self.width, self.height = int(width), int(height)
        self.fps = Fraction(fps).limit_denominator(1_000_000)
        if self.fps <= 0:
            raise MediaError(f"invalid frame rate {fps}")
        _check_writable(self.path)
        codec = next((c for c in self.format.video_codecs if has_encoder(c)), None)
        if codec is None:
            raise MediaError(f"no encoder for {self.path.suffix} in this PyAV build "
                             f"(tried {', '.join(self.format.video_codecs)})")
        try:
            self.container = av.open(str(self.path), "w", format=self.format.muxer)
        except (av.FFmpegError, OSError) as exc:
            raise MediaError(f"cannot write {self.path}: {error_text(exc)}") from None
        self.codec = codec
        self.stream = self.container.add_stream(codec, rate=self.fps)
        _configure(self.stream, codec, self.width, self.height, self.fps)
        self.audio: AudioTrack | None = None
        self.frames = 0
        self._last_pts = -1
        logger.info("writing video", extra={"path": str(self.path), "codec": codec,
                                            "size": f"{self.width}x{self.height}", "fps": str(self.fps)})

    @property
    def time_base(self) -> Fraction:
        return Fraction(1) / self.fps

    def add_audio(self, source: av.audio.stream.AudioStream, offset_s: float = 0.0) -> AudioTrack | None:
        """Carry ``source`` into the output (copied or re-encoded); None if the container
        cannot hold audio. ``offset_s`` is subtracted from its timestamps."""
        if self.frames:
            raise RuntimeError("add_audio must be called before the first frame")
        if not self.format.audio_codecs:
            logger.warning("output container has no audio; dropping the audio", extra={"path": str(self.path)})
            return None
        try:
            self.audio = AudioTrack(self.container, source, self.format.audio_codecs, offset_s)
        except LookupError as exc:
            logger.warning("dropping the audio", extra={"reason": str(exc)})
        return self.audio

    def write(self, frame: np.ndarray, t: float | None = None) -> None:
        """Encode one RGB uint8 frame (H, W, 3), shown at ``t`` seconds (None: next slot).

        A frame of another size is resized to the output size."""
        if frame.shape[:2] != (self.height, self.width):
            frame = cv2.resize(frame, (self.width, self.height), interpolation=cv2.INTER_AREA)
        pts = self._last_pts + 1 if t is None else max(self._last_pts + 1, round(t * self.fps))
        video = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        video = video.reformat(format=self.stream.pix_fmt)
        video.pts, video.time_base = pts, self.time_base
        self._mux(self.stream.encode(video))
        self._last_pts = pts
        self.frames += 1

    def _mux(self, packets: list) -> None:
        try:
            self.container.mux(packets)
        except (av.FFmpegError, OSError) as exc:
            raise MediaError(f"cannot write {self.path}: {error_text(exc)}") from None

    def close(self) -> None:
        """Flush the encoders and finish the file."""
        if self.container is None:
            return
        try:
            self._mux(self.stream.encode(None))
            if self.audio is not None:
                self.audio.flush()
            self.container.close()
        except (av.FFmpegError, OSError) as exc:
            raise MediaError(f"cannot finish {self.path}: {error_text(exc)}") from None
        finally:
            self.container = None

    def abort(self) -> None:
        """Close without flushing and delete the partial file."""
        if self.container is not None:
            try:
                self.container.close()
            except Exception:  # noqa: BLE001 - the file is deleted anyway
                pass
            self.container = None
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _check_writable(path: Path) -> None:
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise MediaError(f"cannot write {path}: directory {parent} does not exist")
    if path.is_dir():
        raise MediaError(f"cannot write {path}: it is a directory")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise MediaError(f"cannot write {path}: permission denied")


def error_text(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return " ".join(str(text).split()) or type(exc).__name__
