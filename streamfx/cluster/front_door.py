"""The front door: ``streamfx serve --cluster ADDRESS``. The page, ``/offer``, ``/ws``,
``/api/info``, ``/healthz`` and ``/metrics``, holding no call itself.

For each offer it reserves a slot (Ray picks the node), hands the offer to that node's
server and returns its answer. No slot within ``grant_timeout_s``: 503 with ``Retry-After``,
and the unmet demand goes to Ray's autoscaler. Tokens, the Host and Origin checks and the
size and rate limits are the same code as ``streamfx serve`` (:mod:`streamfx.server.app`);
node servers have no HTTP port and take offers only through Ray.

WHIP and WHEP (``/whip``, ``/whep/<session>``) are placed the same way: a WHIP offer takes a
slot like ``/offer``, and the session's node answers its ``DELETE`` and its viewers.

The page's ``/ws?caller=ID`` socket stays here: control messages are relayed to the node,
the node's messages come back by long poll, and cluster events are announced on it. When
a node is lost (Ray fails its actor), each of its callers is told ``{"type": "cluster",
"event": "node-lost"}`` and its slot is given back; the page offers again and lands on a
node with room.
"""

from __future__ import annotations

import asyncio
import collections
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import ray
from aiohttp import WSMsgType, web
from ray.exceptions import ActorUnavailableError, RayActorError, RayError

from .. import log
from ..server.app import (CONFIG, STATE, HttpError, add_routes, allowed_host_names, errors_as_json, guard,
                          read_offer, socket_quota)
from ..server.config import ServerConfig
from ..server.control import encode
from ..server.security import RateLimiter
from ..server.whip import add_whip_routes, created, query_controls, read_sdp
from . import node as nodes
from . import slots
from .config import NAMESPACE, ClusterConfig, unreachable
from .status import cluster_metrics, gather

logger = log.get(__name__)
Send = Callable[[str], None]


@dataclass
class Placement:
    caller: str
    node_id: str
    node: str            # the node's name
    server: object       # its actor handle
    slot_id: str


class FrontDoorState:
    def __init__(self, config: ServerConfig, cluster: ClusterConfig) -> None:
        self.config, self.cluster = config, cluster
        self.allowed_hosts = allowed_host_names(config)
        self.placed: dict[str, Placement] = {}
        self.sockets: dict[str, set[Send]] = collections.defaultdict(set)
        self.watchers: dict[str, asyncio.Task] = {}
        self.servers: dict[str, object] = {}
        self.websockets: dict[str, int] = {}
        self.demand = slots.Demand(cluster.demand_ttl_s)
        self.gcs = ThreadPoolExecutor(max_workers=4, thread_name_prefix="streamfx-gcs")
        self.counts = collections.Counter()       # offers, refused, placed, nodes_lost
        self.offer_ms: collections.deque[float] = collections.deque(maxlen=500)
        self.background: list[asyncio.Task] = []

    async def in_gcs(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.gcs, fn, *args)

    async def server_on(self, node_id: str):
        if node_id not in self.servers:
            handle = await self.in_gcs(nodes.find_server, node_id)
            if handle is None:
                return None
            self.servers[node_id] = handle
        return self.servers[node_id]

    def tell(self, caller: str, kind: str, **fields) -> None:
        for send in list(self.sockets.get(caller, ())):
            send(encode(kind, **fields))

    def watch(self, placement: Placement) -> None:
        if placement.node_id not in self.watchers:
            self.watchers[placement.node_id] = asyncio.ensure_future(self._watch(placement.node_id, placement.server,
                                                                                 placement.node))

    async def _watch(self, node_id: str, server, name: str) -> None:
        """Wait on the node server until Ray fails it; then tell its callers and free their slots."""
        while True:
            try:
                await server.watch.remote()
            except ActorUnavailableError:   # unreachable for now; Ray says when it is dead
                await asyncio.sleep(0.5)
                continue
            except RayActorError:
                break
        self.watchers.pop(node_id, None)
        self.servers.pop(node_id, None)
        self.counts["nodes_lost"] += 1
        lost = [p for p in self.placed.values() if p.node_id == node_id]
        logger.warning("node lost", extra={"node": name, "callers": len(lost)})
        for p in lost:
            self.placed.pop(p.caller, None)
            await self.in_gcs(slots.release, p.slot_id)
            self.tell(p.caller, "cluster", event="node-lost", node=name,
                      message=f"node {name} was lost; the call moves to another node")

    async def sweep(self) -> None:
        """Forget calls that ended (their node gave their slot back)."""
        while True:
            await asyncio.sleep(self.cluster.sweep_interval_s)
            if not self.placed:
                continue
            try:
                live = await self.in_gcs(slots.live_slot_ids)
            except Exception:  # noqa: BLE001 - the GCS is briefly unreachable
                continue
            for caller, p in list(self.placed.items()):
                if p.slot_id not in live:
                    self.placed.pop(caller, None)

    async def find(self, caller: str) -> Placement | None:
        """The call ``caller``, placed here or by another front door (each node is asked)."""
        if caller in self.placed:
            return self.placed[caller]
        for node_id, server in (await self.in_gcs(nodes.servers)).items():
            try:
                if await server.has_caller.remote(caller):
                    return Placement(caller, node_id, node_id[:8], server, "")
            except RayActorError:
                continue
        return None


