"""Server settings, with secure defaults (loopback bind, limits on everything a caller sends)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..pipeline.options import EngineOptions

WEB_CLIENT_DIR = Path(__file__).resolve().parents[2] / "web_client"


@dataclass(frozen=True)
class Limits:
    max_callers: int = 4
    max_sdp_bytes: int = 64 * 1024
    max_control_bytes: int = 256 * 1024      # one data-channel / WebSocket message (data URLs included)
    control_rate_per_s: float = 20.0         # sustained control messages per second per connection
    control_burst: int = 40
    max_reference_bytes: int = 8 * 1024 * 1024
    max_reference_pixels: int = 40_000_000


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    token: str | None = None                 # required on /offer, /ws and the page when set
    ice_loopback: bool = field(default_factory=lambda: os.environ.get("STREAMFX_ICE_LOOPBACK") == "1")
    ice_servers: tuple[str, ...] = ()        # e.g. ("stun:stun.example.org:3478",); none by default
    allowed_origins: tuple[str, ...] = ()    # extra Origins allowed besides the server's own
    engine: str = "auto"
    engine_options: EngineOptions = field(default_factory=EngineOptions)  # backend, threads
    max_fps: float | None = None             # frames filtered per second per caller (None: as they come)
    web_root: Path = WEB_CLIENT_DIR
    limits: Limits = field(default_factory=Limits)
    stats_interval_s: float = 1.0
    workers: int = 2                         # threads that run engines (inference releases the GIL)

    @property
    def exposed(self) -> bool:
        return self.host not in ("127.0.0.1", "localhost", "::1")
