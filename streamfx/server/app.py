"""The aiohttp application: the page, ``/offer`` signaling, ``/ws`` control, ``/api/info``,
``/healthz`` and ``/metrics``.

Every handler answers bad input with a 4xx and a one-line reason; an unexpected failure
in one caller closes that caller only. Nothing slow runs on the event loop (its lag is
measured: :mod:`.loop_monitor`); callers are admitted by measured cost (:mod:`.admission`);
requests whose ``Host`` is not a name this server is bound to are refused (DNS rebinding).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from concurrent.futures import ThreadPoolExecutor

from aiohttp import WSMsgType, web
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaBlackhole

from .. import log
from ..pipeline.engine import Engine
from ..pipeline.select import build_engine
from ..whip import WhipPublisher
from . import control, ice
from . import metrics
from .admission import Admission
from .config import ServerConfig
from .gallery import add_gallery_route
from .image_decoder import ImageDecoder
from .loop_monitor import LoopMonitor
from .peers import Caller, CallerRegistry
from .session import Executors
from .security import RateLimiter, host_ok, origin_ok, request_token, token_ok

logger = log.get(__name__)
CONFIG = web.AppKey("config", ServerConfig)
STATE = web.AppKey("state", "ServerState")


class ServerState:
    """What the app shares between requests: the engine (loaded in the background) and callers."""

    def __init__(self, config: ServerConfig, engine: Engine | None) -> None:
        self.config = config
        self.executor = ThreadPoolExecutor(max_workers=max(1, config.workers), thread_name_prefix="streamfx-frame")
        self.executors = Executors(
            frames=self.executor,
            prompts=ThreadPoolExecutor(max_workers=max(1, config.prompt_workers), thread_name_prefix="streamfx-prompt"),
            sessions=ThreadPoolExecutor(max_workers=max(1, config.session_workers), thread_name_prefix="streamfx-session"),
            images=ImageDecoder())
        self.registry = CallerRegistry()
        self.admission = Admission(config.limits.max_callers)
        self.loop_monitor = LoopMonitor()
        self.allowed_hosts = allowed_host_names(config)
        self.websockets: dict[str, int] = {}   # open /ws connections per client address
        self.engine = engine
        self.engine_error: str | None = None
        self.loading: asyncio.Task | None = None
        self.background: list[asyncio.Task] = []
        self.opening = 0                       # admitted callers whose session is still opening

    def refusal(self) -> str | None:
        """Why one more caller cannot be admitted now (None: it can)."""
        present = len(self.registry.callers) + self.opening
        if not self.config.limits.admit_by_cost:
            limit = self.config.limits.max_callers
            return None if limit is None or present < limit else f"server is full ({limit} callers)"
        return self.admission.refusal(present)

    def capacity(self) -> int | None:
        return self.admission.capacity() if self.config.limits.admit_by_cost else self.config.limits.max_callers

    async def observe(self) -> None:
        """Once a second: feed admission its measurement."""
        while True:
            await asyncio.sleep(1.0)
            stats = [c.pipeline.stats for c in self.registry.callers.values()]
            if self.config.max_fps is not None:  # paced on purpose: frames skipped by --max-fps are not lost
                self.admission.observe(len(stats))
            else:
                self.admission.observe(len(stats), sum(s.frames_in for s in stats), sum(s.frames_out for s in stats))

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

    def shutdown_executors(self) -> None:
        self.executors.images.close()
        for pool in (self.executors.frames, self.executors.prompts, self.executors.sessions):
            pool.shutdown(wait=True, cancel_futures=True)


def allowed_host_names(config: ServerConfig) -> frozenset[str]:
    """The ``Host`` names that reach this server legitimately: the bound address (every local
    address and name for 0.0.0.0 / ::), the loopback names for a loopback bind, ``--allow-host``."""
    import socket

    names = {config.host.lower(), *(h.lower() for h in config.allowed_hosts)}
    loopback = {"localhost", "127.0.0.1", "::1"}
    if config.host in ("0.0.0.0", "::", ""):
        from .tls import reachable_addresses

        names |= loopback | {socket.gethostname().lower(), socket.getfqdn().lower()}
        names |= {a.lower() for a in reachable_addresses()}
    elif not config.exposed:
        names |= loopback
    return frozenset(names)


class HttpError(Exception):
    """Raised by handlers; :func:`errors_as_json` turns it into ``{"error": reason}``."""

    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.headers = headers or {}


@web.middleware
async def errors_as_json(request: web.Request, handler):
    try:
        if not host_ok(request, request.app[STATE].allowed_hosts):
            raise HttpError(421, "this server does not answer to that Host name (use --allow-host NAME to add it)")
        return await handler(request)
    except HttpError as exc:
        return web.json_response({"error": str(exc)}, status=exc.status, headers=exc.headers)


def guard(request: web.Request, admin: bool = False, any_origin: bool = False) -> tuple[ServerConfig, ServerState]:
    """Origin and token checks. ``admin``: the admin token (everyone's stats, /metrics); without
    one configured, admin routes are open only where callers need no token either.
    ``any_origin``: pages of any site may call (WHIP/WHEP) when a token is required anyway."""
    config, state = request.app[CONFIG], request.app[STATE]
    if not (any_origin and config.caller_tokens) and not origin_ok(request, config.allowed_origins):
        raise HttpError(403, "origin not allowed")
    given = request_token(request)
    if admin:
        if config.admin_token is not None:
            if not token_ok(config.admin_token, given):
                raise HttpError(401, "this needs the admin token")
        elif config.caller_tokens:
            raise HttpError(403, "no admin token is configured (--admin-token)")
        return config, state
    accepted = config.caller_tokens + ((config.admin_token,) if config.admin_token and config.caller_tokens else ())
    if not token_ok(accepted, given):
        raise HttpError(401, "missing or wrong token")
    return config, state


async def index(request: web.Request) -> web.StreamResponse:
    config, _ = guard(request)
    response = web.FileResponse(config.web_root / "index.html")
    if config.token and request.query.get("token"):
        response.set_cookie("streamfx_token", config.token, httponly=True, samesite="Strict")
    return response


def _engine_state(state: ServerState) -> str:
    if state.engine is not None:
        return "ready"
    return "failed" if state.engine_error else "loading"


async def info(request: web.Request) -> web.Response:
    _, state = guard(request)
    if state.engine is None:
        body = {"state": _engine_state(state), "error": state.engine_error}
    else:
        body = {"state": "ready", **state.engine.info()}
    body["callers"] = len(state.registry.callers)
    body["capacity"] = state.capacity()
    body["max_callers"] = state.config.limits.max_callers
    body["loop_lag_ms"] = state.loop_monitor.p99_ms()
    return web.json_response(body)


async def healthz(request: web.Request) -> web.Response:
    """Liveness for load balancers: no token, no details."""
    state = request.app[STATE]
    healthy = state.engine_error is None
    return web.Response(text="ok" if healthy else "unhealthy", status=200 if healthy else 503)


async def metrics_text(request: web.Request) -> web.Response:
    _, state = guard(request, admin=True)
    text = metrics.render((c.summary() for c in state.registry.callers.values()), state.capacity(),
                          state.loop_monitor.p99_ms(), _engine_state(state))
    return web.Response(text=text, content_type="text/plain", charset="utf-8",
                        headers={"X-Content-Type-Options": "nosniff"})


async def read_offer_body(request: web.Request, limit: int) -> bytes:
    """The request body, refused with 413 past ``limit`` bytes (declared or sent)."""
    if request.content_length is not None and request.content_length > limit:
        raise HttpError(413, f"offer is over {limit} bytes")
    body = await request.content.read(limit + 1)
    if len(body) > limit:
        raise HttpError(413, f"offer is over {limit} bytes")
    return body


async def read_offer(request: web.Request, limits) -> str:
    """The offer SDP of a ``POST /offer`` body, within ``limits.max_sdp_bytes``; 4xx otherwise."""
    body = await read_offer_body(request, limits.max_sdp_bytes)
    try:
        params = json.loads(body)
        if not isinstance(params, dict):
            raise ValueError
        sdp, kind = params.get("sdp"), params.get("type")
    except ValueError:
        raise HttpError(400, 'body must be JSON {"sdp": ..., "type": "offer"}') from None
    if kind != "offer" or not isinstance(sdp, str) or "m=" not in sdp:
        raise HttpError(400, 'body must be JSON {"sdp": "<offer SDP>", "type": "offer"}')
    return sdp


async def offer(request: web.Request) -> web.Response:
    config, state = guard(request)
    sdp = await read_offer(request, config.limits)
    caller = await open_call(state, sdp)
    local = caller.pc.localDescription
    return web.json_response({"sdp": local.sdp, "type": local.type, "caller": caller.id})


async def open_call(state: ServerState, sdp: str, on_close=None) -> Caller:
    """Admit, open and answer one caller (503: not ready or full; 400: an unusable offer).
    ``on_close``: called once with the caller when its call ends, however it ends."""
    config = state.config
    if state.engine is None:
        raise HttpError(503, state.engine_error or "engine is still loading; retry shortly")
    reason = state.refusal()
    if reason is not None:
        raise HttpError(503, reason)

    state.opening += 1
    try:
        caller = await Caller.open(RTCPeerConnection(ice.rtc_configuration(config.ice_servers)), state.engine,
                                   config, state.executors)
    finally:
        state.opening -= 1
    caller.extra_stats = lambda: {"loop_lag_ms": state.loop_monitor.p99_ms()}
    if on_close is not None:
        caller.on_close = on_close
    state.registry.add(caller)
    try:
        await _connect(caller, state, RTCSessionDescription(sdp=sdp, type="offer"))
    except Exception as exc:  # noqa: BLE001 - malformed SDP or negotiation failure
        try:
            await state.registry.remove(caller)
        except Exception:  # noqa: BLE001 - a half-built peer may fail to close; the answer is still 400
            logger.exception("closing a rejected offer's peer failed", extra={"caller": caller.id})
        first_line = (str(exc).splitlines() or [""])[0][:200]
        logger.info("offer rejected", extra={"error": first_line or type(exc).__name__})
        raise HttpError(400, f"could not use the offer: {first_line or type(exc).__name__}") from None
    _keep(state, asyncio.ensure_future(_drop_if_unconnected(caller, state)))
    if config.whip_out:
        push = WhipPublisher(config.whip_out.replace("{session}", caller.id), caller.outputs,
                             token=config.whip_out_token, configuration=ice.rtc_configuration(config.ice_servers))
        caller.pushes.append(push)
        push.start()
    return caller


def _keep(state: ServerState, task: asyncio.Task) -> None:
    state.background = [t for t in state.background if not t.done()] + [task]


async def _drop_if_unconnected(caller: Caller, state: ServerState) -> None:
    """An answered offer that never connects frees its slot after ``connect_timeout_s``."""
    await asyncio.sleep(state.config.limits.connect_timeout_s)
    if caller.id in state.registry.callers and caller.pc.connectionState != "connected":
        logger.info("caller never connected; dropped", extra={"caller": caller.id, "state": caller.pc.connectionState})
        await state.registry.remove(caller)


async def _connect(caller: Caller, state: ServerState, description: RTCSessionDescription) -> None:
    pc = caller.pc
    sink = MediaBlackhole()  # any further track is not used; drain it so aiortc's queue stays empty

    @pc.on("datachannel")
    def on_datachannel(channel) -> None:
        caller.attach_channel(channel)

    @pc.on("track")
    def on_track(track) -> None:
        if not caller.receive(track, on_failure=lambda: asyncio.ensure_future(state.registry.remove(caller))):
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
    await ice.answer_as_dtls_server(pc)


async def websocket(request: web.Request) -> web.WebSocketResponse:
    """Control of one caller (``?caller=ID``, its token), or with the admin token every
    caller's stats. Connections are limited per client address and in total."""
    caller_id = request.query.get("caller")
    config, state = guard(request, admin=not caller_id)
    limits = config.limits
    caller = state.registry.callers.get(caller_id or "")
    if caller_id and caller is None:
        raise HttpError(404, "no such caller")
    with socket_quota(request, state.websockets, limits):
        ws = web.WebSocketResponse(max_msg_size=limits.max_control_bytes, heartbeat=20.0)
        await ws.prepare(request)
        await _serve_socket(ws, caller, state)
    return ws


@contextlib.contextmanager
def socket_quota(request: web.Request, open_sockets: dict[str, int], limits):
    """Count one open WebSocket of the request's address against ``limits`` (429/503 past them)."""
    address = request.remote or "?"
    if sum(open_sockets.values()) >= limits.ws_total:
        raise HttpError(503, f"too many WebSocket connections ({limits.ws_total} open)")
    if open_sockets.get(address, 0) >= limits.ws_per_address:
        raise HttpError(429, f"too many WebSocket connections from this address ({limits.ws_per_address} open)")
    open_sockets[address] = open_sockets.get(address, 0) + 1
    try:
        yield
    finally:
        open_sockets[address] -= 1
        if not open_sockets[address]:
            del open_sockets[address]


async def _serve_socket(ws: web.WebSocketResponse, caller: Caller | None, state: ServerState) -> None:
    limits = state.config.limits
    limiter = caller.limiter if caller is not None else RateLimiter(limits.control_rate_per_s, limits.control_burst)

    def send(text: str) -> None:
        if not ws.closed:
            asyncio.ensure_future(ws.send_str(text))

    pusher = None
    handling: set[asyncio.Task] = set()
    if caller is not None:
        caller.listeners.add(send)
    else:
        pusher = asyncio.ensure_future(_push_server_stats(state, send))
    try:
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                send(control.encode("error", message="only text (JSON) messages are accepted"))
            elif caller is not None:
                # Not awaited: the next message is read at once, so a newer prompt can replace a
                # waiting one. The caller's limiter (shared with its data channel) bounds the tasks.
                task = asyncio.ensure_future(caller.handle(msg.data, send))
                handling.add(task)
                task.add_done_callback(handling.discard)
            elif not limiter.allow():
                send(control.encode("error", message="too many control messages; slow down"))
            else:
                send(control.encode("info", **(state.engine.info() if state.engine else {"state": "loading"}),
                                    callers=list(state.registry.callers)))
    finally:
        if caller is not None:
            caller.listeners.discard(send)
        if pusher is not None:
            pusher.cancel()
        for task in handling:
            task.cancel()


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
        state.executors.images.warm()
        state.loop_monitor.start()
        _keep(state, asyncio.ensure_future(state.observe()))

    async def on_shutdown(app: web.Application) -> None:
        if state.loading is not None:
            state.loading.cancel()
        for task in state.background:
            task.cancel()
        state.loop_monitor.stop()
        await state.registry.close_all()

    async def on_cleanup(app: web.Application) -> None:
        await asyncio.get_running_loop().run_in_executor(None, state.shutdown_executors)
        if state.engine is not None:
            state.engine.close()

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    app.on_cleanup.append(on_cleanup)
    add_routes(app, config, info=info, healthz=healthz, metrics=metrics_text, offer=offer, websocket=websocket)
    from .whip import add_whip_routes

    add_whip_routes(app)
    add_gallery_route(app, lambda request: request.app[STATE].engine, guard)
    return app


def add_routes(app: web.Application, config: ServerConfig, *, info, healthz, metrics, offer, websocket) -> None:
    """The routes of every StreamFX HTTP face (this server, a cluster's front door): the page
    and its files, and these handlers."""
    app.router.add_get("/", index)
    app.router.add_get("/api/info", info)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_post("/offer", offer)
    app.router.add_get("/ws", websocket)
    app.router.add_static("/client/", config.web_root, show_index=False)
