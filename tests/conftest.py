"""Shared test helpers: where the real test data lives and how to read it."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

# ../shared/testdata relative to the repository root (read-only, never copied into the repo)
TESTDATA = Path(__file__).resolve().parents[1].parent / "shared" / "testdata"


@pytest.fixture(scope="session")
def testdata() -> Path:
    if not TESTDATA.is_dir():
        if os.environ.get("CI"):
            raise RuntimeError(f"test data not found at {TESTDATA}; CI must provide ../shared")
        pytest.skip(f"test data not found at {TESTDATA}")
    return TESTDATA


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
