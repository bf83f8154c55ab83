"""The virtual microphone's audio process: read the microphone, delay it, play it on.

``python -m streamfx.io.virtual_mic_audio PATH CONFIG`` is started by
:class:`~streamfx.io.virtual_mic.VirtualMicrophone`. Inside the engine's process the loop
had to win the GIL back from the engine twice per block, and with the mesh engine running
it missed its buffer every ten seconds or so (dropouts, measured); alone, none in 60 s.
The two processes share a small mapped file (:class:`SharedState`): the delay and a stop
flag one way, the loop's status the other, with no locks (a lock held by a killed process
would hang the other for good).

Each 5 ms block read from the microphone is written into an
:class:`~streamfx.io.audio_delay.AudioDelayLine` at its capture position, and one block is
played for each block read, taken from the line at :func:`target_position`. One block out
per block in keeps the output on the microphone's clock; the virtual device runs on its
own, so when the playback level drifts a block is written one sample longer or shorter
(:func:`trim`). Trouble (a microphone gone, a device gone) becomes one line in the status
and the loop tries again every second.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import signal
import statistics
import struct
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from . import pulse
from .audio_delay import AudioDelayLine
from .virtual_mic_devices import PortAudioStream, VirtualMicError, has_pactl, mic_name

MAX_LATENCY_S = 2.0        # larger video latencies are clamped (the line holds 5 s)


def target_position(captured: int, delay_s: float, buffered_s: float, rate: int) -> float:
    """The source position the next output block should start at.

    ``captured`` is the capture position just past the block just read, which was
    captured ``record_latency`` ago; the block written now starts playing
    ``playback_latency`` from now. The sample captured now is therefore at
    ``captured + rate * record_latency``, and the block's first sample must carry the one
    captured ``delay_s`` before the block plays:
    ``captured + rate * (record_latency + playback_latency - delay_s)``, with
    ``buffered_s = record_latency + playback_latency``.
    """
    return captured - rate * (delay_s - buffered_s)


@dataclass(frozen=True)
class AudioConfig:
    mic: str | None             # as named (None: the default source)
    mic_in_use: str | None      # the default, looked up at start
    device: str | None
    rate: int
    channels: int
    block: int                  # samples per block
    buffer_s: float             # playback buffer
    retry_s: float
    pulse: bool
    parent: int                 # the parent's pid: gone means stop


class SharedState:
    """A small file both processes map: the delay and the stop flag (the parent writes
    them), the loop's status as JSON (the child writes it). No locks: a lock held by a
    process that is killed would hang the other one for good; a read that overlaps a
    write does not parse and returns the last good status."""

    SIZE, STATUS = 2048, 16       # delay: double at 0; stop: byte at 8; status: length at 12, JSON at 16

    def __init__(self, path: str | None = None) -> None:
        if path is None:
            where = "/dev/shm" if os.path.isdir("/dev/shm") else None
            fd, path = tempfile.mkstemp(prefix="streamfx-mic-", dir=where)
            os.ftruncate(fd, self.SIZE)
        else:
            fd = os.open(path, os.O_RDWR)
        self.path, self._map, self._last = path, mmap.mmap(fd, self.SIZE), {}
        os.close(fd)

    @property
    def delay_ms(self) -> float:
        return struct.unpack_from("d", self._map, 0)[0]

    @delay_ms.setter
    def delay_ms(self, value: float) -> None:
        struct.pack_into("d", self._map, 0, value)

    @property
    def stop(self) -> bool:
        return bool(self._map[8])

    def ask_to_stop(self) -> None:
        self._map[8] = 1

    def publish(self, status: dict) -> None:
        data = json.dumps({k: (v[:300] if isinstance(v, str) else v) for k, v in status.items()}).encode()
        data = data[:self.SIZE - self.STATUS]
        self._map[self.STATUS:self.STATUS + len(data)] = data
        struct.pack_into("I", self._map, 12, len(data))

    def read(self) -> dict:
        size = min(struct.unpack_from("I", self._map, 12)[0], self.SIZE - self.STATUS)
        try:
            self._last = json.loads(self._map[self.STATUS:self.STATUS + size] or b"{}")
        except ValueError:
            pass
        return self._last

    def unlink(self) -> None:
        try:
            os.unlink(self.path)
        except OSError:
            pass


def audio_main(shared_path: str, config_json: str) -> None:
    """The audio process (``python -m streamfx.io.virtual_mic PATH CONFIG``): the loop
    until told to stop or the parent is gone. Ctrl-C reaches the whole process group;
    the parent handles it (and stops us). A parent killed outright leaves its devices to
    the next start (a dead ``streamfx.pid``: replaced)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    config, shared = AudioConfig(**json.loads(config_json)), SharedState(shared_path)
    AudioLoop(config, shared).run()
    if os.getppid() != config.parent:      # the parent died without closing: tidy up for it
        shared.unlink()


