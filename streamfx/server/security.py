"""Access control: tokens (callers' and the admin's), the Origin and Host checks, rate limits."""

from __future__ import annotations

import hmac
import secrets
import time
from urllib.parse import urlsplit

from aiohttp import web

TOKEN_HEADER = "X-StreamFX-Token"


def new_token() -> str:
    return secrets.token_urlsafe(18)


def request_token(request: web.Request) -> str | None:
    """The token from the header, ``Authorization: Bearer`` (WHIP/WHEP clients), the ``token``
    query parameter, or the cookie the page set."""
    bearer = request.headers.get("Authorization", "")
    bearer = bearer[7:].strip() if bearer[:7].lower() == "bearer " else None
    return (request.headers.get(TOKEN_HEADER) or bearer or request.query.get("token")
            or request.cookies.get("streamfx_token"))


def token_ok(expected: str | None | tuple[str, ...], given: str | None) -> bool:
    """``given`` matches the token, or one of the tokens (none configured: everyone passes)."""
    if expected is None or expected == ():
        return True
    accepted = (expected,) if isinstance(expected, str) else expected
    if given is None:
        return False
    # compare against every token, so the time taken does not say which one was close
    return any([hmac.compare_digest(t.encode(), given.encode()) for t in accepted])


def host_name(host_header: str) -> str:
    """``Host`` without its port, lower case (``[::1]:8080`` -> ``::1``)."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def host_ok(request: web.Request, allowed: frozenset[str]) -> bool:
    """DNS rebinding: a page on another origin whose name resolves to this machine sends its
    own name as ``Host``; only the names this server is bound to (and ``--allow-host``) pass.
    Requests without ``Host`` (HTTP/1.0 scripts) are not a browser and pass."""
    header = request.headers.get("Host")
    return header is None or host_name(header) in allowed


def origin_ok(request: web.Request, extra_allowed: tuple[str, ...]) -> bool:
    """Browsers send Origin on cross-site requests; it must be this server or an allowed one.

    Requests without Origin (scripts, curl) pass: they are not a browser being used by
    another site, and the token still guards an exposed server.
    """
    origin = request.headers.get("Origin")
    if origin is None or origin in extra_allowed:
        return True
    return urlsplit(origin).netloc.lower() == request.host.lower()


class RateLimiter:
    """A token bucket: ``rate`` messages per second, bursts up to ``burst``."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, float(burst)
        self.tokens = float(burst)
        self.stamp = time.monotonic()

    def allow(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False
