"""The virtual microphone's devices: its names, which microphone to read, and on Windows and
macOS the virtual cable played through PortAudio (``sounddevice``; untested here).

Used by the front (:mod:`.virtual_mic`, which makes and removes the PulseAudio devices) and
by the audio process (:mod:`.virtual_mic_audio`).
"""

from __future__ import annotations

import os
import shutil
import sys

import numpy as np

from . import pulse
from .errors import MediaError

SINK, SOURCE, DESCRIPTION = "streamfx_mic", "streamfx_microphone", "StreamFX Microphone"
TAKEN = "{name} is taken by another program ({who}); close it or pass --virtual-mic-device"


class VirtualMicError(MediaError):
    """No virtual microphone can be made or played into; the message is one line."""


def mic_name(named: str | None, current: str | None, device: str | None) -> str | None:
    """The named microphone, else the default source (kept while it exists); never a
    monitor or our own output."""
    if named is not None or not has_pactl():
        return named
    if current is None or current not in pulse.source_names():
        name = pulse.default_source()
        if name is None or name in own_sources(device) or name.endswith(".monitor"):
            what = "there is no default source" if name is None else f"the default source is {name}"
            raise VirtualMicError(f"no microphone: {what}; pass --mic (pactl list short sources lists them)")
        current = name
    return current


def own_sources(device: str | None) -> set[str]:
    """Sources that carry the virtual microphone's own output (never record from them)."""
    return {SOURCE, f"{SINK}.monitor"} | ({f"{device}.monitor"} if device else set())


def has_pactl() -> bool:
    return shutil.which("pactl") is not None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -- Windows and macOS: a virtual cable through PortAudio (untested here) ----------------------
CABLES = {"win32": ("CABLE Input", "install VB-CABLE (vb-audio.com/Cable)"),
           "darwin": ("BlackHole", "brew install blackhole-2ch")}


def sounddevice_module():
    try:
        import sounddevice
    except (ImportError, OSError):  # OSError: installed without the PortAudio library
        raise VirtualMicError("the virtual microphone needs sounddevice here: pip install sounddevice") from None
    return sounddevice


def portaudio_output(device: str | None) -> str:
    """The output device to play into: ``device`` or the platform's virtual cable."""
    want, install = CABLES.get(sys.platform, (None, "a virtual audio cable"))
    name = device or want
    if name is None:
        raise VirtualMicError(f"no virtual microphone on {sys.platform}: pass --virtual-mic-device")
    devices = sounddevice_module().query_devices()
    found = [d["name"] for d in devices if d["max_output_channels"] > 0 and name.lower() in d["name"].lower()]
    if not found:
        raise VirtualMicError(f"no audio device named {name}: {install}")
    return found[0]


class PortAudioStream:
    """A blocking PortAudio stream with a simple stream's four calls (latency: PortAudio's
    own figure, plus what waits to be read)."""

    def __init__(self, direction: str, device: str | None, rate: int, channels: int, block: int) -> None:
        sd = sounddevice_module()
        kind = sd.InputStream if direction == "record" else sd.OutputStream
        self.rate, self.record = rate, direction == "record"
        self.stream = kind(samplerate=rate, channels=channels, dtype="int16", blocksize=block, device=device,
                           latency="low")
        self.stream.start()

    def read(self, frames: int) -> np.ndarray:
        return self.stream.read(frames)[0]

    def write(self, samples: np.ndarray) -> None:
        self.stream.write(np.ascontiguousarray(samples))

    def latency(self) -> float:
        queued = self.stream.read_available / self.rate if self.record else 0.0
        return float(self.stream.latency) + queued

    def close(self) -> None:
        self.stream.close()
