"""Callers: one WebRTC peer connection, its pipeline, its control channel and stats.

A :class:`Caller` applies control commands (from its data channel or from ``/ws``), pushes
stats once a second to every listener, and closes itself alone when anything of its own
fails. :class:`CallerRegistry` enforces the caller limit and closes everyone on shutdown.
"""

from __future__ import annotations

import asyncio
import secrets
from concurrent.futures import Executor
from typing import Callable

from aiortc import RTCDataChannel, RTCPeerConnection

from .. import log
from ..pipeline.engine import Engine, PromptError
from ..pipeline.processor import CallerPipeline
from ..pipeline.prompts import ReferenceError, ReferenceLimits, image_prompt, preset_prompt
from ..pipeline.styles import match_name
from . import control
from .config import ServerConfig
from .security import RateLimiter
from .tracks import FilteredTrack

logger = log.get(__name__)
Send = Callable[[str], None]


class Caller:
    def __init__(self, pc: RTCPeerConnection, engine: Engine, config: ServerConfig, executor: Executor) -> None:
        self.id = secrets.token_hex(6)
        self.pc = pc
        self.engine = engine
        self.config = config
        self.executor = executor
        self.pipeline = CallerPipeline(engine)
        self.track: FilteredTrack | None = None
        self.listeners: set[Send] = set()
        self.closed = asyncio.Event()
        self._stats_task = asyncio.ensure_future(self._push_stats())
        self._prompt_lock = asyncio.Lock()

    # -- wiring ---------------------------------------------------------------------------
    def attach_channel(self, channel: RTCDataChannel) -> None:
        if channel.label != "control":
            return
        limiter = RateLimiter(self.config.limits.control_rate_per_s, self.config.limits.control_burst)

        def send(text: str) -> None:
            if channel.readyState == "open":
                channel.send(text)

        self.listeners.add(send)

        @channel.on("message")
        def on_message(message: str | bytes) -> None:
            asyncio.ensure_future(self.handle(message, send, limiter))

        @channel.on("close")
        def on_close() -> None:
            self.listeners.discard(send)

    # -- control --------------------------------------------------------------------------
    async def handle(self, message: str | bytes, reply: Send, limiter: RateLimiter) -> None:
        """Apply one control message; every outcome is answered, nothing raises."""
        if not limiter.allow():
            reply(control.encode("error", message="too many control messages; slow down"))
            return
        limits = self.config.limits
        try:
            command = control.parse(message, limits.max_control_bytes,
                                    ReferenceLimits(limits.max_reference_bytes, limits.max_reference_pixels))
            kind = await self.apply(command)
        except (control.ControlError, PromptError, ReferenceError) as exc:
            reply(control.encode("error", message=str(exc)))
            return
        except Exception:  # noqa: BLE001 - a bug in one command must not end the call
            logger.exception("control message failed", extra={"caller": self.id})
            reply(control.encode("error", message="internal error while applying the message"))
            return
        if kind == "info":
            reply(control.encode("info", caller=self.id, **self.engine.info()))
        else:
            reply(control.encode("ack", **{"for": kind}))

    async def apply(self, command: control.Command) -> str:
        controls = self.pipeline.controls
        if isinstance(command, control.Hello):
            return "info"
        if isinstance(command, control.SetControl):
            if command.name == "quality" and command.value not in self.engine.qualities():
                raise control.ControlError(f"unknown quality {command.value!r}; "
                                           f"choose one of {', '.join(self.engine.qualities())}")
            setattr(controls, command.name, command.value)
            return command.name
        await self._set_prompt(command)
        return "prompt"

    async def _set_prompt(self, command: control.Command) -> None:
        """Decode and prepare a prompt off the event loop; the old prompt stays until it is ready."""
        limits = self.config.limits
        if isinstance(command, control.ClearPrompt):
            prompt = None
        elif isinstance(command, control.SetPromptName):
            prompt = preset_prompt(match_name(command.name, self.engine.presets(), command.fuzzy))
        else:
            assert isinstance(command, control.SetPromptImage)
            prompt = None
        loop = asyncio.get_running_loop()
        async with self._prompt_lock:
            if isinstance(command, control.SetPromptImage):
                ref_limits = ReferenceLimits(limits.max_reference_bytes, limits.max_reference_pixels)
                prompt = await loop.run_in_executor(self.executor, image_prompt, command.data, "upload", ref_limits)
            await loop.run_in_executor(self.executor, self.pipeline.set_prompt, prompt)

    # -- stats and lifetime ---------------------------------------------------------------
    def summary(self) -> dict:
        data = self.pipeline.summary()
        data["caller"] = self.id
        data["connection"] = self.pc.connectionState
        data["queued"] = self.track.queued if self.track else 0
        return data

    async def _push_stats(self) -> None:
        while not self.closed.is_set():
            await asyncio.sleep(self.config.stats_interval_s)
            if self.listeners:
                text = control.encode("stats", **self.summary())
                for send in list(self.listeners):
                    try:
                        send(text)
                    except Exception:  # noqa: BLE001 - a dead listener is dropped, the call goes on
                        self.listeners.discard(send)

    async def close(self) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        self._stats_task.cancel()
        if self.track is not None:
            self.track.stop()
        await self.pc.close()
        self.pipeline.close()
        logger.info("caller closed", extra={"caller": self.id})


class CallerRegistry:
    def __init__(self, max_callers: int) -> None:
        self.max_callers = max_callers
        self.callers: dict[str, Caller] = {}

    @property
    def full(self) -> bool:
        return len(self.callers) >= self.max_callers

    def add(self, caller: Caller) -> None:
        self.callers[caller.id] = caller

    async def remove(self, caller: Caller) -> None:
        self.callers.pop(caller.id, None)
        await caller.close()

    async def close_all(self) -> None:
        await asyncio.gather(*(self.remove(c) for c in list(self.callers.values())), return_exceptions=True)
