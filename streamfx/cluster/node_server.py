"""The node server: one node's engine, admission and aiortc peers, inside a Ray actor.

It is ``streamfx serve`` without HTTP: the same :class:`~streamfx.server.app.ServerState`
and :func:`~streamfx.server.app.open_call`, driven by a front door through Ray method calls.
Media never passes through Ray: the caller's peer connection ends here, at the node.

A call holds the slot its front door reserved (:mod:`.slots`). The node gives the slot back
when the call ends, however it ends, and ends a call whose slot is gone (its front door
died, so nobody can relay its control messages or move it). While draining, the node takes
no new call and Ray places none here (a drained node is not schedulable).

Messages for a caller (stats, acks, progress) queue in its outbox; a front door reads them
with :meth:`NodeServer.events`, a long poll, and relays them to the page's socket.
"""

from __future__ import annotations

import asyncio
import collections
import time

from .. import log
from ..server import ice
from ..server.app import HttpError, ServerState, open_call
from ..server.config import ServerConfig
from ..server.control import encode
from ..server.whip import add_viewer, apply_controls, end_viewer
from . import slots
from .config import ClusterConfig

logger = log.get(__name__)
OUTBOX = 64   # messages kept per caller for its front door; the oldest go first


class _Outbox:
    """A caller's last :data:`OUTBOX` messages, numbered, so that each reader (one per open
    socket, on any front door) keeps its own place."""

    def __init__(self) -> None:
        self.items: collections.deque[tuple[int, str]] = collections.deque(maxlen=OUTBOX)
        self.last = 0
        self.changed = asyncio.Condition()
        self.ended = False

    def push(self, text: str) -> None:
        self.last += 1
        self.items.append((self.last, text))
        asyncio.ensure_future(self._notify())

    async def _notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    def after(self, seq: int) -> list[tuple[int, str]]:
        return [item for item in self.items if item[0] > seq]


