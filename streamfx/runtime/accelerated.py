"""One switch between 3DPE execution paths: ``load_accelerated(model, backend)``.

The returned object has the methods of :class:`~streamfx.models.threedpe.ThreeDPE` that the
live engine uses (``reference_tokens``, ``prompt_tokens``, ``encode``, ``render``), whatever
runs underneath:

==============  ===============================================================================
backend         what runs
==============  ===============================================================================
``torch-fp32``  the reference PyTorch modules (the parity path; exact, slowest)
``torch``       PyTorch fast path: encoder with folded coordinate channels,
                :class:`~streamfx.models.renderer.fast.FastRenderer` (fp32 sampling and
                compositing), each stage (ViT, encoder, decoder, super-resolution) in the
                precision the capability probe measured fastest (:mod:`.probe`)
``torch-bf16``  the fast path with every stage in bf16, whatever the probe says
``onnxruntime`` exported static graphs on ONNX Runtime (fp32)
``openvino``    exported static graphs on OpenVINO (precision hint from the probe)
``tensorrt``    FP16 TensorRT engines on an NVIDIA GPU, torch CUDA tensors in and out
``hybrid``      OpenVINO for the reference ViT, the encoder and the presets with full
                super-resolution; the ``torch`` fast renderer for the other presets
``auto``        ``hybrid`` when OpenVINO is installed, else ``torch``; precision per stage
                from the probe, so bf16 runs only where this CPU measured it faster
==============  ===============================================================================

Graph backends build what they need through the engine cache (``engines/``); renderer
graphs of presets not given up front are built on first use, or ahead of it in a background
thread by ``prepare(preset)``. ``ready_presets(presets)`` says which presets render without
waiting for a build (on the torch paths: all of them), so that a live caller can render at
a ready preset while another one builds.
"""

from __future__ import annotations

import copy
import threading
from typing import Any, Iterable

import numpy as np
import torch

from .. import log
from ..models.renderer.presets import get_preset
from ..models.threedpe import (
    INPUT_SIZE,
    PLANES_SHAPE,
    REF_SIZE,
    TOKENS_SHAPE,
    ModelInputError,
    ReferenceTokenCache,
    ThreeDPE,
    check_tensor,
    prepare_reference,
    weights_sha256,
)
from .base import BackendUnavailable
from .device_ops import DeviceOps, device_ops
from .engine_cache import EngineCache
from .names import BACKEND_CHOICES, GRAPH_BACKENDS, TORCH_BACKENDS
from .probe import STAGES, PrecisionPlan
from .selection import ALL_FP32, plan_for, resolve_backend

logger = log.get(__name__)


