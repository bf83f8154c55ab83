"""The aiohttp application: the page, ``/offer`` signaling, ``/ws`` control, ``/api/info``.

Every handler answers bad input with a 4xx and a one-line reason; an unexpected failure
in one caller closes that caller only.
"""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor

from aiohttp import WSMsgType, web
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaBlackhole

from .. import log
from ..pipeline.engine import Engine
from ..pipeline.select import build_engine
from . import control, ice
from .config import ServerConfig
from .peers import Caller, CallerRegistry
from .security import RateLimiter, origin_ok, request_token, token_ok
from .tracks import FilteredTrack

logger = log.get(__name__)
CONFIG = web.AppKey("config", ServerConfig)
STATE = web.AppKey("state", "ServerState")


class ServerState:
    """What the app shares between requests: the engine (loaded in the background) and callers."""

    def __init__(self, config: ServerConfig, engine: Engine | None) -> None:
        self.config = config
        self.executor = ThreadPoolExecutor(max_workers=max(1, config.workers), thread_name_prefix="streamfx-frame")
        self.registry = CallerRegistry(config.limits.max_callers)
        self.engine = engine
        self.engine_error: str | None = None
        self.loading: asyncio.Task | None = None

    async def load_engine(self) -> None:
        if self.engine is not None:
            return
        loop = asyncio.get_running_loop()
        try:
            self.engine = await loop.run_in_executor(self.executor, build_engine, self.config.engine,
                                                     self.config.engine_options)
            logger.info("engine ready", extra={"engine": self.engine.name})
        except Exception as exc:  # noqa: BLE001 - reported on /api/info and /offer
            self.engine_error = f"{type(exc).__name__}: {exc}"
            logger.error("engine failed to load", extra={"error": self.engine_error})


