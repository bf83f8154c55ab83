"""Callers: one WebRTC peer connection, its pipeline, its control channel and stats.

A :class:`Caller` applies control commands (from its data channel or from ``/ws``), pushes
stats once a second to every listener, and closes itself alone when anything of its own
fails. Nothing slow runs on the event loop: the session opens and closes on the session
executor (:meth:`Caller.open`, :meth:`Caller.close`), prompts are decoded and their tokens
computed on the prompt executor, never on the frame executor.

**Prompts coalesce.** A caller has at most one prompt in work and one waiting: a newer
prompt replaces a waiting one (which is answered "replaced"), so a flood of prompts costs one
decode at a time, and the previous prompt stays on screen until the newest is ready.
**One rate limit per caller**, shared by its data channel and every ``/ws`` socket of it.
:class:`CallerRegistry` holds the callers and closes everyone on shutdown.
"""

from __future__ import annotations

import asyncio
import secrets
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Callable

from aiortc import RTCDataChannel, RTCPeerConnection

from .. import log
from ..pipeline.engine import Engine, PromptError
from ..pipeline.processor import CallerPipeline
from ..pipeline.prompts import ReferenceError, ReferenceLimits, image_prompt, preset_prompt
from ..styles import StyleError, match_name
from . import control
from .config import ServerConfig
from .image_decoder import ImageDecoder
from .security import RateLimiter
from .tracks import FilteredTrack

logger = log.get(__name__)
Send = Callable[[str], None]


@dataclass(frozen=True)
class Executors:
    """Where work runs: frames, prompt tokens, session open/close (thread pools), and
    reference-image decoding (a child process)."""

    frames: Executor
    prompts: Executor
    sessions: Executor
    images: ImageDecoder


