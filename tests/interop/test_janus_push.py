"""StreamFX pushes to Janus: ``streamfx camera --source FILE --whip URL`` publishes the
filtered clip and its sound through Debian's simple-whip-server into a Janus VideoRoom;
the room lists the publisher with video and audio, and a subscriber through Janus gets
frames (loopback; see janus_env.py for what this Janus and WHIP server need)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from clip_with_sound import write_clip
from janus_env import JanusRoom, missing

pytestmark = pytest.mark.skipif(missing() is not None, reason=str(missing()))
ROOT = Path(__file__).resolve().parents[2]


async def test_camera_whip_push_joins_a_janus_room_with_video_and_audio(tmp_path):
    clip = write_clip(tmp_path / "clip.mp4")
    async with JanusRoom() as room:
        camera = subprocess.Popen(
            [sys.executable, "-m", "streamfx", "camera", "--source", str(clip), "--whip", room.whip_url,
             "--whip-token", room.token, "--engine", "overlay", "--frames", "150"],
            cwd=ROOT, env={**os.environ}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            publisher = await room.wait_for_publisher(timeout=30)
            kinds = sorted(s["type"] for s in await room.publisher_streams(publisher["id"]))
            assert kinds == ["audio", "video"], (kinds, room.logs())
            got = await room.subscribe_frames(10, timeout=20, feed=publisher["id"])
            assert got.video_frames >= 10 and got.audio_frames > 0, (got, room.logs())
            # the overlay engine's border: what Janus forwards is the filtered video, not the clip
            frame = got.last_video
            assert frame is not None and frame[2:10, 40:-40].mean(axis=(0, 1))[0] > 150, room.logs()
        finally:
            camera.terminate()
            _, err = await asyncio.get_running_loop().run_in_executor(None, camera.communicate, None, 30)
        assert "Traceback" not in err, err
