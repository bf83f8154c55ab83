"""Headless Chromium over HTTPS: ``serve --tls self-signed``, the certificate trusted by its SPKI only.

The same call as test_chromium.py (fake camera -> page -> server -> page, stamped frames
measured), but the page comes from ``https://127.0.0.1``: Chromium is told to accept this
one key (``--ignore-certificate-errors-spki-list``), not to ignore certificate errors.
Like the round-trip benchmark, the scenario runs inside a network namespace with only
loopback when ``unshare -n`` works here.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import queue
import re
import shutil
import shlex
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from browser_env import CHROMIUM, ROOT, pytestmark  # noqa: F401 (pytestmark marks this module)


# ---------------------------------------------------------------------------- the scenario
def _start_server(config_home: Path) -> tuple[subprocess.Popen, str, Path]:
    """``streamfx serve --tls self-signed`` on a free port: (process, https URL, certificate path)."""
    env = dict(os.environ, XDG_CONFIG_HOME=str(config_home), STREAMFX_ICE_LOOPBACK="1")
    env.pop("STREAMFX_CONFIG_DIR", None)
    env.pop("STREAMFX_TOKEN", None)
    proc = subprocess.Popen([sys.executable, "-m", "streamfx", "serve", "--engine", "overlay", "--port", "0",
                             "--tls", "self-signed"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout] + [lines.put(None)], daemon=True).start()
    printed: list[str] = []
    deadline = time.monotonic() + 120
    try:
        while not any("SHA-256" in line for line in printed):
            if time.monotonic() > deadline:
                raise RuntimeError(f"no certificate line printed: {printed}")
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                continue
            if line is None:
                raise RuntimeError(f"server exited: {proc.stderr.read()[-2000:]}")
            printed.append(line)
        url = re.search(r"(https://127\.0\.0\.1:\d+/)", printed[0]).group(1)
        cert = Path(re.search(r"\((/[^)]*cert\.pem)\)", "".join(printed)).group(1))
        context = ssl.create_default_context(cafile=str(cert))
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited: {proc.stderr.read()[-2000:]}")
            try:
                with urllib.request.urlopen(url + "api/info", timeout=2, context=context) as r:
                    if json.load(r).get("state") == "ready":
                        return proc, url, cert
            except OSError:
                pass
            time.sleep(0.3)
        raise RuntimeError("server did not become ready over https")
    except BaseException:
        _stop(proc)
        raise


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


async def _run_page(url: str, spki: str, y4m: Path, seconds: float) -> dict:
    from playwright.async_api import async_playwright

    from benchmarks.browser_roundtrip import FLAGS

    assert "--ignore-certificate-errors" not in FLAGS
    async with async_playwright() as pw:
        # without the pin the same page is refused: the certificate is trusted by its key only
        browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            await (await browser.new_page()).goto(f"{url}api/info")
            unpinned = "loaded"
        except Exception as exc:  # noqa: BLE001 - playwright's error for a refused certificate
            unpinned = str(exc).splitlines()[0]
        finally:
            await browser.close()

        browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                           args=FLAGS + [f"--use-file-for-fake-video-capture={y4m}",
                                                         f"--ignore-certificate-errors-spki-list={spki}"])
        try:
            page = await browser.new_page()
            console: list[str] = []
            page.on("console", lambda m: console.append(m.text))
            await page.goto(f"{url}?autostart&measure&w=640&h=480")
            await page.wait_for_function("window.streamfx && window.streamfx.framesReceived > 5", timeout=60_000)
            await asyncio.sleep(seconds)
            state = await page.evaluate("""() => ({rtt: window.streamfx.rtt, frames: window.streamfx.framesReceived,
                stats: window.streamfx.serverStats, connection: window.streamfx.connection,
                errors: window.streamfx.errors, protocol: location.protocol, secure: window.isSecureContext,
                size: [document.getElementById('remote').videoWidth, document.getElementById('remote').videoHeight]})""")
            state["console"] = console[-20:]
            state["ui"] = await page.evaluate(UI_CHECKS)
            state["unpinned"] = unpinned
            return state
        finally:
            await browser.close()


# After the call: a slider dragged through 40 steps in 0.4 s sends a handful of messages
# (leading, one per 100 ms, the final value on change), and a stream of server errors
# leaves at most 5 notices, repeats counted.
UI_CHECKS = """async () => {
  const channel = window.streamfx.channel, sent = [], original = channel.send.bind(channel);
  channel.send = (text) => { sent.push({...JSON.parse(text), at: performance.now()}); original(text); };
  const began = performance.now();
  const slider = document.getElementById('strength');
  for (let i = 0; i < 40; i++) {
    slider.value = String(1 - i * 0.025); slider.dispatchEvent(new Event('input'));
    await new Promise((r) => setTimeout(r, 10));
  }
  const dragged = performance.now() - began;
  slider.value = '0.3'; slider.dispatchEvent(new Event('change'));
  await new Promise((r) => setTimeout(r, 300));
  channel.send = original;
  const strength = sent.filter((m) => m.type === 'strength');
  for (const m of ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'g', 'g']) onControlMessage({type: 'error', message: 'boom ' + m});
  const notice = document.getElementById('notice');
  const gaps = strength.slice(1, -1).map((m, i) => m.at - strength[i].at);  // the last one is the change
  return {strengthSent: strength.length, dragged, minGap: gaps.length ? Math.min(...gaps) : null,
          lastStrength: strength.length ? strength[strength.length - 1].value : null,
          errors: [...window.streamfx.errors], noticeLines: notice.children.length, noticeText: notice.textContent};
}"""


def scenario(workdir: Path, y4m: Path, seconds: float) -> dict:
    from streamfx.server import tls

    proc, url, cert = _start_server(workdir / "config")
    try:
        files = tls.load(cert, cert.with_name("key.pem"))
        page = asyncio.run(_run_page(url, files.spki_sha256_b64, y4m, seconds))
    finally:
        _stop(proc)
    page["url"] = url
    return page


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--y4m", type=Path, required=True)
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args(argv)
    result = scenario(args.workdir, args.y4m, args.seconds)
    (args.workdir / "result.json").write_text(json.dumps(result))
    return 0


# ---------------------------------------------------------------------------- the test
def _in_netns() -> bool:
    return (not os.environ.get("STREAMFX_IN_NETNS") and shutil.which("unshare") is not None
            and shutil.which("ip") is not None
            and subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0)


def test_page_streams_over_self_signed_https_in_chromium(tmp_path, shared_file):
    from benchmarks.common import TESTDATA
    from streamfx.io.y4m import write_y4m_from_video

    video = shared_file(TESTDATA / "video" / "head_turn_1.mp4")
    y4m = tmp_path / "camera_640x480.y4m"
    write_y4m_from_video(video, y4m, canvas=(640, 480), scale=0.8 * 480 / 512)
    inner = [sys.executable, str(Path(__file__).resolve()), "--workdir", str(tmp_path), "--y4m", str(y4m)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    if _in_netns():
        env["STREAMFX_IN_NETNS"] = "1"
        command = ["unshare", "-n", "sh", "-c", "ip link set lo up && exec " + shlex.join(inner)]
    else:
        command = inner
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert "ERR_CERT" in result["unpinned"], result["unpinned"]
    assert result["url"].startswith("https://") and result["protocol"] == "https:" and result["secure"]
    assert result["connection"] == "connected", result
    assert result["errors"] == []
    assert result["size"] == [640, 480]
    assert result["frames"] > 20
    stats = result["stats"] or {}
    assert stats.get("frames_out", 0) > 20, "the server's stats must report processed frames"
    assert "engine" in (stats.get("stages_ms") or {})
    assert len(result["rtt"]) > 10, "stamped frames must come back readable"
    ui = result["ui"]
    # 40 input events (10 ms apart, longer on a busy machine): at most one send per 100 ms, + the change
    assert 2 <= ui["strengthSent"] <= ui["dragged"] / 100 + 3, ui
    assert ui["minGap"] is None or ui["minGap"] >= 95, ui
    assert ui["lastStrength"] == 0.3, ui          # the value at `change` goes out last
    assert ui["errors"] == ["boom c", "boom d", "boom e", "boom f", "boom g"], ui
    assert ui["noticeLines"] == 5 and ui["noticeText"].endswith("boom g x3"), ui


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(_main(sys.argv[1:]))