class Caller:
    def __init__(self, pc: RTCPeerConnection, engine: Engine, config: ServerConfig, executors: Executors,
                 pipeline: CallerPipeline) -> None:
        self.id = secrets.token_hex(6)
        self.pc = pc
        self.engine = engine
        self.config = config
        self.executors = executors
        self.executor = executors.frames
        self.pipeline = pipeline
        self.track: FilteredTrack | None = None
        self.listeners: set[Send] = set()
        self.closed = asyncio.Event()
        self.limiter = RateLimiter(config.limits.control_rate_per_s, config.limits.control_burst)
        self._stats_task = asyncio.ensure_future(self._push_stats())
        self._prompt_task: asyncio.Task | None = None
        self._waiting_prompt: tuple[control.Command, Send, asyncio.Future] | None = None
        self.extra_stats: Callable[[], dict] = dict

    @classmethod
    async def open(cls, pc: RTCPeerConnection, engine: Engine, config: ServerConfig, executors: Executors) -> "Caller":
        """A caller whose session (mediapipe graph, engine state) was opened off the event loop."""
        loop = asyncio.get_running_loop()
        pipeline = await loop.run_in_executor(executors.sessions, CallerPipeline, engine)
        return cls(pc, engine, config, executors, pipeline)

    # -- wiring ---------------------------------------------------------------------------
    def attach_channel(self, channel: RTCDataChannel) -> None:
        if channel.label != "control":
            return

        def send(text: str) -> None:
            if channel.readyState == "open":
                channel.send(text)

        self.listeners.add(send)

        @channel.on("message")
        def on_message(message: str | bytes) -> None:
            asyncio.ensure_future(self.handle(message, send))

        @channel.on("close")
        def on_close() -> None:
            self.listeners.discard(send)

    # -- control --------------------------------------------------------------------------
    async def handle(self, message: str | bytes, reply: Send) -> None:
        """Apply one control message; every outcome is answered, nothing raises."""
        if not self.limiter.allow():
            reply(control.encode("error", message="too many control messages; slow down"))
            return
        limits = self.config.limits
        try:
            command = control.parse(message, limits.max_control_bytes,
                                    ReferenceLimits(limits.max_reference_bytes, limits.max_reference_pixels))
            kind = await self.apply(command, reply)
        except (control.ControlError, PromptError, ReferenceError, StyleError) as exc:
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

    async def apply(self, command: control.Command, reply: Send | None = None) -> str:
        controls = self.pipeline.controls
        if isinstance(command, control.Hello):
            return "info"
        if isinstance(command, control.SetControl):
            if command.name == "quality" and command.value not in self.engine.qualities():
                raise control.ControlError(f"unknown quality {command.value!r}; "
                                           f"choose one of {', '.join(self.engine.qualities())}")
            setattr(controls, command.name, command.value)
            return command.name
        await self._queue_prompt(command, reply or (lambda text: None))
        return "prompt"

    async def _queue_prompt(self, command: control.Command, reply: Send) -> None:
        """Wait until this prompt is on screen, or until a newer one replaced it while it waited."""
        done = asyncio.get_running_loop().create_future()
        if self._waiting_prompt is not None:  # never started: the newest wins
            _, _, replaced = self._waiting_prompt
            if not replaced.done():
                replaced.set_exception(PromptError("replaced by a newer prompt before it was applied"))
        self._waiting_prompt = (command, reply, done)
        if self._prompt_task is None or self._prompt_task.done():
            self._prompt_task = asyncio.ensure_future(self._prompt_worker())
        await done

    async def _prompt_worker(self) -> None:
        while self._waiting_prompt is not None and not self.closed.is_set():
            command, _, done = self._waiting_prompt
            self._waiting_prompt = None
            try:
                await self._set_prompt(command)
            except Exception as exc:  # noqa: BLE001 - answered to the message it belongs to
                if not done.done():
                    done.set_exception(exc)
                continue
            if not done.done():
                done.set_result(None)

    async def _set_prompt(self, command: control.Command) -> None:
        """Decode and prepare a prompt on the prompt executor; the old prompt stays until it is ready."""
        limits = self.config.limits
        loop = asyncio.get_running_loop()
        if isinstance(command, control.ClearPrompt):
            prompt = None
        elif isinstance(command, control.SetPromptName):
            prompt = preset_prompt(match_name(command.name, self.engine.presets(), command.fuzzy))
        else:
            assert isinstance(command, control.SetPromptImage)
            ref_limits = ReferenceLimits(limits.max_reference_bytes, limits.max_reference_pixels)
            image = await self.executors.images.decode(command.data, ref_limits)
            prompt = image_prompt(command.data, "upload", ref_limits, decoded=image)
        await loop.run_in_executor(self.executors.prompts, self.pipeline.set_prompt, prompt)

    # -- stats and lifetime ---------------------------------------------------------------
    def summary(self) -> dict:
        data = self.pipeline.summary()
        data.update(self.extra_stats())
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
        if self._waiting_prompt is not None and not self._waiting_prompt[2].done():
            self._waiting_prompt[2].set_exception(PromptError("the call closed"))
        if self.track is not None:
            self.track.stop()
        try:
            await self.pc.close()
        except Exception:  # noqa: BLE001 - aiortc can fail closing a half-negotiated peer; the session still closes
            logger.warning("peer connection did not close cleanly", extra={"caller": self.id}, exc_info=True)
        # Joins the session's worker threads (the encoder may be mid-frame): never on the loop.
        await asyncio.get_running_loop().run_in_executor(self.executors.sessions, self.pipeline.close)
        logger.info("caller closed", extra={"caller": self.id})


class CallerRegistry:
    def __init__(self) -> None:
        self.callers: dict[str, Caller] = {}

    def add(self, caller: Caller) -> None:
        self.callers[caller.id] = caller

    async def remove(self, caller: Caller) -> None:
        self.callers.pop(caller.id, None)
        await caller.close()

    async def close_all(self) -> None:
        await asyncio.gather(*(self.remove(c) for c in list(self.callers.values())), return_exceptions=True)
