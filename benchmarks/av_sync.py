"""A/V sync as a receiver plays it: a flash and a click at the same instant every second go
through the server and back; how far apart do they play?

The sender (an aiortc peer) shows a face and, once per ``period`` seconds, a white flash on
the video and a click on the audio, both stamped on one capture clock (the frame index is
written into each frame as blocks, so a dropped frame cannot shift the measurement). The
receiver maps every returned frame's RTP timestamp through the server's RTCP sender reports
onto the server's clock, as a browser does before it plays (not the wall-clock arrival):

    offset = playout(click) - playout(flash)      (audio early is negative)

EBU R37's window for lip sync is -40..+60 ms. ``python -m benchmarks.av_sync`` runs the
mesh engine and a 150 ms stand-in (3DPE-like latency) and writes
``benchmarks/results/av_sync.json``: p50 and worst offset per engine, and the offset the
same stream would have with the audio sent on as soon as it arrived (the baseline the delay
line is there to fix: the offset less the time the audio waited in the line, same run).
"""

from __future__ import annotations

import argparse
import asyncio
import fractions
import time
from dataclasses import dataclass, field
from statistics import median

import aiohttp
import numpy as np
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from av import AudioFrame, VideoFrame

from benchmarks.common import RESULTS, TESTDATA, machine, write_json
from benchmarks.server_harness import read_stamp, stamp
from streamfx.server import ice
from streamfx.server.sender_reports import SenderReports

RATE, BLOCK, FPS = 48000, 960, 30
FLASH_FRAMES = 4            # the flash lasts 4 frames (133 ms), so a slow engine shows at least one
CLICK_S = 0.004             # a 4 ms burst at 3 kHz


def face_frame(width: int = 640, height: int = 480) -> np.ndarray:
    """A test face (FFHQ-derived, see the test data README) in a webcam-sized frame."""
    from PIL import Image

    face = Image.open(TESTDATA / "faces" / "ffhq_1.png").convert("RGB").resize((400, 400))
    frame = np.full((height, width, 3), 90, np.uint8)
    top, left = (height - 400) // 2 + 20, (width - 400) // 2
    frame[top:top + 400, left:left + 400] = np.asarray(face)
    return frame


class Clip:
    """One capture clock for both tracks of the sender."""

    def __init__(self, period_s: float = 1.0) -> None:
        self.period = period_s
        self.start: float | None = None
        self.base = face_frame()
        self.flash = self.base.copy()
        self.flash[60:] = 250

    def begin(self) -> float:
        if self.start is None:
            self.start = time.monotonic()
        return self.start

    def flash_index(self, index: int) -> bool:
        return index % round(self.period * FPS) < FLASH_FRAMES


class ClipVideo(MediaStreamTrack):
    kind = "video"

    def __init__(self, clip: Clip) -> None:
        super().__init__()
        self.clip, self.index = clip, 0

    async def recv(self) -> VideoFrame:
        start = self.clip.begin()
        wait = start + self.index / FPS - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        img = (self.clip.flash if self.clip.flash_index(self.index) else self.clip.base).copy()
        stamp(img, self.index % 1024)
        frame = VideoFrame.from_ndarray(img, format="rgb24")
        frame.pts, frame.time_base = self.index * 90000 // FPS, fractions.Fraction(1, 90000)
        self.index += 1
        return frame


