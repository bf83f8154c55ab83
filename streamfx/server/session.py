"""A controlled session: the control messages of one pipeline, its prompts and its stats.

A :class:`Session` applies control commands (from a data channel or from ``/ws``) to one
:class:`~streamfx.pipeline.processor.CallerPipeline` and pushes stats once a second to every
listener. A server's caller (:class:`streamfx.server.peers.Caller`) is one, with a peer
connection around it; the camera's control page (:mod:`streamfx.camera.page`) drives another,
whose frames come from a local camera. Nothing slow runs on the event loop: prompts are
decoded and their tokens computed on the prompt executor, never on the frame executor.

**Prompts coalesce.** A session has at most one prompt in work and one waiting: a newer
prompt replaces a waiting one (which is answered "replaced"), so a flood of prompts costs one
decode at a time, and the previous prompt stays on screen until the newest is ready.
**One rate limit per session**, shared by its data channel and every ``/ws`` socket of it.
**Text** (``{"type": "prompt", "text": ...}``): an exact or case-insensitive style name wins;
else, with ``--text-model``, a reference is generated from the face in the background
(:mod:`streamfx.server.text_prompts`); else the closest name (the only fuzzy matching).
**Applied** hooks (:attr:`Session.applied`) run after every command that took effect (the
camera saves its settings there); :attr:`Session.extra_commands` takes the commands that are
not the pipeline's (the camera's microphone offset).
"""

from __future__ import annotations

import asyncio
import secrets
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Callable

from aiortc import RTCDataChannel

from .. import log
from ..pipeline.engine import Engine, PromptError
from ..pipeline.processor import CallerPipeline
from ..pipeline.prompts import ReferenceError, ReferenceLimits, image_prompt, preset_prompt
from ..styles import StyleError, match_name
from ..styles.text import TextModelError
from . import control
from .config import ServerConfig
from .image_decoder import ImageDecoder
from .security import RateLimiter
from .gallery import style_thumbnail
from .text_prompts import CallerText, Dropped, GeneratedPrompt

logger = log.get(__name__)
Send = Callable[[str], None]
TEXT_HINT = "to make a style from text, start the server with --text-model DIR; see the README"
NO_FACE = "no face to edit yet: look at the camera and try again"


@dataclass(frozen=True)
class Executors:
    """Where work runs: frames, prompt tokens, session open/close (thread pools), and
    reference-image decoding (a child process)."""

    frames: Executor
    prompts: Executor
    sessions: Executor
    images: ImageDecoder


