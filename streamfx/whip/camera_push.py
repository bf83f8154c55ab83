"""``streamfx camera --whip URL``: the camera's filtered frames (and its sound) pushed to a
WHIP ingest from the camera's own loop.

The camera loop is plain blocking code; WebRTC needs an event loop. :class:`CameraPush` runs
one in a thread: :meth:`CameraPush.send` hands it each filtered frame (the newest only, as
the server does), an :class:`AudioFeed` thread hands it the sound (the file's own audio
track, played in step with the looping video, or a microphone through FFmpeg's capture
devices), and a :class:`~streamfx.server.audio_track.SyncedAudioTrack` delays the sound by
the filter's measured latency (read time of each frame to its send time) before the
:class:`WhipPublisher` sends both.
"""

from __future__ import annotations

import asyncio
import fractions
import sys
import threading
import time

import av
import numpy as np
from aiortc import MediaStreamTrack
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamError

from .. import log
from ..io.errors import MediaError
from ..server.audio_track import SyncedAudioTrack
from ..server.loop_thread import LoopThread
from ..server.tracks import FrameFeed, Sent, SendTimed
from .publisher import WhipPublisher

logger = log.get(__name__)
MIC_FORMATS = {"linux": ("pulse", "default"), "darwin": ("avfoundation", ":0"), "win32": ("dshow", None)}


class QueuedAudio(MediaStreamTrack):
    """Audio frames put from another thread, in order."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self.queue: asyncio.Queue = asyncio.Queue(maxsize=200)

    async def recv(self) -> av.AudioFrame:
        frame = await self.queue.get()
        if frame is None:
            raise MediaStreamError
        return frame


class AudioFeed(threading.Thread):
    """Reads a file's audio in real time (looping with the video) or a microphone."""

    def __init__(self, source: str, is_file: bool, put) -> None:
        super().__init__(daemon=True, name="streamfx-audio")
        self.source, self.is_file, self.put = source, is_file, put
        self.stopped = threading.Event()
        self.error: str | None = None

    @staticmethod
    def open_mic(device: str | None) -> av.container.InputContainer:
        fmt, default = MIC_FORMATS.get(sys.platform, MIC_FORMATS["linux"])
        name = device or default
        if name is None:
            raise MediaError("name the microphone with --mic (Windows: the DirectShow name, 'audio=...')")
        try:
            return av.open(name, format=fmt)
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            raise MediaError(f"cannot open the microphone {name!r} ({fmt}): {exc}") from None

    def run(self) -> None:
        try:
            if self.is_file:
                self._play_file()
            else:
                self._capture(self.open_mic(self.source))
        except Exception as exc:  # noqa: BLE001 - the video goes on without sound
            self.error = f"{type(exc).__name__}: {exc}"
            logger.error("audio stopped", extra={"error": self.error})

    def _capture(self, container) -> None:
        with container:
            for frame in container.decode(audio=0):
                if self.stopped.is_set():
                    return
                self.put(frame)

    def _play_file(self) -> None:
        start, offset = time.monotonic(), 0.0
        while not self.stopped.is_set():
            with av.open(self.source) as container:
                stream = container.streams.audio[0]
                end = offset
                for frame in container.decode(stream):
                    if self.stopped.is_set():
                        return
                    at = offset + float(frame.pts * frame.time_base if frame.pts is not None else 0.0)
                    wait = start + at - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
                    frame.pts = round(at * frame.sample_rate)
                    frame.time_base = fractions.Fraction(1, frame.sample_rate)
                    self.put(frame)
                    end = at + frame.samples / frame.sample_rate
                offset = end


def has_audio(path: str) -> bool:
    try:
        with av.open(path) as container:
            return bool(container.streams.audio)
    except (av.error.FFmpegError, OSError):
        return False


class CameraPush:
    """A WHIP publisher on its own event loop thread, fed by the camera loop."""

    def __init__(self, url: str, token: str | None, audio_source: str | None, audio_is_file: bool) -> None:
        self.thread = LoopThread("streamfx-whip")
        self.loop = self.thread.loop
        self.publisher = self._call(self._setup(url, token, audio_source is not None))
        self.audio_feed = None
        if audio_source is not None:
            self.audio_feed = AudioFeed(audio_source, audio_is_file, self._put_audio)
            self.audio_feed.start()

    def _call(self, coro):
        return self.thread.call(coro)

    async def _setup(self, url: str, token: str | None, with_audio: bool) -> WhipPublisher:
        self.video = FrameFeed()
        self.relay = MediaRelay()
        self.audio = SyncedAudioTrack(QueuedAudio()) if with_audio else None
        def sent(frame: Sent, at: float) -> None:
            if self.audio is not None:
                self.audio.video_sent(None, frame.received, at)

        def tracks() -> list[MediaStreamTrack]:
            out = [SendTimed(self.relay.subscribe(self.video, buffered=False), sent)]
            if self.audio is not None:
                out.append(self.relay.subscribe(self.audio, buffered=True))
            return out

        publisher = WhipPublisher(url, tracks, token=token)
        publisher.start()
        return publisher

    def _put_audio(self, frame: av.AudioFrame) -> None:
        queue = self.audio.source.queue

        def put() -> None:
            if not queue.full():
                queue.put_nowait(frame)

        self.thread.soon(put)

    def send(self, rgb: np.ndarray, read_at: float) -> None:
        """One filtered frame, read from the camera at ``read_at`` (``time.perf_counter()``)."""
        self.thread.soon(self.video.put, np.ascontiguousarray(rgb), read_at)

    @property
    def status(self):
        return self.publisher.status

    def close(self) -> None:
        if self.audio_feed is not None:
            self.audio_feed.stopped.set()
        try:
            self._call(self.publisher.stop())
        finally:
            self.thread.stop()