class ClipAudio(MediaStreamTrack):
    kind = "audio"

    def __init__(self, clip: Clip) -> None:
        super().__init__()
        self.clip, self.sent = clip, 0
        n = int(CLICK_S * RATE)
        self.click = (np.sin(2 * np.pi * 3000 * np.arange(n) / RATE) * 30000).astype(np.int16)

    async def recv(self) -> AudioFrame:
        start = self.clip.begin()
        wait = start + self.sent / RATE - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        samples = np.zeros(BLOCK, np.int16)
        period = round(self.clip.period * RATE)
        first = -(-self.sent // period) * period  # the next click at or after this block
        if first < self.sent + BLOCK:
            at = first - self.sent
            part = self.click[:BLOCK - at]
            samples[at:at + len(part)] = part
        frame = AudioFrame.from_ndarray(np.repeat(samples, 2).reshape(1, -1), format="s16", layout="stereo")
        frame.sample_rate, frame.pts, frame.time_base = RATE, self.sent, fractions.Fraction(1, RATE)
        self.sent += BLOCK
        return frame


@dataclass
class Playout:
    """What the receiver got, each frame with the sender report in force when it arrived."""

    reports: SenderReports = field(default_factory=SenderReports)
    flashes: dict[int, float] = field(default_factory=dict)   # clip period -> playout of its onset
    clicks: list[float] = field(default_factory=list)
    frames: int = 0
    audio_blocks: int = 0
    _quiet: bool = True

    def video(self, frame: VideoFrame, period_frames: int) -> None:
        self.frames += 1
        played = self.reports.sender_time("video", frame.pts)
        img = frame.to_ndarray(format="rgb24")
        index = read_stamp(img)
        if played is None or img[300:, :].mean() < 200:
            return
        k, into = divmod(index, period_frames)
        if into < FLASH_FRAMES and k not in self.flashes:  # back from this frame to the flash's onset
            self.flashes[k] = played - into / FPS

    def audio(self, frame: AudioFrame) -> None:
        self.audio_blocks += 1
        played = self.reports.sender_time("audio", frame.pts)
        mono = np.abs(frame.to_ndarray().reshape(-1, len(frame.layout.channels))[:, 0].astype(np.int32))
        loud = np.flatnonzero(mono > 8000)
        if not len(loud):
            self._quiet = True
            return
        if self._quiet and played is not None:
            self.clicks.append(played + loud[0] / RATE)
        self._quiet = False

    def offsets(self, period_s: float, skip_s: float = 0.0) -> list[float]:
        """For each flash after ``skip_s`` of warm-up, its click's offset (ms): the click that
        plays nearest to it, within half a period."""
        out = []
        for k, flash in sorted(self.flashes.items()):
            if k * period_s < skip_s or not self.clicks:
                continue
            click = min(self.clicks, key=lambda c: abs(c - flash))
            if abs(click - flash) < period_s / 2:
                out.append((click - flash) * 1e3)
        return out


class Receiver:
    """What an aiortc peer receives, recorded as :class:`Playout`."""

    def __init__(self, pc: RTCPeerConnection, period_s: float) -> None:
        self.pc, self.period = pc, round(period_s * FPS)
        self.playout = Playout()
        self._tasks: list[asyncio.Task] = []
        pc.on("track", self._on_track)

    def _on_track(self, track) -> None:
        self.playout.reports.tap_track(self.pc, track)

        async def pull() -> None:
            try:
                while True:
                    frame = await track.recv()
                    if track.kind == "video":
                        self.playout.video(frame, self.period)
                    else:
                        self.playout.audio(frame)
            except MediaStreamError:
                pass

        self._tasks.append(asyncio.ensure_future(pull()))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await self.pc.close()


class SyncCaller(Receiver):
    """An aiortc peer that sends the clip to ``/offer`` and records the playout of what returns."""

    def __init__(self, period_s: float = 1.0) -> None:
        ice.enable_loopback_candidates()
        self.clip = Clip(period_s)
        super().__init__(RTCPeerConnection(ice.rtc_configuration()), period_s)
        self.pc.addTrack(ClipVideo(self.clip))
        self.pc.addTrack(ClipAudio(self.clip))
        self.caller_id: str | None = None

    async def connect(self, base: str) -> dict:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{base}/offer", json={"sdp": self.pc.localDescription.sdp, "type": "offer"}) as r:
                answer = await r.json()
                if r.status != 200:
                    raise RuntimeError(f"offer refused: {r.status} {answer}")
        self.caller_id = answer["caller"]
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
        return answer


class SyncViewer(Receiver):
    """A WHEP viewer (receive-only audio and video) of one session."""

    def __init__(self, period_s: float = 1.0) -> None:
        ice.enable_loopback_candidates()
        super().__init__(RTCPeerConnection(ice.rtc_configuration()), period_s)
        self.pc.addTransceiver("video", direction="recvonly")
        self.pc.addTransceiver("audio", direction="recvonly")

    async def watch(self, base: str, session: str, token: str | None = None) -> str:
        """Start watching; returns the viewer's ``Location``."""
        await self.pc.setLocalDescription(await self.pc.createOffer())
        headers = {"Content-Type": "application/sdp", **({"Authorization": f"Bearer {token}"} if token else {})}
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{base}/whep/{session}", data=self.pc.localDescription.sdp, headers=headers) as r:
                answer = await r.text()
                if r.status != 201:
                    raise RuntimeError(f"WHEP refused: {r.status} {answer}")
                location = r.headers["Location"]
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        return location


def summary(playout: Playout, period_s: float, skip_s: float) -> dict:
    offsets = playout.offsets(period_s, skip_s)
    return {"offsets_ms": [round(o, 1) for o in offsets], "video_frames": playout.frames,
            "audio_blocks": playout.audio_blocks,
            "p50_ms": round(median(offsets), 1) if offsets else None,
            "worst_ms": round(max(offsets, key=abs), 1) if offsets else None}


def stand_in(latency_s: float = 0.15):
    """An engine that returns each frame unchanged after ``latency_s`` (3DPE's latency on a CPU)."""
    from streamfx.pipeline.engine import Engine, EngineSession

    class Session(EngineSession):
        def process(self, frame, controls, timer):
            time.sleep(latency_s)
            return frame

    class StandIn(Engine):
        name = f"sleep{int(latency_s * 1000)}"

        def open_session(self):
            return Session()

    return StandIn()


async def measure(base: str, seconds: float, state=None, period_s: float = 1.0, skip_s: float = 2.0,
                  whep: bool = False) -> dict:
    """Call ``base`` for ``seconds`` and return the offsets the caller plays (with ``whep``,
    also a WHEP viewer's); with the server's ``state`` (in process), the audio delay it used."""
    caller = SyncCaller(period_s)
    viewer = SyncViewer(period_s) if whep else None
    delays: list[float] = []
    try:
        await caller.connect(base)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            await asyncio.sleep(0.25)
            session = state.registry.callers.get(caller.caller_id) if state else None
            if viewer is not None and not viewer.pc.remoteDescription and session and session.track:
                await viewer.watch(base, caller.caller_id)
            audio = getattr(session, "audio", None)
            if audio is not None and audio.delay_s is not None:
                delays.append(audio.delay_s)
    finally:
        await caller.close()
        if viewer is not None:
            await viewer.close()
    result = summary(caller.playout, period_s, skip_s)
    if viewer is not None:
        result["whep"] = summary(viewer.playout, period_s, skip_s)
    if delays:
        result["audio_delay_ms"] = round(median(delays) * 1e3, 1)  # held in the delay line
    return result


async def run_one(engine: str, seconds: float) -> dict:
    """One in-process server (``mesh`` or the stand-in) and one sync caller."""
    from aiohttp import web

    from streamfx.server import ServerConfig, create_app
    from streamfx.server.app import STATE

    app = create_app(ServerConfig(ice_loopback=True, engine="mesh"),
                     engine=None if engine == "mesh" else stand_in())
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    state = app[STATE]
    try:
        while state.engine is None and state.engine_error is None:
            await asyncio.sleep(0.1)
        return {"engine": engine, **await measure(f"http://127.0.0.1:{port}", seconds, state)}
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    runs = [asyncio.run(run_one(name, args.seconds)) for name in ("mesh", "sleep150")]
    for run in runs:  # the baseline: the same audio sent as soon as it arrived
        if run.get("p50_ms") is not None and "audio_delay_ms" in run:
            run["undelayed_p50_ms"] = round(run["p50_ms"] - run["audio_delay_ms"], 1)
    result = {"benchmark": "av_sync", "machine": machine(), "window_ms": [-40, 60], "runs": runs}
    print(write_json(RESULTS / "av_sync.json", result))


if __name__ == "__main__":
    main()
