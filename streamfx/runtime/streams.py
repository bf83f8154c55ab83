"""Ordering GPU work across streams with events, behind an interface the CPU can run.

Tensors cross streams in four places. A prompt's tokens and a style pack's adapter weights
are made on the prompt thread's stream and finished there (``synchronize`` of an event)
before any session reads them; sessions ``hand_over`` the tokens to their own stream, which
keeps their memory while it reads them after the token cache lets them go. A TensorRT runner
executes on its own stream what a session's stream produced, and the frame batcher runs
several sessions' inputs on the batcher's stream; both follow the same protocol
(:class:`OrderedExecution`):

1. the worker stream waits for an event recorded on the producer's stream (its inputs are written);
2. the worker stream waits until the previous consumer has finished reading the worker's reused
   output buffers (an event recorded after that read);
3. the work is enqueued on the worker stream;
4. the consumer's stream waits for an event recorded after the work (the outputs are ready);
5. the consumer reads (copies) the outputs, and an event recorded then releases the buffers.

:class:`StreamOps` is the four operations this needs. :class:`CudaStreamOps` does them with
torch CUDA streams and events; :class:`NullStreamOps` (the CPU, where everything runs in order)
does nothing; tests use a recording implementation to check the order without a GPU.
"""

from __future__ import annotations

import threading
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Callable, Protocol, TypeVar

import torch

T = TypeVar("T")


class StreamOps(Protocol):
    """The stream operations ordering needs; ``Any`` stands for a stream or an event."""

    def current(self) -> Any:
        """The calling thread's current stream."""

    def new_stream(self) -> Any:
        """A new stream for a worker (a runner or the batcher)."""

    def record(self, stream: Any) -> Any:
        """An event marking everything enqueued on ``stream`` so far."""

    def wait(self, stream: Any, event: Any) -> None:
        """Make ``stream`` wait for ``event`` (no host blocking)."""

    def use(self, stream: Any) -> AbstractContextManager:
        """Make ``stream`` the current stream inside the block."""

    def hand_over(self, tensor: torch.Tensor, stream: Any) -> None:
        """``tensor`` (allocated on another stream) is read on ``stream``: keep its memory until then."""

    def synchronize(self, event: Any) -> None:
        """Block the calling thread until ``event`` has happened."""


class NullStreamOps:
    """The CPU: work runs in program order, so there is nothing to wait for."""

    def current(self) -> None:
        return None

    def new_stream(self) -> None:
        return None

    def record(self, stream: Any) -> None:
        return None

    def wait(self, stream: Any, event: Any) -> None:
        return None

    def use(self, stream: Any) -> AbstractContextManager:
        return nullcontext()

    def hand_over(self, tensor: torch.Tensor, stream: Any) -> None:
        return None

    def synchronize(self, event: Any) -> None:
        return None


class CudaStreamOps:
    """Torch CUDA streams and events on one device."""

    def __init__(self, device: torch.device | str = "cuda") -> None:
        self.device = torch.device(device)

    def current(self) -> torch.cuda.Stream:
        return torch.cuda.current_stream(self.device)

    def new_stream(self) -> torch.cuda.Stream:
        return torch.cuda.Stream(device=self.device)

    def record(self, stream: torch.cuda.Stream) -> torch.cuda.Event:
        event = torch.cuda.Event()
        event.record(stream)
        return event

    def wait(self, stream: torch.cuda.Stream, event: torch.cuda.Event | None) -> None:
        if event is not None:
            stream.wait_event(event)

    def use(self, stream: torch.cuda.Stream) -> AbstractContextManager:
        return torch.cuda.stream(stream)

    def hand_over(self, tensor: torch.Tensor, stream: torch.cuda.Stream) -> None:
        if tensor.is_cuda:
            tensor.record_stream(stream)

    def synchronize(self, event: torch.cuda.Event | None) -> None:
        if event is not None:
            event.synchronize()


def stream_ops_for(device: torch.device | str) -> StreamOps:
    """CUDA streams on a CUDA device, nothing elsewhere."""
    device = torch.device(device)
    return CudaStreamOps(device) if device.type == "cuda" else NullStreamOps()


class OrderedExecution:
    """Runs work on a private stream, ordered against whoever calls (see the module docstring).

    ``run(enqueue, collect)``: ``enqueue(stream)`` puts the work on the private stream,
    ``collect()`` runs on the caller's stream once the work is done there and must copy out
    anything that lives in reused buffers. Calls are serialised (one set of buffers).
    """

    def __init__(self, ops: StreamOps, stream: Any = None) -> None:
        self.ops = ops
        self.stream = stream if stream is not None else ops.new_stream()
        self._released: Any = None     # event: the last consumer finished reading the buffers
        self._lock = threading.Lock()

    def run(self, enqueue: Callable[[Any], None], collect: Callable[[], T]) -> T:
        with self._lock:
            consumer = self.ops.current()
            self.ops.wait(self.stream, self.ops.record(consumer))   # 1. inputs written
            if self._released is not None:
                self.ops.wait(self.stream, self._released)         # 2. buffers free again
            with self.ops.use(self.stream):
                enqueue(self.stream)                               # 3. the work
            self.ops.wait(consumer, self.ops.record(self.stream))  # 4. outputs ready
            result = collect()                                     # 5. copied out on the consumer's stream
            self._released = self.ops.record(consumer)
            return result
