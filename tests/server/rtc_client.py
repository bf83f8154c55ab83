"""Test helpers: a stamped pattern camera and a real aiortc client peer."""

from __future__ import annotations

import asyncio
import json
import fractions
import time
from dataclasses import dataclass, field

import aiohttp
import numpy as np
from aiortc import RTCPeerConnection, RTCSessionDescription, VideoStreamTrack
from aiortc.mediastreams import MediaStreamError
from av import VideoFrame

from benchmarks.server_harness import BITS, read_stamp, stamp  # noqa: F401 (used by the tests)
from streamfx.server import ice



class PatternTrack(VideoStreamTrack):
    """A generated camera: grey frames with the frame index stamped, at ``fps``."""

    def __init__(self, width: int = 320, height: int = 240, fps: int = 30, frames: int | None = None,
                 resize_at: int | None = None, resize_to: tuple[int, int] = (640, 480)) -> None:
        super().__init__()
        self.width, self.height, self.fps, self.limit = width, height, fps, frames
        self.resize_at, self.resize_to = resize_at, resize_to
        self.index = 0
        self.sent_at: dict[int, float] = {}
        self._start: float | None = None

    async def recv(self) -> VideoFrame:
        if self.limit is not None and self.index >= self.limit:
            self.stop()
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        wait = self._start + self.index / self.fps - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        if self.resize_at is not None and self.index == self.resize_at:
            self.width, self.height = self.resize_to  # the camera changes resolution mid-stream
        img = np.full((self.height, self.width, 3), 120, np.uint8)
        stamp(img, self.index % (1 << BITS))
        frame = VideoFrame.from_ndarray(img, format="rgb24")
        frame.pts = int(self.index * 90000 / self.fps)
        frame.time_base = fractions.Fraction(1, 90000)
        self.sent_at[self.index % (1 << BITS)] = time.monotonic()
        self.index += 1
        return frame


@dataclass
class Received:
    frames: list[np.ndarray] = field(default_factory=list)
    pts: list[int] = field(default_factory=list)
    at: list[float] = field(default_factory=list)
    messages: list[dict] = field(default_factory=list)


class Client:
    """A real aiortc peer that sends a PatternTrack and records what comes back."""

    def __init__(self, track: PatternTrack) -> None:
        ice.enable_loopback_candidates()
        self.pc = RTCPeerConnection(ice.rtc_configuration())
        self.track = track
        self.got = Received()
        self.channel = self.pc.createDataChannel("control")
        self.channel_open = asyncio.Event()
        self.caller_id: str | None = None
        self.pc.addTrack(track)
        self.channel.on("open", self.channel_open.set)
        self.channel.on("message", lambda m: self.got.messages.append(json.loads(m)))
        self.pc.on("track", self._on_track)
        self._tasks: list[asyncio.Task] = []

    def _on_track(self, remote) -> None:
        async def pull() -> None:
            try:
                while True:
                    frame = await remote.recv()
                    self.got.frames.append(frame.to_ndarray(format="rgb24"))
                    self.got.pts.append(frame.pts)
                    self.got.at.append(time.monotonic())
            except MediaStreamError:
                pass
        self._tasks.append(asyncio.ensure_future(pull()))

    async def connect(self, base: str, headers: dict | None = None) -> dict:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        body = {"sdp": self.pc.localDescription.sdp, "type": "offer"}
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{base}/offer", json=body, headers=headers or {}) as resp:
                answer = await resp.json()
                assert resp.status == 200, answer
        self.caller_id = answer["caller"]
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))
        return answer

    async def wait_frames(self, n: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.got.frames) < n:
            assert time.monotonic() < deadline, f"only {len(self.got.frames)} of {n} frames came back"
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        await self.pc.close()


