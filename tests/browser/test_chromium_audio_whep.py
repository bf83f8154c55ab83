"""Audio and WHEP in headless Chromium, against one server and one browser for the module.

* The call page sends Chromium's fake microphone (a beep) with the camera, the server's caller
  takes the audio, and the page plays the voice that comes back; "Mute mic" disables the
  track (what returns goes quiet); a re-offer (a cluster's move) carries the audio again.
  A refused microphone leaves a video-only call.
* whep.html (``/client/whep.html?session=ID&token=T``) shows a session published by an aiortc
  peer over WHIP (a pattern and a tone): two pages at once decode its video and receive its
  audio; leaving a page DELETEs its viewer; a wrong session or a missing token says so.
"""

from __future__ import annotations

import asyncio
import fractions
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import numpy as np
import pytest
import pytest_asyncio
from aiohttp import web
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from av import AudioFrame

import browser_env
from browser_env import CHROMIUM

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))  # rtc_client, as tests/cluster does
from rtc_client import PatternTrack  # noqa: E402

_marks = browser_env.pytestmark if isinstance(browser_env.pytestmark, list) else [browser_env.pytestmark]
pytestmark = [*_marks, pytest.mark.asyncio(loop_scope="module")]

TOKEN = "page-token"
RATE, BLOCK = 48000, 960  # 20 ms of 48 kHz audio


@dataclass
class Server:
    base: str
    state: object                           # streamfx.server.app.ServerState
    responses: list[tuple[str, str, int]]   # (method, path, status) of every response


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server():
    from streamfx.pipeline.engines.overlay import OverlayEngine
    from streamfx.server import ServerConfig, create_app
    from streamfx.server.app import STATE
    from streamfx.server.config import Limits

    # the module's calls follow each other quickly, beside Chromium on 2 cores: admission by
    # measured cost (not what these tests check) would refuse the later ones
    config = ServerConfig(ice_loopback=True, token=TOKEN, limits=Limits(max_callers=4, admit_by_cost=False))
    app = create_app(config, engine=OverlayEngine())
    responses: list[tuple[str, str, int]] = []   # (method, path, status): what the pages asked for

    async def record(request, response) -> None:
        responses.append((request.method, request.path, response.status))

    app.on_response_prepare.append(record)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        yield Server(f"http://127.0.0.1:{port}", app[STATE], responses)
    finally:
        await runner.cleanup()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser():
    from playwright.async_api import async_playwright

    from benchmarks.browser_roundtrip import FLAGS

    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            yield chromium
        finally:
            await chromium.close()


async def _until(page, predicate: str, timeout_s: float, show: str) -> None:
    """Poll an async page function until it is true (wait_for_function takes a promise for true);
    on timeout, the failure shows the page function ``show``."""
    deadline = time.monotonic() + timeout_s
    while not await page.evaluate(predicate):
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s: {predicate}\n{await page.evaluate(show)}")
        await asyncio.sleep(0.2)


async def _hang_up(page) -> None:
    """End the call the page holds (as Reconnect does first), then close the page."""
    from playwright.async_api import Error

    try:
        await page.evaluate("stop()")
    except Error:
        pass  # a page that broke: the test's own failure says why
    await page.close()


async def _energy_growth(page, seconds: float, pc: str = "window.streamfx.pc") -> float:
    """How much the received audio's totalAudioEnergy grows in ``seconds`` (Chromium counts it
    only for audio that plays: an unmuted element)."""
    energy = f"async () => (await inboundStats({pc})).audio?.totalAudioEnergy || 0"
    before = await page.evaluate(energy)
    await asyncio.sleep(seconds)
    return await page.evaluate(energy) - before


