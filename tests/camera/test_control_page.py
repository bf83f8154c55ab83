"""The camera's control page in process (a real aiortc peer as the page), and its settings.

The page's rules are the server's: a token when it is bound beyond loopback, the Host check,
bounded offers; a bad offer is refused and the camera goes on. A control message changes the
camera's pipeline for the next frame and is saved; the next start takes the saved settings,
the command line winning, and a settings file that cannot be read is one line, never a stop.
"""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.error
import urllib.request
from pathlib import Path

import av
import numpy as np
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription

from streamfx.camera.page import ControlPage
from streamfx.camera.settings import REFERENCE, CameraSettings, SettingsStore, with_flags
from streamfx.cli import main
from streamfx.pipeline.engines.overlay import OverlayEngine
from streamfx.pipeline.processor import CallerPipeline
from streamfx.server import ice
from streamfx.server.config import ServerConfig

HEAD_TURN = Path(__file__).resolve().parents[2].parent / "shared" / "testdata" / "video" / "head_turn_1.mp4"


@pytest.fixture
def page(tmp_path):
    pipeline = CallerPipeline(OverlayEngine())
    store = SettingsStore(tmp_path / "config")
    page = ControlPage(pipeline, ServerConfig(port=0), store, status=lambda: {"camera": "live", "outputs": []})
    yield page
    page.close()
    pipeline.close()


def _get(url: str, headers: dict | None = None) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as res:
            return res.status, res.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _post(url: str, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as res:
            return res.status, json.loads(res.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


async def _preview(base: str, messages: list[dict], frames_wanted: int = 3) -> dict:
    """A page's peer: two receive-only videos and the control channel; sends ``messages`` and
    returns the replies and the frames each video gave."""
    ice.enable_loopback_candidates()
    pc = RTCPeerConnection(ice.rtc_configuration())
    pc.addTransceiver("video", direction="recvonly")
    pc.addTransceiver("video", direction="recvonly")
    channel = pc.createDataChannel("control")
    replies: list[dict] = []
    opened = asyncio.Event()
    channel.on("open", opened.set)
    channel.on("message", lambda text: replies.append(json.loads(text)))
    tracks: list = []
    pc.on("track", tracks.append)
    await pc.setLocalDescription(await pc.createOffer())
    body = json.dumps({"sdp": pc.localDescription.sdp, "type": "offer"}).encode()
    status, answer = await asyncio.get_running_loop().run_in_executor(None, _post, base + "offer", body)
    assert status == 200, answer
    await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], answer["type"]))
    await asyncio.wait_for(opened.wait(), 15)
    for msg in messages:
        channel.send(json.dumps(msg))
    got = [[], []]
    for i, track in enumerate(tracks[:2]):
        for _ in range(frames_wanted):
            got[i].append((await asyncio.wait_for(track.recv(), 15)).to_ndarray(format="rgb24"))
    for _ in range(100):
        if sum(r["type"] in ("ack", "error") for r in replies) >= len(messages):
            break
        await asyncio.sleep(0.05)
    await pc.close()
    return {"replies": replies, "frames": got}


def test_the_page_controls_the_pipeline_saves_and_previews_both_videos(page):
    original = np.full((96, 128, 3), 40, np.uint8)
    filtered = np.full((96, 128, 3), 200, np.uint8)
    stop = threading.Event()

    def feed() -> None:  # the camera loop, at 30 fps
        while not stop.wait(1 / 30):
            page.viewers and page.show(original, filtered, 0.0)

    threading.Thread(target=feed, daemon=True).start()
    try:
        out = asyncio.run(_preview(page.url, [{"type": "bypass", "on": True}, {"type": "strength", "value": 0.4},
                                              {"type": "pose", "mode": "offset", "yaw": 10, "pitch": -5},
                                              {"type": "mic_offset", "ms": 50}]))
    finally:
        stop.set()
    acks = [r["for"] for r in out["replies"] if r["type"] == "ack"]
    errors = [r["message"] for r in out["replies"] if r["type"] == "error"]
    assert acks == ["bypass", "strength", "pose"], out["replies"]
    assert errors == ["no virtual microphone: start the camera with --virtual-mic"]
    controls = page.pipeline.controls
    assert controls.bypass and controls.strength == 0.4 and controls.pose.mode == "offset" and controls.pose.yaw_deg == 10
    saved = json.loads(page.store.path.read_text())
    assert saved == {**saved, "bypass": True, "strength": 0.4, "pose": "offset", "yaw": 10.0, "pitch": -5.0}
    first, second = out["frames"]
    assert abs(float(first[-1].mean()) - 40) < 8 and abs(float(second[-1].mean()) - 200) < 8, "original, then filtered"
    status, info = _get(page.url + "api/info")
    info = json.loads(info)
    assert status == 200 and info["mode"] == "camera" and info["settings"]["bypass"] is True


