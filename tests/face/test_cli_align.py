"""``streamfx align``."""

from __future__ import annotations

import json

import cv2
import numpy as np

from streamfx.cli import main


def test_align_writes_crop_and_label(testdata, tmp_path, capsys):
    out = tmp_path / "crop.png"
    assert main(["align", str(testdata / "faces/astronaut_512.png"), "-o", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    crop = cv2.imread(str(out))
    assert crop.shape == (512, 512, 3)
    label = np.array(info["camera_label"])
    assert label.shape == (25,)
    assert abs(np.linalg.norm(label[[3, 7, 11]]) - 2.7) < 1e-4
    # the astronaut looks almost straight at the camera (measured yaw -1.0, pitch -0.7)
    assert abs(info["pose_deg"]["yaw"]) < 5 and abs(info["pose_deg"]["pitch"]) < 5
    assert info["faces_found"] == 1


def test_align_errors_are_one_line(tmp_path, capsys):
    assert main(["align", str(tmp_path / "missing.png"), "-o", str(tmp_path / "c.png")]) == 2
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((200, 200, 3), 90, np.uint8))
    assert main(["align", str(blank), "-o", str(tmp_path / "c.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"streamfx align: no such file: {tmp_path / 'missing.png'}", f"streamfx align: no face found in {blank}"]