class _Accelerated:
    """Shared input checks, prompt-token cache and ``prompt_tokens`` of every backend, and the
    readiness of paths that build nothing (``ready_presets``, ``prepare``)."""

    backend: str
    plan: PrecisionPlan = ALL_FP32
    #: sha256 of the weights (:func:`~streamfx.models.threedpe.weights_sha256`), set by :func:`load_accelerated`
    weights_sha256: str | None = None
    #: ``encode(x, tokens, adapters=[...])`` applies row i's low-rank adapter to row i
    per_sample_adapters = False

    #: the device inference runs on, and its streams, graphs and binding (:mod:`.device_ops`)
    device: torch.device = torch.device("cpu")
    ops: DeviceOps = device_ops("cpu")

    def __init__(self) -> None:
        self.token_cache = ReferenceTokenCache()
        # Adapter hooks sit on the shared encoder while a call runs: encoder calls take turns.
        self._encoder_lock = threading.Lock()

    def _finished(self) -> None:
        """Block until the work enqueued so far on this thread's stream is done: what it made
        may now be read from any stream (a hand-over between threads, once per prompt)."""
        streams = self.ops.streams
        streams.synchronize(streams.record(streams.current()))

    def describe(self) -> dict:
        """Backend and precision per stage, for ``/api/info``, stats and ``doctor``."""
        return {"backend": self.backend, "precision": self.plan.summary,
                "stages": {s: getattr(self.plan, s) for s in STAGES}}

    def prompt_tokens(self, key: str, reference_rgb: np.ndarray) -> torch.Tensor:
        """Tokens (1, 197, 768) of a reference image, computed once per prompt ``key``.

        They are computed on the prompt thread's stream and read on every session's: the
        computation is finished before they enter the cache (sessions that read them hand
        them over to their own stream, which keeps their memory while it reads)."""
        def compute() -> torch.Tensor:
            tokens = self.reference_tokens(prepare_reference(reference_rgb))
            self._finished()
            return tokens

        return self.token_cache.get_or_compute(key, compute)

    def prepare_adapter(self, adapter: Any) -> Any:
        """``adapter`` with its weights already on this path's device in the encoder's dtype
        (and float32), finished before any session's stream reads them."""
        if adapter is None:
            return None
        adapter.prepare(self.device, (self.plan.dtype("encoder"), torch.float32))
        self._finished()
        return adapter

    def _with_adapters(self, encoder: torch.nn.Module, adapters, run):
        """``run()`` with row i's adapter hooked onto ``encoder`` (:func:`~.adapters.per_sample`)."""
        with self._encoder_lock:
            if not adapters or all(a is None for a in adapters):
                return run()
            from .adapters import per_sample

            with per_sample(encoder, adapters):
                return run()

    @staticmethod
    def _check_encode(x: torch.Tensor, tokens: torch.Tensor) -> None:
        check_tensor(x, (3, INPUT_SIZE, INPUT_SIZE), "input")
        check_tensor(tokens, TOKENS_SHAPE, "tokens")
        if tokens.shape[0] not in (1, x.shape[0]):
            raise ModelInputError(f"tokens: batch {tokens.shape[0]} does not match input batch {x.shape[0]}")

    def ready_presets(self, presets: Iterable[Any]) -> list[str]:
        """The names of those ``presets`` that render without building anything first, in the
        order given. Paths that build nothing (the torch ones) are always ready."""
        return [get_preset(p).name for p in presets]

    def prepare(self, preset: Any) -> None:
        """Start building what ``preset`` needs in the background, without waiting for it
        (nothing to build on paths that are always ready)."""

    def reference_tokens(self, ref224: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class TorchAccelerated(_Accelerated):
    """``torch-fp32`` (the model itself), or the fast modules built from it in the precision
    of ``plan`` (``torch``: the probe's plan; ``torch-bf16``: all bf16)."""

    def __init__(self, model: ThreeDPE, backend: str, render_only: bool = False,
                 plan: PrecisionPlan | None = None, encoder_only: bool = False) -> None:
        super().__init__()
        self.backend = backend
        self.model = model
        self.plan = plan or plan_for(backend)
        if backend == "torch-fp32":
            if model.dtype != torch.float32:
                raise ValueError(f"torch-fp32 needs a float32 model, got {model.dtype}")
            self.device = next(model.parameters()).device  # the model runs where it is (cpu, cuda, mps)
            self.ops = device_ops(self.device)
            self.vit, self.encoder, self.renderer = model.vit, model.encoder, model.renderer
            return
        from ..models.renderer.fast import FastRenderer

        self.vit = self.encoder = self.renderer = None
        if not render_only:
            from ..models.encoder.fast import FastEncoder

            self.encoder = FastEncoder(model.encoder, self.plan.dtype("encoder"))
            if encoder_only:  # the graph paths' encoder for style adapters
                return
            self.vit = copy.deepcopy(model.vit).to(self.plan.dtype("vit"))
        self.renderer = FastRenderer(model.renderer.float(), sr_dtype=self.plan.dtype("superres"),
                                     decoder_dtype=self.plan.dtype("decoder"))

    @torch.inference_mode()
    def reference_tokens(self, ref224: torch.Tensor) -> torch.Tensor:
        """ref224 (B, 3, 224, 224) ImageNet-normalised -> tokens (B, 197, 768) float32."""
        check_tensor(ref224, (3, REF_SIZE, REF_SIZE), "reference")
        with self.ops.bound():
            return self.vit(ref224.to(self.device, self.vit.pos_embed.dtype)).float()

    per_sample_adapters = True

    @torch.inference_mode()
    def encode(self, x: torch.Tensor, tokens: torch.Tensor, adapters=None) -> torch.Tensor:
        """x (B, 3, 512, 512) in [-1, 1], tokens (B or 1, 197, 768) -> planes (B, 96, 256, 256) float32.

        ``adapters``: one low-rank adapter (or None) per row, applied to that row only."""
        self._check_encode(x, tokens)
        with self.ops.bound():
            x, tokens = x.to(self.device), tokens.to(self.device)
            if self.backend == "torch-fp32":
                return self._with_adapters(self.model.encoder, adapters, lambda: self.model.encode(x, tokens))
            return self._with_adapters(self.encoder, adapters,
                                       lambda: self.encoder(x, tokens.expand(x.shape[0], -1, -1)))

    @torch.inference_mode()
    def render(self, planes: torch.Tensor, camera: torch.Tensor, preset: Any = "full") -> dict[str, torch.Tensor]:
        """planes (B, 96, 256, 256), camera (B, 25) -> ``image``, ``image_raw``, ``image_depth``."""
        with self.ops.bound():
            planes, camera = planes.to(self.device), camera.to(self.device)
            if self.backend == "torch-fp32":
                return self.model.render(planes, camera, preset)
            check_tensor(planes, PLANES_SHAPE, "planes")
            return self.renderer(planes, camera.float(), preset)


def load_accelerated(model: ThreeDPE, backend: str = "auto", presets: tuple[str, ...] | list[str] = (),
                     *, cache: EngineCache | None = None, verify: bool = False, threads: int | None = None,
                     device: torch.device | str = "cpu", max_batch: int = 1, ops: DeviceOps | None = None,
                     **backend_options):
    """Wrap ``model`` for fast inference on ``backend`` (see the module docstring).

    Args:
        model: a loaded float32 :class:`ThreeDPE` (weights are shared or exported from it).
        backend: one of :data:`BACKEND_CHOICES`.
        presets: renderer presets to build up front (graph backends; others build on first use).
        cache: engine cache (``engines/``) for graph backends.
        verify: check each built graph against PyTorch before use.
        threads: CPU threads for OpenVINO (torch's are set by :func:`~.threads.apply_threads`).
        device: where inference runs (see :func:`resolve_backend`); ``torch-cuda`` copies the
            weights there, ``torch-fp32`` expects the model there already.
        max_batch: graph backends: build graphs with a dynamic batch of up to this many rows
            (for the frame batcher; 1 = static graphs).
        ops: the device's streams, graphs and binding (default: the device's own,
            :func:`~.device_ops.device_ops`). :func:`~.device_ops.gpu_road` on a CPU device
            loads ``torch-cuda`` (``auto`` means it there) with the graph stand-in: the GPU's
            road, walked in CI.
        backend_options: passed to the runtime backend (e.g. ``precision="f32"`` for OpenVINO).

    Raises:
        BackendUnavailable: unknown backend, or its package/hardware is missing (one line).
    """
    for p in presets:
        get_preset(p)
    device = torch.device(device)
    ops = ops or device_ops(device)
    path = _load(model, backend, presets, cache, verify, threads, device, max_batch, ops, **backend_options)
    path.weights_sha256 = weights_sha256(model)  # what style packs were trained on must match
    return path


def torch_cuda_path(model: ThreeDPE, device: torch.device, presets: tuple[str, ...] = (), ops: DeviceOps | None = None,
                    **options):
    """The ``torch-cuda`` path (:mod:`.contrib.torch_cuda`, imported by name: the core never imports contrib)."""
    from importlib import import_module

    module = import_module("streamfx.runtime.contrib.torch_cuda")
    return module.TorchCudaAccelerated(model, device, tuple(presets), ops=ops, **options)


def _load(model: ThreeDPE, backend: str, presets, cache, verify, threads, device, max_batch, ops, **backend_options):
    if ops.accelerator and device.type != "cuda":  # the GPU's road on another device (CI)
        if backend not in ("auto", "torch-cuda"):
            raise BackendUnavailable(f"the GPU road off CUDA runs torch-cuda only, got backend {backend}")
        backend = "torch-cuda"
    else:
        backend = resolve_backend(backend, device)
    if backend == "torch-cuda":
        return torch_cuda_path(model, device, tuple(presets), ops, **backend_options)
    if threads is not None and backend in ("openvino", "hybrid"):
        backend_options.setdefault("threads", threads)
    if backend in TORCH_BACKENDS:
        return TorchAccelerated(model, backend)
    from .graph_paths import GraphAccelerated, HybridAccelerated

    if backend in GRAPH_BACKENDS:
        return GraphAccelerated(model, backend, tuple(presets), cache, verify, max_batch=max_batch, ops=ops,
                                **backend_options)
    if backend == "hybrid":
        return HybridAccelerated(model, tuple(presets), cache, verify, **backend_options)
    raise BackendUnavailable(f"unknown backend {backend!r}; choose one of {', '.join(BACKEND_CHOICES)}")


def __getattr__(name: str):
    """``GraphAccelerated`` and ``HybridAccelerated`` live in :mod:`.graph_paths`."""
    if name in ("GraphAccelerated", "HybridAccelerated"):
        from . import graph_paths

        return getattr(graph_paths, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
