"""The camera's frame loop: read, filter, hand the frame to every output, measure how long.

One blocking loop (the camera is the clock): each frame read from the source goes through
the pipeline and then to the outputs that are on: the virtual camera, a file, a WHIP push,
the control page's previews, a preview window. The time from reading a frame to handing it
to the outputs is the video's latency; the virtual microphone delays the voice by it
(:meth:`CameraLoop.status` reports it). A voice cannot be delayed by less than its own
buffers (the microphone's ``floor_ms``, some 21 ms): with a faster filter the frames wait
that long instead, so that sound and picture still leave together. A camera that is lost
gives its "camera lost" still (:mod:`streamfx.io.camera_watch`), unfiltered, until it is back.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..io.camera_watch import WatchedCamera
from ..pipeline.pacing import FramePacer
from ..pipeline.processor import CallerPipeline
from ..pipeline.timing import StageTimer


@dataclass
class Outputs:
    """Where the frames go; each is optional. ``window(original, filtered)`` returns False
    when the user closed it."""

    virtual: Any = None   # io.virtual_camera.KeptVirtualCamera
    writer: Any = None    # io.encoding.VideoWriter
    push: Any = None      # whip.camera_push.CameraPush
    page: Any = None      # camera.page.ControlPage
    mic: Any = None       # io.virtual_mic.VirtualMicrophone
    window: Callable[[np.ndarray, np.ndarray], bool] | None = None
    names: list[str] = field(default_factory=list)  # what the page lists: "virtual camera /dev/video10", ...


class CameraLoop:
    def __init__(self, source, pipeline: CallerPipeline, outputs: Outputs, max_fps: float | None = None,
                 frames: int | None = None) -> None:
        self.source, self.pipeline, self.outputs = source, pipeline, outputs
        self.max_frames, self.frames = frames, 0
        self.pacer = FramePacer(max_fps)
        self.live = True
        self.latency_ms: deque[float] = deque(maxlen=90)  # read to handed over, the last 3 s at 30 fps
        self.started = time.monotonic()
        self.on_frame: Callable[[], None] | None = None  # after each frame (the WHIP refusal check)
        self._floor_s, self._floor_at = 0.0, -1e9

    def run(self) -> tuple[int, float]:
        """Filter until ``frames`` (if given) or the window is closed; (frames, seconds)."""
        out = self.outputs
        while self.max_frames is None or self.frames < self.max_frames:
            self.pacer.wait()
            if isinstance(self.source, WatchedCamera):
                frame, self.live = self.source.read()
            else:
                frame = self.source.read()
            read_at = time.perf_counter()
            self.pacer.started()
            filtered = self._filter(frame) if self.live else frame
            self.frames += 1
            if out.mic is not None:  # the voice cannot be delayed less than its buffers: the video waits
                hold = self._audio_floor_s() - (time.perf_counter() - read_at)
                if hold > 0:
                    time.sleep(hold)
            if out.virtual is not None:
                out.virtual.send(filtered)
            if out.writer is not None:
                out.writer.write(filtered, None if self.source.is_file else time.monotonic() - self.started)
            if out.push is not None:
                out.push.send(filtered, read_at)
            handed = time.perf_counter() - read_at
            self.latency_ms.append(handed * 1e3)
            if out.mic is not None:
                out.mic.set_video_latency(handed)
            if out.page is not None:
                out.page.show(frame, filtered, read_at)
            if self.on_frame is not None:
                self.on_frame()
            if out.window is not None and not out.window(frame, filtered):
                break
        return self.frames, time.monotonic() - self.started

    def _audio_floor_s(self) -> float:
        """The virtual microphone's smallest delay (its buffers), read once a second."""
        now = time.monotonic()
        if now - self._floor_at > 1.0:
            self._floor_at = now
            self._floor_s = (self.outputs.mic.status().get("floor_ms") or 0.0) / 1e3
        return self._floor_s

    def _filter(self, frame: np.ndarray) -> np.ndarray:
        timer = StageTimer()
        filtered = self.pipeline.process(frame, timer)
        stats = self.pipeline.stats
        stats.record(timer, sum(timer.ms.values()))
        stats.frames_in = stats.frames_out = self.frames + 1
        return filtered

    def status(self) -> dict:
        """What the page's stats add: the camera's state, the outputs, the latency, the microphone."""
        ms = sorted(self.latency_ms)
        data: dict = {"camera": "live" if self.live else "lost", "outputs": self.outputs.names,
                      "handoff_ms": round(ms[len(ms) // 2], 1) if ms else None}
        if self.outputs.mic is not None:
            data["mic"] = self.outputs.mic.status()
        if self.outputs.virtual is not None:
            data["virtual_camera"] = {"device": self.outputs.virtual.device, "error": self.outputs.virtual.error}
        if self.outputs.push is not None:
            push = self.outputs.push.status
            data["whip"] = {"state": push.state, "error": push.error}
        return data
