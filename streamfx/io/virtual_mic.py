"""A virtual microphone that stays in sync with the filtered video.

The real microphone is read in 5 ms blocks, written into an
:class:`~streamfx.io.audio_delay.AudioDelayLine` at its capture positions, and for every
block read one block is played into a virtual device that call apps pick as a microphone.
That block is read from the line at :func:`target_position`, so that it carries the sound
captured ``delay`` before the moment it is heard:

    delay = median of the last 30 video latencies (read -> handed to the virtual camera)
            + the manual offset (-200..+200 ms)

The median (about a second at 30 fps) ignores single slow frames; when it moves, the line
slews at 1 % (no pitch a listener hears) or, for a jump over 30 ms, crossfades. The audio
cannot be delayed by less than its own buffers (``floor_ms`` in ``status()``, ~20 ms: the
25 ms playback buffer less what the device drains before we write, one block, what waits
in the recording): with a faster engine it is late by the difference. A 15 ms buffer
lowered that by ~5 ms but dropped out in about half of the 4 s test recordings on a busy
2-core machine. One block out per block in keeps the
output on the microphone's clock; the virtual device runs on its own, so when the playback
buffer drifts from its level a block is written one sample longer or shorter.

The capture+playback loop runs in a child process of its own (:mod:`.virtual_mic_audio`,
which says why); this object starts it, shares the delay with it and reads its status.
The names and the Windows/macOS cable are :mod:`.virtual_mic_devices`.

Linux (PulseAudio, or PipeWire's pipewire-pulse): unless ``device`` names a sink to play
into, ``start()`` creates ``streamfx_mic`` (a null sink, "StreamFX Microphone") and
``streamfx_microphone`` (a remap source of its monitor, "StreamFX Microphone": many call
apps hide monitor sources); ``close()`` unloads them. A ``streamfx_mic`` left by a crashed
StreamFX (its ``streamfx.pid`` is a dead process) is replaced; one held by a live StreamFX
or by another program is an error. Windows (VB-CABLE) and macOS (BlackHole) play through
``sounddevice``; that path is untested here.

Trouble never stops the call: a microphone that disappears (a read fails, or the server
moved our stream to another source, which could be our own output) or a playback device
that goes away becomes one line in ``status()``, logged once. The loop then stops writing
(our null sink plays silence, so the call app's microphone stays open) and tries again
every second.
"""

from __future__ import annotations

import atexit
import json
import math
import os
import statistics
import subprocess
import sys
import threading
from collections import deque
from dataclasses import asdict

from .. import log
from . import pulse
from .closing import ClosesOnExit
from .virtual_mic_audio import MAX_LATENCY_S, AudioConfig, SharedState, target_position
from .virtual_mic_devices import (DESCRIPTION, SINK, SOURCE, TAKEN, VirtualMicError, alive, has_pactl, mic_name,
                                  own_sources, portaudio_output)

__all__ = ["DESCRIPTION", "SINK", "SOURCE", "VirtualMicError", "VirtualMicrophone", "target_position"]
logger = log.get(__name__)
OFFSET_LIMIT_MS = 200.0


