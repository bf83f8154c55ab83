"""How many CPU threads inference may use, for every library that keeps its own pool."""

from __future__ import annotations

import os

import torch

from .. import log

logger = log.get(__name__)


def default_threads() -> int:
    """What torch uses unless told: one per core it can see."""
    return torch.get_num_threads()


def apply_threads(threads: int | None) -> int:
    """Limit torch and OpenCV to ``threads`` (None leaves the defaults); returns the count in use.

    OpenVINO reads its count per compiled model (``INFERENCE_NUM_THREADS``), which the
    3DPE backends pass on from the same option.
    """
    if threads is None:
        return default_threads()
    if threads < 1:
        raise ValueError("threads must be at least 1")
    threads = min(threads, os.cpu_count() or threads)
    torch.set_num_threads(threads)
    try:
        import cv2

        cv2.setNumThreads(threads)
    except ImportError:  # pragma: no cover - opencv is a dependency
        pass
    logger.info("inference threads", extra={"threads": threads})
    return threads
