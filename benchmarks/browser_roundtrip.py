"""Browser round trip through the real server, in headless Chromium.

A fake camera (``head_turn_1.mp4`` placed in a WxH frame, written as .y4m) feeds the
page; the page stamps a frame number into each frame it sends, reads the stamp back from
the processed video, and keeps the round-trip times. The server reports its own added
latency (frame received to frame sent). Both go to JSON (and a PNG plot with --png).

    python -m benchmarks.browser_roundtrip --sizes 640x480,1280x720 --seconds 10 --json out.json

Runs inside a network namespace with only loopback when ``unshare -n`` works (``--netns
auto``), otherwise on 127.0.0.1. Used by the browser end-to-end test too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from benchmarks.common import RESULTS, TESTDATA, machine, percentiles, write_json

CHROMIUM = os.environ.get("STREAMFX_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--allow-loopback-in-peer-connection", "--use-fake-ui-for-media-stream",
         "--use-fake-device-for-media-stream"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, engine: str) -> subprocess.Popen:
    env = dict(os.environ, STREAMFX_ICE_LOOPBACK="1")
    proc = subprocess.Popen([sys.executable, "-m", "streamfx", "serve", "--port", str(port), "--engine", engine],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/info", timeout=2) as r:
                if json.load(r).get("state") == "ready":
                    return proc
        except OSError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError("server did not become ready")


async def run_page(port: int, y4m: Path, size: tuple[int, int], seconds: float, bypass: bool) -> dict:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                           args=FLAGS + [f"--use-file-for-fake-video-capture={y4m}"])
        try:
            page = await browser.new_page()
            console: list[str] = []
            page.on("console", lambda m: console.append(m.text))
            w, h = size
            extra = "&bypass" if bypass else ""
            await page.goto(f"http://127.0.0.1:{port}/?autostart&measure&w={w}&h={h}{extra}")
            await page.wait_for_function("window.streamfx && window.streamfx.framesReceived > 5", timeout=60_000)
            await asyncio.sleep(seconds)
            state = await page.evaluate("""() => ({rtt: window.streamfx.rtt, frames: window.streamfx.framesReceived,
                stats: window.streamfx.serverStats, connection: window.streamfx.connection,
                errors: window.streamfx.errors, size: [document.getElementById('remote').videoWidth,
                document.getElementById('remote').videoHeight]})""")
            state["console"] = console[-20:]
            return state
        finally:
            await browser.close()


def measure(size: tuple[int, int], seconds: float, engine: str, workdir: Path, bypass: bool = False) -> dict:
    from streamfx.io.y4m import write_y4m_from_video

    y4m = workdir / f"camera_{size[0]}x{size[1]}.y4m"
    if not y4m.exists():
        scale = 0.8 * size[1] / 512
        write_y4m_from_video(TESTDATA / "video" / "head_turn_1.mp4", y4m, canvas=size, scale=scale)
    port = free_port()
    server = start_server(port, engine)
    try:
        page = asyncio.run(run_page(port, y4m, size, seconds, bypass))
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
    stats = page.get("stats") or {}
    return {"size": f"{size[0]}x{size[1]}", "engine": "bypass" if bypass else engine, "frames_received": page["frames"],
            "received_size": page["size"], "connection": page["connection"], "errors": page["errors"],
            "round_trip_ms": percentiles(page["rtt"]), "server_latency_ms": stats.get("latency_ms"),
            "server_stages_ms": stats.get("stages_ms"), "server_fps_out": stats.get("fps_out"),
            "server_frames_out": stats.get("frames_out"), "dropped": stats.get("dropped"),
            "console": page.get("console", [])}


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    names = [r["size"] for r in results]
    for i, key in enumerate(("p50", "p95")):
        rtt = [r["round_trip_ms"][key] or 0 for r in results]
        srv = [(r["server_latency_ms"] or {}).get(key) or 0 for r in results]
        ax.bar([j + i * 0.2 for j in range(len(names))], rtt, 0.2, label=f"round trip {key}")
        ax.bar([j + 0.4 + i * 0.2 for j in range(len(names))], srv, 0.2, label=f"server added {key}")
    ax.axhline(40, color="red", ls="--", lw=1, label="40 ms budget")
    ax.set_xticks([j + 0.3 for j in range(len(names))], names)
    ax.set_ylabel("ms")
    ax.legend(fontsize=7)
    ax.set_title("Browser round trip through StreamFX")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="640x480,1280x720")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--engine", default="overlay")
    parser.add_argument("--json", type=Path, default=RESULTS / "browser_roundtrip.json")
    parser.add_argument("--png", type=Path, default=None)
    parser.add_argument("--netns", choices=("auto", "on", "off"), default="auto")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip the baseline run (same server with bypass on: decode/encode, no engine)")
    args = parser.parse_args(argv)

    if args.netns != "off" and not os.environ.get("STREAMFX_IN_NETNS") and shutil.which("unshare") and shutil.which("ip"):
        inner = " ".join([sys.executable, "-m", "benchmarks.browser_roundtrip", *map(_q, sys.argv[1:] if argv is None else argv)])
        probe = subprocess.run(["unshare", "-n", "true"], capture_output=True)
        if probe.returncode == 0:
            env = dict(os.environ, STREAMFX_IN_NETNS="1")
            return subprocess.call(["unshare", "-n", "sh", "-c", f"ip link set lo up && exec {inner}"], env=env)
        if args.netns == "on":
            print("unshare -n is not permitted here", file=sys.stderr)
            return 2

    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="streamfx-rt-") as tmp:
        results = [measure(size, args.seconds, args.engine, Path(tmp)) for size in sizes]
        baselines = [] if args.no_baseline else [measure(size, args.seconds, args.engine, Path(tmp), bypass=True)
                                                 for size in sizes]
    for result, base in zip(results, baselines):
        ours, theirs = result["round_trip_ms"]["p50"], base["round_trip_ms"]["p50"]
        result["ratio_to_bypass_p50"] = round(ours / theirs, 3) if ours and theirs else None
    data = {"benchmark": "browser_roundtrip", "machine": machine(),
            "network_namespace": bool(os.environ.get("STREAMFX_IN_NETNS")), "results": results,
            "baseline_bypass": baselines}
    write_json(args.json, data)
    if args.png:
        plot(results, args.png)
    for r in results + baselines:
        print(f"{r['engine']:8s} {r['size']}: round trip p50 {r['round_trip_ms']['p50']} ms, server added "
              f"{(r['server_latency_ms'] or {}).get('p50')} ms, frames {r['frames_received']}"
              + (f", x{r['ratio_to_bypass_p50']} of bypass" if r.get("ratio_to_bypass_p50") else ""))
    return 0


def _q(arg: str) -> str:
    import shlex

    return shlex.quote(arg)


if __name__ == "__main__":
    sys.exit(main())