# ---------------------------------------------------------------------------- handlers
async def offer(request: web.Request) -> web.Response:
    config, state = guard(request)
    return web.json_response(await _place(state, await read_offer(request, config.limits)))


async def _place(state: FrontDoorState, sdp: str, controls: tuple[str, ...] = ()) -> dict:
    """Reserve a slot, hand the offer to that node's server, and return its answer (4xx/5xx
    raised, the slot given back)."""
    started = time.perf_counter()
    state.counts["offers"] += 1
    slot = await state.in_gcs(slots.reserve, state.cluster.grant_timeout_s)
    if slot is None:
        raise await _refusal(state)
    server = await state.server_on(slot.node_id)
    if server is None:
        await state.in_gcs(slots.release, slot.id)
        raise HttpError(503, "a node with a free slot has no StreamFX server yet; retry shortly",
                        {"Retry-After": str(state.cluster.retry_after_s)})
    try:
        answer = await server.offer.remote(sdp, slot.id, controls)
    except RayActorError:
        await state.in_gcs(slots.release, slot.id)
        raise HttpError(503, "the node was lost while answering; retry",
                        {"Retry-After": str(state.cluster.retry_after_s)}) from None
    except RayError as exc:   # a bug on the node: this offer fails, the node and the front door go on
        await state.in_gcs(slots.release, slot.id)
        logger.error("node failed to answer an offer", extra={"error": str(exc).splitlines()[0][:300]})
        raise HttpError(500, "the node failed to answer the offer") from None
    if "error" in answer:
        await state.in_gcs(slots.release, slot.id)
        raise HttpError(answer["status"], answer["error"],
                        {"Retry-After": str(state.cluster.retry_after_s)} if answer["status"] == 503 else None)
    placement = Placement(answer["caller"], slot.node_id, answer["node"], server, slot.id)
    state.placed[placement.caller] = placement
    state.watch(placement)
    state.counts["placed"] += 1
    state.offer_ms.append((time.perf_counter() - started) * 1000.0 - answer.get("node_ms", 0.0))
    return answer


# -- WHIP and WHEP, placed like /offer (the session's node answers; see server/whip.py) ----
async def whip_post(request: web.Request) -> web.Response:
    _, state = guard(request, any_origin=True)
    controls = tuple(query_controls(request))
    answer = await _place(state, await read_sdp(request), controls)
    return created(answer["sdp"], f"/whip/{answer['caller']}")


async def _placed(state: FrontDoorState, session: str) -> Placement:
    placement = await state.find(session)
    if placement is None:
        raise HttpError(404, "no such session")
    return placement


