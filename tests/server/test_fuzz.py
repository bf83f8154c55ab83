"""Property-based fuzzing of what a caller can send: control messages, ``/offer`` bodies and
messages on a connected caller's ``/ws`` and data channel.

* :func:`control.parse` on any text, bytes or JSON-shaped (mostly near-valid) message returns
  a command or raises :class:`ControlError`, never anything else.
* ``/offer`` with any body answers a 4xx (or 503, or 200 for an offer that happens to be
  usable) with a one-line JSON ``error``, leaves no caller behind, and the server answers
  ``/api/info`` and ``/healthz`` afterwards.
* Malformed messages on ``/ws?caller=ID`` and on the data channel each get one ``error``
  (the reason, or the rate limit's), none is accepted, and the caller keeps streaming.

The server for the HTTP properties runs on its own event loop in a background thread, so
that hypothesis drives plain synchronous calls (``http.client``, ``websockets.sync``).
"""

from __future__ import annotations

import asyncio
import base64
import functools
import http.client
import io
import json
import math
import threading
import time

import pytest
from aiohttp import web
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from PIL import Image
from websockets.sync.client import connect as ws_connect

from rtc_client import Client, PatternTrack
from streamfx.pipeline.controls import MAX_POSE_DEG, POSE_MODES, PoseMode
from streamfx.pipeline.engines.overlay import OverlayEngine
from streamfx.pipeline.prompts import ReferenceError, ReferenceLimits, decode_reference
from streamfx.server import ServerConfig, control, create_app
from streamfx.server.app import STATE
from streamfx.server.config import Limits

# aiortc and aioice (the server's thread) use the global ``random`` while hypothesis draws; harmless here
pytestmark = [pytest.mark.filterwarnings("ignore:Do not use the `random` module inside strategies"),
              pytest.mark.filterwarnings("ignore:Generating overly large repr")]
MAX_BYTES = Limits().max_control_bytes
FUZZ = dict(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                                                  HealthCheck.data_too_large])


# -- strategies ---------------------------------------------------------------------------
def _png(size: int = 32) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (size, size), (200, 40, 90)).save(out, "PNG")
    return out.getvalue()


PNG = _png()
B64_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
safe_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60)
numbers = st.one_of(
    st.integers(-100, 100), st.integers(),
    st.tuples(st.integers(309, 500), st.booleans()).map(lambda t: (-1 if t[1] else 1) * 10 ** t[0]),  # beyond a float
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0, 1, -1, 0.5, 1e308, -1e308, 5e-324, 60, 60.0001]),
)
json_leaf = st.one_of(st.none(), st.booleans(), numbers, safe_text)
json_values = st.recursive(json_leaf, lambda c: st.lists(c, max_size=4) | st.dictionaries(safe_text, c, max_size=4),
                           max_leaves=12)
data_urls = st.builds(
    lambda prefix, payload: prefix + payload,
    st.sampled_from(["data:image/png;base64,", "data:image/jpeg;base64,", "data:;base64,", "data:image/png,",
                     "DATA:IMAGE/PNG;BASE64,", "data:text/plain;base64,", "data:image/svg+xml;base64,", "", "http://x/",
                     "data:image/png;base64"]),
    st.one_of(
        st.binary(max_size=200).map(lambda b: base64.b64encode(b).decode()),
        st.text(alphabet=B64_ALPHABET + "!@#-_ \n", max_size=200),
        st.sampled_from([base64.b64encode(PNG).decode(), base64.b64encode(PNG[:40]).decode(),
                         base64.b64encode(PNG[:8] + b"\x00" * 64).decode(), base64.b64encode(_png(8)).decode()]),
    ),
)
field_values = st.one_of(json_values, numbers, safe_text, st.sampled_from(list(POSE_MODES)), data_urls,
                         st.text(min_size=100, max_size=300))
near_valid = st.fixed_dictionaries(
    {"type": st.one_of(st.sampled_from(["hello", "prompt", "pose", "quality", "bypass", "strength"]),
                       st.sampled_from(["", "PROMPT", "stats", "ack", "error", "info", "nope"]), json_values)},
    optional={key: field_values for key in ("mode", "yaw", "pitch", "value", "on", "preset", "text", "image", "clear")},
)


def _serialise(value) -> str:
    return json.dumps(value, allow_nan=True)


messages = st.one_of(
    near_valid.map(_serialise),
    near_valid.map(lambda m: _serialise(m).encode()),
    json_values.map(_serialise),
    st.text(max_size=300),
    st.binary(max_size=300),
    st.tuples(near_valid.map(_serialise), st.integers(0, 400)).map(lambda t: t[0][: t[1]]),  # truncated JSON
)