def test_the_page_keeps_the_servers_rules(tmp_path):
    pipeline = CallerPipeline(OverlayEngine())
    page = ControlPage(pipeline, ServerConfig(port=0, token="secret"), SettingsStore(tmp_path))
    try:
        base = f"http://127.0.0.1:{page.port}/"
        assert page.url == base + "?token=secret"
        assert _get(base + "api/info")[0] == 401
        assert _get(base + "api/info", {"Authorization": "Bearer secret"})[0] == 200
        assert _get(base + "api/info", {"Authorization": "Bearer secret", "Host": "evil.example"})[0] == 421
        status, body = _post(base + "offer?token=secret", b'{"sdp": "v=0 m=nonsense", "type": "offer"}')
        assert status == 400 and "could not use the offer" in body["error"]
        status, body = _post(base + "offer?token=secret", b"x" * (70 * 1024))
        assert status == 413
        assert _get(base + "api/info?token=secret")[0] == 200, "the page is still up after bad offers"
        assert not page.viewers
    finally:
        page.close()
        pipeline.close()


def test_settings_load_save_and_the_command_line_wins(tmp_path):
    store = SettingsStore(tmp_path)
    assert store.load() == CameraSettings()
    store.save(CameraSettings(prompt="warm", pose="frontal", strength=0.5, mic_offset_ms=-30.0))
    saved = SettingsStore(tmp_path).load()
    assert saved == CameraSettings(prompt="warm", pose="frontal", strength=0.5, mic_offset_ms=-30.0)
    flags = {"prompt": None, "pose": "follow", "yaw": 0.0, "pitch": 0.0, "quality": "auto", "strength": 0.8,
             "mic_offset_ms": 0.0}
    assert with_flags(saved, flags) == CameraSettings(prompt="warm", pose="frontal", strength=0.8, mic_offset_ms=-30.0)
    for bad in ("{not json", '{"strength": 7}', '{"pose": "sideways"}', "[1, 2]"):
        (tmp_path / "camera.json").write_text(bad)
        broken = SettingsStore(tmp_path)
        assert broken.load() == CameraSettings()
        assert broken.problem and "\n" not in broken.problem and "using the defaults" in broken.problem


def _frames(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)]).astype(np.float32)


def test_the_next_start_takes_the_saved_settings(tmp_path, capsys, private_config_dir):
    if not HEAD_TURN.is_file():
        pytest.skip(f"{HEAD_TURN} missing")
    config = Path(private_config_dir)
    source = _frames(HEAD_TURN)[:4]

    def run(settings: dict | None, *flags: str) -> np.ndarray:
        (config / "camera.json").write_text(json.dumps(settings)) if settings is not None else None
        out = tmp_path / f"out{len(list(tmp_path.iterdir()))}.mp4"
        assert main(["camera", "--source", str(HEAD_TURN), "--output", str(out), "--frames", "4", "--no-ui",
                     "--engine", "overlay", *flags]) == 0
        return np.abs(_frames(out) - source).mean(axis=(1, 2, 3))

    try:
        assert run({"bypass": True}).max() < 3.0, "saved bypass: the input frames"
        assert run({"bypass": False}).min() > 5.0, "the overlay engine's border"
        assert run({"bypass": True, "prompt": "no-such-look"}).max() < 3.0
        assert "the saved prompt 'no-such-look' is not available here" in capsys.readouterr().err
        (config / "camera.json").write_text("{broken")
        run(None)
        assert "ignored the saved camera settings" in capsys.readouterr().err
        store = SettingsStore(config)
        store.save(CameraSettings(prompt=REFERENCE), None)  # a reference that was never written
        assert store.load().prompt is None
    finally:
        (config / "camera.json").unlink(missing_ok=True)