async def _ask(call) -> dict:
    """A node's answer to a WHIP/WHEP request; its error raised as the HTTP error."""
    try:
        result = await call
    except RayActorError:
        raise HttpError(503, "the session's node was lost") from None
    if "error" in result:
        raise HttpError(result["status"], result["error"])
    return result


async def whip_delete(request: web.Request) -> web.Response:
    _, state = guard(request, any_origin=True)
    placement = await _placed(state, request.match_info["session"])
    try:
        found = await placement.server.end.remote(placement.caller)
    except RayActorError:
        found = False
    if not found:
        raise HttpError(404, "no such session")
    return web.Response(status=200)


async def whep_post(request: web.Request) -> web.Response:
    _, state = guard(request, any_origin=True)
    placement = await _placed(state, request.match_info["session"])
    sdp = await read_sdp(request)
    result = await _ask(placement.server.whep.remote(placement.caller, sdp))
    return created(result["sdp"], f"/whep/{placement.caller}/{result['viewer']}")


async def whep_delete(request: web.Request) -> web.Response:
    _, state = guard(request, any_origin=True)
    placement = await _placed(state, request.match_info["session"])
    await _ask(placement.server.end_whep.remote(placement.caller, request.match_info["viewer"]))
    return web.Response(status=200)


async def _refusal(state: FrontDoorState) -> HttpError:
    """The 503 for an offer no node has room for; the unmet demand goes to the autoscaler."""
    state.counts["refused"] += 1
    found = await state.in_gcs(slots.node_slots)
    alive = [n for n in found if n.alive]
    total, free = sum(n.total for n in alive), sum(n.free for n in alive)
    try:
        wanted = await state.in_gcs(state.demand.refused, total - free)
    except Exception:  # noqa: BLE001 - the refusal stands without an autoscaler to tell
        logger.warning("could not tell the autoscaler", exc_info=True)
        wanted = None
    logger.info("offer refused: no free slot", extra={"nodes": len(alive), "slots": total, "asked_for": wanted})
    return HttpError(503, f"no free slot in the cluster ({len(alive)} node(s), {total} slot(s), all in use); "
                         f"retry after {state.cluster.retry_after_s} s",
                    {"Retry-After": str(state.cluster.retry_after_s)})


async def websocket(request: web.Request) -> web.WebSocketResponse:
    """``?caller=ID``: that caller's control, relayed to its node; without, the admin's view."""
    caller = request.query.get("caller")
    config, state = guard(request, admin=not caller)
    placement = None
    if caller:
        placement = await state.find(caller)
        if placement is None:
            raise HttpError(404, "no such caller")
    with socket_quota(request, state.websockets, config.limits):
        ws = web.WebSocketResponse(max_msg_size=config.limits.max_control_bytes, heartbeat=20.0)
        await ws.prepare(request)
        if placement is None:
            await _admin_socket(ws, state)
        else:
            await _relay(ws, placement, state)
    return ws


async def _relay(ws: web.WebSocketResponse, placement: Placement, state: FrontDoorState) -> None:
    limits = state.config.limits
    limiter = RateLimiter(limits.control_rate_per_s, limits.control_burst)

    def send(text: str) -> None:
        if not ws.closed:
            asyncio.ensure_future(ws.send_str(text))

    async def pump(seq: int) -> None:
        while True:
            try:
                got = await placement.server.events.remote(placement.caller, seq, 5.0)
            except ActorUnavailableError:
                await asyncio.sleep(0.5)
                continue
            except RayActorError:
                return  # the node watcher tells the page
            if got is None:
                send(encode("cluster", event="ended", message="the call ended"))
                return
            seq, items = got
            for text in items:
                send(text)

    try:   # this socket's place in the caller's outbox, taken before any message is relayed
        start = await placement.server.events.remote(placement.caller, None, 0.0)
    except RayError:
        start = None
    if start is None:
        send(encode("cluster", event="ended", message="the call ended"))
        return
    state.sockets[placement.caller].add(send)
    pumping = asyncio.ensure_future(pump(start[0]))
    try:
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                send(encode("error", message="only text (JSON) messages are accepted"))
            elif not limiter.allow():
                send(encode("error", message="too many control messages; slow down"))
            else:
                asyncio.ensure_future(_forward(placement, msg.data, send))
    finally:
        pumping.cancel()
        state.sockets[placement.caller].discard(send)
        if not state.sockets[placement.caller]:
            del state.sockets[placement.caller]


