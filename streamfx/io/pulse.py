"""PulseAudio for the virtual microphone: sample streams through libpulse-simple (ctypes)
and the server's modules and devices through ``pactl``.

Why libpulse-simple and not a ``pacat``/``parec`` pipe: a pipe hides up to ~0.7 s of audio
in its buffers (the tools' default stream buffering plus the pipe's), and nothing tells us
how much, so a delay set in sample positions would be off by an unknown, varying amount. A simple
stream answers :meth:`SimpleStream.latency` (libpulse's own timing: for a recording, how
long ago the newest sample we read was captured; for a playback, how long until the next
sample we write is heard), which is what lets the virtual microphone place its delay on the
sample. The virtual microphone asks for 5 ms record fragments and ~25 ms of playback
buffer (the server's own defaults are far larger).

Which server: whatever libpulse would pick (``PULSE_SERVER``, ``PULSE_RUNTIME_PATH``,
the user's session), for the streams and for ``pactl`` alike. Every failure is a
:class:`PulseError` with a one-line message.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import subprocess
from functools import lru_cache

import numpy as np

from .. import log
from .closing import ClosesOnExit
from .errors import MediaError

logger = log.get(__name__)

PACTL_TIMEOUT_S = 5.0
_S16LE, _PLAYBACK, _RECORD = 3, 1, 2      # pa_sample_format_t, pa_stream_direction_t
_DEFAULT = 0xFFFFFFFF                      # (uint32_t) -1: "let the server choose"


class PulseError(MediaError):
    """A PulseAudio stream, module or server that cannot be used; the message is one line."""


class _SampleSpec(ctypes.Structure):
    _fields_ = [("format", ctypes.c_int), ("rate", ctypes.c_uint32), ("channels", ctypes.c_uint8)]


class _BufferAttr(ctypes.Structure):
    _fields_ = [("maxlength", ctypes.c_uint32), ("tlength", ctypes.c_uint32), ("prebuf", ctypes.c_uint32),
                ("minreq", ctypes.c_uint32), ("fragsize", ctypes.c_uint32)]


@lru_cache(maxsize=1)
def _lib() -> ctypes.CDLL:
    """libpulse-simple with its prototypes (and pa_strerror from libpulse)."""
    name = ctypes.util.find_library("pulse-simple") or "libpulse-simple.so.0"
    try:
        lib = ctypes.CDLL(name)
    except OSError:
        raise PulseError("libpulse-simple is not installed (sudo apt install libpulse0)") from None
    p, err = ctypes.c_void_p, ctypes.POINTER(ctypes.c_int)
    lib.pa_simple_new.restype = p
    lib.pa_simple_new.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_char_p,
                                  ctypes.POINTER(_SampleSpec), ctypes.c_void_p, ctypes.POINTER(_BufferAttr), err]
    lib.pa_simple_free.argtypes = [p]
    lib.pa_simple_free.restype = None
    for fn in (lib.pa_simple_read, lib.pa_simple_write):
        fn.argtypes, fn.restype = [p, ctypes.c_void_p, ctypes.c_size_t, err], ctypes.c_int
    for fn in (lib.pa_simple_flush, lib.pa_simple_drain):
        fn.argtypes, fn.restype = [p, err], ctypes.c_int
    lib.pa_simple_get_latency.argtypes, lib.pa_simple_get_latency.restype = [p, err], ctypes.c_uint64
    lib.pa_strerror.argtypes, lib.pa_strerror.restype = [ctypes.c_int], ctypes.c_char_p  # exported via libpulse
    return lib


@lru_cache(maxsize=1)
def _lib_keeping_the_gil() -> ctypes.PyDLL:
    """libpulse-simple for pa_simple_get_latency, called without releasing the GIL: it
    answers at once from libpulse's timing info, and in a busy process every release can
    cost up to a switch interval (5 ms) to get the GIL back, a block of audio."""
    _lib()  # the same library, found and checked
    lib = ctypes.PyDLL(ctypes.util.find_library("pulse-simple") or "libpulse-simple.so.0")
    lib.pa_simple_get_latency.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_int)]
    lib.pa_simple_get_latency.restype = ctypes.c_uint64
    return lib


def _strerror(code: int) -> str:
    text = _lib().pa_strerror(code)
    return text.decode(errors="replace") if text else f"error {code}"


class SimpleStream(ClosesOnExit):
    """One s16le record or playback stream on ``device`` (None: the server's default).

    ``buffer_s`` is the record fragment (how much the server sends at a time) or the
    playback target length (how much it keeps queued, the sink's own latency included).
    Samples are int16 arrays shaped ``(frames, channels)``.
    """

    def __init__(self, direction: str, device: str | None, rate: int = 48000, channels: int = 1,
                 buffer_s: float | None = None, name: str = "StreamFX microphone", app: str = "StreamFX") -> None:
        if direction not in ("record", "playback"):
            raise ValueError(f"direction must be 'record' or 'playback', not {direction!r}")
        self.direction, self.device, self.rate, self.channels = direction, device, rate, channels
        self.name = name
        frame_bytes = 2 * channels
        attr = _BufferAttr(_DEFAULT, _DEFAULT, _DEFAULT, _DEFAULT, _DEFAULT)
        if direction == "record":
            attr.fragsize = int((buffer_s or 0.01) * rate) * frame_bytes
            attr.maxlength = 2 * rate * frame_bytes          # at most 2 s queued if we fall behind
        else:
            attr.tlength = int((buffer_s or 0.025) * rate) * frame_bytes
            attr.prebuf = attr.tlength // 2 // frame_bytes * frame_bytes  # (re)start at half the buffer
        spec = _SampleSpec(_S16LE, rate, channels)
        error = ctypes.c_int(0)
        self._handle = _lib().pa_simple_new(None, app.encode(), _RECORD if direction == "record" else _PLAYBACK,
                                            device.encode() if device else None, name.encode(),
                                            ctypes.byref(spec), None, ctypes.byref(attr), ctypes.byref(error))
        if not self._handle:
            where = device or "the default device"
            raise PulseError(f"cannot open {direction} stream on {where}: {_strerror(error.value)}")
        logger.debug("stream opened", extra={"direction": direction, "device": device or "default",
                                             "rate": rate, "channels": channels, "buffer_s": buffer_s})

    def _check(self, result: int, error: ctypes.c_int, what: str) -> None:
        if result < 0:
            raise PulseError(f"{self.direction} stream on {self.device or 'the default device'}: {what} failed: "
                             f"{_strerror(error.value)}")

    def _live(self) -> ctypes.c_void_p:
        if not self._handle:
            raise PulseError(f"{self.direction} stream on {self.device or 'the default device'} is closed")
        return self._handle

    def read(self, frames: int) -> np.ndarray:
        """Block until ``frames`` samples were recorded; returns them ``(frames, channels)``."""
        out = np.empty((frames, self.channels), np.int16)
        error = ctypes.c_int(0)
        self._check(_lib().pa_simple_read(self._live(), out.ctypes.data, out.nbytes, ctypes.byref(error)),
                    error, "read")
        return out

    def write(self, samples: np.ndarray) -> None:
        """Queue int16 samples ``(frames, channels)``; blocks while the buffer is full."""
        data = np.ascontiguousarray(samples, np.int16)
        error = ctypes.c_int(0)
        self._check(_lib().pa_simple_write(self._live(), data.ctypes.data, data.nbytes, ctypes.byref(error)),
                    error, "write")

    def latency(self) -> float:
        """Seconds: record, since the newest sample read was captured; playback, until the
        next sample written is played."""
        error = ctypes.c_int(0)
        usec = _lib_keeping_the_gil().pa_simple_get_latency(self._live(), ctypes.byref(error))
        if usec == 0xFFFFFFFFFFFFFFFF:
            self._check(-1, error, "latency query")
        return usec / 1e6

    def flush(self) -> None:
        """Drop what is queued (playback) or buffered (record; libpulse's record latency is
        then off by what was dropped, so read a backlog away instead)."""
        error = ctypes.c_int(0)
        self._check(_lib().pa_simple_flush(self._live(), ctypes.byref(error)), error, "flush")

    def drain(self) -> None:
        """Playback: block until everything queued was played."""
        error = ctypes.c_int(0)
        self._check(_lib().pa_simple_drain(self._live(), ctypes.byref(error)), error, "drain")

    def close(self) -> None:
        if self._handle:
            handle, self._handle = self._handle, None
            _lib().pa_simple_free(handle)


# -- pactl ----------------------------------------------------------------------------------
def pactl(*args: str, timeout: float = PACTL_TIMEOUT_S) -> str:
    """Run ``pactl ARGS`` (C locale) and return its stdout; PulseError with one line if
    pactl is missing, no server answers, or the command fails."""
    env = {**os.environ, "LC_ALL": "C"}
    try:
        done = subprocess.run(["pactl", *args], capture_output=True, text=True, timeout=timeout, env=env)
    except FileNotFoundError:
        raise PulseError("pactl not found (sudo apt install pulseaudio-utils)") from None
    except subprocess.TimeoutExpired:
        raise PulseError(f"pactl {args[0] if args else ''} got no answer in {timeout:g} s "
                         "(is the sound server hung?)") from None
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        reason = lines[-1] if lines else f"exit status {done.returncode}"
        if "Connection" in reason or "pa_context_connect" in reason:
            raise PulseError(f"no sound server answers ({reason}); start PulseAudio or PipeWire")
        raise PulseError(f"pactl {' '.join(args[:2])} failed: {reason}")
    return done.stdout


def load_module(name: str, **arguments: str | int) -> int:
    """Load a server module; returns its index (give it to :func:`unload_module`)."""
    text = pactl("load-module", name, *(f"{key}={value}" for key, value in arguments.items())).strip()
    try:
        return int(text.splitlines()[-1])
    except (ValueError, IndexError):
        raise PulseError(f"pactl load-module {name} gave no module index ({text!r})") from None


def unload_module(index: int) -> None:
    pactl("unload-module", str(index))


def short_list(kind: str) -> list[list[str]]:
    """``pactl list short KIND`` (sinks, sources, modules, ...) as rows of tab-separated fields."""
    return [line.split("\t") for line in pactl("list", "short", kind).splitlines() if line.strip()]


def sink_names() -> list[str]:
    return [row[1] for row in short_list("sinks") if len(row) > 1]


def source_names() -> list[str]:
    return [row[1] for row in short_list("sources") if len(row) > 1]


def default_source() -> str | None:
    """The server's default source (``pactl info``), None when it has none."""
    for line in pactl("info").splitlines():
        if line.startswith("Default Source:"):
            name = line.split(":", 1)[1].strip()
            return name if name and name != "@DEFAULT_SOURCE@" else None
    return None


def objects(kind: str) -> list[dict]:
    """``pactl list KIND`` (sinks, sources, sink-inputs, source-outputs) parsed: one dict per
    object with ``index``, its ``Key: value`` fields, and ``properties`` (a dict)."""
    found: list[dict] = []
    section = None
    for raw in pactl("list", kind).splitlines():
        line = raw.strip()
        if raw and not raw[0].isspace() and "#" in raw:          # "Sink Input #12"
            found.append({"index": int(raw.rsplit("#", 1)[1]), "properties": {}})
            section = None
        elif found and raw.startswith("\t\t") and section == "Properties" and " = " in line:
            key, value = line.split(" = ", 1)
            found[-1]["properties"][key] = value.strip('"')
        elif found and raw.startswith("\t") and not raw.startswith("\t\t") and ":" in line:
            key, value = line.split(":", 1)
            found[-1][key] = value.strip()
            section = key
    return found


def stream_devices(names: set[str]) -> dict[str, str]:
    """Where the streams called ``names`` (their ``media.name``) are now: name -> the
    source or sink it records from or plays into. The server moves a stream whose device
    went away to the default one, and tells a simple stream nothing; this is how to notice."""
    sources = {row[0]: row[1] for row in short_list("sources") if len(row) > 1}
    sinks = {row[0]: row[1] for row in short_list("sinks") if len(row) > 1}
    where: dict[str, str] = {}
    for kind, key, devices in (("source-outputs", "Source", sources), ("sink-inputs", "Sink", sinks)):
        for item in objects(kind):
            name = item["properties"].get("media.name")
            if name in names and item.get(key) in devices:
                where[name] = devices[item[key]]
    return where

