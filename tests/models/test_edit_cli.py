"""``streamfx edit``: one photo, one reference, the whole 3DPE path (random weights here)."""

from __future__ import annotations

import av
import cv2
import pytest

from streamfx.cli import main

pytestmark = pytest.mark.slow


def test_edit_writes_crop_pasted_photo_and_orbit(testdata, tmp_path, capsys):
    out, video = tmp_path / "edit.png", tmp_path / "orbit.mp4"
    code = main(["edit", str(testdata / "faces/astronaut_512.png"), "--ref", str(testdata / "styles/style_2.png"),
                 "-o", str(out), "--random-weights", "--preset", "fast", "--paste", "--yaw", "15",
                 "--views", "3", "--video", str(video)])
    assert code == 0, capsys.readouterr().err
    photo = cv2.imread(str(testdata / "faces/astronaut_512.png"))
    edited = cv2.imread(str(out))
    assert edited.shape == photo.shape
    diff = cv2.absdiff(edited, photo).max(axis=2)
    assert diff[:40].max() <= 2 and diff[450:].max() <= 2, "only the face region may change"
    assert diff.max() > 30, "the face must be re-rendered"
    with av.open(str(video)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 3


def test_edit_without_weights_says_how_to_get_them(testdata, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("STREAMFX_HOME", str(tmp_path / "empty-home"))
    code = main(["edit", str(testdata / "faces/ffhq_1.png"), "--ref", str(testdata / "styles/style_1.png"),
                 "-o", str(tmp_path / "x.png")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "streamfx weights import" in err and len(err.splitlines()) == 1


def test_edit_refuses_photo_without_face(testdata, tmp_path, capsys):
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), 255 * (0 * cv2.imread(str(testdata / "faces/ffhq_1.png")) + 1))
    code = main(["edit", str(blank), "--ref", str(testdata / "styles/style_1.png"), "-o", str(tmp_path / "x.png"),
                 "--random-weights"])
    assert code == 2 and "no face" in capsys.readouterr().err
