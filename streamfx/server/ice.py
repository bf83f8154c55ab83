"""ICE settings: no public STUN server unless configured, and an opt-in loopback candidate.

aiortc falls back to a public STUN server when ``iceServers`` is unset, and aioice leaves
127.0.0.1 out of its host candidates. Tests (and single-machine demos inside a network
namespace with only ``lo``) need a loopback candidate, so :func:`enable_loopback_candidates`
adds it. It is process-wide, opt-in, and idempotent.
"""

from __future__ import annotations

from aioice import ice as _aioice
from aiortc import RTCConfiguration, RTCIceServer, RTCSessionDescription

_original_host_addresses = _aioice.get_host_addresses


def _with_loopback(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    addresses = _original_host_addresses(use_ipv4=use_ipv4, use_ipv6=use_ipv6)
    if use_ipv4 and "127.0.0.1" not in addresses:
        addresses.append("127.0.0.1")
    return addresses


def enable_loopback_candidates() -> None:
    _aioice.get_host_addresses = _with_loopback


def rtc_configuration(ice_servers: tuple[str, ...] = ()) -> RTCConfiguration:
    """An explicit configuration: an empty list means "no STUN/TURN at all"."""
    return RTCConfiguration(iceServers=[RTCIceServer(urls=url) for url in ice_servers])


async def answer_as_dtls_server(pc) -> None:
    """Create and set ``pc``'s answer with ``a=setup:passive``: this side is the DTLS server.

    aiortc answers ``active`` by default and, as DTLS client, offers only ECDHE-ECDSA
    ciphers; GStreamer 1.22's webrtcbin (OBS-like WHIP clients built on it) then acts as
    DTLS server with an RSA certificate, shares no cipher and fails the handshake. RFC 5763
    lets the answerer take either role; as server, aiortc's ECDSA certificate suits every
    client tried here (Chromium, aiortc, GStreamer)."""
    answer = await pc.createAnswer()
    await pc.setLocalDescription(RTCSessionDescription(sdp=answer.sdp.replace("a=setup:active", "a=setup:passive"),
                                                       type="answer"))
