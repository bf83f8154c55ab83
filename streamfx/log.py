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


def silence_native_stderr() -> None:
    """Send native libraries' direct writes to fd 2 (TFLite/absl banners from mediapipe) to
    /dev/null, while Python's ``sys.stderr`` (our logs, errors, progress bars) keeps the
    real stream. Idempotent; ``-vv`` or ``STREAMFX_NATIVE_LOGS=1`` leaves fd 2 alone."""
    global _native_silenced
    if _native_silenced or sys.stderr is not sys.__stderr__:
        return  # already done, or stderr is captured (tests): leave it alone
    try:
        sys.stderr.flush()
        real = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
        sys.stderr = os.fdopen(real, "w", buffering=1, encoding=sys.stderr.encoding or "utf-8",
                               errors="backslashreplace")
        _native_silenced = True
    except (OSError, ValueError, AttributeError):
        pass  # no real fd 2 (embedded, captured): nothing to silence


_native_silenced = False


def setup(verbosity: int = 0) -> None:
    """Configure the ``streamfx`` logger; 0 = warnings, 1 = info, 2+ = debug."""
    if verbosity < 2 and os.environ.get("STREAMFX_NATIVE_LOGS") != "1":
        silence_native_stderr()
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
