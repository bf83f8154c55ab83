"""WHIP push (RFC 9725): publish a filtered stream to any WHIP ingest, as OBS would.

A :class:`WhipPublisher` POSTs an ``application/sdp`` offer (every ICE candidate in it: no
trickle), takes the ``201 Created`` answer and keeps the session's ``Location`` (resolved
against the endpoint, as the RFC says), and DELETEs it when it stops. When the ingest drops
the connection (ICE fails, the peer closes) or cannot be reached, it offers again after a
backoff (1 s, doubling, at most ``max_backoff_s``). A refusal is one clear log line:
401/403 (the token), 404 (no such endpoint) stop the publisher, since offering again would
be refused again; 5xx and network errors are retried.

Each attempt needs fresh tracks (a closed peer connection ends its senders): ``tracks`` is
called once per attempt, e.g. subscriptions of a :class:`aiortc.contrib.media.MediaRelay`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Callable
from urllib.parse import urljoin

import aiohttp
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from .. import log

logger = log.get(__name__)
SDP = "application/sdp"
PERMANENT = {400: "the ingest could not use the offer", 401: "the ingest wants a (different) token: --whip-token",
             403: "the ingest refused this token", 404: "no such WHIP endpoint (check the URL)",
             405: "that URL does not take WHIP offers", 415: "the ingest does not take application/sdp"}


class WhipRefused(Exception):
    """The ingest answered with an error that offering again will not fix."""


@dataclass
class WhipState:
    state: str = "idle"          # idle, connecting, live, retrying, refused, stopped
    attempts: int = 0
    location: str | None = None
    error: str | None = None


class WhipPublisher:
    def __init__(self, url: str, tracks: Callable[[], list[MediaStreamTrack]], token: str | None = None,
                 configuration: RTCConfiguration | None = None, max_backoff_s: float = 30.0,
                 timeout_s: float = 10.0) -> None:
        self.url, self.tracks, self.token = url, tracks, token
        self.configuration = configuration or RTCConfiguration(iceServers=[])
        self.max_backoff, self.timeout = max_backoff_s, timeout_s
        self.status = WhipState()
        self._task: asyncio.Task | None = None
        self._pc: RTCPeerConnection | None = None
        self._ended = asyncio.Event()
        self.live = asyncio.Event()   # set while connected

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    def _headers(self, content: bool = False) -> dict[str, str]:
        headers = {"Content-Type": SDP} if content else {}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    async def _run(self) -> None:
        backoff = 1.0
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout)) as http:
            while True:
                self.status.attempts += 1
                self.status.state = "connecting"
                try:
                    await self._publish(http)
                    backoff = 1.0
                    await self._ended.wait()  # until the connection drops
                    reason = "the ingest dropped the connection"
                except WhipRefused as exc:
                    self.status.state, self.status.error = "refused", str(exc)
                    logger.error("WHIP push refused", extra={"url": self.url, "reason": str(exc)})
                    await self._close_pc(http)
                    return
                except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError) as exc:
                    reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
                await self._close_pc(http)
                self.status.state, self.status.error = "retrying", reason
                logger.warning("WHIP push interrupted; offering again", extra={"url": self.url, "reason": reason,
                                                                              "in_s": backoff})
                await asyncio.sleep(backoff)
                backoff = min(self.max_backoff, backoff * 2)

    async def _publish(self, http: aiohttp.ClientSession) -> None:
        self._ended.clear()
        pc = self._pc = RTCPeerConnection(self.configuration)
        for track in self.tracks():
            pc.addTransceiver(track, direction="sendonly")

        @pc.on("connectionstatechange")
        def on_state() -> None:
            if pc.connectionState == "connected":
                self.status.state = "live"
                self.live.set()
            elif pc.connectionState in ("failed", "closed"):
                self.live.clear()
                self._ended.set()

        await pc.setLocalDescription(await pc.createOffer())
        async with http.post(self.url, data=pc.localDescription.sdp.encode(), headers=self._headers(True)) as resp:
            body = await resp.text()
            if resp.status != 201:
                reason = _reason(resp.status, body)
                if resp.status in PERMANENT or (400 <= resp.status < 500 and resp.status != 429):
                    raise WhipRefused(reason)
                raise aiohttp.ClientResponseError(resp.request_info, (), status=resp.status, message=reason)
            location = resp.headers.get("Location")
        self.status.location = urljoin(self.url, location) if location else None
        await pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))
        logger.info("WHIP push answered", extra={"url": self.url, "location": self.status.location})

    async def _close_pc(self, http: aiohttp.ClientSession | None) -> None:
        pc, self._pc = self._pc, None
        self.live.clear()
        if self.status.location and http is not None:
            try:
                async with http.delete(self.status.location, headers=self._headers()):
                    pass
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
                pass  # the ingest is gone already
        self.status.location = None
        if pc is not None:
            await pc.close()

    async def stop(self) -> None:
        """End the session at the ingest (DELETE) and stop offering."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - stopping either way
                pass
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            await self._close_pc(http)
        self.status.state = "stopped"


def _reason(status: int, body: str) -> str:
    text = body.strip().splitlines()[0][:200] if body.strip() else ""
    known = PERMANENT.get(status) or ("the ingest failed" if status >= 500 else "refused")
    return f"HTTP {status}: {known}" + (f" ({text})" if text else "")
