"""The .y4m builder used for Chromium's fake camera."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from streamfx.io import MediaError, write_y4m_from_video
from streamfx.io.y4m import place

TESTDATA = Path(__file__).resolve().parents[2].parent / "shared" / "testdata"
HEAD_TURN = TESTDATA / "video" / "head_turn_1.mp4"


def decode(path: Path) -> tuple[list[np.ndarray], object, str]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        return frames, stream.average_rate, stream.codec_context.pix_fmt


def test_head_turn_on_a_640x480_canvas(tmp_path):
    out = tmp_path / "fake_camera.y4m"
    count = write_y4m_from_video(HEAD_TURN, out, (640, 480), background=(0, 0, 255))
    assert count == 60
    assert out.read_bytes()[:9] == b"YUV4MPEG2"
    frames, rate, pix_fmt = decode(out)
    assert len(frames) == 60 and rate == 25 and pix_fmt == "yuv420p"
    assert frames[0].shape == (480, 640, 3)
    # 512x512 fits as 480x480, centred: 80 px of background left and right.
    left, right, middle = frames[0][:, :70], frames[0][:, -70:], frames[0][:, 100:540]
    for side in (left, right):
        assert np.abs(side.reshape(-1, 3).mean(axis=0) - (0, 0, 255)).max() < 12
    assert np.abs(middle.reshape(-1, 3).mean(axis=0) - (0, 0, 255)).max() > 60
    assert not np.array_equal(frames[0], frames[40]), "the head turns"


def test_offset_scale_and_frame_limit(tmp_path):
    out = tmp_path / "small.y4m"
    count = write_y4m_from_video(HEAD_TURN, out, (320, 240), scale=0.25, offset=(10, 20), max_frames=5)
    frames, _, _ = decode(out)
    assert count == len(frames) == 5
    assert frames[0].shape == (240, 320, 3)
    grey = np.array([32, 32, 32])
    assert np.abs(frames[0][200:, 200:].reshape(-1, 3).mean(axis=0) - grey).max() < 6
    assert np.abs(frames[0][30:140, 20:130].reshape(-1, 3).mean(axis=0) - grey).max() > 20


def test_place_clips_at_the_canvas_edge():
    canvas = np.zeros((10, 10, 3), np.uint8)
    out = place(np.full((4, 4, 3), 200, np.uint8), canvas, 1.0, (8, -2))
    assert out[:2, 8:].min() == 200 and out[2:].max() == 0 and out[:, :8].max() == 0
    assert canvas.max() == 0, "the canvas itself is not modified"


def test_bad_arguments(tmp_path):
    with pytest.raises(MediaError, match=".y4m"):
        write_y4m_from_video(HEAD_TURN, tmp_path / "x.mp4")
    with pytest.raises(MediaError, match="even"):
        write_y4m_from_video(HEAD_TURN, tmp_path / "x.y4m", (641, 480))
    with pytest.raises(MediaError, match="not found"):
        write_y4m_from_video(tmp_path / "missing.mp4", tmp_path / "x.y4m")
