"""Structured, quiet-by-default logging.

Every record is one line of ``key=value`` pairs (or JSON with ``STREAMFX_LOG_JSON=1``),
so logs can be grepped by humans and parsed by machines.  The default level is WARNING;
``-v`` on the command line gives INFO and ``-vv`` DEBUG.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time

_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys()) | {"message", "asctime"}


class _KeyValueFormatter(logging.Formatter):
    def __init__(self, as_json: bool) -> None:
        super().__init__()
        self.as_json = as_json

    def format(self, record: logging.LogRecord) -> str:
        fields = {
            "ts": time.strftime("%H:%M:%S", time.localtime(record.created)) + f".{int(record.msecs):03d}",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        fields.update({k: v for k, v in vars(record).items() if k not in _RESERVED})
        if record.exc_info:
            fields["error"] = self.formatException(record.exc_info).splitlines()[-1]
        if self.as_json:
            return json.dumps(fields, default=str)
        return " ".join(f"{k}={_quote(v)}" for k, v in fields.items())


def _quote(value: object) -> str:
    text = str(value)
    return f'"{text}"' if (" " in text or not text) else text


def setup(verbosity: int = 0) -> None:
    """Configure the ``streamfx`` logger; 0 = warnings, 1 = info, 2+ = debug."""
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(max(verbosity, 0), 2)]
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_KeyValueFormatter(os.environ.get("STREAMFX_LOG_JSON") == "1"))
    root = logging.getLogger("streamfx")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    # aiortc/aioice are chatty at INFO; keep them at WARNING unless debugging.
    for name in ("aiortc", "aioice", "aiohttp.access"):
        logging.getLogger(name).setLevel(logging.DEBUG if verbosity >= 3 else logging.WARNING)


def get(name: str) -> logging.Logger:
    return logging.getLogger(name if name.startswith("streamfx") else f"streamfx.{name}")
