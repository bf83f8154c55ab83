"""Text prompts on a live call: a reference generated from the caller's own face crop.

One :class:`TextModel` per server (``streamfx serve --text-model DIR``): the InstructPix2Pix
pipeline of :mod:`streamfx.styles.text`, loaded on first use, on its own single thread, never
on the event loop or the frame path. Each caller has a :class:`CallerText`: at most one
generation in work (a newer text replaces it; the old one stops at its next step and its
result is dropped, never applied) and a small cache of its own results by (text, seed,
model), never shown to another caller.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .. import log
from ..pipeline.controls import Prompt
from ..pipeline.prompts import image_prompt
from ..styles.text import SEED, generate_reference, load_text_model
from .gallery import thumbnail

logger = log.get(__name__)
CACHE_SIZE = 8
Progress = Callable[[int, int], None]


class Dropped(Exception):
    """The generation was replaced by a newer prompt (or the call or server closed)."""


@dataclass(frozen=True)
class Generated:
    prompt: Prompt           # the image prompt of the generated reference
    thumbnail: str           # a data URL (gallery.thumbnail)
    cached: bool = False


@dataclass(frozen=True)
class GeneratedPrompt:
    """A prompt that is ready to apply (not a wire message: the caller queues it like one)."""

    prompt: Prompt


class TextModel:
    """The server's one text model, on one thread (loaded there lazily)."""

    def __init__(self, path: Path, steps: int, device: str = "cpu") -> None:
        self.path, self.steps, self.device = Path(path), int(steps), device
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="streamfx-text")
        self.closed = False
        self._pipe = None

    def _run(self, crop: np.ndarray, text: str, seed: int, progress: Progress,
             stopped: Callable[[], bool]) -> Generated:
        if stopped():
            raise Dropped
        if self._pipe is None:
            logger.info("loading the text model", extra={"path": str(self.path), "device": self.device})
            started = time.perf_counter()
            self._pipe = load_text_model(self.path, self.device)
            logger.info("text model loaded", extra={"seconds": round(time.perf_counter() - started, 2)})
        started = time.perf_counter()
        image = generate_reference(self._pipe, crop, text, self.steps, seed=seed, progress=progress)
        logger.info("text reference generated", extra={"steps": self.steps,
                                                       "seconds": round(time.perf_counter() - started, 2)})
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(image).save(buf, "PNG")
        prompt = image_prompt(buf.getvalue(), name=f"text: {text}"[:80], decoded=image)
        return Generated(prompt, thumbnail(image))

    def close(self) -> None:
        """Stops a running generation at its next step; a waiting one never starts."""
        self.closed = True
        self.executor.shutdown(wait=False, cancel_futures=True)


@dataclass
class _Job:
    dropped: bool = False


class CallerText:
    """One caller's text generations: at most one in work, the newest wins, a private cache."""

    def __init__(self, model: TextModel, cache_size: int = CACHE_SIZE) -> None:
        self.model = model
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple, Generated] = OrderedDict()
        self._job: _Job | None = None

    def cancel(self) -> None:
        """Drop the generation in work (if any): its result is never applied."""
        if self._job is not None:
            self._job.dropped = True
            self._job = None

    async def generate(self, crop: np.ndarray, text: str, progress: Progress, seed: int = SEED) -> Generated:
        """The reference of ``text`` made from ``crop``; raises :class:`Dropped` when a newer
        prompt replaced it. ``progress(k, n)`` is called on the event loop."""
        self.cancel()
        key = (text, int(seed), str(self.model.path.resolve()), self.model.steps)
        if key in self._cache:
            self._cache.move_to_end(key)
            return dataclasses.replace(self._cache[key], cached=True)
        job = self._job = _Job()
        loop = asyncio.get_running_loop()

        def stopped() -> bool:
            return job.dropped or self.model.closed

        def report(k: int, n: int) -> None:
            if not job.dropped:
                progress(k, n)

        def on_step(k: int, n: int) -> None:  # on the text thread
            if stopped():
                raise Dropped
            try:
                loop.call_soon_threadsafe(report, k, n)
            except RuntimeError:  # the loop closed: the server is going away
                raise Dropped from None

        try:
            made = await loop.run_in_executor(self.model.executor, self.model._run, crop, text, seed, on_step, stopped)
        except asyncio.CancelledError:
            job.dropped = True
            raise
        except RuntimeError:  # the executor shut down (the server is closing)
            if self.model.closed:
                raise Dropped from None
            raise
        if job.dropped:
            raise Dropped
        self._job = None
        self._cache[key] = made
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return made