COMMANDS = (control.Hello, control.SetPromptImage, control.SetPromptName, control.ClearPrompt, control.SetControl)


# -- 1. control.parse is total ------------------------------------------------------------------
BROKE_PARSE = {  # found by the property below; each must be a ControlError, not a crash
    "nesting deeper than the recursion limit": "[" * 5000,
    "an integer beyond a float": '{"type": "strength", "value": ' + "9" * 400 + "}",
    "a negative integer angle beyond a float": '{"type": "pose", "mode": "offset", "yaw": -' + "1" * 320 + "}",
}


@pytest.mark.parametrize("message", list(BROKE_PARSE.values()), ids=list(BROKE_PARSE))
def test_control_parse_refuses_what_once_broke_it(message):
    with pytest.raises(control.ControlError):
        control.parse(message, MAX_BYTES)


@settings(max_examples=400, **FUZZ)
@given(message=messages, small_limit=st.booleans())
@example(message='{"type": "pose", "mode": {"a": 1}}', small_limit=False)
@example(message=b'{"type": "hello"}\xff', small_limit=False)
def test_control_parse_returns_a_command_or_raises_control_error(message, small_limit):
    limit = 64 if small_limit else MAX_BYTES
    try:
        command = control.parse(message, limit, ReferenceLimits(max_bytes=4096))
    except control.ControlError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert isinstance(command, COMMANDS)
    if isinstance(command, control.SetControl):
        if command.name == "strength":
            assert isinstance(command.value, float) and 0.0 <= command.value <= 1.0
        elif command.name == "pose":
            assert isinstance(command.value, PoseMode) and command.value.mode in POSE_MODES
            for angle in (command.value.yaw_deg, command.value.pitch_deg):
                assert math.isfinite(angle) and abs(angle) <= MAX_POSE_DEG
        elif command.name == "bypass":
            assert isinstance(command.value, bool)
        else:
            assert command.name == "quality" and isinstance(command.value, str) and 0 < len(command.value) <= 120
    elif isinstance(command, control.SetPromptName):
        assert command.name and command.name == command.name.strip() and len(command.name) <= 120
    elif isinstance(command, control.SetPromptImage):
        assert isinstance(command.data, bytes) and len(command.data) <= 4096


# -- a server on its own loop in a thread ------------------------------------------------------
class ThreadedServer:
    """A real server (overlay engine) on an event loop in a background thread."""

    def __init__(self, **overrides) -> None:
        self.overrides = overrides
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fuzz-server", daemon=True)
        self.clients: list[Client] = []

    def call(self, coro, timeout: float = 30.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> "ThreadedServer":
        self.thread.start()
        self.call(self._start())
        return self

    async def _start(self) -> None:
        app = create_app(ServerConfig(ice_loopback=True, **self.overrides), engine=OverlayEngine())
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        self.state = app[STATE]

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict | None = None) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def connect_client(self) -> Client:
        async def make() -> Client:
            client = Client(PatternTrack(fps=15))
            self.clients.append(client)
            await client.connect(f"http://127.0.0.1:{self.port}")
            await client.wait_frames(3)
            await asyncio.wait_for(client.channel_open.wait(), 10)
            return client
        return self.call(make())

    def drop(self, caller_id: str) -> None:
        async def remove() -> None:
            caller = self.state.registry.callers.get(caller_id)
            if caller is not None:
                await self.state.registry.remove(caller)
        self.call(remove())

    def callers(self) -> int:
        return self.call(self._count())

    async def _count(self) -> int:
        return len(self.state.registry.callers)

    def stop(self) -> None:
        async def shutdown() -> None:
            for client in self.clients:
                await client.close()
            await self.runner.cleanup()
            rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in rest:
                task.cancel()
            await asyncio.gather(*rest, return_exceptions=True)
        try:
            self.call(shutdown(), timeout=60)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


@pytest.fixture(scope="module")
def threaded_server():
    server = ThreadedServer(limits=Limits(max_callers=4, admit_by_cost=False, connect_timeout_s=2.0)).start()
    yield server
    server.stop()


