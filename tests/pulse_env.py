"""A real, private PulseAudio daemon for tests (and the virtual-microphone benchmark).

    from pulse_env import pulse_daemon          # a session-scoped fixture: one daemon per run

    def test_x(pulse_daemon):
        probe = pulse_daemon.probe()            # the sample-exact measuring arrangement

The daemon runs from its own temporary runtime directory, listens on its own unix socket,
and ``PULSE_SERVER`` points this process and its children at it (restored afterwards), so
nothing here touches a user's sound server. As root, PulseAudio 16 only warns ("not
intended to be run as root"); ``--system=false`` keeps it a per-user daemon anyway, and its
own HOME and XDG directories keep its cookie and state out of /root. ``-n`` skips the
default script (no ALSA, no D-Bus), so it answers in well under a second. Tests skip when
pulseaudio is not installed (Debian: ``pulseaudio pulseaudio-utils``).

The probe: a stereo null sink ``probe`` and remap sinks ``probe_left`` and ``probe_right``
(mono into probe's front-left / front-right). Clicks played into probe_left are the "sound
at the microphone", and the microphone is ``probe_left.monitor`` (exactly what probe_left
plays, mono); the device under test plays into probe_right; recording probe.monitor in
stereo then shows, per click, right minus left in samples of one recording: the true
end-to-end delay on one clock. (Remap sinks are rendered inside probe's own render cycle,
so both channels land on probe's timeline; :func:`measure_direct` checks it.) A remap
source of probe.monitor's left channel would do as the microphone too, but the latency it
reports is off by a different 0-10 ms each time a stream starts on it (measured: the
virtual microphone's delay came out -10..+5 ms from run to run through it, within
±0.4 ms through probe_left.monitor).

Two streams that are never read keep probe.monitor and probe_left.monitor at a 10 ms
latency for the session: a source nobody records from renders seconds at a time when it
is first used, which a real microphone never does.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

RATE = 48000
PROBE_MODULES = (
    ("module-null-sink", {"sink_name": "probe", "rate": RATE, "channels": 2, "channel_map": "front-left,front-right",
                          "sink_properties": "device.description=Probe"}),
    ("module-remap-sink", {"sink_name": "probe_left", "master": "probe", "channels": 1, "channel_map": "mono",
                           "master_channel_map": "front-left", "remix": "no", "rate": RATE}),
    ("module-remap-sink", {"sink_name": "probe_right", "master": "probe", "channels": 1, "channel_map": "mono",
                           "master_channel_map": "front-right", "remix": "no", "rate": RATE}),
)


@dataclass
class PulseDaemon:
    """A running private daemon: ``server`` is its ``PULSE_SERVER`` string."""

    process: subprocess.Popen
    root: Path
    server: str
    _probe: bool = False
    _keepers: list = field(default_factory=list)

    def pactl(self, *args: str, check: bool = True) -> str:
        done = subprocess.run(["pactl", *args], capture_output=True, text=True, timeout=10,
                              env={**os.environ, "PULSE_SERVER": self.server, "LC_ALL": "C"})
        if check and done.returncode != 0:
            raise RuntimeError(f"pactl {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def load(self, module: str, **arguments: object) -> int:
        return int(self.pactl("load-module", module, *(f"{k}={v}" for k, v in arguments.items())).strip())

    def names(self, kind: str) -> list[str]:
        """Names in ``pactl list short KIND`` (sinks, sources)."""
        return [line.split("\t")[1] for line in self.pactl("list", "short", kind).splitlines() if "\t" in line]

    def probe(self) -> "Probe":
        """Load the probe arrangement once (it stays for the session)."""
        if not self._probe:
            for module, arguments in PROBE_MODULES:
                self.load(module, **arguments)
            self.pactl("set-default-sink", "probe")
            self.pactl("set-default-source", "probe.monitor")
            self._keep_warm("probe.monitor", "probe_left.monitor")
            self._probe = True
        return Probe(self)

    def _keep_warm(self, *sources: str) -> None:
        """Hold a 10 ms recording (never read) on each source for the session."""
        from streamfx.io.pulse import SimpleStream

        for source in sources:
            self._keepers.append(SimpleStream("record", source, RATE, 1, 0.01, name=f"keep {source} warm"))

    def stop(self) -> None:
        for keeper in self._keepers:
            keeper.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def private_pulse(timeout_s: float = 10.0) -> Iterator[PulseDaemon]:
    """Start a private pulseaudio, point ``PULSE_SERVER`` at it, stop it at the end."""
    if shutil.which("pulseaudio") is None or shutil.which("pactl") is None:
        if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
            raise RuntimeError("pulseaudio is missing; .ci/run installs it (apt-get install pulseaudio pulseaudio-utils)")
        pytest.skip("pulseaudio is not installed (Debian: apt install pulseaudio pulseaudio-utils)")
    root = Path(tempfile.mkdtemp(prefix="streamfx-pulse-"))
    socket = root / "native"
    env = {**os.environ, "HOME": str(root), "XDG_RUNTIME_DIR": str(root), "XDG_CONFIG_HOME": str(root / "config"),
           "PULSE_RUNTIME_PATH": str(root / "pulse"), "PULSE_STATE_PATH": str(root / "state"), "LC_ALL": "C"}
    env.pop("PULSE_SERVER", None)
    log = open(root / "daemon.log", "wb")
    process = subprocess.Popen(
        ["pulseaudio", "--daemonize=no", "-n", "--system=false", "--use-pid-file=false", "--exit-idle-time=-1",
         "--disallow-exit", "--log-target=stderr", "--log-level=warning",
         "-L", f"module-native-protocol-unix socket={socket} auth-anonymous=1"],
        env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    log.close()
    daemon = PulseDaemon(process, root, f"unix:{socket}")
    saved = {key: os.environ.get(key) for key in ("PULSE_SERVER",)}
    try:
        deadline = time.monotonic() + timeout_s
        while daemon.pactl("info", check=False) == "":
            if process.poll() is not None or time.monotonic() > deadline:
                tail = (root / "daemon.log").read_text(errors="replace").strip().splitlines()[-3:]
                raise RuntimeError(f"private pulseaudio did not start: {' | '.join(tail)}")
            time.sleep(0.05)
        os.environ["PULSE_SERVER"] = daemon.server
        yield daemon
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        daemon.stop()


_shared: dict = {"daemon": None, "users": 0, "stack": None}
_lock = threading.Lock()


@pytest.fixture(scope="session")
def pulse_daemon() -> Iterator[PulseDaemon]:
    """One daemon for the whole run, shared by every module that imports this fixture."""
    with _lock:
        if _shared["daemon"] is None:
            stack = contextlib.ExitStack()
            _shared["daemon"], _shared["stack"] = stack.enter_context(private_pulse()), stack
        _shared["users"] += 1
    try:
        yield _shared["daemon"]
    finally:
        with _lock:
            _shared["users"] -= 1
            if _shared["users"] == 0:
                _shared["stack"].close()
                _shared["daemon"] = _shared["stack"] = None


# -- measuring --------------------------------------------------------------------------------
CLICK = (np.sin(2 * np.pi * 3000 * np.arange(96) / RATE) * 24000).astype(np.int16)  # 2 ms at 3 kHz


class Probe:
    """Play into probe_left, record probe.monitor, find clicks in either channel."""

    def __init__(self, daemon: PulseDaemon) -> None:
        self.daemon = daemon
        self.mic, self.out, self.monitor = "probe_left.monitor", "probe_right", "probe.monitor"

    def record(self, seconds: float, play: np.ndarray | None = None) -> np.ndarray:
        """Record probe.monitor for ``seconds`` (int16, shape (n, 2)), playing ``play`` (mono
        int16) into probe_left meanwhile."""
        return record_probe(seconds, play, self.monitor)


def record_probe(seconds: float, play: np.ndarray | None = None, monitor: str = "probe.monitor",
                 anchors: list[float] | None = None) -> np.ndarray:
    """What :meth:`Probe.record` does, usable without a daemon object (another process).
    ``anchors`` gets, per block read, the monotonic time of the recording's sample 0 (its
    median maps sample positions to the wall clock, for the benchmark)."""
    from streamfx.io.pulse import SimpleStream

    frames = int(seconds * RATE)
    out: list[np.ndarray] = []
    player: threading.Thread | None = None
    with SimpleStream("record", monitor, RATE, 2, 0.01, name="probe recorder") as rec:
        if play is not None:
            def feed() -> None:
                with SimpleStream("playback", "probe_left", RATE, 1, 0.1, name="probe clicks") as pb:
                    for start in range(0, len(play), 960):
                        pb.write(play[start:start + 960, None])
                    pb.drain()
            player = threading.Thread(target=feed, daemon=True)
            player.start()
        got = 0
        while got < frames:
            block = rec.read(min(960, frames - got))
            out.append(block)
            got += len(block)
            if anchors is not None:
                anchors.append(time.monotonic() - rec.latency() - got / RATE)
    if player is not None:
        player.join(timeout=seconds + 5)
    return np.concatenate(out)


def clicks(signal_: np.ndarray, threshold: int = 12000, gap: int = 4800) -> list[int]:
    """Onsets (sample positions) of the clicks in one channel: the first sample above
    ``threshold`` after at least ``gap`` quiet samples."""
    loud = np.flatnonzero(np.abs(signal_.astype(np.int32)) > threshold)
    if not len(loud):
        return []
    starts = np.concatenate([[0], np.flatnonzero(np.diff(loud) > gap) + 1])
    return [int(loud[i]) for i in starts]


def click_train(seconds: float, period_s: float = 0.5, first_s: float = 0.3, tone: int = 0,
                tone_hz: float = 440.0) -> tuple[np.ndarray, list[int]]:
    """Mono int16: a click every ``period_s`` from ``first_s`` on, over a steady tone of
    amplitude ``tone`` (0: silence). Returns the samples and the click positions."""
    n = int(seconds * RATE)
    wave = np.sin(2 * np.pi * tone_hz * np.arange(n) / RATE) * tone
    ramp = np.linspace(0.0, 1.0, RATE // 20)                  # 50 ms fades: no step where the tone starts
    wave[:len(ramp)] *= ramp
    wave[-len(ramp):] *= ramp[::-1]
    at = list(range(int(first_s * RATE), n - len(CLICK), int(period_s * RATE)))
    for position in at:
        wave[position:position + len(CLICK)] = CLICK
    return wave.astype(np.int16), at


def pairs(recording: np.ndarray, most: int = RATE // 2) -> list[tuple[int, int]]:
    """Per right-channel click: (onset of the last left-channel click at or before it, the
    right onset minus that), in samples; pairs more than ``most`` apart are skipped."""
    left, right = clicks(recording[:, 0]), clicks(recording[:, 1])
    out = []
    for r in right:
        before = [x for x in left if x <= r]
        if before and r - before[-1] <= most:
            out.append((before[-1], r - before[-1]))
    return out


def delays(recording: np.ndarray, most: int = RATE // 2) -> list[int]:
    """Per right-channel click, how many samples after its left-channel click it came."""
    return [delay for _, delay in pairs(recording, most)]


def measure_direct(daemon: PulseDaemon, seconds: float = 1.5, lag: int = 4800) -> list[int]:
    """The probe's own check: the same clicks played into probe_left and, ``lag`` samples
    later in its stream, into probe_right, by two streams written in lockstep; the
    recording should show ``lag`` plus a small constant skew (the streams' start times)
    for every click, i.e. both channels land on probe's one timeline."""
    from streamfx.io.pulse import SimpleStream

    wave, _ = click_train(seconds)
    late = np.concatenate([np.zeros(lag, np.int16), wave[:-lag]])
    result: dict = {}
    probe = daemon.probe()
    thread = threading.Thread(target=lambda: result.update(rec=probe.record(seconds + 0.5)))
    thread.start()
    with SimpleStream("playback", "probe_left", RATE, 1, 0.1) as a, \
            SimpleStream("playback", "probe_right", RATE, 1, 0.1) as b:
        for start in range(0, len(wave), 960):
            a.write(wave[start:start + 960, None])
            b.write(late[start:start + 960, None])
    thread.join()
    return delays(result["rec"])