class VirtualMicrophone(ClosesOnExit):
    """The microphone ``mic`` (None: the default source) delayed into ``device`` (None: a
    new "StreamFX Microphone"). ``start()``, then ``set_video_latency`` once per frame."""

    def __init__(self, mic: str | None = None, device: str | None = None, rate: int = 48000, channels: int = 1,
                 offset_ms: float = 0.0, *, block_ms: float = 5.0, buffer_ms: float = 25.0, window: int = 30,
                 retry_s: float = 1.0, platform: str = sys.platform) -> None:
        self.mic, self.device, self.rate, self.channels = mic, device, rate, channels
        self.block_ms, self.buffer_ms, self.retry_s = block_ms, buffer_ms, retry_s
        self.pulse = platform.startswith("linux")
        self._offset_ms = _checked_offset(offset_ms)
        self._latencies: deque[float] = deque(maxlen=window)
        self._estimate_s: float | None = None
        self._lock = threading.Lock()
        self._modules: list[int] = []        # loaded by start, unloaded by close (last first)
        self._mic_in_use = mic
        self._shared: SharedState | None = None
        self._process: subprocess.Popen | None = None
        self._monitor: threading.Thread | None = None
        self._quit = threading.Event()
        self._state = "stopped"

    # -- controls ---------------------------------------------------------------------------
    @property
    def offset_ms(self) -> float:
        """The manual offset added to the delay, -200..+200 ms (ValueError outside)."""
        return self._offset_ms

    @offset_ms.setter
    def offset_ms(self, value: float) -> None:
        self._offset_ms = _checked_offset(value)
        self._share_delay()

    def set_video_latency(self, seconds: float) -> None:
        """One frame's read -> handoff latency. The delay follows the median of the last
        ``window`` values; NaN is ignored, values are clamped to 0..2 s."""
        if not math.isfinite(seconds):
            return
        with self._lock:
            self._latencies.append(min(max(float(seconds), 0.0), MAX_LATENCY_S))
            self._estimate_s = statistics.median(self._latencies)
        self._share_delay()

    @property
    def delay_ms(self) -> float:
        """The delay in use: the latency estimate plus the offset (never below 0)."""
        return max(0.0, (self._estimate_s or 0.0) * 1000 + self._offset_ms)

    def _share_delay(self) -> None:
        if self._shared is not None:
            self._shared.delay_ms = self.delay_ms

    def status(self) -> dict:
        """``state``: "running", "waiting for microphone" or "failed" (both keep retrying),
        or "stopped" / "starting" / "closed"; ``error``: one line or None; ``floor_ms``: the
        smallest delay the buffers allow; ``underruns``: times the playback ran dry."""
        loop = self._shared.read() if self._shared is not None else {}
        state, error = loop.get("state", self._state), loop.get("error")
        if self._state == "closed":
            state, error = "closed", None
        elif self._process is not None and self._process.poll() is not None:
            code = self._process.returncode
            state, error = "failed", f"the virtual microphone's audio process ended (exit code {code})"
        return {"state": state, "delay_ms": round(self.delay_ms, 1), "offset_ms": self._offset_ms,
                "mic": loop.get("mic", self._mic_in_use), "device": self.device, "error": error,
                "floor_ms": loop.get("floor_ms"), "underruns": loop.get("underruns", 0)}

    # -- life -------------------------------------------------------------------------------
    def start(self) -> "VirtualMicrophone":
        """Make the virtual device (unless ``device``) and start the audio process.
        Raises :class:`VirtualMicError` (one line) when there is nothing to play into."""
        if self._process is not None:
            return self
        try:
            if self.pulse:
                self._prepare_pulse()
            else:
                self.device = portaudio_output(self.device)
        except (pulse.PulseError, VirtualMicError) as exc:
            self._unload()
            raise VirtualMicError(str(exc)) from None
        self._shared = SharedState()
        self._share_delay()
        config = AudioConfig(self.mic, self._mic_in_use, self.device, self.rate, self.channels,
                         int(self.rate * self.block_ms / 1000), self.buffer_ms / 1000, self.retry_s, self.pulse,
                         os.getpid())
        # its own interpreter (python -m this module): no GIL shared with the engine, and no
        # re-import of the caller's main script, as multiprocessing's spawn would do
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        try:
            self._process = subprocess.Popen([sys.executable, "-m", "streamfx.io.virtual_mic_audio", self._shared.path,
                                              json.dumps(asdict(config))], stdin=subprocess.DEVNULL, env=env)
        except OSError as exc:
            self._shared.unlink()
            self._unload()
            raise VirtualMicError(f"cannot start the virtual microphone's audio process: {exc}") from None
        self._state = "starting"
        self._quit.clear()
        self._monitor = threading.Thread(target=self._log_changes, name="virtual-mic-log", daemon=True)
        self._monitor.start()
        atexit.register(self.close)
        logger.info("virtual microphone started", extra={"mic": self._mic_in_use, "device": self.device})
        return self

    def close(self) -> None:
        """Stop the audio process and unload what ``start`` loaded; idempotent."""
        self._quit.set()
        if self._shared is not None:
            self._shared.ask_to_stop()
        if self._process is not None:
            if not _exited(self._process, 0.3):
                self._unload()      # a write into our just-made sink can wait 2 s: it starts slowly
                if not _exited(self._process, 0.3):
                    self._process.kill()   # it holds nothing the server does not clean up
                    _exited(self._process, 1.0)
        self._unload()
        if self._monitor is not None:
            self._monitor.join(timeout=1.0)
        if self._shared is not None:
            self._shared.unlink()
        self._process = self._monitor = None
        atexit.unregister(self.close)
        if self._state != "stopped":
            self._state = "closed"

    def _log_changes(self) -> None:
        """Log each new error line once, and the recovery."""
        logged = None
        while not self._quit.wait(0.25):
            error = self.status()["error"]
            if error is not None and error != logged:
                logger.warning("virtual microphone: " + error)
            elif error is None and logged is not None:
                logger.info("virtual microphone running again")
            logged = error

    # -- Linux: the devices -----------------------------------------------------------------
    def _prepare_pulse(self) -> None:
        if not has_pactl():
            if self.device is None:
                raise VirtualMicError("pactl not found (sudo apt install pulseaudio-utils): "
                                      "it makes the StreamFX Microphone")
            return
        if self.mic is not None and self.mic not in pulse.source_names():
            raise VirtualMicError(f"no microphone named {self.mic} (pactl list short sources lists them)")
        if self.device is not None and self.device not in pulse.sink_names():
            raise VirtualMicError(f"no sink named {self.device} to play into (pactl list short sinks lists them)")
        self._mic_in_use = mic_name(self.mic, self._mic_in_use, self.device)  # before our own source exists
        if self._mic_in_use in own_sources(self.device):
            raise VirtualMicError(f"the microphone {self._mic_in_use} is the virtual microphone itself; "
                                  "pass --mic with the real one")
        if self.device is None:
            self._create_devices()

    def _create_devices(self) -> None:
        sinks = {s.get("Name"): s for s in pulse.objects("sinks")}
        if SINK in sinks:
            self._remove_leftover(sinks[SINK])
        sources = {s.get("Name"): s for s in pulse.objects("sources")}
        if SOURCE in sources:
            raise VirtualMicError(TAKEN.format(name=f"the virtual microphone source {SOURCE}",
                                               who=sources[SOURCE].get("Driver", "?")))
        props = f"device.description=\"{DESCRIPTION}\" streamfx.pid={os.getpid()}"
        self._modules.append(pulse.load_module(
            "module-null-sink", sink_name=SINK, rate=self.rate, channels=self.channels,
            channel_map="mono" if self.channels == 1 else "front-left,front-right", sink_properties=f"'{props}'"))
        self._modules.append(pulse.load_module(
            "module-remap-source", source_name=SOURCE, master=f"{SINK}.monitor",
            source_properties=f"'device.description=\"{DESCRIPTION}\"'"))
        self.device = SINK
        logger.info("virtual microphone made", extra={"sink": SINK, "source": SOURCE, "modules": self._modules})

    def _remove_leftover(self, sink: dict) -> None:
        """A ``streamfx_mic`` whose ``streamfx.pid`` is dead is a crashed run's leftover:
        unloaded (its source too) and made anew; a call app that used it is moved back
        when the name returns (PulseAudio 14+ and PipeWire remember a stream's device).
        Anything else holding the name is an error."""
        pid = sink["properties"].get("streamfx.pid", "")
        name = f"the virtual microphone sink {SINK}"
        if not pid.isdigit():
            raise VirtualMicError(TAKEN.format(name=name, who=sink.get("Driver", "?")))
        if alive(int(pid)):
            raise VirtualMicError(TAKEN.format(name=name, who=f"StreamFX, pid {pid}"))
        source = {s.get("Name"): s for s in pulse.objects("sources")}.get(SOURCE)
        if source is not None and source.get("Driver") == "module-remap-source.c":
            pulse.unload_module(int(source["Owner Module"]))
        pulse.unload_module(int(sink["Owner Module"]))
        logger.warning("replaced a virtual microphone left by an earlier run", extra={"pid": pid})

    def _unload(self) -> None:
        while self._modules:
            index = self._modules.pop()
            try:
                pulse.unload_module(index)
            except pulse.PulseError as exc:
                logger.warning("could not unload a virtual microphone module", extra={"module": index,
                                                                                         "error": str(exc)})


def _checked_offset(value: float) -> float:
    value = float(value)
    if not -OFFSET_LIMIT_MS <= value <= OFFSET_LIMIT_MS:
        raise ValueError(f"the microphone offset must be within ±{OFFSET_LIMIT_MS:g} ms, not {value:g}")
    return value


def _exited(process: subprocess.Popen, timeout: float) -> bool:
    try:
        process.wait(timeout=timeout)
        return True
    except subprocess.TimeoutExpired:
        return False
