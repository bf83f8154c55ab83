"""An unplugged camera: a still "camera lost" frame of the same size, then its frames again."""

from __future__ import annotations

import numpy as np

from streamfx.io.camera_watch import WatchedCamera
from streamfx.io.errors import CameraError


class FakeCamera:
    """Delivers ``frames`` frames of one grey level, then stops as an unplugged camera does."""

    def __init__(self, level: int, frames: int, size=(64, 48)) -> None:
        self.level, self.left, self.size, self.fps = level, frames, size, 30.0
        self.closed = False

    def read(self):
        if self.left == 0:
            raise CameraError("camera 0 stopped delivering frames")
        self.left -= 1
        return np.full((self.size[1], self.size[0], 3), self.level, np.uint8)

    def close(self):
        self.closed = True


def test_a_lost_camera_shows_a_still_and_resumes_when_it_is_back():
    now = [0.0]
    plugged = {"in": True}
    cameras = iter([FakeCamera(200, 3), FakeCamera(90, 100, size=(128, 96))])

    def reopen():
        if not plugged["in"]:
            raise CameraError("no camera at index 0")
        return next(cameras)

    def sleep(s):
        now[0] += s

    watched = WatchedCamera(reopen, retry_s=1.0, clock=lambda: now[0], sleep=sleep)
    frames = [watched.read() for _ in range(3)]
    assert all(live and f.mean() == 200 for f, live in frames)
    plugged["in"] = False
    still, live = watched.read()                        # unplugged
    assert not live and still.shape == (48, 64, 3)
    assert np.median(still) == 200 // 3 and still.max() == 255      # dimmed, with white text
    for _ in range(60):                                 # 2 s of stills at the camera's rate
        frame, live = watched.read()
        assert not live and frame.shape == (48, 64, 3)
    assert watched.losses == 1 and now[0] >= 1.9
    plugged["in"] = True                                # plugged back (at another size)
    for _ in range(31):
        frame, live = watched.read()
        if live:
            break
    assert live and frame.shape == (48, 64, 3) and abs(frame.mean() - 90) < 1   # the outputs' size kept
    assert watched.live and watched.losses == 1


def test_camera_cli_writes_stills_while_the_camera_is_gone_and_resumes(monkeypatch, tmp_path):
    """``streamfx camera --source 0`` with a camera that is unplugged after 5 frames and back
    a second later: the output keeps its size and rate, stills in between, then the camera."""
    import av

    from streamfx.cli import camera as camera_cli
    from streamfx.cli import main

    opened = []

    class PluggedCamera(FakeCamera):
        is_file = False

        def __init__(self, source, **kw):
            if len(opened) == 1 and len(opened_at) and time.monotonic() - opened_at[0] < 1.0:
                raise CameraError("no camera at index 0 (/dev/video0 does not exist)")
            super().__init__(200 if not opened else 90, 5 if not opened else 1000, size=(320, 240))
            opened.append(self)

    import time
    opened_at: list[float] = []
    real_read = FakeCamera.read

    def read(self):
        if self.left == 0 and not opened_at:
            opened_at.append(time.monotonic())
        return real_read(self)

    monkeypatch.setattr(PluggedCamera, "read", read)
    monkeypatch.setattr(camera_cli, "CameraSource", PluggedCamera)
    out = tmp_path / "out.mp4"
    assert main(["camera", "--source", "0", "--output", str(out), "--frames", "60", "--engine", "overlay"]) == 0
    with av.open(str(out)) as container:
        levels = [float(np.median(f.to_ndarray(format="rgb24")[20:60, 20:300])) for f in container.decode(video=0)]
    assert len(opened) == 2 and len(levels) >= 50
    dark = [i for i, v in enumerate(levels) if 50 < v < 80]     # the dimmed still (200 // 3)
    assert dark and dark[0] >= 4 and levels[-1] > 60, levels    # then the camera again
