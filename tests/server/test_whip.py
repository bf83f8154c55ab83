"""WHIP in and WHEP out against the real server: an aiortc publisher and viewers, GStreamer's
``whip-client`` (Debian's simple-whip-client), and bad input (loopback only)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time

import aiohttp
import numpy as np
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from rtc_client import PatternTrack
from streamfx.pipeline.engines.overlay import BORDER_RGB, OverlayEngine
from streamfx.server import ice

TOKEN = "whip-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def _post_sdp(http, url: str, sdp: str, headers=AUTH) -> tuple[int, str, dict]:
    async with http.post(url, data=sdp, headers={**headers, "Content-Type": "application/sdp"}) as resp:
        return resp.status, await resp.text(), dict(resp.headers)


class Viewer:
    """A WHEP viewer: a receive-only aiortc peer that keeps the frames it gets."""

    def __init__(self) -> None:
        ice.enable_loopback_candidates()
        self.pc = RTCPeerConnection(ice.rtc_configuration())
        self.pc.addTransceiver("video", direction="recvonly")
        self.frames: list[np.ndarray] = []
        self.pc.on("track", self._on_track)

    def _on_track(self, track) -> None:
        async def pull() -> None:
            try:
                while True:
                    self.frames.append((await track.recv()).to_ndarray(format="rgb24"))
            except MediaStreamError:
                pass
        asyncio.ensure_future(pull())

    async def watch(self, http, url: str) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        status, answer, headers = await _post_sdp(http, url, self.pc.localDescription.sdp)
        assert status == 201, answer
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        return headers["Location"]

    async def wait(self, n: int, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.frames) < n:
            assert time.monotonic() < deadline, f"only {len(self.frames)} frames"
            await asyncio.sleep(0.05)


async def test_whip_publisher_and_two_whep_viewers(server_factory):
    server = await server_factory(engine=OverlayEngine(), token=TOKEN)
    ice.enable_loopback_candidates()
    publisher = RTCPeerConnection(ice.rtc_configuration())
    publisher.addTransceiver(PatternTrack(320, 240, fps=15), direction="sendonly")
    viewers = [Viewer(), Viewer()]
    async with aiohttp.ClientSession() as http:
        try:
            await publisher.setLocalDescription(await publisher.createOffer())
            status, answer, headers = await _post_sdp(http, f"{server.base}/whip", publisher.localDescription.sdp)
            assert status == 201 and headers["Content-Type"].startswith("application/sdp"), answer
            session = headers["Location"]
            assert session.startswith("/whip/")
            await publisher.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
            session_id = session.rsplit("/", 1)[1]

            deadline = time.monotonic() + 15   # the filtered track exists once the publisher's video arrives
            while server.state.registry.callers[session_id].track is None:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            locations = [await v.watch(http, f"{server.base}/whep/{session_id}") for v in viewers]
            for v in viewers:
                await v.wait(10)
                border = v.frames[-1][2:10, 40:280].reshape(-1, 3).mean(axis=0)   # the overlay's edit
                assert np.abs(border - np.array(BORDER_RGB)).max() < 40, border

            async with http.patch(f"{server.base}{session}", headers=AUTH) as resp:
                assert resp.status == 405 and "DELETE" in resp.headers["Allow"]
            async with http.delete(f"{server.base}{locations[0]}", headers=AUTH) as resp:
                assert resp.status == 200
            async with http.delete(f"{server.base}{session}", headers=AUTH) as resp:
                assert resp.status == 200
            assert session_id not in server.state.registry.callers
            async with http.delete(f"{server.base}{session}", headers=AUTH) as resp:
                assert resp.status == 404
        finally:
            await publisher.close()
            for v in viewers:
                await v.pc.close()


async def test_whip_bad_input_is_a_4xx_and_takes_no_session(server_factory):
    server = await server_factory(engine=OverlayEngine(), token=TOKEN)
    offer = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"
    async with aiohttp.ClientSession() as http:
        assert (await _post_sdp(http, f"{server.base}/whip", offer, headers={}))[0] == 401
        async with http.post(f"{server.base}/whip", json={"sdp": offer}, headers=AUTH) as resp:
            assert resp.status == 415
        assert (await _post_sdp(http, f"{server.base}/whip", "v=0\r\n" + "x" * 70_000))[0] == 413
        assert (await _post_sdp(http, f"{server.base}/whip", "no media"))[0] == 400
        assert (await _post_sdp(http, f"{server.base}/whip", offer))[0] == 400
        assert (await _post_sdp(http, f"{server.base}/whep/nobody", offer))[0] == 404
    assert not server.state.registry.callers


WHIP_CLIENT = shutil.which("whip-client")


@pytest.mark.skipif(WHIP_CLIENT is None, reason="whip-client not installed (apt-get install simple-whip-client)")
async def test_gstreamer_whip_client_publishes_and_a_whep_viewer_sees_it(server_factory):
    """A WHIP client nobody here wrote: GStreamer's webrtcbin in Debian's simple-whip-client
    (a 2023 snapshot) publishes a test pattern; a WHEP viewer gets the filtered frames."""
    server = await server_factory(engine=OverlayEngine(), token=TOKEN)
    video = "videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,framerate=15/1 ! " \
            "videoconvert ! vp8enc deadline=1 ! rtpvp8pay pt=96 ssrc=1 ! " \
            "queue ! application/x-rtp,media=video,encoding-name=VP8,payload=96"
    process = subprocess.Popen([WHIP_CLIENT, "-n", "-u", f"{server.base}/whip", "-t", TOKEN, "-V", video],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 20
        while not any(c.track is not None for c in server.state.registry.callers.values()):
            if process.poll() is not None:
                out = process.stdout.read()
                if "libsoup2 symbols detected" in out:   # a packaging fault, not ours: say so, do not pass
                    pytest.skip("Debian's simple-whip-client links libsoup 2 and its webrtcbin/nice plugins "
                                "libsoup 3; it aborts at start ('libsoup2 symbols detected')")
                raise AssertionError(out[-2000:])
            assert time.monotonic() < deadline, "whip-client never published"
            await asyncio.sleep(0.1)
        session_id = next(iter(server.state.registry.callers))
        viewer = Viewer()
        async with aiohttp.ClientSession() as http:
            await viewer.watch(http, f"{server.base}/whep/{session_id}")
            await viewer.wait(10)
        border = viewer.frames[-1][2:10, 40:280].reshape(-1, 3).mean(axis=0)
        assert np.abs(border - np.array(BORDER_RGB)).max() < 40, border
        await viewer.pc.close()
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
