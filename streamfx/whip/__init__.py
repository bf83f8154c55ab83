"""WHIP out: publishing StreamFX's filtered stream to any WHIP ingest (an SFU, a media server).

WHIP in and WHEP out, the server's side, are in :mod:`streamfx.server.whip`.
"""

from .publisher import WhipPublisher, WhipRefused, WhipState

__all__ = ["WhipPublisher", "WhipRefused", "WhipState"]
