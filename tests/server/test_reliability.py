"""Promises of a shared server, each checked on a real server with real peers on loopback:
the Host check (DNS rebinding), health and metrics, WebSocket limits, one rate limit per
caller, dropped unconnected offers, coalesced prompts, admission, and a close that does not
block the event loop."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import aiohttp
import pytest
import websockets

from streamfx.pipeline.engine import EngineSession
from streamfx.pipeline.engines.overlay import OverlayEngine, OverlaySession
from streamfx.server.admission import Admission
from streamfx.server.config import Limits


async def _get(base: str, path: str, headers: dict | None = None) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}{path}", headers=headers or {}) as resp:
            return resp.status, await resp.text()


async def test_a_foreign_host_name_is_refused(server_factory):
    server = await server_factory(engine=OverlayEngine(), allowed_hosts=("studio.lan",))
    port = server.base.rsplit(":", 1)[1]
    status, body = await _get(server.base, "/api/info", {"Host": f"rebind.attacker.example:{port}"})
    assert status == 421 and "Host" in json.loads(body)["error"]
    status, _ = await _get(server.base, "/offer", {"Host": f"rebind.attacker.example:{port}"})
    assert status == 421
    for name in (f"localhost:{port}", f"127.0.0.1:{port}", f"studio.lan:{port}", "[::1]"):
        status, _ = await _get(server.base, "/api/info", {"Host": name})
        assert status == 200, name


async def test_healthz_needs_no_token_and_metrics_need_the_admin_token(server_factory, client_factory):
    server = await server_factory(engine=OverlayEngine(), token="caller", admin_token="admin")
    assert await _get(server.base, "/healthz") == (200, "ok")
    client = client_factory()
    await client.connect(server.base, headers={"X-StreamFX-Token": "caller"})
    await client.wait_frames(5)
    assert (await _get(server.base, "/metrics", {"X-StreamFX-Token": "caller"}))[0] == 401
    status, text = await _get(server.base, "/metrics", {"X-StreamFX-Token": "admin"})
    assert status == 200
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    assert "streamfx_callers 1" in lines and any(line.startswith("streamfx_loop_lag_ms ") for line in lines)
    assert any(line.startswith('streamfx_caller_fps{caller="') for line in lines)
    assert any('quantile="0.95"' in line for line in lines)
    for line in lines:  # every sample line is "name{labels} value"
        float(line.rsplit(" ", 1)[1])
    status, info = await _get(server.base, "/api/info", {"X-StreamFX-Token": "caller"})
    assert status == 200 and "loop_lag_ms" in json.loads(info) and "capacity" in json.loads(info)


async def test_websocket_connections_are_limited_per_address_and_the_admin_socket_is_rate_limited(server_factory):
    server = await server_factory(engine=OverlayEngine(), limits=Limits(ws_per_address=2, control_rate_per_s=1,
                                                                        control_burst=3))
    url = server.base.replace("http", "ws") + "/ws"
    async with websockets.connect(url) as first, websockets.connect(url):
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with websockets.connect(url):
                pass
        assert refused.value.response.status_code == 429
        for _ in range(8):
            await first.send(json.dumps({"type": "hello"}))
        replies = [json.loads(await asyncio.wait_for(first.recv(), 10)) for _ in range(8)]
        kinds = [r["type"] for r in replies if r["type"] in ("info", "error")]
        assert kinds.count("info") <= 4 and "error" in kinds
    async with websockets.connect(url):  # the closed ones freed their places
        pass


async def test_one_rate_limit_per_caller_across_its_sockets(server_factory, client_factory):
    server = await server_factory(engine=OverlayEngine(), limits=Limits(control_rate_per_s=0.5, control_burst=4))
    client = client_factory()
    answer = await client.connect(server.base)
    url = server.base.replace("http", "ws") + f"/ws?caller={answer['caller']}"
    acks = errors = 0
    async with websockets.connect(url) as a, websockets.connect(url) as b:
        for ws in (a, b, a, b, a, b):  # six messages over two sockets, a burst of four allowed
            await ws.send(json.dumps({"type": "bypass", "on": False}))
        for ws in (a, b):
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                try:
                    reply = json.loads(await asyncio.wait_for(ws.recv(), 1.0))
                except asyncio.TimeoutError:
                    break
                acks += reply["type"] == "ack"
                errors += reply["type"] == "error"
    assert acks == 4 and errors == 2


async def test_an_offer_that_never_connects_frees_its_slot(server_factory, client_factory):
    server = await server_factory(engine=OverlayEngine(), limits=Limits(connect_timeout_s=1.0))
    client = client_factory()
    await client.pc.setLocalDescription(await client.pc.createOffer())
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{server.base}/offer", json={"type": "offer", "sdp": client.pc.localDescription.sdp}) as r:
            assert r.status == 200  # answered, but the client never applies the answer
    assert len(server.state.registry.callers) == 1
    deadline = time.monotonic() + 10
    while server.state.registry.callers and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert not server.state.registry.callers


class SlowPrompts(OverlayEngine):
    """Prompts take 0.4 s to apply (like decoding a large image and running the ViT)."""

    def __init__(self) -> None:
        self.applied: list[str] = []

    def open_session(self) -> EngineSession:
        engine = self

        class Session(OverlaySession):
            def set_prompt(self, prompt) -> None:
                time.sleep(0.4)
                super().set_prompt(prompt)
                engine.applied.append(prompt.name if prompt else "clear")

        return Session()


async def test_a_newer_prompt_replaces_one_that_has_not_started(server_factory, client_factory):
    engine = SlowPrompts()
    server = await server_factory(engine=engine)
    client = client_factory()
    answer = await client.connect(server.base)
    url = server.base.replace("http", "ws") + f"/ws?caller={answer['caller']}"
    async with websockets.connect(url) as ws:
        await ws.send(json.dumps({"type": "prompt", "preset": "mono"}))
        await asyncio.sleep(0.15)  # mono has started; the next three arrive while it runs
        for look in ("invert", "warm", "cool"):
            await ws.send(json.dumps({"type": "prompt", "preset": look}))
        replies = []
        while len(replies) < 4:
            reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
            if reply["type"] in ("ack", "error"):
                replies.append(reply)
    assert [r["type"] for r in replies].count("ack") == 2
    assert sum("replaced by a newer prompt" in (r.get("message") or "") for r in replies) == 2
    assert engine.applied == ["mono", "cool"]  # the first (already started) and the newest
    caller = server.state.registry.callers[answer["caller"]]
    assert caller.pipeline.controls.prompt.name == "cool"


class SlowClose(OverlayEngine):
    """Closing a session joins a worker that is mid-frame: 2 s."""

    def open_session(self) -> EngineSession:
        class Session(OverlaySession):
            def close(self) -> None:
                time.sleep(2.0)

        return Session()


async def test_closing_a_busy_caller_does_not_block_the_event_loop(server_factory, client_factory):
    server = await server_factory(engine=SlowClose())
    client = client_factory()
    await client.connect(server.base)
    await client.wait_frames(3)
    caller = next(iter(server.state.registry.callers.values()))
    closing = asyncio.ensure_future(server.state.registry.remove(caller))
    latencies = []
    while not closing.done():
        start = time.perf_counter()
        status, _ = await _get(server.base, "/api/info")
        latencies.append((time.perf_counter() - start) * 1e3)
        assert status == 200
    await closing
    assert len(latencies) >= 5, "the close must take its 2 s off the loop while /api/info answers"
    assert max(latencies) < 1000  # a blocked loop would hold these for the whole 2 s


def test_admission_refuses_the_caller_that_would_not_fit():
    admission = Admission(cores=2, headroom=0.85, min_window_s=0.2)
    assert admission.refusal(0) is None and admission.capacity() is None  # nothing measured: admit
    admission.observe(1)
    stop = time.monotonic() + 0.5
    while time.monotonic() < stop:  # one caller busy on one core
        sum(i * i for i in range(2000))
    admission.observe(1)
    assert 0.05 < admission.cpu_per_caller < 1.2  # one busy thread (less where other processes share the cores)
    assert admission.other_cpu >= 0.0  # what the rest of the machine used meanwhile (this test runner's threads...)
    assert admission.capacity() == max(1, int((2 * 0.85 - admission.other_cpu) / admission.cpu_per_caller))
    assert "capacity" in admission.refusal(admission.capacity())
    if admission.capacity() > 1:
        assert admission.refusal(admission.capacity() - 1) is None
    admission.other_cpu = 1.5  # other programs take most of the machine: one caller fits at most
    assert admission.capacity() == 1 and "other programs" in admission.refusal(1)
    capped = Admission(max_callers=1)
    assert "full" in capped.refusal(1)


def test_admission_refuses_while_the_callers_present_lose_frames():
    admission = Admission(cores=64, min_window_s=0.0)  # CPU is no limit here
    admission.observe(2, frames_in=0, frames_out=0)
    admission.observe(2, frames_in=100, frames_out=97)
    assert admission.delivery == 0.97 and admission.refusal(2) is None
    admission.observe(2, frames_in=200, frames_out=160)  # 63 of the next 100 frames came back
    assert admission.delivery == 0.63
    assert "63% of their frames" in admission.refusal(2)


async def test_a_caller_beyond_the_measured_capacity_gets_503_and_the_others_keep_streaming(server_factory,
                                                                                           client_factory):
    server = await server_factory(engine=OverlayEngine())
    first = client_factory()
    await first.connect(server.base)
    await first.wait_frames(3)
    server.state.admission.cpu_per_caller = server.state.admission.cores  # as if one caller filled the machine
    second = client_factory()
    await second.pc.setLocalDescription(await second.pc.createOffer())
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{server.base}/offer", json={"type": "offer", "sdp": second.pc.localDescription.sdp}) as r:
            assert r.status == 503
            assert "capacity" in (await r.json())["error"]
    await first.wait_frames(len(first.got.frames) + 3)
    status, info = await _get(server.base, "/api/info")
    assert json.loads(info)["capacity"] == 1


def test_a_blocked_loop_shows_as_lag():
    """A handler that blocks the loop for 120 ms shows as >= 100 ms of lag."""
    from streamfx.server.loop_monitor import LoopMonitor

    async def run() -> float:
        monitor = LoopMonitor(interval_s=0.01)
        monitor.start()
        busy = threading.Thread(target=lambda: sum(i for i in range(3_000_000)))
        busy.start()
        await asyncio.sleep(0.3)
        blocked_at = time.perf_counter()
        time.sleep(0.12)  # the loop itself blocked for 120 ms
        await asyncio.sleep(0.05)
        busy.join()
        monitor.stop()
        return monitor.worst_ms, time.perf_counter() - blocked_at

    worst, _ = asyncio.run(run())
    assert worst >= 100
