"""``streamfx serve`` as a real process: it prints its URL, serves a caller, and stops cleanly on Ctrl-C."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request

from rtc_client import Client, PatternTrack


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_ctrl_c_closes_peers_and_exits_cleanly():
    port = _free_port()
    env = dict(os.environ, STREAMFX_ICE_LOOPBACK="1")
    proc = subprocess.Popen([sys.executable, "-m", "streamfx", "serve", "--port", str(port), "--engine", "overlay"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        banner = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}/" in banner
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/info", timeout=1) as r:
                    if b'"ready"' in r.read():
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "server did not come up"
            await asyncio.sleep(0.2)
        client = Client(PatternTrack())
        await client.connect(f"http://127.0.0.1:{port}")
        await client.wait_frames(5)
        proc.send_signal(signal.SIGINT)
        code = await asyncio.get_running_loop().run_in_executor(None, proc.wait, 15)
        await client.close()
        stderr = proc.stderr.read()
        assert code == 0, stderr
        assert "Traceback" not in stderr, stderr
    finally:
        if proc.poll() is None:
            proc.kill()
