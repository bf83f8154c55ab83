"""WHIP push: ``camera --whip`` and ``serve --whip-out`` publish to a WHIP ingest (here a
second StreamFX, through its real ``/whip``; Janus is tested in tests/interop), reconnect
when the ingest drops them, and say in one line when it refuses them."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import pytest

from clip_with_sound import write_clip
from rtc_client import read_stamp  # noqa: F401 (the same helpers as the other server tests)
from streamfx.pipeline.engines.overlay import OverlayEngine

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_clip(tmp_path_factory.mktemp("clip") / "head_turn_with_sound.mp4")


async def _until(check, timeout_s: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


def _camera(clip, url: str, *extra: str, frames: int = 75) -> subprocess.Popen:
    env = {**os.environ, "STREAMFX_ICE_LOOPBACK": "1"}
    return subprocess.Popen([sys.executable, "-m", "streamfx", "camera", "--source", str(clip), "--whip", url,
                             "--engine", "overlay", "--frames", str(frames), *extra],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


async def test_camera_pushes_video_and_its_sound_and_deletes_the_session_at_exit(server_factory, clip):
    ingest = await server_factory(engine=OverlayEngine())
    camera = _camera(clip, f"{ingest.base}/whip")
    try:
        callers = ingest.state.registry.callers
        caller = await _until(lambda: next(iter(callers.values()), None), what="the push to arrive")
        await _until(lambda: caller.pipeline.stats.frames_in >= 10, what="pushed frames")
        await _until(lambda: caller.audio is not None and (caller.audio.line.end or 0) > 48000 // 2,
                     what="pushed sound")
        out, err = await asyncio.get_running_loop().run_in_executor(None, camera.communicate, None, 60)
        assert camera.returncode == 0, err
        await _until(lambda: not callers, what="the session to be deleted at exit")
    finally:
        camera.kill()


async def test_a_refused_push_is_one_clear_line(server_factory, clip):
    ingest = await server_factory(engine=OverlayEngine(), token="right")
    camera = _camera(clip, f"{ingest.base}/whip", "--whip-token", "wrong")
    out, err = await asyncio.get_running_loop().run_in_executor(None, camera.communicate, None, 60)
    assert camera.returncode != 0
    lines = [line for line in err.splitlines() if "refused" in line]
    assert lines and "HTTP 401" in lines[-1] and "token" in lines[-1], err
    assert not ingest.state.registry.callers


async def test_whip_out_pushes_each_session_and_offers_again_when_the_ingest_drops_it(server_factory,
                                                                                     client_factory):
    ingest = await server_factory(engine=OverlayEngine())
    server = await server_factory(engine=OverlayEngine(), whip_out=f"{ingest.base}/whip?for={{session}}")
    client = client_factory()
    await client.connect(server.base)
    pushed = ingest.state.registry.callers
    first = await _until(lambda: next(iter(pushed.values()), None), what="the session's push")
    await _until(lambda: first.pipeline.stats.frames_in >= 5, what="pushed frames")
    push = server.state.registry.callers[client.caller_id].pushes[0]
    assert push.status.state == "live" and push.status.location.endswith(f"/whip/{first.id}")
    await ingest.state.registry.remove(first)                       # the ingest drops it
    again = await _until(lambda: next((c for c in pushed.values() if c.id != first.id), None), 30,
                         what="a new offer after the drop")
    await _until(lambda: again.pipeline.stats.frames_in >= 5, what="frames after the reconnect")
    assert push.status.attempts >= 2
    await client.close()                                            # the session ends: so does its push
    await _until(lambda: not pushed, what="the pushed session to be deleted")
