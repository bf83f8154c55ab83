"""The camera's control page: the call page's controls and stats, for ``streamfx camera``.

``streamfx camera`` reads the camera itself, so the page asks for no camera permission: it
receives two previews over WebRTC (the original, then the filtered frames, newest only) and
drives the camera's pipeline through a controlled :class:`~streamfx.server.session.Session`
on its data channel, the same messages as a call. It runs on its own event-loop thread;
the camera loop hands it frames with :meth:`ControlPage.show`. The server's rules hold:
127.0.0.1 by default, a token when bound elsewhere, the Host and Origin checks, the size and
rate limits. Every change is saved (:mod:`.settings`) and applies to the next frame.
"""

from __future__ import annotations

from dataclasses import asdict
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numpy as np
from aiohttp import web
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaRelay

from .. import log
from ..pipeline.processor import CallerPipeline
from ..server import control, ice
from ..server.app import CONFIG, STATE, HttpError, allowed_host_names, errors_as_json, guard, index, read_offer
from ..server.config import ServerConfig
from ..server.gallery import add_gallery_route
from ..server.image_decoder import ImageDecoder
from ..server.loop_thread import LoopThread
from ..server.session import Executors, Session
from ..server.tracks import FrameFeed
from .settings import CameraSettings, SettingsStore

logger = log.get(__name__)
MAX_VIEWERS = 4  # open previews at once (each one encodes two videos)


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


class ControlPage:
    """The page's server. ``status()``: what the camera adds to the stats (outputs, the
    virtual microphone); ``mic``: the virtual microphone, whose offset the page sets."""

    def __init__(self, pipeline: CallerPipeline, config: ServerConfig, store: SettingsStore,
                 status: Callable[[], dict] = dict, mic=None) -> None:
        self.pipeline, self.config, self.store, self.status, self.mic = pipeline, config, store, status, mic
        self.engine = pipeline.engine
        self.allowed_hosts = allowed_host_names(config)
        self.viewers: set[RTCPeerConnection] = set()
        self.thread = LoopThread("streamfx-page")
        try:
            self.port = self.thread.call(self._start())
        except BaseException:
            self.thread.stop()
            raise

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.config.host in ("0.0.0.0", "::", "") else self.config.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}/" + (f"?token={self.config.token}" if self.config.token else "")

    # -- on the loop ----------------------------------------------------------------------
    async def _start(self) -> int:
        if not self.config.exposed:
            ice.enable_loopback_candidates()  # the browser is on this machine: offline works too
        prompts = ThreadPoolExecutor(max_workers=1, thread_name_prefix="streamfx-page-prompt")
        self.executors = Executors(frames=prompts, prompts=prompts, sessions=prompts, images=ImageDecoder())
        self.session = Session(self.engine, self.config, self.executors, self.pipeline)
        self.session.extra_stats = self.status
        self.session.extra_commands = self._mic_command
        self.session.applied.append(self.save)
        self.original, self.filtered, self.relay = FrameFeed(), FrameFeed(), MediaRelay()

        app = web.Application(client_max_size=self.config.limits.max_sdp_bytes + 4096, middlewares=[errors_as_json])
        app[CONFIG], app[STATE] = self.config, self  # type: ignore[assignment]
        app.router.add_get("/", index)
        app.router.add_get("/api/info", self._info)
        app.router.add_get("/healthz", _healthz)
        app.router.add_post("/offer", self._offer)
        app.router.add_static("/client/", self.config.web_root, show_index=False)
        add_gallery_route(app, lambda request: self.engine, guard)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        for port in (self.config.port, 0):  # the usual port, else any free one (the URL is printed)
            try:
                site = web.TCPSite(self.runner, self.config.host, port)
                await site.start()
                break
            except OSError as exc:
                if port == 0:
                    raise
                logger.info("control page port busy; using another", extra={"port": port, "error": str(exc)})
        return self.runner.addresses[0][1]

    async def _info(self, request: web.Request) -> web.Response:
        guard(request)
        return web.json_response({"state": "ready", "mode": "camera", **self.engine.info(), **self.status(),
                                  "settings": asdict(self.settings())})

    async def _offer(self, request: web.Request) -> web.Response:
        config, _ = guard(request)
        sdp = await read_offer(request, config.limits)
        if len(self.viewers) >= MAX_VIEWERS:
            raise HttpError(503, f"{MAX_VIEWERS} previews are open already; close one")
        pc = RTCPeerConnection(ice.rtc_configuration(config.ice_servers))
        self.viewers.add(pc)

        @pc.on("datachannel")
        def on_datachannel(channel) -> None:
            self.session.attach_channel(channel)

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                self.viewers.discard(pc)
                await pc.close()

        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            for feed in (self.original, self.filtered):  # the offer's two video transceivers, in order
                pc.addTrack(self.relay.subscribe(feed, buffered=False))
            await ice.answer_as_dtls_server(pc)
        except Exception as exc:  # noqa: BLE001 - a malformed offer is the page's problem, not the camera's
            self.viewers.discard(pc)
            await pc.close()
            raise HttpError(400, f"could not use the offer: {(str(exc).splitlines() or [''])[0][:200]}") from None
        local = pc.localDescription
        return web.json_response({"sdp": local.sdp, "type": local.type, "caller": self.session.id})

    def _mic_command(self, command: control.Command) -> str | None:
        if not isinstance(command, control.SetMicOffset):
            return None
        if self.mic is None:
            raise control.ControlError("no virtual microphone: start the camera with --virtual-mic")
        self.mic.offset_ms = command.ms
        return "mic_offset"

    def settings(self) -> CameraSettings:
        return CameraSettings.of(self.pipeline.controls, self.mic.offset_ms if self.mic is not None else 0.0)

    def save(self) -> None:
        self.store.save(self.settings(), self.pipeline.controls.prompt)

    async def _stop(self) -> None:
        for pc in list(self.viewers):
            await pc.close()
        await self.session.close_controls()
        for feed in (self.original, self.filtered):
            feed.stop()
        await self.runner.cleanup()

    # -- from the camera loop -------------------------------------------------------------
    def show(self, original: np.ndarray, filtered: np.ndarray, read_at: float) -> None:
        """The newest frame and its filtered result (previews skip what the page cannot take)."""
        if self.viewers:
            self.thread.soon(self.original.put, original, read_at)
            self.thread.soon(self.filtered.put, filtered, read_at)

    def close(self) -> None:
        try:
            self.thread.call(self._stop(), timeout=10)
        except Exception:  # noqa: BLE001 - closing must not hide the camera's own outcome
            logger.warning("control page did not close cleanly", exc_info=True)
        finally:
            self.executors.images.close()
            self.executors.prompts.shutdown(wait=False, cancel_futures=True)
            self.thread.stop()
