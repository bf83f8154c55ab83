"""The virtual microphone on a real (private) PulseAudio daemon: its delay measured in
samples of one recording (see ``tests/pulse_env.py``: clicks into the probe's left channel
are the microphone, the virtual microphone plays into its right channel), its devices, a
microphone that goes and comes back, and a device name that is taken."""

from __future__ import annotations

import os
import subprocess
import threading
import time

import numpy as np
import pytest

from pulse_env import RATE, click_train, clicks, delays, pulse_daemon  # noqa: F401 - pulse_daemon is a fixture
from streamfx.io.virtual_mic import DESCRIPTION, SINK, SOURCE, VirtualMicError, VirtualMicrophone

TOLERANCE = 480                       # 10 ms at 48 kHz
TONE, TONE_HZ = 2000, 440.0


@pytest.fixture(scope="module")
def probe(pulse_daemon):  # noqa: F811 - the fixture imported above
    return pulse_daemon.probe()


def wait_for(predicate, seconds: float = 8.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def running(vmic: VirtualMicrophone) -> bool:
    return vmic.status()["state"] == "running"


def feed(vmic: VirtualMicrophone, seconds: float) -> None:
    """What the camera loop does: one latency per frame, here 30 frames at once."""
    for _ in range(30):
        vmic.set_video_latency(seconds)


def largest_step_away_from_clicks(channel: np.ndarray) -> int:
    """The largest sample-to-sample change outside the clicks (and their slewed copies)."""
    steps = np.abs(np.diff(channel.astype(np.int32)))
    keep = np.ones(len(steps), bool)
    for onset in clicks(channel, threshold=int(TONE * 1.05), gap=200):  # any sample above the tone
        keep[max(0, onset - 50):onset + 300] = False
    return int(steps[keep].max())


def test_the_clicks_come_out_delayed_by_the_video_latency_and_follow_it_smoothly(probe):
    vmic = VirtualMicrophone(mic=probe.mic, device=probe.out).start()
    try:
        feed(vmic, 0.120)
        assert wait_for(lambda: running(vmic)), vmic.status()
        wave, _ = click_train(3.6, tone=TONE, tone_hz=TONE_HZ)
        change = threading.Timer(1.7, feed, (vmic, 0.250))  # the engine got slower mid-recording
        change.start()
        recording = probe.record(3.9, wave)
        change.join()
        measured = delays(recording)
        assert len(measured) >= 6, measured
        early, late = measured[:2], measured[-3:]
        assert all(abs(d - 0.120 * RATE) <= TOLERANCE for d in early), measured
        assert all(abs(d - 0.250 * RATE) <= TOLERANCE for d in late), measured
        assert all(min(abs(d - 0.120 * RATE), abs(d - 0.250 * RATE)) <= TOLERANCE for d in measured), measured
        # a 440 Hz tone at 2000 moves by at most 115 per sample; a cut or a gap would jump far more
        assert largest_step_away_from_clicks(recording[RATE // 4:, 1]) < 170

        vmic.offset_ms = 60.0                              # the manual offset adds to the delay
        assert vmic.delay_ms == pytest.approx(310.0)
        wave, _ = click_train(1.9)
        measured = delays(probe.record(2.2, wave), most=int(0.45 * RATE))
        assert len(measured) >= 3 and all(abs(d - 0.310 * RATE) <= TOLERANCE for d in measured), measured
        assert vmic.status()["delay_ms"] == 310.0 and vmic.status()["error"] is None
    finally:
        vmic.close()
    with pytest.raises(ValueError):
        vmic.offset_ms = 250


def test_without_a_device_it_makes_the_streamfx_microphone_and_removes_it(pulse_daemon, probe):  # noqa: F811
    vmic = VirtualMicrophone(mic=probe.mic)
    vmic.start()
    try:
        assert SINK in pulse_daemon.names("sinks") and SOURCE in pulse_daemon.names("sources")
        for kind, name in (("sinks", SINK), ("sources", SOURCE)):
            listing = pulse_daemon.pactl("list", kind)
            block = listing[listing.index(f"Name: {name}\n"):]
            assert block.split("\n", 2)[1].strip() == f"Description: {DESCRIPTION}"
        assert vmic.status()["device"] == SINK
    finally:
        vmic.close()
        vmic.close()                                       # idempotent
    assert SINK not in pulse_daemon.names("sinks")
    assert SOURCE not in pulse_daemon.names("sources") and f"{SINK}.monitor" not in pulse_daemon.names("sources")


def test_a_microphone_that_goes_away_and_comes_back(pulse_daemon, probe):  # noqa: F811
    arguments = dict(source_name="flaky_mic", master="probe.monitor", channels=1, channel_map="mono",
                     master_channel_map="front-left", remix="no", rate=RATE)
    module = pulse_daemon.load("module-remap-source", **arguments)
    vmic = VirtualMicrophone(mic="flaky_mic", device=probe.out, retry_s=0.25).start()
    try:
        assert wait_for(lambda: running(vmic)), vmic.status()
        pulse_daemon.pactl("unload-module", str(module))   # unplugged: the server moves our stream elsewhere
        assert wait_for(lambda: vmic.status()["state"] == "waiting for microphone", 4), vmic.status()
        error = vmic.status()["error"]
        assert "flaky_mic" in error and "\n" not in error
        assert vmic._process is not None and vmic._process.poll() is None    # the call goes on
        module = pulse_daemon.load("module-remap-source", **arguments)
        assert wait_for(lambda: running(vmic)), vmic.status()
        assert vmic.status()["error"] is None
    finally:
        vmic.close()
        pulse_daemon.pactl("unload-module", str(module), check=False)


def test_a_sink_name_that_is_taken_is_a_clear_error_and_a_crashed_runs_leftover_is_replaced(pulse_daemon,  # noqa: F811
                                                                                           probe):
    other = pulse_daemon.load("module-null-sink", sink_name=SINK)      # another program's sink
    modules = pulse_daemon.pactl("list", "short", "modules")
    try:
        with pytest.raises(VirtualMicError, match="taken by another program.*--virtual-mic-device") as caught:
            VirtualMicrophone(mic=probe.mic).start()
        assert "\n" not in str(caught.value)
        assert pulse_daemon.pactl("list", "short", "modules") == modules   # nothing of ours left behind
    finally:
        pulse_daemon.pactl("unload-module", str(other))

    dead = subprocess.Popen(["true"])
    dead.wait()
    props = f"'device.description=\"{DESCRIPTION}\" streamfx.pid={dead.pid}'"
    pulse_daemon.load("module-null-sink", sink_name=SINK, sink_properties=props)
    pulse_daemon.load("module-remap-source", source_name=SOURCE, master=f"{SINK}.monitor")
    vmic = VirtualMicrophone(mic=probe.mic).start()                    # a leftover: replaced
    try:
        assert SINK in pulse_daemon.names("sinks") and SOURCE in pulse_daemon.names("sources")
        assert f"streamfx.pid = \"{os.getpid()}\"" in pulse_daemon.pactl("list", "sinks")
    finally:
        vmic.close()
    assert SINK not in pulse_daemon.names("sinks") and SOURCE not in pulse_daemon.names("sources")
