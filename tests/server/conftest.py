"""Fixtures for server tests: a real server on 127.0.0.1 and real aiortc client peers."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from aiohttp import web
from rtc_client import Client, PatternTrack

from streamfx.server import ServerConfig, create_app
from streamfx.server.app import STATE, ServerState


@dataclass
class RunningServer:
    base: str
    state: ServerState


@pytest.fixture
async def server_factory():
    runners = []

    async def start(engine=None, **overrides) -> RunningServer:
        config = ServerConfig(ice_loopback=True, **overrides)
        app = create_app(config, engine=engine)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = site._server.sockets[0].getsockname()[1]
        return RunningServer(f"http://127.0.0.1:{port}", app[STATE])

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def client_factory():
    clients: list[Client] = []

    def make(**kw) -> Client:
        c = Client(PatternTrack(**kw))
        clients.append(c)
        return c

    yield make
    for c in clients:
        await c.close()
