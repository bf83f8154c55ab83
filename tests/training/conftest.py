"""Fixtures of the training tests."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image


@pytest.fixture()
def inverted_pairs(tmp_path, read_rgb):
    """A pairs folder of two shared faces, ``after`` = the photo's negative (f1, f2)."""
    folder = tmp_path / "pairs"
    for i in (1, 2):
        face = read_rgb(f"faces/ffhq_{i}.png")
        for side, image in (("before", face), ("after", 255 - face)):
            (folder / side).mkdir(parents=True, exist_ok=True)
            Image.fromarray(image.astype(np.uint8)).save(folder / side / f"f{i}.png")
    return folder
