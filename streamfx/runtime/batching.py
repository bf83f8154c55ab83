"""Several callers per GPU: frames that arrive within a few milliseconds run as one batch.

3DPE's per-frame work (a ViT-conditioned encoder, a small MLP over many ray samples, a few
convolutions) leaves a large GPU mostly idle at batch 1. :class:`FrameBatcher` collects the
``encode`` and ``render`` calls of concurrent sessions, each a batch of one, and runs calls
that can share a batch together:

* **Grouping.** Calls share a batch when they do the same thing: ``encode`` (with the same
  style adapter, unless the model applies adapters per sample), or ``render`` at the same
  preset. The oldest waiting call's group goes first; inside a group, arrival order.
* **The window.** A group is sent when ``window_ms`` has passed since its oldest call, when it
  holds ``max_batch`` calls, or when one of its calls would otherwise miss its deadline (the
  measured cost of the group's last batch is kept per group). A call whose deadline leaves
  no time to wait at all goes alone, ahead of the forming groups.
* **Routing.** Results are split along the batch and each caller gets its own rows; per-caller
  state (smoothing, tokens, pose, quality) never enters the batcher.
* **Failures.** A batch that raises is retried one call at a time, so only the call that
  fails gets the error, and the batcher keeps serving.
* **Streams.** The batcher owns a stream for batched work; each call's inputs are ordered
  after its session's stream, and the session's stream after the batch (:mod:`.streams`).
  A batch's completion is awaited on the batcher's thread, so the measured cost is real GPU
  time and the caller's thread is released only when its rows exist.
* **Style adapters.** A call may carry a low-rank adapter. A model with
  ``per_sample_adapters = True`` takes ``encode(x, tokens, adapters=[...])`` and applies each
  row's adapter to that row (the base runs batched); for other models calls with different
  adapters form different groups.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from .. import log
from ..models.renderer.presets import get_preset
from .streams import NullStreamOps, StreamOps

logger = log.get(__name__)
Clock = Callable[[], float]


def batch_sizes_for(max_batch: int) -> tuple[int, ...]:
    """Batch sizes a backend prepares for (CUDA graphs): powers of two below ``max_batch``, and
    ``max_batch``; a batch is padded up to the next prepared size."""
    sizes = {max_batch}
    b = 1
    while b < max_batch:
        sizes.add(b)
        b *= 2
    return tuple(sorted(sizes))


class BatchError(RuntimeError):
    """The batcher is closed or did not answer in time (one line)."""


@dataclass(frozen=True)
class BatchConfig:
    """``window_ms``: how long the oldest call may wait for others; ``max_batch``: the largest
    batch; ``timeout_s``: how long a caller waits for its result before giving up."""

    window_ms: float = 4.0
    max_batch: int = 8
    timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if self.window_ms < 0:
            raise ValueError(f"batch window must be >= 0 ms, got {self.window_ms}")
        if self.max_batch < 1:
            raise ValueError(f"max batch must be >= 1, got {self.max_batch}")


@dataclass(eq=False)
class _Call:
    op: str                       # "encode" or "render"
    group: tuple                  # calls with equal groups may share a batch
    inputs: tuple[torch.Tensor, ...]
    adapter: Any
    deadline: float | None
    arrived: float
    ready: Any                    # event: the inputs are written on the caller's stream
    alone: bool = False
    finished: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    done_event: Any = None
    error: BaseException | None = None


class FrameBatcher:
    """Batches ``encode``/``render`` calls of concurrent sessions onto one model (module docstring).

    Args:
        model: an accelerated 3DPE model (``encode(x, tokens)``, ``render(planes, camera, preset)``).
        config: the window, the largest batch and the caller timeout.
        streams: stream operations (CUDA on a GPU; :class:`NullStreamOps` on the CPU).
        clock: seconds, monotonic (tests pass their own).
    """

    def __init__(self, model: Any, config: BatchConfig = BatchConfig(), streams: StreamOps | None = None,
                 clock: Clock = time.monotonic) -> None:
        self.model, self.config, self.clock = model, config, clock
        self.ops = streams or NullStreamOps()
        self.stream = self.ops.new_stream()
        self.per_sample_adapters = bool(getattr(model, "per_sample_adapters", False))
        self._cv = threading.Condition()
        self._pending: list[_Call] = []
        self._cost: dict[tuple, float] = {}   # seconds of the group's last batch
        self._closed = False
        self.sizes: Counter[int] = Counter()  # batches by size
        self.alone = self.retried = self.failed = 0
        self._thread = threading.Thread(target=self._loop, name="streamfx-batcher", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ callers
    def encode(self, x: torch.Tensor, tokens: torch.Tensor, *, adapter: Any = None,
               deadline: float | None = None) -> torch.Tensor:
        """x (1, 3, 512, 512), tokens (1, 197, 768) -> planes (1, 96, 256, 256); ``deadline`` in clock seconds."""
        group = ("encode",) if self.per_sample_adapters or adapter is None else ("encode", id(adapter))
        return self._submit("encode", group, (x, tokens), adapter, deadline)

    def render(self, planes: torch.Tensor, camera: torch.Tensor, preset: Any = "full", *,
               deadline: float | None = None) -> dict[str, torch.Tensor]:
        """planes (1, 96, 256, 256), camera (1, 25) -> ``image``, ``image_raw``, ``image_depth`` (batch 1)."""
        return self._submit("render", ("render", get_preset(preset)), (planes, camera), None, deadline)

    def _submit(self, op: str, group: tuple, inputs: tuple[torch.Tensor, ...], adapter: Any,
                deadline: float | None) -> Any:
        if inputs[0].shape[0] != 1:
            raise ValueError(f"{op}: batched calls take one frame each, got a batch of {inputs[0].shape[0]}")
        consumer = self.ops.current()
        now = self.clock()
        call = _Call(op, group, inputs, adapter, deadline, now, self.ops.record(consumer))
        with self._cv:
            if self._closed:
                raise BatchError("the frame batcher is closed")
            slack = None if deadline is None else deadline - now
            call.alone = slack is not None and slack < self.config.window_ms / 1e3 + self._cost.get(group, 0.0)
            self._pending.append(call)
            self._cv.notify()
        if not call.finished.wait(self.config.timeout_s):
            raise BatchError(f"{op}: no result from the frame batcher within {self.config.timeout_s:.0f} s")
        if call.error is not None:
            raise call.error
        self.ops.wait(consumer, call.done_event)
        for t in _tensors(call.result):
            self.ops.hand_over(t, consumer)
        return call.result

    # ------------------------------------------------------------------ the batcher's thread
    def _take(self, now: float) -> tuple[list[_Call] | None, float | None]:
        """The batch to run now, or None and when to look again (under the lock)."""
        if not self._pending:
            return None, None
        for call in self._pending:
            if call.alone:
                self._pending.remove(call)
                return [call], None
        head = self._pending[0]
        group = [c for c in self._pending if c.group == head.group][: self.config.max_batch]
        cost = self._cost.get(head.group, 0.0)
        send_at = head.arrived + self.config.window_ms / 1e3
        for c in group:
            if c.deadline is not None:
                send_at = min(send_at, c.deadline - cost)
        if self._closed or len(group) >= self.config.max_batch or now >= send_at:
            for c in group:
                self._pending.remove(c)
            return group, None
        return None, send_at

    def _loop(self) -> None:
        while True:
            with self._cv:
                while True:
                    batch, send_at = self._take(self.clock())
                    if batch is not None:
                        break
                    if self._closed:
                        return
                    self._cv.wait(None if send_at is None else max(send_at - self.clock(), 0.0))
            self._run(batch)

    def _run(self, batch: list[_Call]) -> None:
        start = self.clock()
        try:
            for call in batch:
                self.ops.wait(self.stream, call.ready)
            with self.ops.use(self.stream):
                results = self._call_model(batch)
            done = self.ops.record(self.stream)
            self.ops.synchronize(done)
        except Exception as exc:  # noqa: BLE001 - the error goes to the caller(s), the batcher goes on
            if len(batch) > 1:
                self.retried += 1
                logger.warning("a batch failed; retrying its calls one by one",
                               extra={"op": batch[0].op, "size": len(batch), "error": str(exc).splitlines()[0]})
                for call in batch:
                    self._run([call])
                return
            self.failed += 1
            batch[0].error = exc
            batch[0].finished.set()
            return
        self._cost[batch[0].group] = self.clock() - start
        self.sizes[len(batch)] += 1
        self.alone += batch[0].alone
        for call, result in zip(batch, results):
            call.result, call.done_event = result, done
            call.finished.set()

    def _call_model(self, batch: list[_Call]) -> list[Any]:
        first = batch[0]
        stacked = [torch.cat(parts) if len(batch) > 1 else parts[0] for parts in zip(*(c.inputs for c in batch))]
        if first.op == "encode":
            kwargs = {}
            if self.per_sample_adapters and any(c.adapter is not None for c in batch):
                kwargs["adapters"] = [c.adapter for c in batch]
            elif first.adapter is not None:
                kwargs["adapter"] = first.adapter
            planes = self.model.encode(*stacked, **kwargs)
            return [planes[i:i + 1] for i in range(len(batch))]
        out = self.model.render(*stacked, first.group[1])
        return [{k: v[i:i + 1] for k, v in out.items()} for i in range(len(batch))]

    # ------------------------------------------------------------------ state
    def stats(self) -> dict:
        batches = sum(self.sizes.values())
        frames = sum(size * n for size, n in self.sizes.items())
        return {"window_ms": self.config.window_ms, "max_batch": self.config.max_batch, "batches": batches,
                "frames": frames, "mean_batch": round(frames / batches, 2) if batches else 0.0,
                "sizes": dict(sorted(self.sizes.items())), "alone": self.alone, "retried_batches": self.retried,
                "failed_calls": self.failed}

    def close(self) -> None:
        """Finish what is pending, then stop; later calls raise :class:`BatchError`."""
        with self._cv:
            self._closed = True
            self._cv.notify()
        self._thread.join(timeout=self.config.timeout_s)


def _tensors(result: Any) -> list[torch.Tensor]:
    if isinstance(result, torch.Tensor):
        return [result]
    return [v for v in result.values() if isinstance(v, torch.Tensor)]


class BatchedModel:
    """An accelerated model whose ``encode`` and ``render`` go through a :class:`FrameBatcher`.

    The other methods (tokens, ``describe``, ``capture``) are the model's own. Calls with more
    than one frame go straight to the model.
    """

    def __init__(self, model: Any, batcher: FrameBatcher) -> None:
        self.model, self.batcher = model, batcher
        self.backend = getattr(model, "backend", "unknown")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)

    def describe(self) -> dict:
        return {**self.model.describe(), "batching": self.batcher.stats()}

    def encode(self, x: torch.Tensor, tokens: torch.Tensor, *, adapter: Any = None,
               deadline: float | None = None) -> torch.Tensor:
        if x.shape[0] != 1:
            return self.model.encode(x, tokens)
        return self.batcher.encode(x, tokens, adapter=adapter, deadline=deadline)

    def render(self, planes: torch.Tensor, camera: torch.Tensor, preset: Any = "full", *,
               deadline: float | None = None) -> dict[str, torch.Tensor]:
        if planes.shape[0] != 1:
            return self.model.render(planes, camera, preset)
        return self.batcher.render(planes, camera, preset, deadline=deadline)

    def close(self) -> None:
        self.batcher.close()