class Stream(Protocol):
    def read(self, frames: int) -> np.ndarray: ...
    def write(self, samples: np.ndarray) -> None: ...
    def latency(self) -> float: ...
    def close(self) -> None: ...


class Trouble(Exception):
    """Why the streams stopped: a status state and one line."""

    def __init__(self, state: str, line: str) -> None:
        super().__init__(line)
        self.state, self.line = state, line


class AudioLoop:
    """(In the audio process.) Open both streams, pump, and on trouble say why and retry."""

    def __init__(self, config: AudioConfig, shared: SharedState) -> None:
        self.c, self.shared, self.stop = config, shared, threading.Event()   # set by _watch
        self.mic = config.mic_in_use
        self.status = {"state": "starting", "error": None, "mic": self.mic, "floor_ms": None, "underruns": 0}
        self.epoch = 0
        self.streams: tuple[int, str, str] | None = None   # (epoch, record name, playback name) while open
        self.moved: tuple[int, str, str] | None = None     # (epoch, state, why) from the watcher

    def run(self) -> None:
        threading.Thread(target=self._watch, name="virtual-mic-watch", daemon=True).start()
        while not self.stop.is_set() and not self.shared.stop:
            streams: list[Stream] = []
            try:
                self._open(streams)
                self._pump(*streams)
            except Trouble as trouble:
                self._report(trouble.state, trouble.line)
            except Exception as exc:  # noqa: BLE001 - the call goes on; the line says why
                self._report("failed", f"virtual microphone: {type(exc).__name__}: {one_line(exc)}")
            finally:
                self.streams = None
                for stream in reversed(streams):
                    stream.close()
            self.stop.wait(self.c.retry_s)

    def _report(self, state: str, error: str | None, **more) -> None:
        self.status.update(state=state, error=error, mic=self.mic, **more)
        self.shared.publish(self.status)

    def _open(self, streams: list[Stream]) -> None:
        self.epoch += 1
        tag = f"{os.getpid()}.{self.epoch}"
        names = (f"StreamFX microphone in {tag}", f"StreamFX microphone out {tag}")
        retry = f"retrying every {self.c.retry_s:g} s"
        try:
            if self.c.pulse:
                self.mic = mic_name(self.c.mic, self.mic, self.c.device)
            streams.append(self._stream("record", self.mic, names[0]))
        except (pulse.PulseError, VirtualMicError, OSError) as exc:
            raise Trouble("waiting for microphone", f"microphone {self.mic or '(default)'}: {one_line(exc)}; "
                           f"{retry}") from None
        try:
            streams.append(self._stream("playback", self.c.device, names[1]))
        except (pulse.PulseError, OSError) as exc:
            raise Trouble("failed", f"cannot play into {self.c.device}: {one_line(exc)}; {retry}") from None
        self.moved, self.streams = None, (self.epoch, *names)

    def _stream(self, direction: str, device: str | None, name: str) -> Stream:
        c = self.c
        if not c.pulse:
            return PortAudioStream(direction, device, c.rate, c.channels, c.block)
        buffer_s = c.block / c.rate if direction == "record" else c.buffer_s
        return pulse.SimpleStream(direction, device, c.rate, c.channels, buffer_s, name=name)

    def _io(self, what: str, call, *args):
        """A stream call; its failure is a :class:`Trouble` naming the device."""
        try:
            return call(*args)
        except (pulse.PulseError, OSError) as exc:
            retry = f"retrying every {self.c.retry_s:g} s"
            if what == "record":
                raise Trouble("waiting for microphone", f"microphone {self.mic or '(default)'} stopped: "
                               f"{one_line(exc)}; {retry}") from None
            raise Trouble("failed", f"playing into {self.c.device} stopped: {one_line(exc)}; {retry}") from None

    def _pump(self, rec: Stream, play: Stream) -> None:
        """One block out per block in, until stopped or a stream fails. After a stall the
        reads come at once from the recording's backlog and the writes refill what the
        playback lost, so both buffers return to their levels by themselves."""
        n, rate, io = self.c.block, self.c.rate, self._io
        line = AudioDelayLine(rate, self.c.channels, capacity_s=2 * MAX_LATENCY_S + 1)
        goal = max(self.c.buffer_s - n / rate, n / rate)      # playback queued before each write
        self._settle(rec, play, goal)
        captured, sums, levels = 0, deque(maxlen=25), deque(maxlen=51)
        underruns, dry = self.status["underruns"], False
        while not self.stop.is_set():
            line.write(captured, io("record", rec.read, n))
            captured += n
            if self.moved is not None and self.moved[0] == self.epoch:
                raise Trouble(self.moved[1], self.moved[2])
            record_s, playback_s = io("record", rec.latency), io("play", play.latency)
            if playback_s < 0.001 and not dry and captured > rate:   # ran dry (the first second settles)
                underruns += 1
            dry = playback_s < 0.001
            sums.append(record_s + playback_s)
            levels.append(playback_s)
            align = statistics.median(sums)                   # record + playback latency, robust to jitter
            out = n + trim(levels, goal)
            # never past what was captured, slew (1 %) included: the future reads as silence
            target = min(target_position(captured, self.shared.delay_ms / 1000, align, rate),
                         captured - out - math.ceil(0.01 * out) - 1)
            if target + out <= 0:                             # all before the first sample: silence
                line.position = None                          # either way, so land on the target exactly
            if self.stop.is_set():                            # closed while we read: our sink may be gone
                break
            io("play", play.write, line.read(target, out))
            if captured >= rate and (self.status["state"] != "running" or captured % (rate // 2) < n):
                # "running" once the buffers have settled (a second), then refreshed twice a second
                self._report("running", None, floor_ms=round((align + n / rate) * 1000, 1), underruns=underruns)

    def _settle(self, rec: Stream, play: Stream, goal: float, steady_blocks: int = 20,
                most_s: float = 5.0) -> None:
        """Silence out, one block per block in, until both streams keep time: a device
        that was idle renders seconds at a time at first (a write waits, a read brings a
        backlog, read and dropped here: flushing a recording leaves libpulse's latency off
        by what was flushed). Then queue the playback up to ``goal``."""
        n, rate, steady = self.c.block, self.c.rate, 0
        silence = np.zeros((n, self.c.channels), np.int16)
        deadline = time.monotonic() + most_s
        while steady < steady_blocks and not self.stop.is_set() and time.monotonic() < deadline:
            self._io("record", rec.read, n)
            for _ in range(int(rate / n)):
                if self._io("record", rec.latency) <= 2 * n / rate:
                    break
                self._io("record", rec.read, n)
            began = time.monotonic()
            if not self.stop.is_set():
                self._io("play", play.write, silence)
            steady = steady + 1 if time.monotonic() - began < 2 * n / rate else 0
        if not self.stop.is_set():
            self._refill(play, goal)

    def _refill(self, play: Stream, goal: float) -> float:
        """Queue silence until ``goal`` seconds are queued; returns the playback latency."""
        playback_s = self._io("play", play.latency)
        if playback_s < goal:
            silence = np.zeros((int((goal - playback_s) * self.c.rate), self.c.channels), np.int16)
            self._io("play", play.write, silence)
            playback_s = self._io("play", play.latency)
        return playback_s

    def _watch(self) -> None:
        """Is it time to stop (asked, or the parent is gone)? And every ``retry_s``: is
        each stream still on its device? (The server moves a stream whose device went away
        to the default one, which could be our own output, and tells a simple stream
        nothing.)"""
        checked = time.monotonic()
        while not self.stop.wait(0.05):
            if self.shared.stop or os.getppid() != self.c.parent:
                self.stop.set()
                return
            if time.monotonic() - checked < self.c.retry_s:
                continue
            checked = time.monotonic()
            if self.streams is None or not self.c.pulse or not has_pactl():
                continue
            epoch, rec_name, play_name = self.streams
            try:
                where = pulse.stream_devices({rec_name, play_name})
            except pulse.PulseError:
                continue
            retry = f"retrying every {self.c.retry_s:g} s"
            if self.mic is not None and where.get(rec_name, self.mic) != self.mic:
                self.moved = (epoch, "waiting for microphone", f"microphone {self.mic} is gone; {retry}")
            elif self.c.device is not None and where.get(play_name, self.c.device) != self.c.device:
                self.moved = (epoch, "failed", f"the playback device {self.c.device} is gone; {retry}")


def trim(levels: deque, goal: float, band_s: float = 0.004) -> int:
    """+1 / -1 sample for the next block when the playback level (median of ``levels``)
    drifts out of ``goal`` ± ``band_s``: the virtual device's clock is not the mic's."""
    if len(levels) < (levels.maxlen or 1):
        return 0
    level = statistics.median(levels)
    return 1 if level < goal - band_s else -1 if level > goal + band_s else 0


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


if __name__ == "__main__":
    audio_main(*sys.argv[1:3])
