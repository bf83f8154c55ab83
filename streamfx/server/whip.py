"""WHIP in (RFC 9725) and WHEP out (draft-ietf-wish-whep): the IETF's HTTP signalling.

* ``POST /whip`` with an ``application/sdp`` offer starts a filtered session, the same as the
  page's ``/offer``: ``201 Created``, the SDP answer, and ``Location: /whip/<session>``.
  ``DELETE`` on that URL ends it. ``PATCH`` (trickle ICE, an ICE restart) answers 405: this
  server gathers every candidate before it answers, as the RFC allows.
* ``POST /whep/<session>`` with a (receive-only) offer gives a viewer that session's
  filtered video (and the caller's audio, in sync: :mod:`.audio_track`): ``201``, the answer, ``Location: /whep/<session>/<viewer>``; ``DELETE``
  ends that viewer. Several viewers may watch one session; each gets the newest frame.

Tokens (``Authorization: Bearer`` as WHIP clients send it, or the other forms), the Host
check, body size limits and admission are those of ``/offer``.

**Controls** can be given at creation as query parameters (``?prompt=NAME&pose=frontal&
yaw=10&pitch=0&strength=0.7&quality=auto&bypass=1&text=...``), checked before the session
opens and applied before the answer; later, the session id (the last part of ``Location``)
is the ``caller`` of the control socket, ``/ws?caller=<session>``, as for the page.

**Browsers on other sites** (CORS, as RFC 9725 asks): ``OPTIONS`` on every WHIP/WHEP URL
answers the preflight without a token (preflights carry none) and says what is accepted
(``Accept-Post: application/sdp``); responses name the caller's ``Origin`` and expose
``Location``. Any origin is accepted when the server requires a token (the token is the
check); without one (the loopback default) only the server's own origin and
``--allow-origin`` ones are, as for the page's endpoints.
"""

from __future__ import annotations

import json
import secrets

from aiohttp import web
from aiortc import RTCPeerConnection, RTCSessionDescription

from .. import log
from . import control, ice
from .app import CONFIG, HttpError, guard, open_call, read_offer_body
from .security import origin_ok

logger = log.get(__name__)
SDP = "application/sdp"
NO_PATCH = {"Allow": "POST, DELETE, OPTIONS"}
PREFIXES = ("/whip", "/whep")
CONTROL_QUERY = ("prompt", "text", "pose", "yaw", "pitch", "strength", "quality", "bypass")


def query_controls(request: web.Request) -> list[str]:
    """The session's starting controls from the query, as control messages (checked, 400 if bad)."""
    q = request.query  # other parameters are left alone: a WHIP URL may carry what its sender needs
    messages = []
    if "prompt" in q:
        messages.append({"type": "prompt", "preset": q["prompt"]})
    if "text" in q:
        messages.append({"type": "prompt", "text": q["text"]})
    try:
        if {"pose", "yaw", "pitch"} & q.keys():
            pose = {"type": "pose", "mode": q.get("pose", "offset")}
            pose.update({k: float(q[k]) for k in ("yaw", "pitch") if k in q})
            messages.append(pose)
        if "strength" in q:
            messages.append({"type": "strength", "value": float(q["strength"])})
    except ValueError:
        raise HttpError(400, "yaw, pitch and strength must be numbers") from None
    if "quality" in q:
        messages.append({"type": "quality", "preset": q["quality"]})
    if "bypass" in q:
        messages.append({"type": "bypass", "on": q["bypass"].lower() in ("1", "true", "on", "yes")})
    limits = request.app[CONFIG].limits
    for message in messages:
        try:
            control.parse(json.dumps(message), limits.max_control_bytes)
        except control.ControlError as exc:
            raise HttpError(400, f"bad {message['type']} in the query: {exc}") from None
    return [json.dumps(m) for m in messages]


async def apply_controls(caller, texts: list[str]) -> None:
    """Apply the query's controls; the first refusal is the answer's 400."""
    errors: list[str] = []

    def reply(text: str) -> None:
        message = json.loads(text)
        if message.get("type") == "error":
            errors.append(message["message"])

    for text in texts:
        await caller.handle(text, reply)
        if errors:
            raise HttpError(400, f"bad control in the query: {errors[0]}")


async def read_sdp(request: web.Request) -> str:
    config = request.app[CONFIG]
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


def created(sdp: str, location: str) -> web.Response:
    """``201 Created``: the SDP answer and where the new resource is."""
    return web.Response(status=201, body=sdp.encode(), content_type=SDP, headers={"Location": location})


