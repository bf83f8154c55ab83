"""A/V sync at the virtual microphone: how far apart do a sound and the frame read at the
same moment reach the call app, with the microphone delayed by the filter's latency?

A private PulseAudio daemon and its probe (``tests/pulse_env.py``): clicks over a steady
tone are played into the probe's left channel (the "sound at the microphone"), the virtual
microphone reads them (``probe_left.monitor``) and plays them into the right channel; one recording
of both gives the audio delay of every click in samples. Meanwhile the video loop reads the
face clip at its frame rate, filters each frame (``CallerPipeline.process``), times it from
read to processed as ``streamfx camera`` does, and hands the latency to the microphone.
For each click, with ``t`` the moment it was at the microphone (the recording's samples
mapped onto the monotonic clock through the recorder's latency):

    offset = audio delay - latency of the frame read nearest ``t``     (audio late: positive)

``offset_vs_window`` compares with the median latency of the frames read in the second
before ``t`` instead (what the microphone can follow; the per-frame jitter of the engine
is the difference). The baseline, from the same recording, is the undelayed microphone
(what a call app hears today): ``undelayed = 0 - latency``. ``dropouts_s`` lists where
the delayed tone steps further than it can (a dropout or a cut; the same check on the
microphone's own channel shows the harness was clean). The recorder and the click player
run in a child process (as a call app would), the microphone's loop in its own, and the
engine in this one, as in ``streamfx camera``.

    python -m benchmarks.virtual_mic_sync [--seconds 12]

writes ``benchmarks/results/virtual_mic_sync.json`` (goal: worst offset within 10 ms).
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import threading
import time

import numpy as np

from benchmarks.common import RESULTS, ROOT, TESTDATA, machine, write_json

RATE, PERIOD_S, TONE = 48000, 0.5, 2000
GOAL_MS = 10.0
CLIP = TESTDATA / "video" / "head_turn_1.mp4"


def _tests_on_path() -> None:
    if str(ROOT / "tests") not in sys.path:
        sys.path.insert(0, str(ROOT / "tests"))


def record_with_clicks(server: str, seconds: float) -> tuple[np.ndarray, float]:
    """(In a child process.) Play clicks over a tone into probe_left while recording
    probe.monitor; returns the recording and ``c``: sample ``p`` was at the probe at
    monotonic time ``c + p / RATE``."""
    import os

    os.environ["PULSE_SERVER"] = server
    _tests_on_path()
    from pulse_env import click_train, record_probe

    wave, _ = click_train(seconds, PERIOD_S, tone=TONE)
    anchors: list[float] = []
    recording = record_probe(seconds + 0.6, wave, anchors=anchors)
    return recording, float(np.median(anchors))


def video_loop(engine, vmic, stop: threading.Event, frames: list[tuple[float, float]]) -> None:
    """The camera loop's timing: read (paced at the clip's rate), filter, hand the latency over."""
    from streamfx.io.camera_source import CameraSource
    from streamfx.pipeline.controls import Controls, PoseMode
    from streamfx.pipeline.processor import CallerPipeline

    pipeline = CallerPipeline(engine, Controls(pose=PoseMode("frontal")))
    with CameraSource(CLIP) as source:
        while not stop.is_set():
            frame = source.read()
            read_at = time.monotonic()
            pipeline.process(frame)
            latency = time.monotonic() - read_at
            vmic.set_video_latency(latency)
            frames.append((read_at, latency))
    pipeline.close()


def run_one(name: str, engine, daemon, seconds: float) -> dict:
    from streamfx.io.virtual_mic import VirtualMicrophone

    probe = daemon.probe()
    vmic = VirtualMicrophone(mic=probe.mic, device=probe.out).start()
    stop, frames = threading.Event(), []
    video = threading.Thread(target=video_loop, args=(engine, vmic, stop, frames), daemon=True)
    video.start()
    try:
        deadline = time.monotonic() + 20
        while (vmic.status()["state"] != "running" or len(frames) < 40) and time.monotonic() < deadline:
            time.sleep(0.05)
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            recording, anchor = pool.apply(record_with_clicks, (daemon.server, seconds))
        status = vmic.status()
    finally:
        stop.set()
        video.join(timeout=10)
        vmic.close()
    from pulse_env import pairs

    audio = dict(pairs(recording, int(RATE * PERIOD_S)))  # left onset -> right minus left (samples)
    read_at = np.array([f[0] for f in frames])
    latency = np.array([f[1] for f in frames])
    offsets, windowed, undelayed = [], [], []
    for onset, delay in audio.items():
        t = anchor + onset / RATE
        nearest = latency[int(np.argmin(np.abs(read_at - t)))]
        window = latency[(read_at > t - 1.0) & (read_at <= t)]
        offsets.append((delay / RATE - nearest) * 1e3)
        windowed.append((delay / RATE - float(np.median(window if len(window) else nearest))) * 1e3)
        undelayed.append(-nearest * 1e3)
    return {"engine": name, "clicks": len(offsets), "frames": len(frames),
            "video_latency_ms": _stats(latency * 1e3),
            "audio_delay_ms": _stats(np.array(list(audio.values())) / RATE * 1e3),
            "offset_ms": _stats(offsets), "offset_vs_window_ms": _stats(windowed),
            "undelayed_offset_ms": _stats(undelayed), "dropouts_s": _dropouts(recording[:, 1]),
            "dropouts_at_the_microphone_s": _dropouts(recording[:, 0]),
            "floor_ms": status["floor_ms"], "underruns": status["underruns"], "mic_error": status["error"],
            "goal_met": bool(offsets and max(abs(o) for o in offsets) <= GOAL_MS),
            **({"note": "the engine is faster than the audio path: the audio cannot be delayed by less than "
                        "floor_ms, so it is late by about floor_ms - latency"}
               if status["floor_ms"] and float(np.median(latency)) * 1e3 < status["floor_ms"] else {})}


def _stats(values) -> dict:
    values = [float(v) for v in values]
    if not values:
        return {"n": 0}
    return {"p50": round(statistics.median(values), 1), "worst": round(max(values, key=abs), 1),
            "min": round(min(values), 1), "max": round(max(values), 1), "n": len(values)}


def _dropouts(channel: np.ndarray) -> list[float]:
    """Where (seconds into the recording) the tone steps further than it can (~1.5x its
    largest step) outside the clicks: a dropout or a cut; one per 20 ms."""
    from pulse_env import clicks

    steps = np.abs(np.diff(channel.astype(np.int32)))
    keep = np.ones(len(steps), bool)
    for onset in clicks(channel, threshold=int(TONE * 1.05), gap=200):
        keep[max(0, onset - 50):onset + 300] = False
    limit = 1.5 * TONE * 2 * np.pi * 440 / RATE
    at = np.flatnonzero((steps > limit) & keep)
    return [round(float(p) / RATE, 2) for i, p in enumerate(at) if i == 0 or p - at[i - 1] > RATE // 50]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=12.0, help="clicks recorded per engine")
    parser.add_argument("--engines", default="mesh,sleep150", help="comma-separated: mesh, sleep150")
    args = parser.parse_args()
    _tests_on_path()
    import shutil

    if shutil.which("pulseaudio") is None:
        sys.exit("virtual_mic_sync: pulseaudio is not installed (apt install pulseaudio pulseaudio-utils)")
    from benchmarks.av_sync import stand_in
    from pulse_env import private_pulse
    from streamfx.pipeline.engines.mesh import MeshEngine, MeshEngineConfig

    with private_pulse() as daemon:
        engines = {"mesh": lambda: MeshEngine(MeshEngineConfig()), "sleep150": lambda: stand_in(0.15)}
        runs = [run_one(name, engines[name](), daemon, args.seconds) for name in args.engines.split(",")]
    result = {"benchmark": "virtual_mic_sync", "machine": machine(), "goal_ms": GOAL_MS,
              "goal": f"worst |offset| <= {GOAL_MS:g} ms (audio delay minus the latency of the frame read "
                      "at the click's moment)", "runs": runs}
    print(write_json(RESULTS / "virtual_mic_sync.json", result))


if __name__ == "__main__":
    main()
