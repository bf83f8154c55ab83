"""Self-test of the Janus + simple-whip-server environment (janus_env.py): a minimal aiortc WHIP
publisher pushes video and audio into Janus's VideoRoom; Janus lists it, and a subscriber
through Janus receives the frames (loopback only)."""

from __future__ import annotations

import asyncio
import fractions
import time
from urllib.parse import urljoin

import aiohttp
import numpy as np
import pytest
from aiortc import AudioStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription, VideoStreamTrack
from av import AudioFrame, VideoFrame

from janus_env import JanusRoom, missing
pytestmark = [pytest.mark.full, pytest.mark.skipif(missing() is not None, reason=str(missing()))]


class MovingPattern(VideoStreamTrack):
    """640x480 colour bars that scroll sideways, 30 frames per second."""

    def __init__(self, width: int = 640, height: int = 480) -> None:
        super().__init__()
        x = np.arange(width)
        self.base = np.stack([(x * 255 // width), (255 - x * 255 // width), (x * 4) % 256], axis=-1)
        self.base = np.broadcast_to(self.base.astype(np.uint8), (height, width, 3))
        self.index = 0

    async def recv(self) -> VideoFrame:
        pts, time_base = await self.next_timestamp()
        frame = VideoFrame.from_ndarray(np.roll(self.base, 8 * self.index, axis=1), format="rgb24")
        frame.pts, frame.time_base = pts, time_base
        self.index += 1
        return frame


class Tone(AudioStreamTrack):
    """A 440 Hz sine, 48 kHz mono, 20 ms frames, paced in real time."""

    rate, samples = 48_000, 960

    def __init__(self) -> None:
        super().__init__()
        self.sent = 0
        self.start: float | None = None

    async def recv(self) -> AudioFrame:
        if self.start is None:
            self.start = time.monotonic()
        wait = self.start + self.sent / self.rate - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        t = (self.sent + np.arange(self.samples)) / self.rate
        pcm = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16).reshape(1, -1)
        frame = AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = self.rate, self.sent, fractions.Fraction(1, self.rate)
        self.sent += self.samples
        return frame


async def test_whip_publisher_reaches_janus_videoroom_and_a_subscriber():
    started = time.monotonic()
    publisher = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    publisher.addTransceiver(MovingPattern(), direction="sendonly")
    publisher.addTransceiver(Tone(), direction="sendonly")
    async with JanusRoom() as room, aiohttp.ClientSession() as http:
        try:
            await publisher.setLocalDescription(await publisher.createOffer())
            headers = {**room.auth_headers, "Content-Type": "application/sdp"}
            async with http.post(room.whip_url, data=publisher.localDescription.sdp, headers=headers) as resp:
                answer = await resp.text()
                assert resp.status == 201, f"{resp.status} {answer}\n{room.logs()}"
                assert resp.content_type == "application/sdp"
                location = urljoin(room.whip_url, resp.headers["Location"])
            await publisher.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))

            listed = await room.wait_for_publisher(timeout=15)
            kinds = sorted(s["type"] for s in await room.publisher_streams(listed["id"]))
            assert kinds == ["audio", "video"], kinds

            got = await room.subscribe_frames(10, timeout=20, feed=listed["id"])
            assert sorted(got.offer_media) == ["audio", "video"], got.offer_media
            assert got.video_frames >= 10 and got.audio_frames > 0, (got, room.logs())
            assert got.last_video is not None and got.last_video.shape == (480, 640, 3)
            assert got.last_video.std() > 20   # the pattern, not a black or grey frame

            async with http.delete(location, headers=room.auth_headers) as resp:
                assert resp.status == 200, await resp.text()
            deadline = time.monotonic() + 10
            while any(p.get("publisher") for p in await room.participants()):
                assert time.monotonic() < deadline, "the publisher stayed in the room after DELETE"
                await asyncio.sleep(0.1)
        finally:
            await publisher.close()
    print(f"\njanus start {room.timings['janus']:.2f} s, whip-server start {room.timings['whip_server']:.2f} s, "
          f"subscriber: {got.video_frames} video + {got.audio_frames} audio frames in {got.elapsed_s:.2f} s, "
          f"test {time.monotonic() - started:.2f} s")