async def _goes_quiet(page, timeout_s: float) -> bool:
    """What was sent before the mute drains (jitter buffers, the delay line): then silence."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await _energy_growth(page, 0.5) < 1e-6:
            return True
    return False


CALL = """async () => {
  const s = window.streamfx, audio = document.getElementById('remote-audio'), mute = document.getElementById('mute');
  const sent = s.pc ? s.pc.getSenders().filter((x) => x.track).map((x) => x.track.kind).sort() : [];
  return {caller: s.caller, connection: s.connection, micError: s.micError, sent, received: await inboundStats(s.pc),
    localAudio: s.stream ? s.stream.getAudioTracks().map((t) => t.enabled) : [], localMuted: document.getElementById('local').muted,
    playing: !!audio.srcObject && audio.srcObject.getAudioTracks().length === 1 && !audio.paused,
    mutePressed: mute.getAttribute('aria-pressed'), muteDisabled: mute.disabled, notices: s.notices.map((n) => n.text)};
}"""
CALL_UP = """() => { const s = window.streamfx;  // a refused or failed call fails the wait at once
  if (s.connection === 'failed') throw new Error('the call failed: ' + s.notices.map((n) => n.text).join('; '));
  return s.framesReceived > 3; }"""
RECEIVING_AUDIO = """async () => { const a = (await inboundStats(window.streamfx.pc)).audio;
  return !!a && a.packetsReceived > 20 && a.totalAudioEnergy > 0; }"""


async def test_the_call_page_sends_the_microphone_plays_it_back_and_mutes(server, browser):
    base, state = server.base, server.state
    page = await browser.new_page()
    try:
        await page.goto(f"{base}/?token={TOKEN}")  # the token's cookie carries /offer
        await page.click("#start")                 # a click: the returned sound may play
        await _until(page, CALL_UP, 30, CALL)
        await _until(page, RECEIVING_AUDIO, 10, CALL)
        call = await page.evaluate(CALL)
        assert call["connection"] == "connected" and call["micError"] is None, call
        assert call["sent"] == ["audio", "video"], call
        caller = state.registry.callers[call["caller"]]
        assert caller.audio is not None, "the server's caller must have taken the page's audio track"
        assert call["playing"], "the returned audio must be playing in #remote-audio"
        assert call["localMuted"], "the local preview must stay muted (echo)"
        assert call["localAudio"] == [True] and call["mutePressed"] == "false" and not call["muteDisabled"], call
        assert await _energy_growth(page, 1.0) > 0, "the beep must come back"

        await page.click("#mute")
        muted = await page.evaluate(CALL)
        assert muted["localAudio"] == [False] and muted["mutePressed"] == "true", muted
        assert await _goes_quiet(page, 5), "a muted microphone must send silence"
        await page.click("#mute")
        assert (await page.evaluate(CALL))["localAudio"] == [True]
        assert await _energy_growth(page, 1.0) > 0, "unmuted, the beep must come back again"

        await page.evaluate("moveCall('a test move')")  # a cluster's re-offer: a new peer connection
        await _until(page, RECEIVING_AUDIO, 10, CALL)
        moved = await page.evaluate(CALL)
        assert moved["caller"] != call["caller"] and moved["sent"] == ["audio", "video"], moved
        assert state.registry.callers[moved["caller"]].audio is not None, "the moved call must carry the audio too"
    finally:
        await _hang_up(page)


REFUSE_MIC = """(() => { const gum = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
  navigator.mediaDevices.getUserMedia = (c) => c.audio
    ? Promise.reject(new DOMException('Permission denied', 'NotAllowedError')) : gum(c); })()"""


async def test_a_refused_microphone_leaves_a_video_only_call(server, browser):
    base = server.base
    page = await browser.new_page()
    try:
        await page.add_init_script(REFUSE_MIC)
        await page.goto(f"{base}/?autostart&token={TOKEN}")
        await _until(page, CALL_UP, 30, CALL)
        call = await page.evaluate(CALL)
        assert call["connection"] == "connected" and call["sent"] == ["video"], call
        assert call["micError"].startswith("NotAllowedError") and call["muteDisabled"], call
        assert any("video only" in n for n in call["notices"]), call
    finally:
        await _hang_up(page)


class ToneTrack(MediaStreamTrack):
    """A 440 Hz tone in 20 ms blocks, on time."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self.sent, self.start = 0, None

    async def recv(self) -> AudioFrame:
        self.start = self.start or time.monotonic()
        wait = self.start + self.sent / RATE - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        t = (self.sent + np.arange(BLOCK)) / RATE
        samples = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16).reshape(1, -1)
        frame = AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = RATE, self.sent, fractions.Fraction(1, RATE)
        self.sent += BLOCK
        return frame


