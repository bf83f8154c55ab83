"""``torch-cuda``: 3DPE on an NVIDIA GPU in PyTorch, half precision, with CUDA graphs.

The default on NVIDIA GPUs: nothing to build, only a CUDA build of torch.

* **Precision.** Weights in fp16, or bf16 where the GPU runs it natively (compute capability
  8.0+) and a short matmul probe measures it clearly faster (:func:`pick_half`); no autocast
  in the hot path. Tri-plane sampling, the decoder's products, the ray weights and
  compositing stay float32 (the renderer casts them), the folded coordinate map of the
  encoder stays float32.
* **Layout.** Convolutions run ``channels_last`` (tensor-core friendly).
* **CUDA graphs.** The encoder (fixed 512x512 input) and the renderer of each preset the
  configuration can use are captured once per batch size it can form, up front
  (:meth:`TorchCudaAccelerated.capture`, with a progress line), never in the first frames
  of a call, into one shared memory pool (:class:`GraphPool`). A start whose graphs would
  not fit the free memory says so in one line before capturing. A capture that fails falls
  back to eager execution with one log line, so an unusual driver costs speed, not the call.
* **Streams and devices.** Work runs on the caller's current stream: a session enters its
  own stream and everything it launches (uploads, graphs, copies) is ordered on it. Every
  call binds the model's device first, so ``cuda:1`` work never lands on device 0. Streams,
  graphs and binding sit behind :class:`~streamfx.runtime.device_ops.DeviceOps`; off CUDA
  the same code runs with the graph stand-in, which is how CI walks this path.

This module imports nothing beyond torch; the core reaches it only by name
(:func:`streamfx.runtime.accelerated.load_accelerated`), like the TensorRT backend.
"""

from __future__ import annotations

import copy
import math
import threading
import time
from typing import Any, Callable

import torch

from ... import log
from ...models.encoder.fast import FastEncoder
from ...models.renderer.cameras import look_at_camera
from ...models.renderer.presets import PRESETS, RenderPreset, get_preset
from ...models.threedpe import INPUT_SIZE, PLANES_SHAPE, REF_SIZE, ThreeDPE, check_tensor
from ..accelerated import _Accelerated
from ..base import BackendUnavailable
from ..device_ops import DeviceOps, device_ops
from ..probe import PrecisionPlan

logger = log.get(__name__)
Progress = Callable[[str], None]


def measure_tflops(device: torch.device, dtype: torch.dtype) -> float:
    """TFLOP/s of a 4096^2 matmul on ``device`` in ``dtype`` (about 0.1 s)."""
    with torch.cuda.device(device):
        a = torch.randn(4096, 4096, device=device, dtype=dtype)
        for _ in range(3):
            a @ a
        torch.cuda.synchronize(device)
        start = time.perf_counter()
        for _ in range(10):
            a @ a
        torch.cuda.synchronize(device)
    return 10 * 2 * 4096**3 / (time.perf_counter() - start) / 1e12


#: bf16 is taken over fp16 only when it measures this much faster: on GPUs whose two peaks are
#: equal (H100, A100) measurement noise would otherwise decide, run to run
BF16_MARGIN = 1.10


def pick_half(rates: dict[str, float] | None, bf16_native: bool) -> tuple[str, str]:
    """"fp16" or "bf16", and why. fp16 unless the GPU runs bf16 natively (compute capability
    8.0+, not emulated) and it measured at least :data:`BF16_MARGIN` times faster: fp16 keeps
    3 more mantissa bits, which is what the parity thresholds were set for."""
    if not bf16_native:
        return "fp16", "fp16 (no native bf16 on this GPU)"
    if not rates:
        return "fp16", "fp16 (bf16 not measured)"
    measured = f"measured fp16 {rates['fp16']:.0f}, bf16 {rates['bf16']:.0f} TFLOP/s"
    if rates["bf16"] >= BF16_MARGIN * rates["fp16"]:
        return "bf16", f"bf16: {measured}"
    return "fp16", f"fp16: {measured} (bf16 is taken only when {BF16_MARGIN - 1:.0%} faster)"


