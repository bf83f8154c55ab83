"""Bad input gets a 4xx with a one-line reason, and the server stays up for everyone else."""

from __future__ import annotations

import asyncio
import base64
import json

import aiohttp
import pytest
import websockets

from streamfx.pipeline.engines.overlay import OverlayEngine


async def _post(base: str, body, headers=None, raw: bytes | None = None):
    async with aiohttp.ClientSession() as http:
        kwargs = {"data": raw} if raw is not None else {"json": body}
        async with http.post(f"{base}/offer", headers=headers or {}, **kwargs) as resp:
            return resp.status, await resp.json(content_type=None)


@pytest.mark.parametrize("body, raw", [
    (None, b"{not json"),
    ([1, 2], None),
    ({"type": "answer", "sdp": "v=0"}, None),
    ({"type": "offer"}, None),
    ({"type": "offer", "sdp": "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\ngarbage"}, None),
])
async def test_malformed_offers_get_400_and_server_stays_up(server_factory, client_factory, body, raw):
    server = await server_factory(engine=OverlayEngine())
    status, reply = await _post(server.base, body, raw=raw)
    assert status == 400 and isinstance(reply["error"], str) and "\n" not in reply["error"]
    assert not server.state.registry.callers, "a rejected offer must not leave a caller behind"
    client = client_factory()
    await client.connect(server.base)
    await client.wait_frames(3)


async def test_oversized_offer_is_413(server_factory):
    server = await server_factory(engine=OverlayEngine())
    status, reply = await _post(server.base, {"type": "offer", "sdp": "m=" + "a" * 70_000})
    assert status == 413 and "bytes" in reply["error"]


async def test_token_required_when_set(server_factory, client_factory):
    server = await server_factory(engine=OverlayEngine(), token="s3cret")
    assert (await _post(server.base, {"type": "offer", "sdp": "m="}))[0] == 401
    assert (await _post(server.base, {"type": "offer", "sdp": "m="}, headers={"X-StreamFX-Token": "nope"}))[0] == 401
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{server.base}/") as resp:
            assert resp.status == 401
        async with http.get(f"{server.base}/?token=s3cret") as resp:
            assert resp.status == 200 and "streamfx_token" in resp.cookies
    client = client_factory()
    await client.connect(server.base, headers={"X-StreamFX-Token": "s3cret"})
    await client.wait_frames(3)


async def test_foreign_origin_is_refused(server_factory):
    server = await server_factory(engine=OverlayEngine())
    status, reply = await _post(server.base, {"type": "offer", "sdp": "m="}, headers={"Origin": "http://evil.example"})
    assert status == 403 and "origin" in reply["error"]


async def test_too_many_callers(server_factory, client_factory):
    server = await server_factory(engine=OverlayEngine(), limits=__import__("streamfx.server.config", fromlist=["Limits"]).Limits(max_callers=1))
    first = client_factory()
    await first.connect(server.base)
    second = client_factory()
    await second.pc.setLocalDescription(await second.pc.createOffer())
    status, reply = await _post(server.base, {"type": "offer", "sdp": second.pc.localDescription.sdp})
    assert status == 503 and "full" in reply["error"]
    await first.wait_frames(3)  # the first caller is unaffected


async def test_websocket_control_and_bad_messages(server_factory, client_factory):
    server = await server_factory(engine=OverlayEngine())
    client = client_factory()
    answer = await client.connect(server.base)
    ws_url = server.base.replace("http", "ws") + f"/ws?caller={answer['caller']}"
    async with websockets.connect(ws_url) as ws:
        await ws.send(json.dumps({"type": "prompt", "image": "data:image/png;base64,"
                                  + base64.b64encode(b"definitely not an image").decode()}))
        await asyncio.sleep(0.2)  # (a prompt sent while this one still waited would replace it)
        await ws.send(json.dumps({"type": "prompt", "text": "inverted"}))  # fuzzy preset match
        await ws.send(json.dumps({"type": "strength", "value": 7}))
        replies = []

        def answered() -> bool:  # the image error, the strength error and the prompt's ack
            errors = [r["message"] for r in replies if r["type"] == "error"]
            return len(errors) >= 2 and {"type": "ack", "for": "prompt", "chose": "invert"} in replies

        while not answered():
            replies.append(json.loads(await asyncio.wait_for(ws.recv(), 20)))
        errors = [r["message"] for r in replies if r["type"] == "error"]
        assert any("not a readable image" in e for e in errors)
        assert any("between 0 and 1" in e for e in errors)
        assert {"type": "ack", "for": "prompt", "chose": "invert"} in replies  # the closest name, said
        assert server.state.registry.callers[answer["caller"]].pipeline.controls.prompt.name == "invert"
        # an oversized message closes this socket with 1009; the caller itself lives on
        await ws.send("x" * (300 * 1024))
        with pytest.raises(websockets.ConnectionClosed) as closed:
            for _ in range(50):
                await asyncio.wait_for(ws.recv(), 10)
        assert closed.value.rcvd.code == 1009
    await client.wait_frames(len(client.got.frames) + 3)


async def test_websocket_unknown_caller_and_token(server_factory):
    """A caller's socket needs a caller token; the socket without a caller, which sees every
    caller's stats, needs the admin token, and a caller token is not one."""
    server = await server_factory(engine=OverlayEngine(), token="t", admin_token="a")
    ws_base = server.base.replace("http", "ws")
    for query, status in (("", 401), ("?token=t", 401), ("?token=t&caller=nobody", 404)):
        with pytest.raises(websockets.InvalidStatus) as exc:
            async with websockets.connect(f"{ws_base}/ws{query}"):
                pass
        assert exc.value.response.status_code == status, query
    unset = await server_factory(engine=OverlayEngine(), token="t")
    with pytest.raises(websockets.InvalidStatus) as exc:
        async with websockets.connect(f"{unset.base.replace('http', 'ws')}/ws?token=t"):
            pass
    assert exc.value.response.status_code == 403 and b"admin token" in exc.value.response.body
    async with websockets.connect(f"{ws_base}/ws?token=a") as ws:
        await ws.send(json.dumps({"type": "hello"}))
        reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert reply["type"] == "info" and reply["engine"] == "overlay"
