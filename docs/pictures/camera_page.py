"""Make ``docs/pictures/camera-page.jpg``: the camera's control page, as a user sees it.

Runs a real ``streamfx camera`` on the head-turn clip (the mesh engine, the test styles,
``--output`` to a temporary file, a private config folder), opens the page it prints in
headless Chromium, picks a style in the gallery, and saves a screenshot. The virtual
microphone runs too, on a private PulseAudio daemon (``tests/pulse_env.py``; left out where
pulseaudio is not installed), so its panel shows the delay in use.
``python -m docs.pictures.camera_page [--out JPG]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TESTDATA = ROOT.parent / "shared" / "testdata"
CHROMIUM = os.environ.get("STREAMFX_CHROMIUM", "/usr/bin/chromium")


def start_camera(folder: Path, extra: list[str]) -> tuple[subprocess.Popen, str]:
    env = dict(os.environ, STREAMFX_CONFIG_DIR=str(folder / "config"))
    proc = subprocess.Popen([sys.executable, "-m", "streamfx", "camera", "--source",
                             str(TESTDATA / "video" / "head_turn_1.mp4"), "--output", str(folder / "out.mp4"),
                             "--engine", "mesh", "--styles", str(TESTDATA / "styles"), "--ui-port", "0", *extra],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line.startswith("control page: "):
            return proc, line.split(": ", 1)[1].strip()
    raise SystemExit(f"streamfx camera exited ({proc.wait()}) without printing its page")


async def shoot(url: str, out: Path, style: str) -> None:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                           args=["--no-sandbox", "--disable-gpu", "--allow-loopback-in-peer-connection"])
        page = await browser.new_page(viewport={"width": 1280, "height": 1000})
        await page.goto(url)
        await page.wait_for_function("() => window.streamfx && streamfx.connection === 'connected'", timeout=30000)
        await page.wait_for_function(f"() => document.querySelector('.style-tile[data-name={style}] img')?.naturalWidth > 0",
                                     timeout=30000)
        await page.click(f".style-tile[data-name={style}]")
        await page.wait_for_function("() => streamfx.acks.includes('prompt')", timeout=30000)
        await asyncio.sleep(3.0)  # a few stats messages, the preview settled on the style
        await page.screenshot(path=str(out), type="jpeg", quality=82)
        await browser.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("camera-page.jpg"))
    parser.add_argument("--style", default="style_2")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "tests"))
    from pulse_env import private_pulse

    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory() as folder:
        try:
            probe = stack.enter_context(private_pulse()).probe()
            extra = ["--virtual-mic", "--virtual-mic-device", probe.out, "--mic", probe.mic]
        except BaseException as exc:  # pytest's skip: no pulseaudio here
            print(f"no virtual microphone in the picture: {exc}", file=sys.stderr)
            extra = []
        proc, url = start_camera(Path(folder), extra)
        try:
            asyncio.run(shoot(url, args.out, args.style))
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