def gpu_dtype(device: torch.device, prefer: str | None = None) -> tuple[torch.dtype, str]:
    """The half precision of ``device`` (:func:`pick_half`); ``prefer`` skips the measurement."""
    if prefer in ("fp16", "bf16"):
        return _DTYPES[prefer], f"{prefer} asked for"
    native = torch.cuda.get_device_capability(device) >= (8, 0)  # the chosen device, not the current one
    rates = None
    if native:
        rates = {name: measure_tflops(device, _DTYPES[name]) for name in ("fp16", "bf16")}
    name, reason = pick_half(rates, native)
    return _DTYPES[name], reason


_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
_NAMES = {v: k for k, v in _DTYPES.items()}


class GraphPool:
    """The memory pool that all of one model's graphs are captured into, and the order of their
    replays: one pool holds the largest graph's intermediates instead of each graph its own
    (20 private pools took several GB), which is safe because no two replays of the pool
    overlap on the device: each waits, on its own stream, for the event recorded after the
    previous replay's outputs were copied out."""

    def __init__(self, ops: DeviceOps) -> None:
        self.ops = ops
        self.handle = ops.graphs.new_pool()
        self.lock = threading.Lock()
        self.released: Any = None


class CapturedCall:
    """``fn(*tensors)`` replayed from a captured graph (:mod:`~streamfx.runtime.device_ops`:
    a CUDA graph on a GPU, the stand-in elsewhere): inputs are copied into the static buffers,
    the graph replays on the caller's current stream, and the outputs are cloned (a later
    replay overwrites the static outputs). When capture fails it calls ``fn`` eagerly
    (``captured`` says which), so an unusual driver costs speed, not the call.

    Callers on different threads and streams share the pool: a call holds the pool's lock
    while it enqueues, and its stream first waits for the event recorded after the previous
    replay's clones (:class:`GraphPool`)."""

    def __init__(self, fn: Callable[..., Any], *static: torch.Tensor, pool: GraphPool, warmup: int = 3,
                 name: str = "graph") -> None:
        """``static``: the input buffers the graph reads (graphs of one pool may share them:
        their replays never overlap, and each copies its inputs in just before it replays)."""
        self.fn, self.name, self.captured, self.pool = fn, name, False, pool
        self.graph: Any = None
        try:
            self.graph = pool.ops.graphs.capture(fn, list(static), pool.handle, warmup)
            self.captured = True
        except Exception as exc:  # noqa: BLE001 - eager is slower but correct
            logger.warning("graph capture failed; running eagerly", extra={"graph": name, "error": str(exc)})

    def __call__(self, *inputs: torch.Tensor) -> Any:
        if self.graph is None:
            return self.fn(*inputs)
        streams = self.pool.ops.streams
        with self.pool.lock:
            stream = streams.current()
            streams.wait(stream, self.pool.released)
            for static, value in zip(self.graph.inputs, inputs):
                static.copy_(value, non_blocking=True)
            self.graph.replay()
            outputs = self.graph.outputs
            out = {k: v.clone() for k, v in outputs.items()} if isinstance(outputs, dict) else outputs.clone()
            self.pool.released = streams.record(stream)
            return out


def padded_size(graphs: dict[int, Any], rows: int) -> int | None:
    """The smallest captured batch size that holds ``rows`` rows (None: run eagerly)."""
    return min((b for b in graphs if b >= rows), default=None)


def pad_rows(t: torch.Tensor, size: int) -> torch.Tensor:
    """``t`` (B, ...) padded to ``size`` rows by repeating its last row (the extra rows are discarded)."""
    if t.shape[0] == size:
        return t
    return torch.cat((t, t[-1:].expand(size - t.shape[0], *t.shape[1:])))


