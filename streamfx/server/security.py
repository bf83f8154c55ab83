"""Access control: the token, the Origin check and a per-connection rate limit."""

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
    """The token from the header, the ``token`` query parameter, or the cookie the page set."""
    return (request.headers.get(TOKEN_HEADER) or request.query.get("token")
            or request.cookies.get("streamfx_token"))


def token_ok(expected: str | None, given: str | None) -> bool:
    if expected is None:
        return True
    return given is not None and hmac.compare_digest(expected.encode(), given.encode())


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
