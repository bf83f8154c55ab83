"""The processed video track: newest frame in, filtered frame out, nothing queues up.

aiortc's receiver queue is unbounded, so a consumer slower than the camera would build up
seconds of delay. :class:`FilteredTrack` therefore drains the incoming track as fast as it
delivers into a one-frame :class:`LatestSlot` (a newer frame replaces an unprocessed one,
which counts as dropped), runs the pipeline on the newest frame in a worker thread, and
hands each result to ``recv()`` through another one-frame slot.
"""

from __future__ import annotations

import asyncio
import fractions
import time
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Callable, Generic, TypeVar

import av
import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from .. import log
from ..pipeline.pacing import FramePacer
from ..pipeline.processor import CallerPipeline
from ..pipeline.timing import StageTimer

logger = log.get(__name__)
T = TypeVar("T")


class LatestSlot(Generic[T]):
    """Holds at most one item; ``put`` replaces an unread item and reports it dropped."""

    def __init__(self) -> None:
        self._item: T | None = None
        self._ready = asyncio.Event()
        self.closed = False

    def put(self, item: T) -> bool:
        dropped = self._item is not None
        self._item = item
        self._ready.set()
        return dropped

    async def get(self) -> T:
        while self._item is None:
            if self.closed:
                raise MediaStreamError
            self._ready.clear()
            await self._ready.wait()
        item, self._item = self._item, None
        return item

    def close(self) -> None:
        self.closed = True
        self._ready.set()

    @property
    def pending(self) -> int:
        return 0 if self._item is None else 1


@dataclass(frozen=True)
class Sent:
    """What an outgoing frame came from: the caller's pts and its arrival (perf_counter)."""

    pts: int | None
    received: float


class SendTimed(MediaStreamTrack):
    """A copy of a track that tells when each of its frames has gone out.

    An aiortc sender asks for the next frame right after it has encoded and sent the last,
    so the time of each ``recv()`` call is the send time of the frame before: the instant
    its receivers' clocks (the sender reports) stamp it with, encode included.
    """

    kind = "video"

    def __init__(self, source: MediaStreamTrack, on_sent: Callable[[Sent, float], None]) -> None:
        super().__init__()
        self.source, self.on_sent = source, on_sent
        self._last: Sent | None = None

    async def recv(self) -> av.VideoFrame:
        if self._last is not None:
            self.on_sent(self._last, time.perf_counter())
            self._last = None
        frame = await self.source.recv()
        if isinstance(frame.opaque, Sent):
            self._last = frame.opaque
        return frame

    def stop(self) -> None:
        super().stop()
        self.source.stop()


class FilteredTrack(MediaStreamTrack):
    kind = "video"

    def __init__(self, source: MediaStreamTrack, pipeline: CallerPipeline, executor: Executor,
                 on_failure: Callable[[], object] | None = None, max_fps: float | None = None) -> None:
        super().__init__()
        self.pacer = FramePacer(max_fps)  # frames arriving faster wait in the slot (newest wins)
        self.on_failure = on_failure  # called when the frame worker dies: the caller is closed
        self.source = source
        self.pipeline = pipeline
        self.executor = executor
        self._incoming: LatestSlot[tuple[av.VideoFrame, float]] = LatestSlot()
        self._outgoing: LatestSlot[tuple[av.VideoFrame, float]] = LatestSlot()
        self._last_pts: int | None = None
        self._tasks = [asyncio.ensure_future(self._read()), asyncio.ensure_future(self._work())]

    async def _read(self) -> None:
        stats = self.pipeline.stats
        try:
            while True:
                frame = await self.source.recv()
                stats.frames_in += 1
                if self._incoming.put((frame, time.perf_counter())):
                    stats.dropped += 1
        except MediaStreamError:
            pass
        finally:
            self._incoming.close()

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                pause = self.pacer.delay()
                if pause > 0:
                    await asyncio.sleep(pause)
                frame, received = await self._incoming.get()
                self.pacer.started()
                out = await loop.run_in_executor(self.executor, self._filter, frame)
                if self._outgoing.put((out, received)):
                    self.pipeline.stats.dropped += 1
        except MediaStreamError:
            pass
        except Exception:  # noqa: BLE001 - this caller ends; the server and other callers go on
            logger.exception("frame worker stopped")
            if self.on_failure is not None:
                self.on_failure()
        finally:
            self._outgoing.close()

    def _filter(self, frame: av.VideoFrame) -> av.VideoFrame:
        """Runs in a worker thread: decode to RGB, filter, wrap as a VideoFrame."""
        timer = StageTimer()
        with timer.stage("decode"):
            rgb = frame.to_ndarray(format="rgb24")
        result = self.pipeline.process(rgb, timer)
        with timer.stage("encode"):
            out = av.VideoFrame.from_ndarray(np.ascontiguousarray(result), format="rgb24")
        out.pts, out.time_base = frame.pts, frame.time_base
        out.opaque = timer  # carried to recv() for the stats
        return out

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        frame, received = await self._outgoing.get()
        source_pts = frame.pts
        if frame.pts is not None and self._last_pts is not None and frame.pts <= self._last_pts:
            frame.pts = self._last_pts + 1  # keep pts strictly monotonic
        self._last_pts = frame.pts
        stats = self.pipeline.stats
        stats.frames_out += 1
        timer = frame.opaque
        frame.opaque = Sent(source_pts, received)  # read by each SendTimed copy
        stats.record(timer, (time.perf_counter() - received) * 1e3)
        return frame

    @property
    def queued(self) -> int:
        """Frames waiting anywhere in this track (bounded: at most 2)."""
        return self._incoming.pending + self._outgoing.pending

    def stop(self) -> None:
        super().stop()
        for task in self._tasks:
            task.cancel()
        self._incoming.close()
        self._outgoing.close()


class FrameFeed(MediaStreamTrack):
    """Video frames put on the loop (``loop.call_soon_threadsafe(feed.put, ...)`` from another
    thread); ``recv`` gives the newest, stamped :class:`Sent` with the time it was read."""

    kind = "video"

    def __init__(self) -> None:
        super().__init__()
        self._frame: tuple[np.ndarray, float] | None = None
        self._ready = asyncio.Event()
        self._start = time.monotonic()

    def put(self, rgb: np.ndarray, read_at: float) -> None:  # on the loop
        self._frame = (rgb, read_at)
        self._ready.set()

    async def recv(self) -> av.VideoFrame:
        while self._frame is None:
            if self.readyState != "live":
                raise MediaStreamError
            self._ready.clear()
            await self._ready.wait()
        (rgb, read_at), self._frame = self._frame, None
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        frame.pts, frame.time_base = int((time.monotonic() - self._start) * 90000), fractions.Fraction(1, 90000)
        frame.opaque = Sent(None, read_at)
        return frame
