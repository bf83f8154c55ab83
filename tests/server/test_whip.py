"""WHIP in and WHEP out against the real server: an aiortc publisher and viewers, GStreamer's
``whip-client`` (Debian's simple-whip-client), and bad input (loopback only)."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

import gst_whip
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


# 512x512, 25 fps, 60 frames (2.4 s) of a head turning; H.264 High in MP4
CLIP = (Path(__file__).resolve().parents[2] / "../shared/testdata/video/head_turn_1.mp4").resolve()
ADMIN = "whip-admin"
NO_SHARED_CIPHER = ("DTLS failed: GStreamer 1.22's webrtcbin (an RSA certificate, the DTLS server after an "
                    "a=setup:active answer) and aiortc as the DTLS client (ECDHE-ECDSA suites only) share no "
                    "cipher; the server must answer a=setup:passive (aiortc as the DTLS server)")


async def _callers_metric(http, base: str) -> int:
    async with http.get(f"{base}/metrics", headers={"Authorization": f"Bearer {ADMIN}"}) as resp:
        assert resp.status == 200
        return int(re.search(r"^streamfx_callers (\d+)$", await resp.text(), re.M).group(1))


async def test_gstreamer_whip_client_publishes_and_a_whep_viewer_sees_it(server_factory, tmp_path):
    """A WHIP client nobody here wrote: GStreamer's webrtcbin in Debian's simple-whip-client
    (a 2023 snapshot, run as :mod:`gst_whip` explains) publishes the head-turn clip and a
    tone; a WHEP viewer gets the filtered frames; at the clip's end whip-client sends its own
    DELETE, which frees the session (registry and /metrics). The audio is published, not checked."""
    try:
        env = gst_whip.prepare(tmp_path)
    except gst_whip.Unavailable as exc:
        pytest.skip(str(exc))
    if not CLIP.exists():
        pytest.skip(f"test clip missing: {CLIP}")
    server = await server_factory(engine=OverlayEngine(), token=TOKEN, admin_token=ADMIN)
    args = gst_whip.command(f"{server.base}/whip", token=TOKEN, video=gst_whip.video_from_file(CLIP, eos_name="eos"),
                            audio=gst_whip.tone(), eos_name="eos")
    log: list[str] = []
    client = asyncio.ensure_future(gst_whip.run(args, env, timeout_s=15, log=log))
    viewer = Viewer()

    def why() -> str:
        text = "".join(log)
        return (NO_SHARED_CIPHER + "\n" if "no shared cipher" in text else "") + "whip-client's log:\n" + text[-3000:]

    try:
        async with aiohttp.ClientSession() as http:
            deadline = time.monotonic() + 10
            while not any(c.track is not None for c in server.state.registry.callers.values()):
                assert not client.done() and time.monotonic() < deadline, why()
                await asyncio.sleep(0.05)
            session_id = next(iter(server.state.registry.callers))
            assert await _callers_metric(http, server.base) == 1
            await viewer.watch(http, f"{server.base}/whep/{session_id}")
            deadline = time.monotonic() + 10
            while len(viewer.frames) < 10:
                assert not client.done() and time.monotonic() < deadline, f"{len(viewer.frames)} frames; {why()}"
                await asyncio.sleep(0.05)
            frame = viewer.frames[-1]
            assert frame.shape[:2] == (512, 512), frame.shape
            border = frame[2:10, 40:470].reshape(-1, 3).mean(axis=0)   # the overlay's edit
            assert np.abs(border - np.array(BORDER_RGB)).max() < 40, border
            assert frame[100:400, 100:400].std() > 10   # the clip (a face), not a flat frame

            run = await asyncio.wait_for(client, 20)   # EOS: whip-client DELETEs and exits by itself
            assert not run.timed_out and run.returncode == 0, why()
            assert "Disconnecting from server (Shutting down (EOS))" in run.log, why()
            assert f"Resource URL: {server.base}/whip/{session_id}" in run.log, why()
            assert "[WARN]  [" not in run.log, why()   # a DELETE answered with anything but 200
            assert session_id not in server.state.registry.callers
            assert await _callers_metric(http, server.base) == 0
            async with http.delete(f"{server.base}/whip/{session_id}", headers=AUTH) as resp:
                assert resp.status == 404   # already freed by whip-client's DELETE
    finally:
        await viewer.pc.close()
        if not client.done():
            client.cancel()
            await asyncio.gather(client, return_exceptions=True)
