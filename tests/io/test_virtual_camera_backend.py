"""The virtual camera's frames, checked at pyvirtualcam's own interface: a registered
backend stands in for the kernel device (v4l2loopback cannot be loaded here)."""

from __future__ import annotations

import numpy as np
import pytest

pyvirtualcam = pytest.importorskip("pyvirtualcam")

from pathlib import Path  # noqa: E402

from streamfx.cli import main  # noqa: E402

HEAD_TURN = Path(__file__).resolve().parents[2].parent / "shared" / "testdata" / "video" / "head_turn_1.mp4"


@pytest.fixture
def source() -> str:
    return str(HEAD_TURN)


class RecordingBackend:
    """A pyvirtualcam backend (its documented interface) that keeps what it is sent."""

    sent: list[np.ndarray] = []
    opened: list[dict] = []

    def __init__(self, *, width, height, fps, fourcc, device, **kw) -> None:
        self.size = (width, height)
        RecordingBackend.opened.append({"width": width, "height": height, "fps": fps, "fourcc": fourcc})

    def send(self, frame: np.ndarray) -> None:
        RecordingBackend.sent.append(frame.reshape(self.size[1], self.size[0], 3).copy())

    def device(self) -> str:
        return "streamfx-test"

    def native_fourcc(self):
        return None

    def close(self) -> None:
        pass


pyvirtualcam.register_backend("streamfx-test", RecordingBackend)


def test_camera_virtual_sends_filtered_rgb_frames_of_the_source_size(source):
    RecordingBackend.sent.clear()
    code = main(["camera", "--source", source, "--virtual", "--virtual-backend", "streamfx-test",
                 "--frames", "5", "--engine", "overlay"])
    assert code == 0
    opened = RecordingBackend.opened[-1]
    assert opened["fourcc"] == int.from_bytes(b"raw ", "little")   # libyuv FourCC of RGB24
    frames = RecordingBackend.sent
    assert len(frames) == 5 and frames[0].shape == (opened["height"], opened["width"], 3)
    # the overlay engine's magenta border reached the camera: filtered frames, not the input
    assert frames[-1][3, 40:-40].mean(axis=0)[1] < 60 and frames[-1][3, 40:-40].mean(axis=0)[0] > 190


def test_an_unknown_backend_is_one_clear_line(source, capsys):
    code = main(["camera", "--source", source, "--virtual", "--virtual-backend", "nosuch", "--frames", "2",
                 "--engine", "overlay"])
    assert code != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nosuch" in err[0], err


class FlakyBackend(RecordingBackend):
    """A device that is unplugged after 3 frames, busy on the first reopen, then fine."""

    opens = 0

    def __init__(self, **kw) -> None:
        FlakyBackend.opens += 1
        if FlakyBackend.opens == 2:
            raise RuntimeError("Device or resource busy")
        super().__init__(**kw)
        self.frames = 0

    def send(self, frame: np.ndarray) -> None:
        self.frames += 1
        if FlakyBackend.opens == 1 and self.frames > 3:
            raise RuntimeError("device unplugged")
        super().send(frame)


pyvirtualcam.register_backend("streamfx-flaky", FlakyBackend)


def test_a_failing_virtual_camera_is_one_line_and_comes_back(source, capsys):
    RecordingBackend.sent.clear()
    code = main(["camera", "--source", source, "--virtual", "--virtual-backend", "streamfx-flaky",
                 "--frames", "75", "--engine", "overlay", "--no-ui"])
    assert code == 0, "the camera keeps running"
    assert FlakyBackend.opens == 3, "unplugged, busy, back"
    lines = [line for line in capsys.readouterr().err.splitlines() if "virtual camera" in line]
    assert len(lines) == 3, lines  # failed; busy; back: each once, not once per frame
    assert "device unplugged" in lines[0] and "in use by another program" in lines[1] and "virtual camera back" in lines[2]
    assert 3 + 5 < len(RecordingBackend.sent) < 75, "frames resumed after the reopen, none sent while it was gone"