class HttpError(Exception):
    """Raised by handlers; :func:`errors_as_json` turns it into ``{"error": reason}``."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


@web.middleware
async def errors_as_json(request: web.Request, handler):
    try:
        return await handler(request)
    except HttpError as exc:
        return web.json_response({"error": str(exc)}, status=exc.status)


def _guard(request: web.Request) -> tuple[ServerConfig, ServerState]:
    config, state = request.app[CONFIG], request.app[STATE]
    if not origin_ok(request, config.allowed_origins):
        raise HttpError(403, "origin not allowed")
    if not token_ok(config.token, request_token(request)):
        raise HttpError(401, "missing or wrong token")
    return config, state


async def index(request: web.Request) -> web.StreamResponse:
    config, _ = _guard(request)
    response = web.FileResponse(config.web_root / "index.html")
    if config.token and request.query.get("token"):
        response.set_cookie("streamfx_token", config.token, httponly=True, samesite="Strict")
    return response


async def info(request: web.Request) -> web.Response:
    _, state = _guard(request)
    if state.engine is None:
        body = {"state": "failed" if state.engine_error else "loading", "error": state.engine_error}
    else:
        body = {"state": "ready", **state.engine.info()}
    body["callers"] = len(state.registry.callers)
    body["max_callers"] = state.registry.max_callers
    return web.json_response(body)


async def offer(request: web.Request) -> web.Response:
    config, state = _guard(request)
    limits = config.limits
    if request.content_length is not None and request.content_length > limits.max_sdp_bytes:
        raise HttpError(413, f"offer is over {limits.max_sdp_bytes} bytes")
    body = await request.content.read(limits.max_sdp_bytes + 1)
    if len(body) > limits.max_sdp_bytes:
        raise HttpError(413, f"offer is over {limits.max_sdp_bytes} bytes")
    try:
        params = json.loads(body)
        if not isinstance(params, dict):
            raise ValueError
        sdp, kind = params.get("sdp"), params.get("type")
    except ValueError:
        raise HttpError(400, 'body must be JSON {"sdp": ..., "type": "offer"}') from None
    if kind != "offer" or not isinstance(sdp, str) or "m=" not in sdp:
        raise HttpError(400, 'body must be JSON {"sdp": "<offer SDP>", "type": "offer"}')
    if state.engine is None:
        raise HttpError(503, state.engine_error or "engine is still loading; retry shortly")
    if state.registry.full:
        raise HttpError(503, f"server is full ({limits.max_callers} callers)")

    caller = Caller(RTCPeerConnection(ice.rtc_configuration(config.ice_servers)), state.engine, config,
                    state.executor)
    state.registry.add(caller)
    try:
        await _connect(caller, state, RTCSessionDescription(sdp=sdp, type="offer"))
    except Exception as exc:  # noqa: BLE001 - malformed SDP or negotiation failure
        await state.registry.remove(caller)
        logger.info("offer rejected", extra={"error": str(exc)})
        raise HttpError(400, f"could not use the offer: {str(exc).splitlines()[0][:200] or type(exc).__name__}") from None
    local = caller.pc.localDescription
    return web.json_response({"sdp": local.sdp, "type": local.type, "caller": caller.id})


async def _connect(caller: Caller, state: ServerState, description: RTCSessionDescription) -> None:
    pc = caller.pc
    sink = MediaBlackhole()  # audio is not filtered; drain it so aiortc's queue stays empty

    @pc.on("datachannel")
    def on_datachannel(channel) -> None:
        caller.attach_channel(channel)

    @pc.on("track")
    def on_track(track) -> None:
        if track.kind == "video" and caller.track is None:
            caller.track = FilteredTrack(track, caller.pipeline, state.executor,
                                         on_failure=lambda: asyncio.ensure_future(state.registry.remove(caller)),
                                         max_fps=state.config.max_fps)
            pc.addTrack(caller.track)
        else:
            sink.addTrack(track)

    @pc.on("connectionstatechange")
    async def on_state() -> None:
        logger.info("connection state", extra={"caller": caller.id, "state": pc.connectionState})
        if pc.connectionState in ("failed", "closed"):
            await sink.stop()
            await state.registry.remove(caller)

    await pc.setRemoteDescription(description)
    if caller.track is None:
        raise ValueError("the offer has no video track")
    await sink.start()
    await pc.setLocalDescription(await pc.createAnswer())


async def websocket(request: web.Request) -> web.WebSocketResponse:
    config, state = _guard(request)
    limits = config.limits
    caller = state.registry.callers.get(request.query.get("caller", ""))
    if request.query.get("caller") and caller is None:
        raise HttpError(404, "no such caller")
    ws = web.WebSocketResponse(max_msg_size=limits.max_control_bytes, heartbeat=20.0)
    await ws.prepare(request)
    limiter = RateLimiter(limits.control_rate_per_s, limits.control_burst)

    def send(text: str) -> None:
        if not ws.closed:
            asyncio.ensure_future(ws.send_str(text))

    pusher = None
    if caller is not None:
        caller.listeners.add(send)
    else:
        pusher = asyncio.ensure_future(_push_server_stats(state, send))
    try:
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                send(control.encode("error", message="only text (JSON) messages are accepted"))
            elif caller is not None:
                await caller.handle(msg.data, send, limiter)
            else:
                send(control.encode("info", **(state.engine.info() if state.engine else {"state": "loading"}),
                                    callers=list(state.registry.callers)))
    finally:
        if caller is not None:
            caller.listeners.discard(send)
        if pusher is not None:
            pusher.cancel()
    return ws


async def _push_server_stats(state: ServerState, send) -> None:
    while True:
        await asyncio.sleep(state.config.stats_interval_s)
        send(control.encode("stats", callers=[c.summary() for c in state.registry.callers.values()]))


def create_app(config: ServerConfig, engine: Engine | None = None) -> web.Application:
    """Build the app. With ``engine=None`` the configured engine loads in the background."""
    if config.ice_loopback:
        ice.enable_loopback_candidates()
    app = web.Application(client_max_size=config.limits.max_sdp_bytes + 4096, middlewares=[errors_as_json])
    state = ServerState(config, engine)
    app[CONFIG], app[STATE] = config, state

    async def on_startup(app: web.Application) -> None:
        state.loading = asyncio.ensure_future(state.load_engine())

    async def on_shutdown(app: web.Application) -> None:
        if state.loading is not None:
            state.loading.cancel()
        await state.registry.close_all()

    async def on_cleanup(app: web.Application) -> None:
        state.executor.shutdown(wait=True, cancel_futures=True)
        if state.engine is not None:
            state.engine.close()

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    app.on_cleanup.append(on_cleanup)
    app.router.add_get("/", index)
    app.router.add_get("/api/info", info)
    app.router.add_post("/offer", offer)
    app.router.add_get("/ws", websocket)
    app.router.add_static("/client/", config.web_root, show_index=False)
    return app
