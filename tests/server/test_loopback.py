"""In-process aiortc loopback: a real client peer streams through the real server."""

from __future__ import annotations

import asyncio
import json
import time

import numpy as np

from streamfx.pipeline.engine import Engine, EngineSession
from streamfx.pipeline.engines.overlay import BORDER_RGB, OverlayEngine

from rtc_client import read_stamp


async def test_frames_come_back_filtered_with_monotonic_pts(server_factory, client_factory):
    server = await server_factory(engine=OverlayEngine())
    client = client_factory(width=320, height=240, fps=30)
    await client.connect(server.base)
    await client.wait_frames(20)
    frame = client.got.frames[-1]
    assert frame.shape == (240, 320, 3)
    # The overlay engine's magenta border survives the VP8 round trip; the centre stays grey.
    border = frame[2:10, 40:280].reshape(-1, 3).mean(axis=0)
    assert np.abs(border - np.array(BORDER_RGB)).max() < 40, border
    assert abs(frame[120, 160].astype(int).mean() - 120) < 20
    pts = client.got.pts
    assert all(b > a for a, b in zip(pts, pts[1:])), "pts must be strictly increasing"


async def test_control_channel_stats_and_prompt(server_factory, client_factory):
    server = await server_factory(engine=OverlayEngine())
    client = client_factory()
    await client.connect(server.base)
    await asyncio.wait_for(client.channel_open.wait(), 10)
    client.channel.send(json.dumps({"type": "hello"}))
    client.channel.send(json.dumps({"type": "prompt", "preset": "invert"}))
    client.channel.send(json.dumps({"type": "pose", "mode": "sideways"}))
    client.channel.send("{not json")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any(m["type"] == "stats" and m["frames_out"] > 5
                                                  for m in client.got.messages):
        await asyncio.sleep(0.1)
    kinds = [m["type"] for m in client.got.messages]
    assert "info" in kinds and "stats" in kinds
    info = next(m for m in client.got.messages if m["type"] == "info")
    assert "invert" in info["presets"]
    assert {"type": "ack", "for": "prompt"} in client.got.messages
    errors = [m["message"] for m in client.got.messages if m["type"] == "error"]
    assert any("pose mode" in e for e in errors) and any("JSON" in e for e in errors)
    stats = [m for m in client.got.messages if m["type"] == "stats"][-1]
    assert stats["frames_out"] > 5 and "engine" in stats["stages_ms"]
    # the invert look is live: the grey centre (120) comes back as about 135
    n = len(client.got.frames)
    await client.wait_frames(n + 5)
    assert abs(client.got.frames[-1][120, 160].astype(int).mean() - 135) < 20


class SlowSession(EngineSession):
    def process(self, frame, controls, timer):
        time.sleep(0.15)
        return frame


class SlowEngine(Engine):
    name = "slow"

    def open_session(self):
        return SlowSession()


async def test_slow_engine_drops_frames_instead_of_queueing(server_factory, client_factory):
    server = await server_factory(engine=SlowEngine())
    client = client_factory(fps=30)
    answer = await client.connect(server.base)

    await client.wait_frames(3)
    max_queued = 0
    end = time.monotonic() + 4.0
    while time.monotonic() < end:
        await asyncio.sleep(0.02)
        caller = server.state.registry.callers[answer["caller"]]
        max_queued = max(max_queued, caller.track.queued)
    # A 150 ms engine at 30 fps input: most frames must be dropped, not queued.
    assert max_queued <= 2
    assert server.state.registry.callers[answer["caller"]].pipeline.stats.dropped > 40
    recent = [(read_stamp(f), at) for f, at in zip(client.got.frames[-10:], client.got.at[-10:])]
    delays = [at - client.track.sent_at[i] for i, at in recent if i in client.track.sent_at]
    assert delays, "stamped frames must be readable"
    # Without dropping, after ~5 s the delay would be many seconds; it stays near one frame time.
    assert max(delays) < 1.0, delays


async def test_callers_have_independent_state_and_one_leaving_keeps_the_other(server_factory, client_factory):
    server = await server_factory(engine=OverlayEngine())
    plain, inverted = client_factory(), client_factory()
    await plain.connect(server.base)
    await inverted.connect(server.base)
    await asyncio.wait_for(inverted.channel_open.wait(), 10)
    inverted.channel.send(json.dumps({"type": "prompt", "preset": "invert"}))
    deadline = time.monotonic() + 10
    while {"type": "ack", "for": "prompt"} not in inverted.got.messages:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    await inverted.wait_frames(len(inverted.got.frames) + 5)
    await plain.wait_frames(len(plain.got.frames) + 5)
    assert abs(plain.got.frames[-1][120, 160].astype(int).mean() - 120) < 20
    assert abs(inverted.got.frames[-1][120, 160].astype(int).mean() - 135) < 20
    await inverted.close()
    deadline = time.monotonic() + 10
    while len(server.state.registry.callers) != 1:
        assert time.monotonic() < deadline, "the leaving caller must be removed"
        await asyncio.sleep(0.1)
    await plain.wait_frames(len(plain.got.frames) + 10)


async def test_resolution_change_mid_stream(server_factory, client_factory):
    server = await server_factory(engine=OverlayEngine())
    client = client_factory(width=320, height=240, resize_at=20, resize_to=(480, 360))
    await client.connect(server.base)
    deadline = time.monotonic() + 20
    while not client.got.frames or client.got.frames[-1].shape != (360, 480, 3):
        assert time.monotonic() < deadline, "frames of the new size must come back"
        await asyncio.sleep(0.05)
    await client.wait_frames(len(client.got.frames) + 5)
    frame = client.got.frames[-1]
    assert frame.shape == (360, 480, 3)
    assert np.abs(frame[2:10, 40:440].reshape(-1, 3).mean(axis=0) - np.array(BORDER_RGB)).max() < 40
    assert server.state.registry.callers[client.caller_id].pipeline.stats.errors == 0


async def test_a_failing_caller_is_closed_alone(server_factory, client_factory):
    server = await server_factory(engine=OverlayEngine())
    good, bad = client_factory(), client_factory()
    await good.connect(server.base)
    await bad.connect(server.base)
    await bad.wait_frames(3)

    def broken(frame):
        raise RuntimeError("simulated decoder failure")

    server.state.registry.callers[bad.caller_id].track._filter = broken
    deadline = time.monotonic() + 10
    while bad.caller_id in server.state.registry.callers:
        assert time.monotonic() < deadline, "the failing caller must be closed"
        await asyncio.sleep(0.05)
    assert good.caller_id in server.state.registry.callers
    await good.wait_frames(len(good.got.frames) + 10)
