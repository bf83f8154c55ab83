"""Where StreamFX keeps a user's files: one config folder for styles, TLS, the camera's settings.

``$STREAMFX_CONFIG_DIR`` wins (tests, portable installs); else ``%APPDATA%\\StreamFX`` on
Windows; else ``$XDG_CONFIG_HOME/streamfx``, ``~/.config/streamfx`` without it (Linux and
macOS alike, so a folder documented once is right on both).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def config_dir() -> Path:
    if os.environ.get("STREAMFX_CONFIG_DIR"):
        return Path(os.environ["STREAMFX_CONFIG_DIR"]).expanduser()
    if sys.platform == "win32" and os.environ.get("APPDATA"):
        return Path(os.environ["APPDATA"]) / "StreamFX"
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "streamfx"
