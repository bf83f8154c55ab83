"""Callers: one WebRTC peer connection around a controlled :class:`~.session.Session`.

A :class:`Caller` takes the caller's video (filtered) and audio (delayed to match), hands
copies of both to the caller and its WHEP viewers, and closes itself alone when anything of
its own fails. The session opens and closes on the session executor (:meth:`Caller.open`,
:meth:`Caller.close`), never on the event loop. :class:`CallerRegistry` holds the callers and
closes everyone on shutdown.
"""

from __future__ import annotations

import asyncio
from typing import Callable

from aiortc import RTCPeerConnection
from aiortc.contrib.media import MediaRelay

from .. import log
from ..pipeline.engine import Engine
from ..pipeline.processor import CallerPipeline
from .config import ServerConfig
from .audio_track import SyncedAudioTrack
from .sender_reports import SenderReports, hold_audio
from .session import Executors, Session
from .text_prompts import CallerText, TextModel
from .tracks import FilteredTrack, Sent, SendTimed

logger = log.get(__name__)


class Caller(Session):
    def __init__(self, pc: RTCPeerConnection, engine: Engine, config: ServerConfig, executors: Executors,
                 pipeline: CallerPipeline) -> None:
        super().__init__(engine, config, executors, pipeline)
        self.pc = pc
        self.executor = executors.frames
        self.track: FilteredTrack | None = None
        self.audio: SyncedAudioTrack | None = None  # the caller's voice, delayed to its filtered video
        self.reports = SenderReports(fit="earliest")  # the caller's RTCP sender reports: its capture clock
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

    # -- stats and lifetime ---------------------------------------------------------------
    def summary(self) -> dict:
        data = super().summary()
        data["connection"] = self.pc.connectionState
        data["queued"] = self.track.queued if self.track else 0
        return data

    async def close(self) -> None:
        if self.closed.is_set():
            return
        await self.close_controls()
        if self.on_close is not None:
            try:
                self.on_close(self)
            except Exception:  # noqa: BLE001 - the call still closes
                logger.exception("on_close failed", extra={"caller": self.id})
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