# -- 2. /offer ------------------------------------------------------------------------------------
SDP_LINES = ["v=0", "o=- 3900000000 3900000000 IN IP4 0.0.0.0", "s=-", "t=0 0", "c=IN IP4 0.0.0.0",
             "m=video 9 UDP/TLS/RTP/SAVPF 96", "m=audio 9 UDP/TLS/RTP/SAVPF 111",
             "m=application 9 UDP/DTLS/SCTP webrtc-datachannel", "m=", "m=video", "m=video -1 RTP 999999999999",
             "a=rtpmap:96 VP8/90000", "a=rtpmap:96", "a=mid:0", "a=mid:", "a=group:BUNDLE 0 1", "a=group:BUNDLE 7",
             "a=ice-ufrag:abcd", "a=ice-pwd:0123456789abcdef0123456789", "a=setup:actpass", "a=setup:nope",
             "a=fingerprint:sha-256 " + ":".join(["AB"] * 32), "a=fingerprint:md5 00", "a=sendrecv", "a=recvonly",
             "a=rtcp-mux", "a=ssrc:1 cname:x", "a=ssrc:-5", "a=candidate:1 1 UDP 2130706431 127.0.0.1 9 typ host",
             "a=candidate:garbage", "a=sctp-port:5000", "a=max-message-size:-1", "a=fmtp:96 x=" + "9" * 50]
sdp_like = st.lists(st.one_of(st.sampled_from(SDP_LINES), safe_text), min_size=1, max_size=25).map("\r\n".join)


def _mutations(sdp: str):
    """An offer SDP from a real peer with lines dropped, repeated, swapped or garbled."""
    lines = sdp.splitlines()
    edit = st.tuples(st.sampled_from(["drop", "dup", "garble", "swap"]), st.integers(0, len(lines) - 1),
                     st.integers(0, len(lines) - 1), safe_text)

    def apply(edits) -> str:
        out = list(lines)
        for op, i, j, junk in edits:
            i, j = i % len(out), j % len(out)
            if op == "drop" and len(out) > 1:
                del out[i]
            elif op == "dup":
                out.insert(j, out[i])
            elif op == "swap":
                out[i], out[j] = out[j], out[i]
            else:
                out[i] = out[i][: len(junk) % (len(out[i]) + 1)] + junk
        return "\r\n".join(out) + "\r\n"

    return st.lists(edit, min_size=1, max_size=4).map(apply)


@functools.lru_cache(maxsize=None)
def real_offer() -> str:
    """The offer SDP of a real aiortc peer (made once, when a test first needs it)."""
    async def make() -> str:
        client = Client(PatternTrack())
        await client.pc.setLocalDescription(await client.pc.createOffer())
        sdp = client.pc.localDescription.sdp
        await client.close()
        return sdp
    loop = asyncio.new_event_loop()  # not asyncio.run: leave the current event loop setting alone
    try:
        return loop.run_until_complete(make())
    finally:
        loop.close()


offer_bodies = st.one_of(
    st.binary(max_size=500),
    st.text(max_size=500).map(str.encode),
    json_values.map(lambda v: _serialise(v).encode()),
    st.deferred(lambda: st.fixed_dictionaries(
        {"type": st.one_of(st.just("offer"), json_values), "sdp": st.one_of(sdp_like, _mutations(real_offer()), json_values)},
        optional={"extra": json_values}).map(lambda v: _serialise(v).encode())),
    st.deferred(lambda: st.fixed_dictionaries({"type": st.just("offer"), "sdp": _mutations(real_offer())})
                .map(lambda v: _serialise(v).encode())),
)


@settings(max_examples=150, **FUZZ)
@given(body=offer_bodies, content_type=st.sampled_from(["application/json", "text/plain", None]))
def test_offer_answers_every_body_with_json_and_leaves_nothing_behind(threaded_server, body, content_type):
    server = threaded_server
    before = server.callers()
    headers = {"Content-Type": content_type} if content_type else {}
    status, raw = server.request("POST", "/offer", body, headers)
    try:
        reply = json.loads(raw)
    except ValueError:
        raise AssertionError(f"/offer answered {status} with a body that is not JSON: {raw[:120]!r}") from None
    if status == 200:  # a mutation that is still a usable offer: an answer (dropped here, so the
        assert reply["type"] == "answer" and "m=" in reply["sdp"] and reply["caller"]  # next one is not a 503)
        server.drop(reply["caller"])
        return
    assert 400 <= status < 500 or status == 503, (status, reply)
    assert isinstance(reply["error"], str) and reply["error"] and "\n" not in reply["error"], reply
    assert server.callers() <= before, "a refused offer must not leave a caller behind"


BROKE_OFFER = {  # found by the property above; each must be a 4xx with a JSON error, not a 500 page
    "a candidate line aiortc asserts on (empty exception text)":
        lambda sdp: sdp.replace("a=mid:0\r\n", "a=mid:0\r\na=candidate:1 1 udp\r\n", 1),
    "a data channel but no video m-line (cleanup of the half-made peer raises)":
        lambda sdp: "\r\n".join(line for line in sdp.splitlines() if not line.startswith("m=video")) + "\r\n",
}


