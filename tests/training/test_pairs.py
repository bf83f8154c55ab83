"""Training pairs: pairing by name, alignment with the face stack, one-line refusals."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from streamfx.training.pairs import PairsError, find_pairs, load_pairs


def _save(path, rgb):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path)


def _styled(rgb):
    return (255 - rgb).astype(np.uint8)  # any stand-in for "the same photo in a new style"


@pytest.fixture()
def faces(read_rgb):
    return [read_rgb(f"faces/ffhq_{i}.png") for i in (1, 2, 3)]


def test_crops_are_used_as_they_are_and_photos_are_aligned(tmp_path, faces):
    _save(tmp_path / "before/a.png", faces[0])
    _save(tmp_path / "after/a.png", _styled(faces[0]))
    # b: the face pasted at 60% into a larger photo, its styled copy at another resolution
    photo = np.full((700, 900, 3), 90, np.uint8)
    small = np.asarray(Image.fromarray(faces[1]).resize((307, 307), Image.BICUBIC))
    photo[150:457, 300:607] = small
    _save(tmp_path / "before/b.jpg", photo)
    _save(tmp_path / "after/b.png", np.asarray(Image.fromarray(_styled(photo)).resize((450, 350))))
    pairs = load_pairs(tmp_path)
    assert [p.name for p in pairs] == ["a", "b"]
    a, b = pairs
    assert np.array_equal(a.before, faces[0]) and np.array_equal(a.after, _styled(faces[0]))  # as it is
    assert b.before.shape == b.after.shape == (512, 512, 3)
    # the aligned photo is (close to) the crop it was made from; after follows before's alignment
    assert np.abs(b.before.astype(int) - faces[1]).mean() < 25
    assert np.abs(b.after.astype(int) - _styled(b.before)).mean() < 12
    assert a.camera.shape == (25,) and abs(a.yaw_deg) < 20


def test_aligned_forces_the_images_as_they_are(tmp_path, faces):
    photo = np.full((600, 600, 3), 90, np.uint8)
    photo[100:500, 100:500] = np.asarray(Image.fromarray(faces[2]).resize((400, 400)))
    for name in ("x", "y"):
        _save(tmp_path / f"before/{name}.png", photo)
        _save(tmp_path / f"after/{name}.png", _styled(photo))
    aligned = load_pairs(tmp_path, aligned=True)[0]
    expected = np.asarray(Image.fromarray(photo).resize((512, 512), Image.BICUBIC))
    assert np.array_equal(aligned.before, expected)
    assert np.abs(load_pairs(tmp_path)[0].before.astype(int) - expected).mean() > 5  # without: re-aligned


@pytest.mark.parametrize("case, message", [
    ("unmatched", r"before/c\.png has no match in .*after/"),
    ("too_few", r"holds 1 pair\(s\); training needs at least 2"),
    ("not_image", r"notes\.txt is not an image"),
    ("not_decodable", r"b\.png: reference is not a readable image"),
    ("two_names", r"two images named 'a'"),
    ("no_folder", r"after is not a folder"),
])
def test_bad_pairs_folders_are_refused_in_one_line(tmp_path, faces, case, message):
    for name, face in (("a", faces[0]), ("b", faces[1])):
        if case == "too_few" and name == "b":
            continue
        _save(tmp_path / f"before/{name}.png", face)
        if case != "no_folder":
            _save(tmp_path / f"after/{name}.png", _styled(face))
    if case == "unmatched":
        _save(tmp_path / "before/c.png", faces[2])
    elif case == "not_image":
        (tmp_path / "after/notes.txt").write_text("hello")
    elif case == "not_decodable":
        (tmp_path / "after/b.png").write_bytes(b"not a png at all")
    elif case == "two_names":
        _save(tmp_path / "after/a.jpg", faces[0])
    with pytest.raises(PairsError, match=message) as info:
        load_pairs(tmp_path)
    assert "\n" not in str(info.value)


def test_a_photo_without_a_face_is_refused(tmp_path, faces):
    _save(tmp_path / "before/a.png", faces[0])
    _save(tmp_path / "after/a.png", faces[0])
    _save(tmp_path / "before/wall.png", np.full((400, 400, 3), 128, np.uint8))
    _save(tmp_path / "after/wall.png", np.full((400, 400, 3), 30, np.uint8))
    assert len(find_pairs(tmp_path)) == 2
    with pytest.raises(PairsError, match=r"no face found in .*before/wall\.png"):
        load_pairs(tmp_path)
