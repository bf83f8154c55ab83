"""A :class:`~streamfx.runtime.streams.StreamOps` that runs nothing and logs every operation,
so that the ordering of GPU work can be checked on the CPU."""

from __future__ import annotations

import itertools
import threading
from contextlib import contextmanager


class RecordingStreamOps:
    """Streams are names (``s0``, ``s1`` ...; a thread's current stream is set with
    :meth:`set_current`), events are ``e<N>@<stream>``; :attr:`log` lists what happened."""

    def __init__(self) -> None:
        self.log: list[tuple] = []
        self._ids = itertools.count()
        self._local = threading.local()
        self._lock = threading.Lock()

    def _add(self, *entry) -> None:
        with self._lock:
            self.log.append(entry)

    def set_current(self, stream: str) -> None:
        self._local.stream = stream

    def current(self) -> str:
        return getattr(self._local, "stream", "default")

    def new_stream(self) -> str:
        return f"s{next(self._ids)}"

    def record(self, stream: str) -> str:
        event = f"e{next(self._ids)}@{stream}"
        self._add("record", stream, event)
        return event

    def wait(self, stream: str, event: str | None) -> None:
        if event is not None:
            self._add("wait", stream, event)

    @contextmanager
    def use(self, stream: str):
        previous = self.current()
        self.set_current(stream)
        try:
            yield
        finally:
            self.set_current(previous)

    def hand_over(self, tensor, stream: str) -> None:
        self._add("hand_over", stream)

    def synchronize(self, event: str | None) -> None:
        self._add("synchronize", event)

    def note(self, *entry) -> None:
        """Tests log their own steps (e.g. the work itself) in the same sequence."""
        self._add(*entry)

    def index(self, *entry) -> int:
        return self.log.index(entry)
