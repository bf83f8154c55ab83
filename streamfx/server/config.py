"""Server settings, with secure defaults (loopback bind, limits on everything a caller sends)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..pipeline.options import EngineOptions

WEB_CLIENT_DIR = Path(__file__).resolve().parents[2] / "web_client"


@dataclass(frozen=True)
class Limits:
    max_callers: int | None = None           # hard cap; None: only the measured capacity (server/admission.py)
    admit_by_cost: bool = True               # refuse callers the measured CPU cost says would slow the others
    max_sdp_bytes: int = 64 * 1024
    max_control_bytes: int = 256 * 1024      # one data-channel / WebSocket message (data URLs included)
    control_rate_per_s: float = 20.0         # sustained control messages per second per caller (all its sockets)
    control_burst: int = 40
    max_reference_bytes: int = 8 * 1024 * 1024
    max_reference_pixels: int = 40_000_000
    ws_per_address: int = 8                  # open WebSocket connections per client address
    ws_total: int = 64                       # open WebSocket connections in all
    connect_timeout_s: float = 15.0          # a caller not connected by then is dropped and frees its slot


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    token: str | None = None                 # required on /offer, /ws and the page when set
    tokens: tuple[str, ...] = ()             # more caller tokens (--token-file); any one is accepted
    admin_token: str | None = None           # /ws without a caller (every caller's stats) and /metrics
    allowed_hosts: tuple[str, ...] = ()      # Host names accepted besides the bound ones (DNS-rebinding check)
    tls: bool = False                        # served over HTTPS (the printed URLs, the exposed-mode warning)
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
    prompt_workers: int = 1                  # threads that decode prompt images and compute their tokens
    session_workers: int = 2                 # threads that open and close caller sessions (mediapipe graphs, workers)
    text_model: Path | None = None           # an InstructPix2Pix folder: text prompts generate references
    text_steps: int = 20                     # diffusion steps of one text prompt
    audio_jitter_frames: int = 1             # audio frames held back before release (aiortc: 4, 80 ms)
    whip_out: str | None = None              # push every session to this WHIP URL ({session} in it: one each)
    whip_out_token: str | None = None

    @property
    def exposed(self) -> bool:
        return self.host not in ("127.0.0.1", "localhost", "::1")

    @property
    def caller_tokens(self) -> tuple[str, ...]:
        return tuple(t for t in (self.token, *self.tokens) if t)
