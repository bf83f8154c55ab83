"""Reference images are decoded in a child process, never in the server's own.

Decoding a 40-Mpixel PNG takes a few hundred milliseconds, and Pillow holds the GIL for
much of it, which stalls the event loop (and so every caller) even from a worker thread.
A crafted image could also take far longer or crash the decoder. So prompt images go to
one spawned worker process; the server waits for the small result (at most 1024 px on the
long side) without blocking, a decode that takes longer than ``timeout_s`` is killed and
answered as an error, and a dead worker is replaced on the next image.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np

from .. import log
from ..pipeline.prompts import ReferenceError, ReferenceLimits, decode_reference

logger = log.get(__name__)


def _ready() -> bool:
    return True


class ImageDecoder:
    def __init__(self, timeout_s: float = 10.0) -> None:
        self.timeout_s = timeout_s
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def _current(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
            return self._pool

    def warm(self) -> None:
        """Start the worker process now (it takes a second), not at the first prompt."""
        self._current().submit(_ready)

    async def decode(self, data: bytes, limits: ReferenceLimits) -> np.ndarray:
        """:func:`~streamfx.pipeline.prompts.decode_reference` in the worker process;
        :class:`ReferenceError` (one line) for a bad, slow or crashing image."""
        loop = asyncio.get_running_loop()
        pool = self._current()
        try:
            return await asyncio.wait_for(loop.run_in_executor(pool, decode_reference, data, limits), self.timeout_s)
        except asyncio.TimeoutError:
            self._replace(pool)
            raise ReferenceError(f"reference image took longer than {self.timeout_s:.0f} s to decode") from None
        except BrokenProcessPool:
            self._replace(pool)
            raise ReferenceError("reference image crashed the image decoder") from None

    def _replace(self, pool: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._pool is pool:
                self._pool = None
        logger.warning("image decoder restarted")
        _kill(pool)

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            _kill(pool)


def _kill(pool: ProcessPoolExecutor) -> None:
    for process in list(getattr(pool, "_processes", {}).values()):  # shutdown() alone waits for a hung decode
        process.terminate()
    pool.shutdown(wait=False, cancel_futures=True)
