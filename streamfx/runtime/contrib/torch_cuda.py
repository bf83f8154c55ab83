"""``torch-cuda``: 3DPE on an NVIDIA GPU in PyTorch, half precision, with CUDA graphs.

The default on NVIDIA GPUs: nothing to build, only a CUDA build of torch.

* **Precision.** Weights in fp16, or bf16 where the GPU has it (compute capability 8.0+)
  and a short matmul probe measures it at least as fast; no autocast in the hot path.
  Tri-plane sampling, the ray weights and compositing stay float32 (the renderer casts
  them), the folded coordinate map of the encoder stays float32.
* **Layout.** Convolutions run ``channels_last`` (tensor-core friendly).
* **CUDA graphs.** The encoder (fixed 512x512 input) and each renderer preset are captured
  once, up front (:meth:`TorchCudaAccelerated.capture`, with a progress line), never in
  the first frames of a call. A capture that fails falls back to eager execution with one
  log line, so an unusual driver costs speed, not the call.
* **Streams.** Work runs on the caller's current stream: a session enters its own
  ``torch.cuda.stream`` and everything it launches (uploads, graphs, copies) is ordered on it.

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
from ..probe import STAGES, PrecisionPlan
from ..streams import CudaStreamOps

logger = log.get(__name__)
Progress = Callable[[str], None]


def measure_tflops(device: torch.device, dtype: torch.dtype) -> float:
    """TFLOP/s of a 4096^2 matmul on ``device`` in ``dtype`` (about 0.1 s)."""
    a = torch.randn(4096, 4096, device=device, dtype=dtype)
    for _ in range(3):
        a @ a
    torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(10):
        a @ a
    torch.cuda.synchronize(device)
    return 10 * 2 * 4096**3 / (time.perf_counter() - start) / 1e12


def gpu_dtype(device: torch.device, prefer: str | None = None) -> tuple[torch.dtype, str]:
    """fp16, or bf16 where the GPU supports it and a 4096^2 matmul measures it at least as fast.

    ``prefer`` ("fp16" or "bf16") skips the measurement.
    """
    if prefer in ("fp16", "bf16"):
        return (torch.float16 if prefer == "fp16" else torch.bfloat16), f"{prefer} asked for"
    if device.type != "cuda" or not torch.cuda.is_bf16_supported():
        return torch.float16, "fp16 (no bf16 on this device)"
    rates = {name: measure_tflops(device, dtype) for name, dtype in (("fp16", torch.float16), ("bf16", torch.bfloat16))}
    choice = "bf16" if rates["bf16"] >= rates["fp16"] else "fp16"
    reason = f"{choice}: measured fp16 {rates['fp16']:.0f}, bf16 {rates['bf16']:.0f} TFLOP/s"
    return (torch.bfloat16 if choice == "bf16" else torch.float16), reason


class CapturedCall:
    """``fn(*tensors)`` replayed from a CUDA graph: inputs are copied into static buffers,
    the graph replays on the current stream, and the outputs are cloned (so a later replay
    never overwrites what a caller still holds). Off CUDA, or when capture fails, it simply
    calls ``fn`` (``captured`` says which).

    Callers on different threads and streams share the static buffers: a call holds a lock
    while it enqueues, and its stream first waits for the event recorded after the previous
    call's clones, so a replay never overwrites buffers another stream is still reading."""

    def __init__(self, fn: Callable[..., Any], *example: torch.Tensor, warmup: int = 3, name: str = "graph") -> None:
        self.fn, self.name, self.captured = fn, name, False
        self.graph = None
        self._lock = threading.Lock()
        self._released: Any = None
        if not example or example[0].device.type != "cuda":
            return
        try:
            self.inputs = [t.clone() for t in example]
            side = torch.cuda.Stream(device=example[0].device)
            side.wait_stream(torch.cuda.current_stream(example[0].device))
            with torch.cuda.stream(side), torch.inference_mode():
                for _ in range(warmup):  # cuDNN/cuBLAS pick their kernels outside the capture
                    fn(*self.inputs)
            torch.cuda.current_stream(example[0].device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph), torch.inference_mode():
                self.outputs = fn(*self.inputs)
            self.graph, self.captured = graph, True
        except Exception as exc:  # noqa: BLE001 - eager is slower but correct
            logger.warning("cuda graph capture failed; running eagerly", extra={"graph": name, "error": str(exc)})
            self.graph = None

    def __call__(self, *inputs: torch.Tensor) -> Any:
        if self.graph is None:
            return self.fn(*inputs)
        with self._lock:
            ops = CudaStreamOps(self.inputs[0].device)
            stream = ops.current()
            ops.wait(stream, self._released)
            for static, value in zip(self.inputs, inputs):
                static.copy_(value, non_blocking=True)
            self.graph.replay()
            if isinstance(self.outputs, dict):
                out = {k: v.clone() for k, v in self.outputs.items()}
            else:
                out = self.outputs.clone()
            self._released = ops.record(stream)
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
        model: a loaded float32 :class:`ThreeDPE` (on any device; its weights are copied).
        device: the GPU (``cuda:N``); a CPU device runs the same code in float32, for tests.
        presets: renderer presets to capture with CUDA graphs when :meth:`capture` runs.
        precision: "fp16", "bf16" or None (measured).
    """

    backend = "torch-cuda"

    def __init__(self, model: ThreeDPE, device: torch.device | str = "cuda", presets: tuple[str, ...] = (),
                 precision: str | None = None) -> None:
        super().__init__()
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailable("torch-cuda needs a CUDA GPU visible to torch")
        if self.device.type == "cuda":
            self.dtype, reason = gpu_dtype(self.device, precision)
        else:
            self.dtype, reason = torch.float32, "float32 off the GPU"
        name = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}[self.dtype]
        self.plan = PrecisionPlan(**{s: name for s in STAGES}, reason=reason)
        self.presets = tuple(get_preset(p).name for p in presets) or tuple(PRESETS)
        with torch.inference_mode():
            self.vit = copy.deepcopy(model.vit).to(self.device, self.dtype).eval()
            self.encoder = FastEncoder(model.encoder, self.dtype, channels_last=True).to(self.device).eval()
            self.renderer = copy.deepcopy(model.renderer).to(self.device, self.dtype).eval()
            self.renderer.superresolution.to(memory_format=torch.channels_last)
        self._encode: dict[int, CapturedCall] = {}                  # by batch size
        self._render: dict[tuple[str, int], CapturedCall] = {}      # by (preset, batch size)

    def describe(self) -> dict:
        return {**super().describe(), "device": str(self.device)}

    # ------------------------------------------------------------------ graphs
    def capture(self, progress: Progress | None = None, batch_sizes: tuple[int, ...] = (1,)) -> dict[str, bool]:
        """Capture the encoder and every preset's renderer as CUDA graphs, once per batch size
        (the frame batcher's batches are padded up to the next captured size).

        Returns which were captured (False: eager, see the log). Call once, at start."""
        progress = progress or (lambda message: logger.info(message))
        done = {}
        for b in sorted(set(batch_sizes)):
            x = torch.zeros(b, 3, INPUT_SIZE, INPUT_SIZE, device=self.device)
            tokens = torch.zeros(b, 197, 768, device=self.device)
            planes = torch.zeros(b, *PLANES_SHAPE, device=self.device)
            camera = look_at_camera(math.pi / 2, math.pi / 2).to(self.device).expand(b, -1)  # any camera will do
            suffix = f"x{b}" if b > 1 else ""
            progress(f"torch-cuda: capturing the encoder{' for batch ' + str(b) if b > 1 else ''} on {self.device}")
            graph = CapturedCall(self._encode_eager, x, tokens, name=f"encoder{suffix}")
            done[f"encoder{suffix}"] = graph.captured
            if graph.captured:  # else eager, unpadded
                self._encode[b] = graph
            for preset in self.presets:
                progress(f"torch-cuda: capturing the {preset} renderer{' for batch ' + str(b) if b > 1 else ''}")
                graph = CapturedCall(lambda p, c, _preset=preset: self._render_eager(p, c, _preset), planes, camera,
                                     name=f"renderer-{preset}{suffix}")
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
        return self.vit(self._on_device(ref224).to(self.dtype)).float()

    def _encode_eager(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return self.encoder(x, tokens.expand(x.shape[0], -1, -1))

    per_sample_adapters = True

    @torch.inference_mode()
    def encode(self, x: torch.Tensor, tokens: torch.Tensor, adapters=None) -> torch.Tensor:
        """x (B, 3, 512, 512) in [-1, 1] -> planes (B, 96, 256, 256) float32 on the device.

        ``adapters``: one low-rank adapter (or None) per row; rows with adapters run eagerly
        (the captured graphs hold the base model only)."""
        self._check_encode(x, tokens)
        x, tokens = self._on_device(x).float(), self._on_device(tokens).float()
        tokens = tokens.expand(x.shape[0], -1, -1)
        if adapters and any(a is not None for a in adapters):
            return self._with_adapters(self.encoder, adapters, lambda: self._encode_eager(x, tokens))
        size = padded_size(self._encode, x.shape[0])
        if size is None:
            return self._encode_eager(x, tokens)
        return self._encode[size](pad_rows(x, size), pad_rows(tokens, size))[: x.shape[0]]

    def _render_eager(self, planes: torch.Tensor, camera: torch.Tensor, preset: Any) -> dict[str, torch.Tensor]:
        return self.renderer(planes, camera, preset)

    @torch.inference_mode()
    def render(self, planes: torch.Tensor, camera: torch.Tensor, preset: Any = "full") -> dict[str, torch.Tensor]:
        """planes (B, 96, 256, 256), camera (B, 25) -> ``image``, ``image_raw``, ``image_depth`` on the device."""
        check_tensor(planes, PLANES_SHAPE, "planes")
        planes, camera = self._on_device(planes).float(), self._on_device(camera).float()
        name = preset if isinstance(preset, str) else None
        if isinstance(preset, RenderPreset) and get_preset(preset.name) == preset:
            name = preset.name
        size = padded_size({b: None for p, b in self._render if p == name}, planes.shape[0])
        if size is not None:
            out = self._render[(name, size)](pad_rows(planes, size), pad_rows(camera, size))
            return {k: v[: planes.shape[0]] for k, v in out.items()}
        return self._render_eager(planes, camera, preset)