@pytest.mark.parametrize("case", list(BROKE_OFFER))
def test_offer_refuses_what_once_broke_it(threaded_server, case):
    sdp = BROKE_OFFER[case](real_offer())
    assert sdp != real_offer()
    status, raw = threaded_server.request("POST", "/offer", json.dumps({"type": "offer", "sdp": sdp}).encode(),
                                          {"Content-Type": "application/json"})
    assert 400 <= status < 500, (status, raw[:120])
    assert json.loads(raw)["error"]
    assert threaded_server.callers() == 0


def test_server_answers_after_the_offer_fuzz(threaded_server):
    """Runs after the property (file order): the server is healthy and holds no caller."""
    status, raw = threaded_server.request("GET", "/api/info")
    assert status == 200 and json.loads(raw)["state"] == "ready" and json.loads(raw)["callers"] == 0
    assert threaded_server.request("GET", "/healthz") == (200, b"ok")
    assert threaded_server.callers() == 0


# -- 3. /ws and the data channel of a connected caller -------------------------------------------
def _malformed(message: str | bytes) -> bool:
    """True when the server must answer ``message`` with an error (parse or image decode fails)."""
    try:
        command = control.parse(message, MAX_BYTES)
    except Exception:  # noqa: BLE001 - ControlError, or a parse bug the server answers as an internal error
        return True
    if isinstance(command, control.SetPromptImage):
        try:
            decode_reference(command.data)
        except ReferenceError:
            return True
        return False  # the overlay engine accepts any image
    return False


ws_messages = st.one_of(  # mostly malformed; the tests keep those that must be refused (_malformed)
    near_valid.map(_serialise),
    json_values.map(_serialise),
    safe_text,
    st.tuples(near_valid.map(_serialise), st.integers(0, 300)).map(lambda t: t[0][: t[1]]),
)


def _collect_errors(receive, n: int, timeout: float = 15.0) -> list[dict]:
    """Replies until ``n`` errors came (stats are skipped); any ack/info is returned too."""
    replies: list[dict] = []
    deadline = time.monotonic() + timeout
    while sum(r["type"] == "error" for r in replies) < n:
        left = deadline - time.monotonic()
        assert left > 0, f"only {sum(r['type'] == 'error' for r in replies)} of {n} errors came back: {replies[-5:]}"
        message = receive(left)
        if message is not None and message["type"] != "stats":
            replies.append(message)
    return replies


@pytest.fixture(scope="module")
def streaming_caller(threaded_server):
    return threaded_server.connect_client()


@settings(max_examples=40, **FUZZ)
@given(batch=st.lists(st.one_of(ws_messages, st.binary(min_size=1, max_size=100)), min_size=1, max_size=10))
def test_malformed_ws_messages_each_get_an_error(threaded_server, streaming_caller, batch):
    batch = [m for m in batch if isinstance(m, bytes) or _malformed(m)]
    assume(batch)
    url = f"ws://127.0.0.1:{threaded_server.port}/ws?caller={streaming_caller.caller_id}"
    with ws_connect(url, max_size=None, open_timeout=10) as ws:
        for message in batch:
            ws.send(message)

        def receive(left: float):
            try:
                return json.loads(ws.recv(timeout=left))
            except TimeoutError:
                return None

        replies = _collect_errors(receive, len(batch))
    assert not [r for r in replies if r["type"] != "error"], replies
    assert all(isinstance(r["message"], str) and r["message"] for r in replies)


@settings(max_examples=40, **FUZZ)
@given(batch=st.lists(ws_messages, min_size=1, max_size=10))
def test_malformed_data_channel_messages_each_get_an_error(threaded_server, streaming_caller, batch):
    batch = [m for m in batch if _malformed(m)]
    assume(batch)
    client = streaming_caller
    seen = len(client.got.messages)
    for message in batch:
        threaded_server.loop.call_soon_threadsafe(client.channel.send, message)

    def receive(left: float):
        deadline = time.monotonic() + left
        while time.monotonic() < deadline:
            if len(client.got.messages) > receive.index:
                receive.index += 1
                return client.got.messages[receive.index - 1]
            time.sleep(0.005)
        return None

    receive.index = seen
    replies = _collect_errors(receive, len(batch))
    assert not [r for r in replies if r["type"] != "error"], replies


def test_the_fuzzed_caller_keeps_streaming(threaded_server, streaming_caller):
    frames = len(streaming_caller.got.frames)
    threaded_server.call(streaming_caller.wait_frames(frames + 10, timeout=15), timeout=20)
    assert threaded_server.request("GET", "/api/info")[0] == 200
    summary = threaded_server.call(_summary(threaded_server, streaming_caller.caller_id))
    assert summary["errors"] == 0 and summary["connection"] == "connected"


async def _summary(server: ThreadedServer, caller_id: str) -> dict:
    return server.state.registry.callers[caller_id].summary()