class NodeServer:
    """Created with ``.options(name=config.server_name(node_id), ...)`` by :func:`.node.start_server`."""

    def __init__(self, config: ServerConfig, name: str, slot_count: int, cluster: ClusterConfig) -> None:
        self.config, self.name, self.slot_count, self.cluster = config, name, slot_count, cluster
        self.state: ServerState | None = None
        self.node_id: str | None = None
        self.slot_of: dict[str, str] = {}          # caller id -> slot id
        self.outboxes: dict[str, _Outbox] = {}
        self.draining = False
        self.started = time.time()
        self._forever = asyncio.Event()
        self._tasks: list[asyncio.Task] = []

    # -- lifetime -------------------------------------------------------------------------
    async def start(self) -> dict:
        """Load the engine (once); returns what :meth:`stats` returns."""
        if self.state is None:
            import ray

            if self.config.ice_loopback:
                ice.enable_loopback_candidates()
            self.node_id = ray.get_runtime_context().get_node_id()
            self.state = ServerState(self.config, None)
            self.state.loop_monitor.start()
            self._tasks += [asyncio.ensure_future(self.state.observe()), asyncio.ensure_future(self._watch_slots())]
            await self.state.load_engine()
        if self.state.engine is None:
            raise RuntimeError(f"node {self.name}: engine failed to load: {self.state.engine_error}")
        return await self.stats()

    async def watch(self) -> None:
        """Never returns: a front door awaits it, and Ray fails it when this node is lost."""
        await self._forever.wait()

    async def drain(self) -> int:
        """Take no new calls; returns the calls still running."""
        self.draining = True
        logger.info("draining", extra={"node": self.name, "callers": len(self.state.registry.callers)})
        return len(self.state.registry.callers)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await self.state.registry.close_all()
        await asyncio.get_running_loop().run_in_executor(None, self.state.shutdown_executors)
        self.state.loop_monitor.stop()

    # -- calls ----------------------------------------------------------------------------
    async def offer(self, sdp: str, slot_id: str, controls: tuple[str, ...] = ()) -> dict:
        """Answer an offer whose slot ``slot_id`` was reserved on this node: the answer
        (``sdp``, ``type``, ``caller``, ``node``), or ``{"status": 4xx/5xx, "error": reason}``.
        ``controls``: control messages applied before the answer (WHIP's query)."""
        if self.draining:
            return {"status": 503, "error": f"node {self.name} is draining"}
        if self.state is None or self.state.engine is None:
            return {"status": 503, "error": f"node {self.name} is still starting; retry shortly"}
        started = time.perf_counter()
        try:
            caller = await open_call(self.state, sdp, on_close=self._ended)
        except HttpError as exc:
            return {"status": exc.status, "error": str(exc)}
        self.slot_of[caller.id] = slot_id
        try:
            await apply_controls(caller, list(controls))
        except HttpError as exc:
            await self.state.registry.remove(caller)  # gives the slot back
            return {"status": exc.status, "error": str(exc)}
        box = self.outboxes[caller.id] = _Outbox()
        caller.listeners.add(box.push)
        local = caller.pc.localDescription
        logger.info("call placed", extra={"node": self.name, "caller": caller.id})
        return {"sdp": local.sdp, "type": local.type, "caller": caller.id, "node": self.name,
                "node_ms": round((time.perf_counter() - started) * 1000.0, 2)}

    def _ended(self, caller) -> None:
        slot_id = self.slot_of.pop(caller.id, None)
        box = self.outboxes.pop(caller.id, None)
        if box is not None:
            box.ended = True
            asyncio.ensure_future(box._notify())
        if slot_id is not None:
            asyncio.get_running_loop().run_in_executor(None, slots.release, slot_id)

    async def control(self, caller_id: str, message: str) -> bool:
        """Apply one control message relayed by a front door; answers go to the outbox.
        False: no such caller here."""
        caller = self.state.registry.callers.get(caller_id)
        box = self.outboxes.get(caller_id)
        if caller is None or box is None:
            return False
        await caller.handle(message, box.push)
        return True

    async def events(self, caller_id: str, after: int | None = None,
                     timeout_s: float = 5.0) -> tuple[int, list[str]] | None:
        """The caller's messages numbered past ``after`` (None: from now on), waiting up to
        ``timeout_s`` for one: ``(the last number, texts)``; None once the call ended."""
        box = self.outboxes.get(caller_id)
        if box is None or box.ended:
            return None
        seq = box.last if after is None else after
        if not box.after(seq):
            async with box.changed:
                try:
                    await asyncio.wait_for(box.changed.wait_for(lambda: box.ended or box.after(seq)), timeout_s)
                except asyncio.TimeoutError:
                    pass
        items = box.after(seq)
        if box.ended and not items:
            return None
        return (items[-1][0] if items else seq), [text for _, text in items]

    async def end(self, caller_id: str) -> bool:
        """End a call (WHIP's DELETE); False: no such caller here."""
        caller = self.state.registry.callers.get(caller_id)
        if caller is None:
            return False
        await self.state.registry.remove(caller)
        return True

    async def whep(self, caller_id: str, sdp: str) -> dict:
        """A WHEP viewer of a call here: ``{"sdp", "viewer"}`` or ``{"status", "error"}``."""
        caller = self.state.registry.callers.get(caller_id)
        if caller is None:
            return {"status": 404, "error": "no such session"}
        try:
            answer, viewer = await add_viewer(self.state.config, caller, sdp)
        except HttpError as exc:
            return {"status": exc.status, "error": str(exc)}
        return {"sdp": answer, "viewer": viewer}

    async def end_whep(self, caller_id: str, viewer: str) -> dict:
        caller = self.state.registry.callers.get(caller_id)
        try:
            if caller is None:
                raise HttpError(404, "no such session")
            await end_viewer(caller, viewer)
        except HttpError as exc:
            return {"status": exc.status, "error": str(exc)}
        return {}

    async def has_caller(self, caller_id: str) -> bool:
        return caller_id in self.state.registry.callers

    async def _watch_slots(self) -> None:
        """End calls whose slot is gone: their front door died (its job's slots went with it)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.cluster.watch_interval_s)
            if not self.slot_of:
                continue
            try:
                live = await loop.run_in_executor(None, slots.live_slot_ids)
            except Exception:  # noqa: BLE001 - the GCS is briefly unreachable; try again
                continue
            for caller_id, slot_id in list(self.slot_of.items()):
                caller = self.state.registry.callers.get(caller_id)
                if slot_id not in live and caller is not None:
                    logger.info("slot gone (its front door ended); call ended",
                                extra={"node": self.name, "caller": caller_id})
                    for send in list(caller.listeners):
                        send(encode("cluster", event="front-door-lost",
                                    message="the front door that placed this call is gone; call again"))
                    await self.state.registry.remove(caller)

    # -- stats ----------------------------------------------------------------------------
    async def stats(self) -> dict:
        state = self.state
        if state is None:
            return {"node": self.name, "node_id": self.node_id, "slots": self.slot_count, "draining": self.draining,
                    "callers": 0, "fps": 0.0, "caller_ids": [], "capacity": None, "engine": self.config.engine,
                    "info": {}, "device": self.config.engine_options.device, "loop_lag_ms": 0.0,
                    "uptime_s": round(time.time() - self.started, 1), "caller_stats": [], "starting": True}
        callers = [c.summary() for c in state.registry.callers.values()]
        engine = state.engine.info() if state.engine is not None else {}
        return {"node": self.name, "node_id": self.node_id, "slots": self.slot_count, "draining": self.draining,
                "callers": len(callers), "fps": round(sum(c.get("fps_out") or 0.0 for c in callers), 2),
                "caller_ids": [c["caller"] for c in callers], "capacity": state.capacity(),
                "engine": engine.get("engine", self.config.engine), "info": engine, "device": self.config.engine_options.device,
                "loop_lag_ms": state.loop_monitor.p99_ms(), "uptime_s": round(time.time() - self.started, 1),
                "caller_stats": callers}
