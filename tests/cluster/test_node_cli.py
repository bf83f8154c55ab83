"""The README's three commands: ``ray start --head``, ``streamfx node``, ``streamfx serve
--cluster``; a call through them; SIGTERM drains the node, which stops after its last call.

``ray start`` will not join a loopback cluster, so this one runs on the machine's own
address (still this machine only): a ``make test-full`` check.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cluster_caller import ClusterCaller
from cluster_env import TOKEN

pytestmark = [pytest.mark.full, pytest.mark.slow]
RAY = str(Path(sys.executable).with_name("ray"))


def _own_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))   # no packet is sent: this only picks the outgoing interface
            address = s.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _line(process: subprocess.Popen, pattern: str, timeout_s: float = 90.0) -> re.Match:
    loop = asyncio.get_running_loop()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = await asyncio.wait_for(loop.run_in_executor(None, process.stdout.readline), timeout_s)
        if not line and process.poll() is not None:
            break
        if (m := re.search(pattern, line)) is not None:
            return m
    raise AssertionError(f"no line matching {pattern!r}")


async def test_three_commands_serve_a_call_and_sigterm_drains_the_node(tmp_path):
    address = _own_address()
    if address is None:
        pytest.skip("this machine has no address besides loopback")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}
    env["STREAMFX_ICE_LOOPBACK"] = "1"
    port = _free_port()
    head = subprocess.Popen([RAY, "start", "--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=false",
                             "--disable-usage-stats", "--block"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    started = []
    try:
        gcs = f"{address}:{port}"
        node = subprocess.Popen([sys.executable, "-m", "streamfx", "node", "--address", gcs, "--engine", "mesh",
                                 "--slots", "2", "--name", "cli-node"], env=env, stdout=subprocess.PIPE, text=True)
        door = subprocess.Popen([sys.executable, "-m", "streamfx", "serve", "--cluster", gcs, "--port", "0",
                                 "--token", TOKEN], env=env, stdout=subprocess.PIPE, text=True)
        started += [node, door]
        await _line(node, r"StreamFX node cli-node joined .*: 2 slot\(s\)")
        base = (await _line(door, r"(http://127\.0\.0\.1:\d+)/")).group(1)
        caller = ClusterCaller(base, TOKEN)
        await caller.call(deadline_s=30)
        await caller.wait_frames(3)
        assert caller.node == "cli-node"

        node.send_signal(signal.SIGTERM)             # drains: the call goes on, no new one is placed
        await _line(node, r"draining, 1 call\(s\) still running")
        await caller.wait_frames(3, after=time.monotonic())
        assert node.poll() is None
        await caller.close()
        await _line(node, r"drained, stopping", timeout_s=30)
        assert await asyncio.get_running_loop().run_in_executor(None, node.wait, 60) == 0
    finally:
        for process in started:
            if process.poll() is None:
                process.kill()
        head.terminate()
        head.wait(timeout=30)
