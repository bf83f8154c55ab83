"""The camera's control page in headless Chromium, driving a real ``streamfx camera``.

One ``streamfx camera --source FILE --output OUT.mp4`` (the mesh engine, the test styles)
runs for the module; the page it prints is opened in Chromium, which has no camera: the
previews come from the process. Through the page, a style is chosen in the gallery, bypass
turned on and off, a second style chosen; each step's frame number is taken from a stats
message that left after the step's ack. Then the camera is stopped (Ctrl-C) and the frames it
wrote are compared with the input frames (the file loops; output frame k is input frame
k mod 60): from each step on, the frames are what the step asked for.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest
import pytest_asyncio

import browser_env
from browser_env import CHROMIUM, ROOT
from pulse_env import RATE, click_train, delays, pulse_daemon  # noqa: F401 - pulse_daemon is a fixture


_marks = browser_env.pytestmark if isinstance(browser_env.pytestmark, list) else [browser_env.pytestmark]
pytestmark = [*_marks, pytest.mark.asyncio(loop_scope="module")]
TESTDATA = ROOT.parent / "shared" / "testdata"
CLIP = TESTDATA / "video" / "head_turn_1.mp4"
STYLES = TESTDATA / "styles"


class Camera:
    def __init__(self, folder: Path, probe=None) -> None:
        self.config, self.output, self.probe = folder / "config", folder / "out.mp4", probe
        env = dict(os.environ, STREAMFX_CONFIG_DIR=str(self.config))
        mic = ["--virtual-mic", "--virtual-mic-device", probe.out, "--mic", probe.mic] if probe else []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamfx", "camera", "--source", str(CLIP), "--output", str(self.output),
             "--engine", "mesh", "--styles", str(STYLES), "--ui-port", "0", "--threads", "1", *mic],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: [self.lines.put(x) for x in self.proc.stdout] + [self.lines.put(None)],
                         daemon=True).start()
        self.url = self._url()

    def _url(self) -> str:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=1)
            except queue.Empty:
                continue
            if line is None:
                break
            if line.startswith("control page: "):
                return line.split(": ", 1)[1].strip()
        self.proc.kill()
        raise AssertionError(f"no control page URL printed: {self.proc.stderr.read()[-2000:]}")

    def stop(self) -> str:
        """Ctrl-C, as a user stops it: the file is closed properly. Returns stderr."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        return self.proc.stderr.read()


@pytest.fixture(scope="module")
def camera(tmp_path_factory, request):
    """The camera process; with PulseAudio here, its virtual microphone reads the probe's
    microphone and plays into the probe (tests/pulse_env.py), so its delay can be measured."""
    if not CLIP.is_file():
        pytest.skip(f"{CLIP} missing")
    try:
        probe = request.getfixturevalue("pulse_daemon").probe()
    except pytest.skip.Exception:
        probe = None  # the page is tested without a microphone; the microphone's test skips
    cam = Camera(tmp_path_factory.mktemp("camera"), probe)
    yield cam
    cam.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def page(camera):
    from playwright.async_api import async_playwright

    from benchmarks.browser_roundtrip import FLAGS

    flags = [f for f in FLAGS if "fake" not in f]  # no camera for this page: the process has it
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=flags)
        try:
            page = await chromium.new_page()
            await page.goto(camera.url)
            yield page
        finally:
            await chromium.close()


