"""WHIP in (RFC 9725) and WHEP out (draft-ietf-wish-whep): the IETF's HTTP signalling.

* ``POST /whip`` with an ``application/sdp`` offer starts a filtered session, the same as the
  page's ``/offer``: ``201 Created``, the SDP answer, and ``Location: /whip/<session>``.
  ``DELETE`` on that URL ends it. ``PATCH`` (trickle ICE, an ICE restart) answers 405: this
  server gathers every candidate before it answers, as the RFC allows.
* ``POST /whep/<session>`` with a (receive-only) offer gives a viewer that session's
  filtered video (and the caller's audio, in sync: :mod:`.audio_track`): ``201``, the answer, ``Location: /whep/<session>/<viewer>``; ``DELETE``
  ends that viewer. Several viewers may watch one session; each gets the newest frame.

Tokens (``Authorization: Bearer`` as WHIP clients send it, or the other forms), the Host and
Origin checks, body size limits and admission are those of ``/offer``.
"""

from __future__ import annotations

import secrets

from aiohttp import web
from aiortc import RTCPeerConnection, RTCSessionDescription

from .. import log
from . import ice
from .app import STATE, HttpError, guard, open_call, read_offer_body

logger = log.get(__name__)
SDP = "application/sdp"
NO_PATCH = {"Allow": "POST, DELETE, OPTIONS"}


async def _read_sdp(request: web.Request) -> str:
    config = request.app[STATE].config
    if request.content_type != SDP:
        raise HttpError(415, f"the offer must be {SDP}")
    body = await read_offer_body(request, config.limits.max_sdp_bytes)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise HttpError(400, "the offer is not UTF-8 text") from None
    if "m=" not in text:
        raise HttpError(400, "the offer has no media section")
    return text


def _answer(pc: RTCPeerConnection, location: str) -> web.Response:
    return web.Response(status=201, body=pc.localDescription.sdp.encode(), content_type=SDP,
                        headers={"Location": location, "Access-Control-Expose-Headers": "Location"})


async def whip_post(request: web.Request) -> web.Response:
    _, state = guard(request)
    sdp = await _read_sdp(request)
    caller = await open_call(state, sdp)
    logger.info("whip session", extra={"caller": caller.id})
    return _answer(caller.pc, f"/whip/{caller.id}")


def _session(state, session: str):
    caller = state.registry.callers.get(session)
    if caller is None:
        raise HttpError(404, "no such session")
    return caller


async def whip_delete(request: web.Request) -> web.Response:
    _, state = guard(request)
    await state.registry.remove(_session(state, request.match_info["session"]))
    return web.Response(status=200)


async def not_supported(request: web.Request) -> web.Response:
    guard(request)
    raise HttpError(405, "trickle ICE and ICE restarts are not supported: every candidate is in the answer",
                    NO_PATCH)


async def whep_post(request: web.Request) -> web.Response:
    config, state = guard(request)
    caller = _session(state, request.match_info["session"])
    sdp = await _read_sdp(request)
    if caller.track is None:
        raise HttpError(409, "the session has no video yet")
    pc = RTCPeerConnection(ice.rtc_configuration(config.ice_servers))
    viewer = secrets.token_hex(6)
    try:
        pc.addTrack(caller.watch())
        if caller.audio is not None and "m=audio" in sdp:
            pc.addTrack(caller.watch_audio())
        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())
    except Exception as exc:  # noqa: BLE001 - a malformed or unusable offer
        await pc.close()
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise HttpError(400, f"could not use the offer: {first}") from None
    pc.whep_id = viewer
    caller.viewers.add(pc)

    @pc.on("connectionstatechange")
    async def on_state() -> None:
        if pc.connectionState in ("failed", "closed"):
            caller.viewers.discard(pc)
            await pc.close()

    return _answer(pc, f"/whep/{caller.id}/{viewer}")


async def whep_delete(request: web.Request) -> web.Response:
    _, state = guard(request)
    caller = _session(state, request.match_info["session"])
    pc = next((v for v in caller.viewers if getattr(v, "whep_id", None) == request.match_info["viewer"]), None)
    if pc is None:
        raise HttpError(404, "no such viewer")
    caller.viewers.discard(pc)
    await pc.close()
    return web.Response(status=200)


def add_whip_routes(app: web.Application) -> None:
    app.router.add_post("/whip", whip_post)
    app.router.add_delete("/whip/{session}", whip_delete)
    app.router.add_patch("/whip/{session}", not_supported)
    app.router.add_post("/whep/{session}", whep_post)
    app.router.add_delete("/whep/{session}/{viewer}", whep_delete)
    app.router.add_patch("/whep/{session}/{viewer}", not_supported)