class TorchCudaAccelerated(_Accelerated):
    """3DPE on one GPU: same calls as the other execution paths, tensors on ``device`` in and out.

    Args:
        model: a loaded float32 :class:`ThreeDPE` (on any device; its weights are copied, the
            model itself is not moved).
        device: the GPU (``cuda:N``). Any other device runs the same code in float32 (unless
            ``precision`` says otherwise), with the graph stand-in: that is how CI walks it.
        presets: renderer presets that :meth:`capture` captures (default: all).
        precision: "fp16", "bf16", "fp32" or None (measured on a GPU; fp32 elsewhere).
        ops: the device's operations (default :func:`~streamfx.runtime.device_ops.device_ops`).
        encoder_only: only the encoder (graph backends use it for encodes with style adapters).
    """

    backend = "torch-cuda"

    def __init__(self, model: ThreeDPE, device: torch.device | str = "cuda", presets: tuple[str, ...] = (),
                 precision: str | None = None, ops: DeviceOps | None = None, encoder_only: bool = False) -> None:
        super().__init__()
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailable("torch-cuda needs a CUDA GPU visible to torch")
        self.ops = ops or device_ops(self.device)
        if self.device.type == "cuda":
            self.dtype, reason = gpu_dtype(self.device, precision)
        elif precision in _DTYPES:
            self.dtype, reason = _DTYPES[precision], f"{precision} asked for"
        else:
            self.dtype, reason = torch.float32, "float32 off the GPU"
        name = _NAMES[self.dtype]
        # The decoder's products read float32 tri-plane samples and run in float32 whatever the
        # weights' dtype (EqualizedLinear casts to its input), so that is what is reported.
        self.plan = PrecisionPlan(vit=name, encoder=name, decoder="fp32", superres=name, reason=reason)
        self.presets = tuple(get_preset(p).name for p in presets) or tuple(PRESETS)
        self.pool: GraphPool | None = None
        self.vit = self.renderer = None
        with torch.inference_mode(), self.ops.bound():
            self.encoder = FastEncoder(model.encoder, self.dtype, channels_last=True).to(self.device).eval()
            if not encoder_only:
                self.vit = copy.deepcopy(model.vit).to(self.device, self.dtype).eval()
                self.renderer = copy.deepcopy(model.renderer).to(self.device, self.dtype).eval()
                self.renderer.superresolution.to(memory_format=torch.channels_last)
        self._encode: dict[int, CapturedCall] = {}                  # by batch size
        self._render: dict[tuple[str, int], CapturedCall] = {}      # by (preset, batch size)

    def describe(self) -> dict:
        return {**super().describe(), "device": str(self.device)}

    # ------------------------------------------------------------------ graphs
    def graph_memory(self, batch_sizes: tuple[int, ...] = (1,), presets: tuple[str, ...] | None = None) -> dict:
        """Expected device memory of :meth:`capture` with these batch sizes and presets
        (:func:`~streamfx.runtime.estimate.graph_memory`)."""
        from ..estimate import graph_memory

        return graph_memory(tuple(presets or self.presets), tuple(batch_sizes), _NAMES[self.dtype])

    def capture(self, progress: Progress | None = None, batch_sizes: tuple[int, ...] = (1,),
                presets: tuple[str, ...] | None = None, warmup: int = 3) -> dict[str, bool]:
        """Capture the encoder and the renderer of each of ``presets`` (default: the ones given
        at construction), once per batch size, into one shared pool (the frame batcher's batches
        are padded up to the next captured size).

        Raises :class:`BackendUnavailable` (one line) before capturing anything when the
        expected graph memory does not fit the device's free memory. Returns which graphs were
        captured (False: eager, see the log). Call once, at start."""
        progress = progress or (lambda message: logger.info(message))
        presets = tuple(get_preset(p).name for p in (presets or self.presets))
        batch_sizes = tuple(sorted(set(batch_sizes)))
        need = self.graph_memory(batch_sizes, presets)
        graphs = need["total_bytes"] - need["weights_bytes"]  # the weights are on the device already
        free = self.ops.free_memory()
        if free is not None and graphs > free:
            raise BackendUnavailable(
                f"torch-cuda: CUDA graphs for batch sizes {list(batch_sizes)} and {len(presets)} presets need about "
                f"{graphs / 2**30:.1f} GiB on {self.device}, {free / 2**30:.1f} GiB is free; turn batching off "
                "(--batch-window-ms 0: batch 1 only), or free the GPU")
        self.pool = self.pool or GraphPool(self.ops)
        done = {}
        with self.ops.bound():
            for b in batch_sizes:
                x = torch.zeros(b, 3, INPUT_SIZE, INPUT_SIZE, device=self.device)
                tokens = torch.zeros(b, 197, 768, device=self.device)
                planes = torch.zeros(b, *PLANES_SHAPE, device=self.device)
                camera = look_at_camera(math.pi / 2, math.pi / 2).to(self.device).repeat(b, 1)  # any camera will do
                suffix = f"x{b}" if b > 1 else ""
                progress(f"torch-cuda: capturing the encoder{' for batch ' + str(b) if b > 1 else ''} on {self.device}")
                graph = CapturedCall(self._encode_eager, x, tokens, pool=self.pool, warmup=warmup, name=f"encoder{suffix}")
                done[f"encoder{suffix}"] = graph.captured
                if graph.captured:  # else eager, unpadded
                    self._encode[b] = graph
                for preset in presets:
                    progress(f"torch-cuda: capturing the {preset} renderer{' for batch ' + str(b) if b > 1 else ''}")
                    graph = CapturedCall(lambda p, c, _preset=preset: self._render_eager(p, c, _preset), planes, camera,
                                         pool=self.pool, warmup=warmup, name=f"renderer-{preset}{suffix}")
                    done[f"renderer-{preset}{suffix}"] = graph.captured
                    if graph.captured:
                        self._render[(preset, b)] = graph
        return done

    # ------------------------------------------------------------------ calls
    def _on_device(self, t: torch.Tensor) -> torch.Tensor:
        return t.to(self.device, non_blocking=True)

    @torch.inference_mode()
    def reference_tokens(self, ref224: torch.Tensor) -> torch.Tensor:
        """ref224 (B, 3, 224, 224) ImageNet-normalised -> tokens (B, 197, 768) float32 on the device."""
        check_tensor(ref224, (3, REF_SIZE, REF_SIZE), "reference")
        with self.ops.bound():
            return self.vit(self._on_device(ref224).to(self.dtype)).float()

    def prepare_adapter(self, adapter: Any) -> Any:
        """The adapter's weights cast onto the device in the encoder's dtype, and finished there
        before it is handed to any session's stream (see :meth:`_Accelerated.prepare_adapter`)."""
        with self.ops.bound():
            return super().prepare_adapter(adapter)

    def _encode_eager(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return self.encoder(x, tokens.expand(x.shape[0], -1, -1))

    per_sample_adapters = True

    @torch.inference_mode()
    def encode(self, x: torch.Tensor, tokens: torch.Tensor, adapters=None) -> torch.Tensor:
        """x (B, 3, 512, 512) in [-1, 1] -> planes (B, 96, 256, 256) float32 on the device.

        ``adapters``: one low-rank adapter (or None) per row; rows with adapters run eagerly
        (the captured graphs hold the base model only). Every encode takes the encoder lock:
        while one caller's adapters are hooked onto the shared encoder, no other encode runs."""
        self._check_encode(x, tokens)
        with self.ops.bound():
            x, tokens = self._on_device(x).float(), self._on_device(tokens).float()
            tokens = tokens.expand(x.shape[0], -1, -1)
            if adapters and any(a is not None for a in adapters):
                return self._with_adapters(self.encoder, adapters, lambda: self._encode_eager(x, tokens))
            size = padded_size(self._encode, x.shape[0])
            if size is None:
                return self._with_adapters(self.encoder, None, lambda: self._encode_eager(x, tokens))
            return self._encode[size](pad_rows(x, size), pad_rows(tokens, size))[: x.shape[0]]

    def _render_eager(self, planes: torch.Tensor, camera: torch.Tensor, preset: Any) -> dict[str, torch.Tensor]:
        return self.renderer(planes, camera, preset)

    @torch.inference_mode()
    def render(self, planes: torch.Tensor, camera: torch.Tensor, preset: Any = "full") -> dict[str, torch.Tensor]:
        """planes (B, 96, 256, 256), camera (B, 25) -> ``image``, ``image_raw``, ``image_depth`` on the device."""
        check_tensor(planes, PLANES_SHAPE, "planes")
        with self.ops.bound():
            planes, camera = self._on_device(planes).float(), self._on_device(camera).float()
            name = preset if isinstance(preset, str) else None
            if isinstance(preset, RenderPreset) and get_preset(preset.name) == preset:
                name = preset.name
            size = padded_size({b: None for p, b in self._render if p == name}, planes.shape[0])
            if size is not None:
                out = self._render[(name, size)](pad_rows(planes, size), pad_rows(camera, size))
                return {k: v[: planes.shape[0]] for k, v in out.items()}
            return self._render_eager(planes, camera, preset)