class Session:
    """One pipeline under control: commands in, acks and stats out, to every listener."""

    def __init__(self, engine: Engine, config: ServerConfig, executors: Executors, pipeline: CallerPipeline) -> None:
        self.id = secrets.token_hex(6)
        self.engine = engine
        self.config = config
        self.executors = executors
        self.pipeline = pipeline
        self.listeners: set[Send] = set()
        self.closed = asyncio.Event()
        self.limiter = RateLimiter(config.limits.control_rate_per_s, config.limits.control_burst)
        self.text: CallerText | None = None  # set by the registry when the server has a text model
        self.extra_stats: Callable[[], dict] = dict
        self.extra_commands: Callable[[control.Command], str | None] = self._no_extra
        self.applied: list[Callable[[], None]] = []  # called after every command that took effect
        self._stats_task = asyncio.ensure_future(self._push_stats())
        self._prompt_task: asyncio.Task | None = None
        self._waiting_prompt: tuple[control.Command, Send, asyncio.Future] | None = None

    @staticmethod
    def _no_extra(command: control.Command) -> str | None:
        if isinstance(command, control.SetMicOffset):
            raise control.ControlError("there is no virtual microphone here (streamfx camera --virtual-mic has one)")
        return None

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
        except (control.ControlError, PromptError, ReferenceError, StyleError, TextModelError) as exc:
            reply(control.encode("error", message=str(exc)))
            return
        except Exception:  # noqa: BLE001 - a bug in one command must not end the call
            logger.exception("control message failed", extra={"caller": self.id})
            reply(control.encode("error", message="internal error while applying the message"))
            return
        if kind == "info":
            reply(control.encode("info", caller=self.id, **self.engine.info()))
            return
        reply(control.encode("ack", **(kind if isinstance(kind, dict) else {"for": kind})))
        for hook in self.applied:
            try:
                hook()
            except Exception:  # noqa: BLE001 - a hook's failure is its own; the command took effect
                logger.exception("applied hook failed", extra={"caller": self.id})

    async def apply(self, command: control.Command, reply: Send | None = None) -> str | dict:
        """What to acknowledge: the kind, or the ack's fields (a text prompt's)."""
        controls = self.pipeline.controls
        if isinstance(command, control.Hello):
            return "info"
        if isinstance(command, control.SetControl):
            if command.name == "quality" and command.value not in self.engine.qualities():
                raise control.ControlError(f"unknown quality {command.value!r}; "
                                           f"choose one of {', '.join(self.engine.qualities())}")
            setattr(controls, command.name, command.value)
            return command.name
        extra = self.extra_commands(command)
        if extra is not None:
            return extra
        reply = reply or (lambda text: None)
        if isinstance(command, control.SetPromptName) and command.fuzzy:
            return await self._text_prompt(command.name, reply)
        if self.text is not None:
            self.text.cancel()  # a newer prompt: a generation in work is dropped
        note = await self._queue_prompt(command, reply)
        return {"for": "prompt", **note} if note else "prompt"

    async def _text_prompt(self, text: str, reply: Send) -> dict:
        """A style name (exact or any case); else a reference generated from the caller's face
        with the text model; else, without one, the closest style name."""
        loop = asyncio.get_running_loop()
        names = self.engine.presets()
        exact = next((n for n in names if n == text), None) or next(
            (n for n in names if n.lower() == text.lower()), None)
        if exact is not None or self.text is None:
            if exact is None:
                try:
                    name = match_name(text, names, fuzzy=True)
                except StyleError:
                    raise StyleError(f"no style matches {text!r}; known: {', '.join(names) or 'none'}; "
                                     f"{TEXT_HINT}") from None
            else:
                name = exact
            if self.text is not None:
                self.text.cancel()
            note = await self._queue_prompt(control.SetPromptName(name, fuzzy=False), reply)
            ack: dict = {"for": "prompt", **(note or {})}
            if exact is None:
                ack["chose"] = name
            thumb = await loop.run_in_executor(self.executors.prompts, style_thumbnail, self.engine, name)
            return {**ack, "thumbnail": thumb} if thumb else ack
        crop = await loop.run_in_executor(self.executors.prompts, self.pipeline.session.face_crop)
        if crop is None:
            raise PromptError(NO_FACE)

        def progress(step: int, of: int) -> None:
            reply(control.encode("progress", **{"for": "prompt", "step": step, "of": of}))

        try:
            made = await self.text.generate(crop, text, progress)
        except Dropped:
            raise PromptError("replaced by a newer prompt before it was ready") from None
        note = await self._queue_prompt(GeneratedPrompt(made.prompt), reply)
        return {"for": "prompt", **(note or {}), "text": text, "generated": True, "cached": made.cached,
                "thumbnail": made.thumbnail}

    async def _queue_prompt(self, command: control.Command, reply: Send) -> dict | None:
        """Wait until this prompt is on screen, or until a newer one replaced it while it waited;
        return the engine's ack fields for it."""
        done = asyncio.get_running_loop().create_future()
        if self._waiting_prompt is not None:  # never started: the newest wins
            _, _, replaced = self._waiting_prompt
            if not replaced.done():
                replaced.set_exception(PromptError("replaced by a newer prompt before it was applied"))
        self._waiting_prompt = (command, reply, done)
        if self._prompt_task is None or self._prompt_task.done():
            self._prompt_task = asyncio.ensure_future(self._prompt_worker())
        return await done

    async def _prompt_worker(self) -> None:
        while self._waiting_prompt is not None and not self.closed.is_set():
            command, _, done = self._waiting_prompt
            self._waiting_prompt = None
            try:
                note = await self._set_prompt(command)
            except Exception as exc:  # noqa: BLE001 - answered to the message it belongs to
                if not done.done():
                    done.set_exception(exc)
                continue
            if not done.done():
                done.set_result(note)

    async def _set_prompt(self, command: control.Command) -> dict | None:
        """Decode and prepare a prompt on the prompt executor; the old prompt stays until it is ready.
        Returns the engine's ack fields."""
        limits = self.config.limits
        loop = asyncio.get_running_loop()
        if isinstance(command, control.ClearPrompt):
            prompt = None
        elif isinstance(command, GeneratedPrompt):
            prompt = command.prompt
        elif isinstance(command, control.SetPromptName):
            prompt = preset_prompt(match_name(command.name, self.engine.presets(), fuzzy=False))
        else:
            assert isinstance(command, control.SetPromptImage)
            ref_limits = ReferenceLimits(limits.max_reference_bytes, limits.max_reference_pixels)
            image = await self.executors.images.decode(command.data, ref_limits)
            prompt = image_prompt(command.data, "upload", ref_limits, decoded=image)
        return await loop.run_in_executor(self.executors.prompts, self.pipeline.set_prompt, prompt)

    # -- stats and lifetime ---------------------------------------------------------------
    def summary(self) -> dict:
        data = self.pipeline.summary()
        data.update(self.extra_stats())
        data["caller"] = self.id
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

    async def close_controls(self) -> None:
        """Stop the stats and every prompt in work (the pipeline is its owner's to close)."""
        self.closed.set()
        self._stats_task.cancel()
        if self.text is not None:
            self.text.cancel()
        if self._waiting_prompt is not None and not self._waiting_prompt[2].done():
            self._waiting_prompt[2].set_exception(PromptError("the call closed"))
