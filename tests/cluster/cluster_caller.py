"""A caller that behaves as the page does in a cluster (web_client/call.js).

It offers through the front door; a 503 is waited out for its ``Retry-After`` and offered
again. Once placed, it keeps the front door's ``/ws?caller=ID`` socket open; on
``{"type": "cluster", "event": "node-lost"}`` (or ICE failure) it offers again from
scratch, and the call resumes on whichever node Ray places it.
"""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
from aiortc import RTCSessionDescription
from rtc_client import Client, PatternTrack

TOKEN_HEADER = "X-StreamFX-Token"


class Refused(Exception):
    def __init__(self, status: int, reason: str, retry_after: float | None) -> None:
        super().__init__(f"{status}: {reason}")
        self.status, self.reason, self.retry_after = status, reason, retry_after


class ClusterCaller:
    def __init__(self, base: str, token: str, width: int = 160, height: int = 120, fps: int = 8) -> None:
        self.base, self.token = base, token
        self.size, self.fps = (width, height), fps
        self.client: Client | None = None
        self.caller_id: str | None = None
        self.node: str | None = None
        self.nodes: list[str] = []           # every node it was placed on, in order
        self.events: list[dict] = []         # cluster events received on /ws
        self.refusals: list[Refused] = []
        self.frame_times: list[float] = []   # arrival of every frame back, across moves
        self.placed_at = 0.0                 # when the latest placement was answered
        self._socket: asyncio.Task | None = None
        self._moving: asyncio.Task | None = None
        self._closed = False

    @property
    def headers(self) -> dict:
        return {TOKEN_HEADER: self.token}

    async def offer_once(self) -> dict:
        """One offer; the answer, or :class:`Refused`."""
        client = Client(PatternTrack(*self.size, fps=self.fps))
        client.got.frames = _Clock(self.frame_times)  # frames are not kept, only when they came
        await client.pc.setLocalDescription(await client.pc.createOffer())
        body = {"sdp": client.pc.localDescription.sdp, "type": "offer"}
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{self.base}/offer", json=body, headers=self.headers) as resp:
                answer = await resp.json()
                if resp.status != 200:
                    await client.close()
                    retry = resp.headers.get("Retry-After")
                    raise Refused(resp.status, answer.get("error", ""), float(retry) if retry else None)
        await client.pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))
        self._adopt(client, answer)
        return answer

    def _adopt(self, client: Client, answer: dict) -> None:
        self.client, self.caller_id, self.node = client, answer["caller"], answer["node"]
        self.nodes.append(answer["node"])
        self.placed_at = time.monotonic()
        client.pc.on("connectionstatechange", self._on_state)
        self._socket = asyncio.ensure_future(self._listen(answer["caller"]))

    async def call(self, deadline_s: float = 60.0) -> None:
        """Offer until placed, honouring Retry-After."""
        deadline = time.monotonic() + deadline_s
        while True:
            try:
                await self.offer_once()
                return
            except Refused as exc:
                self.refusals.append(exc)
                if exc.status != 503 or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(exc.retry_after or 1.0)

    async def _listen(self, caller_id: str) -> None:
        url = f"{self.base.replace('http', 'ws', 1)}/ws?caller={caller_id}"
        try:
            async with aiohttp.ClientSession() as http:
                async with http.ws_connect(url, headers=self.headers) as ws:
                    async for msg in ws:
                        data = json.loads(msg.data)
                        if data.get("type") == "cluster":
                            self.events.append(data)
                            if data.get("event") in ("node-lost", "front-door-lost"):
                                self._move()
        except aiohttp.ClientError:
            pass

    def _on_state(self) -> None:
        if self.client is not None and self.client.pc.connectionState == "failed":
            self._move()

    def _move(self) -> None:
        if self._closed or (self._moving is not None and not self._moving.done()):
            return
        self._moving = asyncio.ensure_future(self._move_now())

    async def _move_now(self) -> None:
        old = self.client
        if self._socket is not None:
            self._socket.cancel()
        if old is not None:
            await old.close()
        await self.call(deadline_s=120.0)

    async def wait_frames(self, n: int, timeout_s: float = 20.0, after: float | None = None) -> None:
        """Wait for ``n`` frames back (arrived after ``after``, default: any)."""
        deadline = time.monotonic() + timeout_s
        while sum(1 for t in self.frame_times if after is None or t > after) < n:
            assert time.monotonic() < deadline, (
                f"caller on {self.node}: only {len(self.frame_times)} frames back; events {self.events}")
            await asyncio.sleep(0.05)

    def largest_gap(self, start: float, end: float) -> float:
        times = [start] + [t for t in self.frame_times if start <= t <= end] + [end]
        return max(b - a for a, b in zip(times, times[1:]))

    async def close(self) -> None:
        self._closed = True
        for task in (self._socket, self._moving):
            if task is not None:
                task.cancel()
        if self.client is not None:
            await self.client.close()


class _Clock(list):
    """A list that records when each frame arrived instead of keeping it."""

    def __init__(self, times: list[float]) -> None:
        super().__init__()
        self.times = times

    def append(self, frame) -> None:  # noqa: D401 - list's own signature
        self.times.append(time.monotonic())
