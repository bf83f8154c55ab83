"""``streamfx camera``: the file source, the file output, and the no-virtual-camera error."""

from __future__ import annotations

import sys
from pathlib import Path

import av
import numpy as np
import pytest

from streamfx.cli import main
from streamfx.io import CameraError, CameraSource, VirtualCameraError
from streamfx.io import virtual_camera

TESTDATA = Path(__file__).resolve().parents[2].parent / "shared" / "testdata"
HEAD_TURN = TESTDATA / "video" / "head_turn_1.mp4"

no_loopback = pytest.mark.skipif(not sys.platform.startswith("linux") or bool(virtual_camera.loopback_devices()),
                                 reason="needs Linux without a v4l2loopback device")


def _one_line(capsys) -> str:
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@no_loopback
@pytest.mark.parametrize("source", [str(HEAD_TURN), "0"])
def test_virtual_without_device_is_one_clear_line(capsys, source):
    code = main(["camera", "--source", source, "--virtual", "--frames", "3", "--engine", "overlay"])
    assert code != 0
    line = _one_line(capsys)
    assert "v4l2loopback" in line and "modprobe" in line


@no_loopback
def test_virtual_camera_class_raises_the_same_hint():
    with pytest.raises(VirtualCameraError, match="v4l2loopback"):
        virtual_camera.VirtualCamera(64, 48, 25)


def test_file_source_loops_and_gives_rgb_frames():
    with CameraSource(HEAD_TURN, pace=False) as source:
        assert source.is_file and source.size == (512, 512) and source.fps == 25
        frames = [source.read() for _ in range(130)]
        assert source.loops == 2
    assert all(f.shape == (512, 512, 3) and f.dtype == np.uint8 for f in frames)
    assert np.array_equal(frames[0], frames[60]) and np.array_equal(frames[5], frames[125])
    assert not np.array_equal(frames[0], frames[30])


def test_file_source_paces_at_its_frame_rate():
    """With a fake clock that never advances, the source sleeps until each frame is due."""
    now, sleeps = [100.0], []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    with CameraSource(HEAD_TURN, clock=lambda: now[0], sleep=sleep) as source:
        for _ in range(10):
            source.read()
    assert len(sleeps) == 9 and sum(sleeps) == pytest.approx(9 / 25)
    assert now[0] == pytest.approx(100.0 + 9 / 25)


def test_non_looping_file_ends():
    with CameraSource(HEAD_TURN, loop=False, pace=False) as source:
        assert sum(1 for _ in source) == 60


def test_missing_sources_are_one_line(tmp_path, capsys):
    assert main(["camera", "--source", str(tmp_path / "none.mp4"), "--output", str(tmp_path / "o.mp4")]) != 0
    assert "none.mp4" in _one_line(capsys)
    assert main(["camera", "--source", "7", "--output", str(tmp_path / "o.mp4")]) != 0
    assert "camera" in _one_line(capsys)
    with pytest.raises(CameraError):
        CameraSource(tmp_path / "none.mp4")


def test_nowhere_to_send_is_one_line(capsys):
    assert main(["camera", "--source", str(HEAD_TURN)]) != 0
    assert "--virtual" in _one_line(capsys)


def test_camera_to_file_runs_a_bounded_loop(tmp_path, capsys):
    out = tmp_path / "cam.mp4"
    code = main(["camera", "--source", str(HEAD_TURN), "--output", str(out), "--frames", "70", "--engine", "overlay"])
    assert code == 0
    assert "70 frames" in capsys.readouterr().out
    with av.open(str(out)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 70 and frames[0].shape == (512, 512, 3)
    assert np.abs(frames[65][2:10, 2:10].reshape(-1, 3).mean(axis=0) - (255, 0, 255)).max() < 30
