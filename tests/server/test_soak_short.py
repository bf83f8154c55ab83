"""A short soak: two real aiortc callers stream through the mesh engine (the overlay engine
where mesh cannot load) for about 15 s. Behaviour only, no speed asserts: frames keep coming
back to both, nobody gets an ``error``, ``/api/info`` answers throughout, the server's queued
frames stay bounded, the callers close cleanly and the registry is empty afterwards.

The 10-minute version with RSS, fps and latency goals is ``python -m benchmarks.soak``.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp

from rtc_client import Client, PatternTrack
from streamfx.pipeline.engines.overlay import OverlayEngine
from streamfx.server.config import Limits

SECONDS = 15.0
WINDOW_S = 3.0        # every window of this length must bring new frames to each caller
MAX_QUEUED = 2        # frames waiting in a caller's FilteredTrack (one in, one out)


async def _engine():
    """The mesh engine when it loads here (mediapipe), else the overlay engine."""
    from streamfx.pipeline.select import build_engine

    try:
        return await asyncio.get_running_loop().run_in_executor(None, build_engine, "mesh")
    except Exception:  # noqa: BLE001 - no mediapipe/models on this machine: the stream path still soaks
        return OverlayEngine()


async def test_two_callers_soak_for_15_seconds(server_factory):
    engine = await _engine()
    print(f"soak engine: {engine.name}")
    server = await server_factory(engine=engine, limits=Limits(max_callers=4, admit_by_cost=False))
    clients = [Client(PatternTrack(fps=15)), Client(PatternTrack(fps=15))]
    try:
        await _soak(server, clients, engine.name)
    finally:
        for client in clients:
            await client.close()


async def _soak(server, clients: list[Client], engine_name: str) -> None:
    for client in clients:
        await client.connect(server.base)
    for client in clients:
        await client.wait_frames(5, timeout=30)
        await asyncio.wait_for(client.channel_open.wait(), 10)
    callers = {c.caller_id: server.state.registry.callers[c.caller_id] for c in clients}

    probes: list[tuple[int, float]] = []
    max_queued = 0
    windows: list[list[int]] = []  # frames each client got in each window
    marks = [len(c.got.frames) for c in clients]
    window_end = time.monotonic() + WINDOW_S
    end = time.monotonic() + SECONDS
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
        while time.monotonic() < end:
            await asyncio.sleep(0.5)
            began = time.perf_counter()
            async with http.get(f"{server.base}/api/info") as resp:
                info = await resp.json()
                probes.append((resp.status, (time.perf_counter() - began) * 1e3))
            assert resp.status == 200 and info["state"] == "ready", info
            assert info["callers"] == 2 and "loop_lag_ms" in info and "capacity" in info, info
            for caller in callers.values():
                max_queued = max(max_queued, caller.track.queued)
            for client in clients:  # keep memory flat: only the newest frames stay decoded
                frames = client.got.frames
                for i in range(max(0, len(frames) - 40), len(frames) - 3):
                    frames[i] = None
            if time.monotonic() >= window_end:
                counts = [len(c.got.frames) for c in clients]
                windows.append([n - m for n, m in zip(counts, marks)])
                marks, window_end = counts, time.monotonic() + WINDOW_S

        assert windows and all(all(n > 0 for n in w) for w in windows), \
            f"frames per {WINDOW_S:.0f} s window and caller stopped coming back ({engine_name}): {windows}"
        assert max_queued <= MAX_QUEUED, f"{max_queued} frames queued in one caller's track"
        for client in clients:
            errors = [m for m in client.got.messages if m.get("type") == "error"]
            assert not errors, errors
            stats = [m for m in client.got.messages if m.get("type") == "stats"]
            assert len(stats) >= SECONDS / 2, f"stats stopped: {len(stats)} in {SECONDS:.0f} s"
            assert stats[-1]["errors"] == 0 and stats[-1]["queued"] <= MAX_QUEUED, stats[-1]
            assert client.pc.connectionState == "connected"
        for caller in callers.values():
            assert caller.pipeline.stats.errors == 0 and caller.pc.connectionState == "connected"
        async with http.get(f"{server.base}/metrics") as resp:
            text = await resp.text()
        assert resp.status == 200 and "streamfx_callers 2" in text.splitlines(), text[:300]
        for caller_id in callers:
            assert f'streamfx_caller_fps{{caller="{caller_id}"}}' in text

        for client in clients:
            await client.close()
        deadline = time.monotonic() + 15
        while server.state.registry.callers:
            assert time.monotonic() < deadline, f"callers left behind: {list(server.state.registry.callers)}"
            await asyncio.sleep(0.1)
        for caller in callers.values():
            assert caller.closed.is_set() and caller.pc.connectionState == "closed"
            assert caller.track.readyState == "ended"
        async with http.get(f"{server.base}/api/info") as resp:
            assert resp.status == 200 and (await resp.json())["callers"] == 0
