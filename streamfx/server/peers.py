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
**Text** (``{"type": "prompt", "text": ...}``): an exact or case-insensitive style name wins;
else, with ``--text-model``, a reference is generated from the caller's face in the background
(:mod:`streamfx.server.text_prompts`); else the closest name (the only fuzzy matching).
:class:`CallerRegistry` holds the callers and closes everyone on shutdown.
"""

from __future__ import annotations

import asyncio
import secrets
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Callable

from aiortc import RTCDataChannel, RTCPeerConnection
from aiortc.contrib.media import MediaRelay

from .. import log
from ..pipeline.engine import Engine, PromptError
from ..pipeline.processor import CallerPipeline
from ..pipeline.prompts import ReferenceError, ReferenceLimits, image_prompt, preset_prompt
from ..styles import StyleError, match_name
from ..styles.text import TextModelError
from . import control
from .config import ServerConfig
from .audio_track import SyncedAudioTrack
from .image_decoder import ImageDecoder
from .security import RateLimiter
from .sender_reports import SenderReports, hold_audio
from .text_prompts import CallerText, Dropped, GeneratedPrompt, TextModel, style_thumbnail
from .tracks import FilteredTrack, Sent, SendTimed

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
        self.audio: SyncedAudioTrack | None = None  # the caller's voice, delayed to its filtered video
        self.reports = SenderReports(fit="earliest")  # the caller's RTCP sender reports: its capture clock
        self.listeners: set[Send] = set()
        self.closed = asyncio.Event()
        self.limiter = RateLimiter(config.limits.control_rate_per_s, config.limits.control_burst)
        self._stats_task = asyncio.ensure_future(self._push_stats())
        self._prompt_task: asyncio.Task | None = None
        self._waiting_prompt: tuple[control.Command, Send, asyncio.Future] | None = None
        self.text: CallerText | None = None  # set by the registry when the server has a text model
        self.extra_stats: Callable[[], dict] = dict
        self.relay = MediaRelay()              # one filtered track, several receivers (the caller, WHEP viewers)
        self.viewers: set[RTCPeerConnection] = set()
        self.on_close: Callable[["Caller"], None] | None = None  # told once when the call ends (the cluster's slot)
        self.pushes: list = []                 # WHIP publishers of this session (serve --whip-out)

    @classmethod
    async def open(cls, pc: RTCPeerConnection, engine: Engine, config: ServerConfig, executors: Executors) -> "Caller":
        """A caller whose session (mediapipe graph, engine state) was opened off the event loop."""
        loop = asyncio.get_running_loop()
        pipeline = await loop.run_in_executor(executors.sessions, CallerPipeline, engine)
        return cls(pc, engine, config, executors, pipeline)

    # -- wiring ---------------------------------------------------------------------------
    def watch(self):
        """A copy of the filtered track for one receiver; the newest frame only, never a queue.
        Its send times set the audio's delay."""
        return SendTimed(self.relay.subscribe(self.track, buffered=False), self._video_sent)

    def watch_audio(self):
        """A copy of the synced audio for one receiver (every block: audio must not skip)."""
        return self.relay.subscribe(self.audio, buffered=True)

    def receive(self, track, on_failure: Callable[[], object]) -> bool:
        """Take one of the caller's incoming tracks: its first video is filtered, its first audio
        delayed to match; False for any other (the caller drains it). ``on_failure``: the frame
        worker died (the server removes the caller)."""
        if track.kind == "video" and self.track is None:
            self.reports.tap_track(self.pc, track)
            self.track = FilteredTrack(track, self.pipeline, self.executor,
                                       on_failure=on_failure,
                                       max_fps=self.config.max_fps)
            self.pc.addTrack(self.watch())  # the caller's own copy; WHEP viewers take others (server/whip.py)
            return True
        if track.kind == "audio" and self.audio is None:
            self.reports.tap_track(self.pc, track)
            hold_audio(self.pc, track, self.config.audio_jitter_frames)
            self.audio = SyncedAudioTrack(track, self.reports)
            self.pc.addTrack(self.watch_audio())
            return True
        return False

    def outputs(self) -> list:
        """Fresh copies of this session's outgoing tracks (video, and audio when it has some)."""
        return [self.watch()] + ([self.watch_audio()] if self.audio is not None else [])

    def _video_sent(self, frame: Sent, at: float) -> None:
        if self.audio is not None:
            self.audio.video_sent(frame.pts, frame.received, at)

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
        else:
            reply(control.encode("ack", **(kind if isinstance(kind, dict) else {"for": kind})))

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
        if self.on_close is not None:
            try:
                self.on_close(self)
            except Exception:  # noqa: BLE001 - the call still closes
                logger.exception("on_close failed", extra={"caller": self.id})
        if self.text is not None:
            self.text.cancel()
        if self._waiting_prompt is not None and not self._waiting_prompt[2].done():
            self._waiting_prompt[2].set_exception(PromptError("the call closed"))
        if self.track is not None:
            self.track.stop()
        if self.audio is not None:
            self.audio.stop()
        for viewer in list(self.viewers):
            await viewer.close()
        for push in self.pushes:
            await push.stop()
        try:
            await self.pc.close()
        except Exception:  # noqa: BLE001 - aiortc can fail closing a half-negotiated peer; the session still closes
            logger.warning("peer connection did not close cleanly", extra={"caller": self.id}, exc_info=True)
        # Joins the session's worker threads (the encoder may be mid-frame): never on the loop.
        await asyncio.get_running_loop().run_in_executor(self.executors.sessions, self.pipeline.close)
        logger.info("caller closed", extra={"caller": self.id})


class CallerRegistry:
    """The callers, and the server's one text model (made on the first caller of a server
    configured with one; its model loads on the first text prompt)."""

    def __init__(self) -> None:
        self.callers: dict[str, Caller] = {}
        self.text_model: TextModel | None = None

    def add(self, caller: Caller) -> None:
        self.callers[caller.id] = caller
        config = caller.config
        if config.text_model is not None:
            if self.text_model is None:
                self.text_model = TextModel(config.text_model, config.text_steps, config.engine_options.device)
            caller.text = CallerText(self.text_model)

    async def remove(self, caller: Caller) -> None:
        self.callers.pop(caller.id, None)
        await caller.close()

    async def close_all(self) -> None:
        if self.text_model is not None:
            self.text_model.close()
        await asyncio.gather(*(self.remove(c) for c in list(self.callers.values())), return_exceptions=True)