async def _forward(placement: Placement, text: str, send: Send) -> None:
    try:
        if not await placement.server.control.remote(placement.caller, text):
            send(encode("cluster", event="ended", message="the call ended"))
    except RayActorError:
        pass  # the node watcher tells the page


async def _admin_socket(ws: web.WebSocketResponse, state: FrontDoorState) -> None:
    async def push() -> None:
        while True:
            view = await gather()
            if not ws.closed:
                await ws.send_str(encode("stats", cluster=view))
            await asyncio.sleep(state.config.stats_interval_s)

    pusher = asyncio.ensure_future(push())
    try:
        async for _ in ws:
            pass
    finally:
        pusher.cancel()


async def info(request: web.Request) -> web.Response:
    _, state = guard(request)
    view = await gather()
    body: dict = {"state": "ready" if view["nodes"] else "no-nodes", "cluster": _summary(view)}
    for node in view["nodes"]:
        if node.get("info"):
            body.update(node["info"])
            break
    body["callers"] = sum(n.get("callers", 0) for n in view["nodes"])
    body["capacity"] = body["cluster"]["slots"]
    return web.json_response(body)


def _summary(view: dict) -> dict:
    live = [n for n in view["nodes"] if n.get("alive")]
    return {"nodes": len(live), "slots": sum(n["slots"] for n in live), "free": sum(n["free"] for n in live)}


async def healthz(request: web.Request) -> web.Response:
    healthy = ray.is_initialized()
    return web.Response(text="ok" if healthy else "unhealthy", status=200 if healthy else 503)


async def metrics_text(request: web.Request) -> web.Response:
    _, state = guard(request, admin=True)
    view = await gather()
    text = cluster_metrics(view, state.counts, state.demand.waiting(), list(state.offer_ms))
    return web.Response(text=text, content_type="text/plain", charset="utf-8",
                        headers={"X-Content-Type-Options": "nosniff"})


# ---------------------------------------------------------------------------- app
def connect(address: str) -> None:
    """Join the Ray cluster at ``address`` as a driver (on the main thread, so that Ray can set
    its signal handlers); a one-line error when it cannot."""
    if ray.is_initialized():
        return
    reason = unreachable(address)
    if reason is not None:
        raise ConnectionError(f"cannot join the Ray cluster: {reason}")
    try:
        ray.init(address=address, namespace=NAMESPACE, log_to_driver=False, configure_logging=False)
    except Exception as exc:  # noqa: BLE001 - unreachable, refused token ...
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConnectionError(f"cannot join the Ray cluster at {address}: {first[:300]}") from None


def create_front_door(config: ServerConfig, cluster: ClusterConfig) -> web.Application:
    """The front door's app; connects to the Ray cluster at start (unless already connected)."""
    app = web.Application(client_max_size=config.limits.max_sdp_bytes + 4096, middlewares=[errors_as_json])
    state = FrontDoorState(config, cluster)
    app[CONFIG], app[STATE] = config, state

    async def on_startup(app: web.Application) -> None:
        if not ray.is_initialized():
            await state.in_gcs(connect, cluster.address)
        state.background.append(asyncio.ensure_future(state.sweep()))

    async def on_cleanup(app: web.Application) -> None:
        for task in [*state.background, *state.watchers.values()]:
            task.cancel()
        state.gcs.shutdown(wait=False, cancel_futures=True)

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    add_routes(app, config, info=info, healthz=healthz, metrics=metrics_text, offer=offer, websocket=websocket)
    add_whip_routes(app, whip_post=whip_post, whip_delete=whip_delete, whep_post=whep_post, whep_delete=whep_delete)
    return app
