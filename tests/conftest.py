"""Shared test helpers: where the real test data lives and how to read it.

Missing data (``../shared``: test images and video, the reference fixtures) skips a test
on a developer's machine but fails it under CI (``CI`` set, as CI services do), so that a
CI run without the data can never pass quietly.  Every test that reads ``../shared`` goes
through :func:`missing_data`: the ``testdata`` fixture or ``shared_file``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, NoReturn

import numpy as np
import pytest

# ../shared relative to the repository root (read-only, never copied into the repo)
SHARED = Path(__file__).resolve().parents[1].parent / "shared"
TESTDATA = SHARED / "testdata"


@pytest.fixture(scope="session", autouse=True)
def private_config_dir(tmp_path_factory) -> Path:
    """Every test (and every process a test starts) keeps StreamFX's user files (the camera's
    settings, TLS) in a temporary folder, never in the user's own ``~/.config/streamfx``."""
    folder = tmp_path_factory.mktemp("config")
    old = os.environ.get("STREAMFX_CONFIG_DIR")
    os.environ["STREAMFX_CONFIG_DIR"] = str(folder)
    yield folder
    if old is None:
        os.environ.pop("STREAMFX_CONFIG_DIR", None)
    else:
        os.environ["STREAMFX_CONFIG_DIR"] = old


def in_ci() -> bool:
    """True under CI: ``CI`` is set to anything but an empty, ``0``, ``false`` or ``no`` value."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def missing_data(what: str) -> NoReturn:
    """Skip the test (locally) or fail it (under CI) because ``what`` is missing."""
    if in_ci():
        raise RuntimeError(f"{what}; CI must provide ../shared")
    pytest.skip(what)


@pytest.fixture(scope="session")
def testdata() -> Path:
    if not TESTDATA.is_dir():
        missing_data(f"test data not found at {TESTDATA}")
    return TESTDATA


@pytest.fixture(scope="session")
def shared_file() -> Callable[[Path], Path]:
    """shared_file(path) -> path of a file under ``../shared``; a missing one skips the test
    locally and fails it under CI (see :func:`missing_data`)."""

    def need(path: Path) -> Path:
        path = Path(path)
        if not path.is_file():
            missing_data(f"shared file not found: {path}")
        return path

    return need


@pytest.fixture(scope="session")
def read_rgb(testdata):
    """read_rgb("faces/ffhq_1.png") -> (H, W, 3) uint8 RGB."""
    import cv2

    def read(rel: str) -> np.ndarray:
        image = cv2.imread(str(testdata / rel), cv2.IMREAD_COLOR)
        if image is None:
            raise FileNotFoundError(testdata / rel)
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)

    return read


@pytest.fixture(scope="session")
def read_video(testdata):
    """read_video("video/head_turn_1.mp4") -> list of (H, W, 3) uint8 RGB frames."""
    import cv2

    def read(rel: str) -> list[np.ndarray]:
        cap = cv2.VideoCapture(str(testdata / rel))
        frames = []
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
        cap.release()
        if not frames:
            raise FileNotFoundError(testdata / rel)
        return frames

    return read


@pytest.fixture(scope="session")
def fast_bf16() -> None:
    """For tests of a bf16 path: skips where the capability probe measured bf16 slower than
    fp32 (emulated, e.g. AVX2-only CPUs), because nothing runs that path there and emulated
    bf16 takes minutes."""
    from streamfx.runtime.probe import MIN_SPEEDUP, probe

    measured = probe().measured
    slow = [k for k in ("matmul", "conv") if measured.speedup(k) < MIN_SPEEDUP]
    if slow:
        pytest.skip(f"bf16 is not used on this CPU: the probe measured {', '.join(slow)} at "
                    f"{min(measured.speedup(k) for k in slow):.2f}x fp32")


@pytest.fixture(scope="session")
def random_model():
    """A 3DPE model with random weights of the official shapes, built once per session
    (engine, runtime and training tests)."""
    import torch

    from streamfx.models import threedpe
    from streamfx.models.random_weights import random_state_dicts

    torch.manual_seed(0)
    return threedpe.from_state(random_state_dicts(0))