async def whip_post(request: web.Request) -> web.Response:
    _, state = guard(request, any_origin=True)
    controls = query_controls(request)
    sdp = await read_sdp(request)
    caller = await open_call(state, sdp)
    try:
        await apply_controls(caller, controls)
    except HttpError:
        await state.registry.remove(caller)
        raise
    logger.info("whip session", extra={"caller": caller.id})
    return created(caller.pc.localDescription.sdp, f"/whip/{caller.id}")


def _session(state, session: str):
    caller = state.registry.callers.get(session)
    if caller is None:
        raise HttpError(404, "no such session")
    return caller


async def whip_delete(request: web.Request) -> web.Response:
    _, state = guard(request, any_origin=True)
    await state.registry.remove(_session(state, request.match_info["session"]))
    return web.Response(status=200)


async def not_supported(request: web.Request) -> web.Response:
    guard(request, any_origin=True)
    raise HttpError(405, "trickle ICE and ICE restarts are not supported: every candidate is in the answer",
                    NO_PATCH)


async def add_viewer(config, caller, sdp: str) -> tuple[str, str]:
    """A WHEP viewer of ``caller``'s session: (the answer SDP, the viewer's id); 4xx if it cannot be."""
    if caller.track is None:
        raise HttpError(409, "the session has no video yet")
    pc = RTCPeerConnection(ice.rtc_configuration(config.ice_servers))
    viewer = secrets.token_hex(6)
    try:
        pc.addTrack(caller.watch())
        if caller.audio is not None and "m=audio" in sdp:
            pc.addTrack(caller.watch_audio())
        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        await ice.answer_as_dtls_server(pc)
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

    return pc.localDescription.sdp, viewer


async def end_viewer(caller, viewer: str) -> None:
    pc = next((v for v in caller.viewers if getattr(v, "whep_id", None) == viewer), None)
    if pc is None:
        raise HttpError(404, "no such viewer")
    caller.viewers.discard(pc)
    await pc.close()


async def whep_post(request: web.Request) -> web.Response:
    config, state = guard(request, any_origin=True)
    caller = _session(state, request.match_info["session"])
    answer, viewer = await add_viewer(config, caller, await read_sdp(request))
    return created(answer, f"/whep/{caller.id}/{viewer}")


async def whep_delete(request: web.Request) -> web.Response:
    _, state = guard(request, any_origin=True)
    await end_viewer(_session(state, request.match_info["session"]), request.match_info["viewer"])
    return web.Response(status=200)


async def options(request: web.Request) -> web.Response:
    """CORS preflight and discovery; no token (a preflight carries none)."""
    posts = request.path == "/whip" or (request.path.startswith("/whep/") and request.path.count("/") == 2)
    headers = {"Allow": "POST, OPTIONS" if posts else "DELETE, PATCH, OPTIONS",
               "Access-Control-Allow-Methods": "POST, DELETE, PATCH, OPTIONS",
               "Access-Control-Allow-Headers": "Authorization, Content-Type, If-Match",
               "Access-Control-Max-Age": "600"}
    if posts:
        headers["Accept-Post"] = SDP
    return web.Response(status=204, headers=headers)


async def cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    """On every WHIP/WHEP response (errors too): the Origin it may be read from."""
    origin = request.headers.get("Origin")
    if origin is None or not request.path.startswith(PREFIXES):
        return
    config = request.app[CONFIG]
    if config.caller_tokens or origin_ok(request, config.allowed_origins):
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Vary"] = "Origin"
        response.headers["Access-Control-Expose-Headers"] = "Location, Accept-Post, Allow"


def add_whip_routes(app: web.Application, *, whip_post=whip_post, whip_delete=whip_delete,
                    whep_post=whep_post, whep_delete=whep_delete) -> None:
    """The WHIP/WHEP routes with these handlers (this server's, or a cluster front door's)."""
    app.on_response_prepare.append(cors_headers)
    for path in ("/whip", "/whip/{session}", "/whep/{session}", "/whep/{session}/{viewer}"):
        app.router.add_route("OPTIONS", path, options)
    app.router.add_post("/whip", whip_post)
    app.router.add_delete("/whip/{session}", whip_delete)
    app.router.add_patch("/whip/{session}", not_supported)
    app.router.add_post("/whep/{session}", whep_post)
    app.router.add_delete("/whep/{session}/{viewer}", whep_delete)
    app.router.add_patch("/whep/{session}/{viewer}", not_supported)