async def _until(page, predicate: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await page.evaluate(predicate):
        if time.monotonic() > deadline:
            state = await page.evaluate("() => JSON.stringify({c: streamfx.connection, n: streamfx.notices,"
                                        " e: streamfx.errors, a: streamfx.acks})")
            raise AssertionError(f"not within {timeout_s} s: {predicate}\n{state}")
        await asyncio.sleep(0.1)


NEXT_STATS = """() => new Promise((resolve) => {  // frames filtered when the next stats message left
  const before = streamfx.serverStats;
  const t = setInterval(() => { if (streamfx.serverStats !== before) { clearInterval(t); resolve(streamfx.serverStats.frames_in); } }, 20);
})"""


async def _step(page, action: str, ack: str) -> tuple[int, int]:
    """Do ``action`` in the page; (frames filtered before it, the first frame surely after its ack)."""
    before = await page.evaluate("() => streamfx.serverStats.frames_in")
    acks = await page.evaluate("() => streamfx.acks.length")
    await page.evaluate(action)
    await _until(page, f"() => streamfx.acks.slice({acks}).includes('{ack}')")
    return before, await page.evaluate(NEXT_STATS)


def _frames(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


async def test_the_microphone_follows_the_cameras_latency_and_the_pages_offset(camera, page):
    """Run first: the other test stops the camera. Clicks at the probe's microphone come out of
    the virtual microphone delayed by the camera's measured latency (within 10 ms, in samples
    of one recording); the page's offset adds to it and is saved."""
    if camera.probe is None:
        pytest.skip("pulseaudio is not installed (Debian: apt install pulseaudio pulseaudio-utils)")
    await _until(page, "() => streamfx.serverStats?.mic?.state === 'running'", 30)
    await page.evaluate(NEXT_STATS)
    await page.evaluate(NEXT_STATS)  # a few seconds of frames behind the delay
    wave, _ = click_train(2.0)
    measured = await asyncio.to_thread(lambda: delays(camera.probe.record(2.3, wave), most=RATE // 2))
    stats = await page.evaluate("() => streamfx.serverStats")
    delay_ms, handoff_ms = stats["mic"]["delay_ms"], stats["handoff_ms"]
    assert len(measured) >= 3, measured
    assert all(abs(d / RATE * 1e3 - delay_ms) <= 10 for d in measured), (measured, stats["mic"], handoff_ms)
    assert abs(delay_ms - handoff_ms) <= 10, (delay_ms, handoff_ms)  # the delay is the video's latency
    assert await page.evaluate("() => document.getElementById('mic-delay').textContent") == f"{delay_ms} ms"

    acks = await page.evaluate("() => streamfx.acks.length")
    await page.evaluate("""() => { const r = document.getElementById('mic-offset'); r.value = 100;
                                   r.dispatchEvent(new Event('change')); }""")
    await _until(page, f"() => streamfx.acks.slice({acks}).includes('mic_offset')")
    wave, _ = click_train(2.0)
    later = await asyncio.to_thread(lambda: delays(camera.probe.record(2.3, wave), most=RATE // 2))
    stats = await page.evaluate(NEXT_STATS.replace("resolve(streamfx.serverStats.frames_in)",
                                                   "resolve(streamfx.serverStats)"))
    assert stats["mic"]["offset_ms"] == 100 and abs(stats["mic"]["delay_ms"] - stats["handoff_ms"] - 100) <= 10
    assert len(later) >= 3 and all(abs(d / RATE * 1e3 - stats["mic"]["delay_ms"]) <= 10 for d in later), later
    assert json.loads((camera.config / "camera.json").read_text())["mic_offset_ms"] == 100


async def test_control_page_drives_the_camera(camera, page):
    # the previews and stats come from the process: the original and the filtered video decode
    await _until(page, "() => streamfx.mode === 'camera' && streamfx.connection === 'connected'")
    await _until(page, "() => ['local', 'remote'].every((id) => document.getElementById(id).videoWidth === 512)")
    await _until(page, "() => (streamfx.serverStats?.frames_in || 0) > 0")
    first = await page.evaluate("() => streamfx.serverStats.frames_in")
    later = await page.evaluate(NEXT_STATS)
    assert later > first, "the stats must update"
    stats = await page.evaluate("() => streamfx.serverStats")
    assert stats["engine"] == "mesh" and stats["camera"] == "live" and stats["outputs"][0] == f"file {camera.output}"
    assert "camera live" in await page.evaluate("() => document.getElementById('stats').textContent")
    # the gallery shows the styles folder's images
    await _until(page, "() => document.querySelector('.style-tile[data-name=style_1] img')?.naturalWidth > 0")

    steps = {}
    steps["style_1"] = await _step(page, "() => document.querySelector('.style-tile[data-name=style_1]').click()", "prompt")
    await asyncio.sleep(1.0)
    steps["bypass"] = await _step(page, "() => document.getElementById('bypass').click()", "bypass")
    await asyncio.sleep(1.0)
    steps["unbypass"] = await _step(page, "() => document.getElementById('bypass').click()", "bypass")
    steps["style_2"] = await _step(page, "() => document.querySelector('.style-tile[data-name=style_2]').click()", "prompt")
    await asyncio.sleep(1.0)
    end = await page.evaluate("() => streamfx.serverStats.frames_in")
    assert await page.evaluate("() => streamfx.errors") == []

    saved = json.loads((camera.config / "camera.json").read_text())
    assert saved["prompt"] == "style_2" and saved["bypass"] is False

    stderr = camera.stop()
    assert camera.proc.returncode == 0, stderr[-2000:]
    out = _frames(camera.output).astype(np.float32)
    source = _frames(CLIP).astype(np.float32)
    assert len(out) >= end - 2  # Ctrl-C may fall between filtering a frame and writing it
    end = min(end, len(out))

    def change(k: int) -> float:  # how far output frame k is from the input frame it was made of
        return float(np.abs(out[k] - source[k % len(source)]).mean())

    def span(name: str, until: str | int) -> range:
        stop = steps[until][0] if isinstance(until, str) else until
        return range(steps[name][1], stop)

    passed = [change(k) for k in span("bypass", "unbypass")]
    styled_1 = [change(k) for k in span("style_1", "bypass")]
    styled_2 = [change(k) for k in span("style_2", end)]
    assert len(passed) >= 10 and len(styled_1) >= 10 and len(styled_2) >= 10, (steps, end)

    assert max(passed) < 3.0, f"bypass must give the input frames (mean abs difference {max(passed):.2f})"
    assert min(styled_1) > 3 * max(passed) and min(styled_2) > 3 * max(passed), (styled_1, styled_2, passed)
    # style_2 is another look than style_1: the same input frames come out differently
    residual_1 = np.mean([out[k] - source[k % len(source)] for k in span("style_1", "bypass")], axis=(0, 1, 2))
    residual_2 = np.mean([out[k] - source[k % len(source)] for k in span("style_2", end)], axis=(0, 1, 2))
    assert np.abs(residual_1 - residual_2).max() > 1.0, (residual_1, residual_2)
    # before the first step, no style: the frames then are not style_1's
    plain = [change(k) for k in range(0, steps["style_1"][0])]

    assert plain and np.mean(plain) < np.mean(styled_1) / 2, (np.mean(plain), np.mean(styled_1))
