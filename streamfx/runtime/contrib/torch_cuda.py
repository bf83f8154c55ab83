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
    calls ``fn`` (``captured`` says which)."""

    def __init__(self, fn: Callable[..., Any], *example: torch.Tensor, warmup: int = 3, name: str = "graph") -> None:
        self.fn, self.name, self.captured = fn, name, False
        self.graph = None
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
        for static, value in zip(self.inputs, inputs):
            static.copy_(value, non_blocking=True)
        self.graph.replay()
        if isinstance(self.outputs, dict):
            return {k: v.clone() for k, v in self.outputs.items()}
        return self.outputs.clone()


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
        self._encode: Callable[..., torch.Tensor] = self._encode_eager
        self._render: dict[str, Callable[..., dict[str, torch.Tensor]]] = {}

    def describe(self) -> dict:
        return {**super().describe(), "device": str(self.device)}

    # ------------------------------------------------------------------ graphs
    def capture(self, progress: Progress | None = None) -> dict[str, bool]:
        """Capture the encoder and every preset's renderer as CUDA graphs (batch 1).

        Returns which were captured (False: eager, see the log). Call once, at start."""
        progress = progress or (lambda message: logger.info(message))
        x = torch.zeros(1, 3, INPUT_SIZE, INPUT_SIZE, device=self.device)
        tokens = torch.zeros(1, 197, 768, device=self.device)
        planes = torch.zeros(1, *PLANES_SHAPE, device=self.device)
        camera = look_at_camera(math.pi / 2, math.pi / 2).to(self.device)  # frontal; any camera will do
        done = {}
        progress(f"torch-cuda: capturing the encoder on {self.device}")
        graph = CapturedCall(self._encode_eager, x, tokens, name="encoder")
        self._encode, done["encoder"] = graph, graph.captured
        for preset in self.presets:
            progress(f"torch-cuda: capturing the {preset} renderer")
            graph = CapturedCall(lambda p, c, _preset=preset: self._render_eager(p, c, _preset), planes, camera,
                                 name=f"renderer-{preset}")
            self._render[preset], done[f"renderer-{preset}"] = graph, graph.captured
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

    @torch.inference_mode()
    def encode(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """x (B, 3, 512, 512) in [-1, 1] -> planes (B, 96, 256, 256) float32 on the device."""
        self._check_encode(x, tokens)
        x, tokens = self._on_device(x).float(), self._on_device(tokens).float()
        if x.shape[0] == 1 and tokens.shape[0] == 1:
            return self._encode(x, tokens)
        return self._encode_eager(x, tokens)

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
        if name in self._render and planes.shape[0] == 1:
            return self._render[name](planes, camera)
        return self._render_eager(planes, camera, preset)