async def _publish(base: str, state) -> tuple[RTCPeerConnection, str]:
    """An aiortc WHIP publisher (video and a tone); the session id once both tracks are in."""
    from streamfx.server import ice

    ice.enable_loopback_candidates()
    pc = RTCPeerConnection(ice.rtc_configuration())
    pc.addTransceiver(PatternTrack(320, 240, fps=15), direction="sendonly")
    pc.addTransceiver(ToneTrack(), direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}/whip", data=pc.localDescription.sdp,
                             headers={"Content-Type": "application/sdp", "Authorization": f"Bearer {TOKEN}"}) as resp:
            answer = await resp.text()
            assert resp.status == 201, answer
            session = resp.headers["Location"].rsplit("/", 1)[1]
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    deadline = time.monotonic() + 15
    while (caller := state.registry.callers[session]).track is None or caller.audio is None:
        assert time.monotonic() < deadline, "the publisher's video and audio must reach the server"
        await asyncio.sleep(0.05)
    return pc, session


WATCHED = """async () => { const v = document.getElementById('video'), r = await inboundStats(window.whep.pc);
  return {status: window.whep.status, location: window.whep.location, width: v.videoWidth, height: v.videoHeight,
          frames: v.getVideoPlaybackQuality().totalVideoFrames, muted: v.muted, received: r,
          tracks: v.srcObject ? v.srcObject.getTracks().map((t) => t.kind).sort() : []}; }"""
WATCHING = """async () => { const r = await inboundStats(window.whep.pc), v = document.getElementById('video');
  return v.videoWidth > 0 && r.video?.framesDecoded > 3 && r.audio?.packetsReceived > 10 && r.audio.totalSamplesReceived > 0; }"""


async def _status_of(browser, url: str) -> str:
    page = await browser.new_page()
    try:
        await page.goto(url)
        await page.wait_for_function("document.getElementById('status').classList.contains('bad')", timeout=10_000)
        return await page.evaluate("window.whep.status")
    finally:
        await page.close()


async def test_two_whep_pages_watch_a_published_session(server, browser):
    base, state = server.base, server.state
    publisher, session = await _publish(base, state)
    caller = state.registry.callers[session]
    pages = [await browser.new_page() for _ in range(2)]
    try:
        await asyncio.gather(*(p.goto(f"{base}/client/whep.html?session={session}&token={TOKEN}") for p in pages))
        await asyncio.gather(*(_until(p, WATCHING, 20, WATCHED) for p in pages))
        first = [await p.evaluate(WATCHED) for p in pages]
        await asyncio.sleep(0.5)
        for page, before in zip(pages, first):
            now = await page.evaluate(WATCHED)
            assert now["status"] == "Watching the session." and now["muted"], now
            assert (now["width"], now["height"]) == (320, 240) and now["tracks"] == ["audio", "video"], now
            assert now["frames"] > before["frames"], (before, now)   # the video plays on
            assert now["received"]["audio"]["packetsReceived"] > before["received"]["audio"]["packetsReceived"], now
            assert now["location"].startswith(f"{base}/whep/{session}/"), now
        assert len(caller.viewers) == 2

        assert await _energy_growth(pages[0], 0.5, "window.whep.pc") == 0   # muted: nothing plays
        await pages[0].click("#sound")
        assert await pages[0].evaluate("[document.getElementById('video').muted, "
                                       "document.getElementById('sound').getAttribute('aria-pressed')]") == [False, "true"]
        assert await _energy_growth(pages[0], 1.0, "window.whep.pc") > 0, "Sound on: the tone must play"
        viewer = urlsplit(first[0]["location"]).path
        await pages[0].goto("about:blank")   # pagehide: the page DELETEs its viewer (keepalive) and hangs up
        # 200, or 404 where the hang-up (DTLS close) reached the server first and ended the viewer
        # already; a DELETE without the token would be a 401
        deleted = lambda: any(r[:2] == ("DELETE", viewer) and r[2] in (200, 404) for r in server.responses)
        deadline = time.monotonic() + 5
        while not deleted() or len(caller.viewers) != 1:
            assert time.monotonic() < deadline, f"{len(caller.viewers)} viewers after one page left; {server.responses[-5:]}"
            await asyncio.sleep(0.05)
    finally:
        for page in pages:
            await page.close()
        await publisher.close()
    no_such = await _status_of(browser, f"{base}/client/whep.html?session=nobody&token={TOKEN}")
    assert no_such.startswith("No such session"), no_such
    no_token = await _status_of(browser, f"{base}/client/whep.html?session={session}")
    assert "needs a token (401)" in no_token, no_token
