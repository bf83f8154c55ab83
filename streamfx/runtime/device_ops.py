"""The one place where the GPU road and the CPU differ: streams, graphs, pinned buffers, binding.

Everything on the GPU path (loading, capture, padding, batching, uploads, the paste) is the
same code on every device; what differs sits behind :class:`DeviceOps`:

* ``streams``: CUDA streams and events (:class:`~.streams.CudaStreamOps`), or nothing to
  order on the CPU (:class:`~.streams.NullStreamOps`; tests pass a recording fake);
* ``graphs``: CUDA graph capture (:class:`CudaGraphOps`), or :class:`GraphStandIn`, which keeps
  a graph's rules on the CPU so that the capture and padding logic runs in CI;
* ``pinned(t)``: page-locked host memory for uploads (plain memory off CUDA);
* ``bound()``: makes the device the current CUDA device (``cuda:1`` work never lands on 0);
* ``accelerator``: whether a session takes the GPU's choices (encoder in the frame path,
  frames batched across callers, crops uploaded and pasted on the device). A CPU device
  takes the CPU's (a keyframe encoder worker, no batching window), unless a test or
  ``gpu_check --device cpu`` asks for the GPU's road there with :func:`gpu_road`.

Graph rules the stand-in keeps (what a CUDA graph does to a caller that breaks them):

1. a replay reads its inputs from the static buffers captured with it: a caller that swaps
   in another tensor instead of copying into the buffer gets the result of the old values;
2. a replay writes its outputs into the same static tensors each time: a caller that keeps
   an output without copying it sees it overwritten by the next replay;
3. nothing is reallocated after capture: a static buffer whose storage changed (``resize_``,
   ``set_``) is an error.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, Callable, Protocol

import torch

from .streams import CudaStreamOps, NullStreamOps, StreamOps


class GraphRuleError(RuntimeError):
    """A captured graph's static buffers were reallocated after capture."""


class CapturedGraph(Protocol):
    """A captured graph: ``replay()`` recomputes ``outputs`` from the static ``inputs``."""

    inputs: list[torch.Tensor]
    outputs: Any

    def replay(self) -> None: ...


class GraphOps(Protocol):
    def new_pool(self) -> Any:
        """A memory pool that graphs captured into it share (one pool: the largest graph's memory)."""

    def capture(self, fn: Callable[..., Any], inputs: list[torch.Tensor], pool: Any, warmup: int) -> CapturedGraph:
        """Run ``fn(*inputs)`` ``warmup`` times, then capture it reading ``inputs``."""


def _tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        return [v for v in value.values() if isinstance(v, torch.Tensor)]
    return [v for v in value if isinstance(v, torch.Tensor)]


class _CudaGraph:
    def __init__(self, graph: Any, inputs: list[torch.Tensor], outputs: Any) -> None:
        self.graph, self.inputs, self.outputs = graph, inputs, outputs

    def replay(self) -> None:
        self.graph.replay()


class CudaGraphOps:
    """torch CUDA graphs on one device: warm-up on a side stream, capture on a stream of that
    device (torch's default capture stream is made on the current device, so on ``cuda:1``
    the kernels would go elsewhere and the graph would be empty), into a shared pool."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def new_pool(self) -> Any:
        with torch.cuda.device(self.device):
            return torch.cuda.graph_pool_handle()

    def capture(self, fn: Callable[..., Any], inputs: list[torch.Tensor], pool: Any, warmup: int) -> CapturedGraph:
        with torch.cuda.device(self.device):
            current = torch.cuda.current_stream(self.device)
            side = torch.cuda.Stream(device=self.device)
            side.wait_stream(current)
            with torch.cuda.stream(side), torch.inference_mode():
                for _ in range(warmup):  # cuDNN/cuBLAS pick their kernels outside the capture
                    fn(*inputs)
            current.wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool, stream=side), torch.inference_mode():
                outputs = fn(*inputs)
            current.wait_stream(side)
            if not _tensors(outputs):
                raise RuntimeError("the captured function returned no tensors")
        return _CudaGraph(graph, inputs, outputs)


class _StandInGraph:
    def __init__(self, fn: Callable[..., Any], inputs: list[torch.Tensor], outputs: Any) -> None:
        self.fn, self.inputs, self.outputs = fn, inputs, outputs
        self._storage = [t.untyped_storage().data_ptr() for t in inputs + _tensors(outputs)]
        self.replays = 0

    def replay(self) -> None:
        statics = self.inputs + _tensors(self.outputs)
        if [t.untyped_storage().data_ptr() for t in statics] != self._storage:
            raise GraphRuleError("a static buffer of a captured graph was reallocated after capture")
        with torch.inference_mode():
            fresh = self.fn(*self.inputs)  # rule 1: the captured buffers, whatever the caller holds now
            for static, value in zip(_tensors(self.outputs), _tensors(fresh)):
                if static.shape != value.shape or static.dtype != value.dtype:
                    raise GraphRuleError(f"a replay produced {tuple(value.shape)} {value.dtype}, the capture "
                                         f"{tuple(static.shape)} {static.dtype}")
                static.copy_(value)  # rule 2: the same output tensors every replay
        self.replays += 1


class GraphStandIn:
    """A CUDA graph's behaviour on any device (see the module docstring): capture runs the
    function on the static inputs and keeps its outputs; a replay runs it again on the same
    static inputs and writes into the same outputs."""

    def new_pool(self) -> Any:
        return None

    def capture(self, fn: Callable[..., Any], inputs: list[torch.Tensor], pool: Any, warmup: int) -> CapturedGraph:
        # no warm-up runs: they exist for cuDNN/cuBLAS kernel selection, which has nothing to pick here
        with torch.inference_mode():
            outputs = fn(*inputs)
        return _StandInGraph(fn, inputs, outputs)


@dataclass(frozen=True)
class DeviceOps:
    """What differs between devices on the GPU road (module docstring)."""

    device: torch.device
    streams: StreamOps
    graphs: GraphOps
    accelerator: bool

    def pinned(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` in page-locked memory where uploads are asynchronous (CUDA), else ``t``."""
        return t.pin_memory() if self.device.type == "cuda" else t

    def bound(self) -> AbstractContextManager:
        """Inside the block the device is the current CUDA device (threads start on device 0)."""
        return torch.cuda.device(self.device) if self.device.type == "cuda" else nullcontext()

    def free_memory(self) -> int | None:
        """Free bytes on the device, where that can be known (CUDA), else None."""
        if self.device.type != "cuda":
            return None
        free, _total = torch.cuda.mem_get_info(self.device)
        return int(free)


def device_ops(device: torch.device | str) -> DeviceOps:
    """The real operations of ``device``: CUDA streams and graphs on a CUDA device; on any
    other device nothing to order, the graph stand-in, and the CPU's choices."""
    device = torch.device(device)
    if device.type == "cuda":
        return DeviceOps(device, CudaStreamOps(device), CudaGraphOps(device), accelerator=True)
    return DeviceOps(device, NullStreamOps(), GraphStandIn(), accelerator=False)


def gpu_road(device: torch.device | str = "cpu", streams: StreamOps | None = None) -> DeviceOps:
    """The GPU's road on a device without CUDA (CI and ``gpu_check --device cpu``): the GPU's
    choices and code, the graph stand-in, and ``streams`` (a recording fake in tests)."""
    device = torch.device(device)
    if device.type == "cuda":
        return device_ops(device)
    return DeviceOps(device, streams or NullStreamOps(), GraphStandIn(), accelerator=True)
