"""The WebRTC filter server: signaling, callers (peers), filtered tracks and the control protocol."""

from .app import create_app
from .config import Limits, ServerConfig

__all__ = ["create_app", "Limits", "ServerConfig"]
