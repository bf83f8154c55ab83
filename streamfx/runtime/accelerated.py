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
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, NamedTuple

import numpy as np
import torch

from .. import log
from ..models.renderer.presets import RenderPreset, get_preset
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
)
from .base import BackendUnavailable, Runner
from .engine_cache import EngineCache
from .graphs import RENDERER_PREFIX
from .names import BACKEND_CHOICES, GRAPH_BACKENDS, TORCH_BACKENDS
from .probe import STAGES, PrecisionPlan, probe
from .selection import ALL_BF16, ALL_FP32, plan_for, resolve_backend

logger = log.get(__name__)


class _Accelerated:
    """Shared input checks, prompt-token cache and ``prompt_tokens`` of every backend, and the
    readiness of paths that build nothing (``ready_presets``, ``prepare``)."""

    backend: str
    plan: PrecisionPlan = ALL_FP32
    #: ``encode(x, tokens, adapters=[...])`` applies row i's low-rank adapter to row i
    per_sample_adapters = False

    def __init__(self) -> None:
        self.token_cache = ReferenceTokenCache()
        # Adapter hooks sit on the shared encoder while a call runs: encoder calls take turns.
        self._encoder_lock = threading.Lock()

    def describe(self) -> dict:
        """Backend and precision per stage, for ``/api/info``, stats and ``doctor``."""
        return {"backend": self.backend, "precision": self.plan.summary,
                "stages": {s: getattr(self.plan, s) for s in STAGES}}

    def prompt_tokens(self, key: str, reference_rgb: np.ndarray) -> torch.Tensor:
        """Tokens (1, 197, 768) of a reference image, computed once per prompt ``key``."""
        return self.token_cache.get_or_compute(key, lambda: self.reference_tokens(prepare_reference(reference_rgb)))

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
                 plan: PrecisionPlan | None = None) -> None:
        super().__init__()
        self.backend = backend
        self.model = model
        self.plan = plan or plan_for(backend)
        if backend == "torch-fp32":
            if model.dtype != torch.float32:
                raise ValueError(f"torch-fp32 needs a float32 model, got {model.dtype}")
            self.vit, self.encoder, self.renderer = model.vit, model.encoder, model.renderer
            return
        from ..models.renderer.fast import FastRenderer

        self.vit = self.encoder = None
        if not render_only:
            from ..models.encoder.fast import FastEncoder

            self.vit = copy.deepcopy(model.vit).to(self.plan.dtype("vit"))
            self.encoder = FastEncoder(model.encoder, self.plan.dtype("encoder"))
        self.renderer = FastRenderer(model.renderer.float(), sr_dtype=self.plan.dtype("superres"),
                                     decoder_dtype=self.plan.dtype("decoder"))

    @torch.inference_mode()
    def reference_tokens(self, ref224: torch.Tensor) -> torch.Tensor:
        """ref224 (B, 3, 224, 224) ImageNet-normalised -> tokens (B, 197, 768) float32."""
        check_tensor(ref224, (3, REF_SIZE, REF_SIZE), "reference")
        dtype = self.vit.pos_embed.dtype
        return self.vit(ref224.to(dtype)).float()

    per_sample_adapters = True

    @torch.inference_mode()
    def encode(self, x: torch.Tensor, tokens: torch.Tensor, adapters=None) -> torch.Tensor:
        """x (B, 3, 512, 512) in [-1, 1], tokens (B or 1, 197, 768) -> planes (B, 96, 256, 256) float32.

        ``adapters``: one low-rank adapter (or None) per row, applied to that row only."""
        self._check_encode(x, tokens)
        if self.backend == "torch-fp32":
            return self._with_adapters(self.model.encoder, adapters, lambda: self.model.encode(x, tokens))
        return self._with_adapters(self.encoder, adapters, lambda: self.encoder(x, tokens.expand(x.shape[0], -1, -1)))

    @torch.inference_mode()
    def render(self, planes: torch.Tensor, camera: torch.Tensor, preset: Any = "full") -> dict[str, torch.Tensor]:
        """planes (B, 96, 256, 256), camera (B, 25) -> ``image``, ``image_raw``, ``image_depth``."""
        if self.backend == "torch-fp32":
            return self.model.render(planes, camera, preset)
        check_tensor(planes, PLANES_SHAPE, "planes")
        return self.renderer(planes, camera.float(), preset)


class _Graph(NamedTuple):
    """A built graph: its runner and the lock that lets one call at a time into it."""

    runner: Runner
    run_lock: threading.Lock


@dataclass
class _BuildState:
    """Build bookkeeping of one graph.

    ``lock`` is this graph's build lock: held for the whole of a build of this graph and for
    nothing else. The other fields are read and written under ``GraphAccelerated._state``.
    """

    lock: threading.Lock = field(default_factory=threading.Lock)
    background: bool = False        # a prepare() thread is on its way or running
    error: str | None = None        # why the last build failed (one line); None after a success
    failed_at: float = -math.inf    # time.monotonic() of that failure


class GraphAccelerated(_Accelerated):
    """Exported graphs on ONNX Runtime, OpenVINO or TensorRT: static batch 1, or with
    ``max_batch`` > 1 a dynamic batch of 1..max_batch rows (what the frame batcher sends).

    ``reference``, ``encoder`` and the renderer graphs of ``presets`` are built in the
    constructor. Any other renderer graph is built on first use, in the caller's thread, or
    ahead of use by :meth:`prepare`, in a background thread.

    Locks and threads:

    * ``_runners`` maps a graph to its built runner. An entry is stored once, by whichever
      thread built the graph, and never replaced or removed; callers read it with a single
      ``dict.get`` and no lock (one dict operation is atomic in CPython, with or without the
      GIL), so a call into a ready graph never waits for a build.
    * Each graph has a build lock (in ``_builds``), held across that graph's export, backend
      build, load and verification. Concurrent first uses of one graph queue on it; the first
      builds and the others find the runner when they get the lock: one build per graph.
      (The :class:`~.builder.GraphBuilder` serialises the export and backend-build steps of
      different graphs with a lock of its own; it loads and verifies outside it.)
    * ``_state`` guards the build bookkeeping only (which graph has a background build, the
      last failure). It is never held while building or running a graph.
    * Each built graph has a run lock: one call at a time per graph, whatever the backend.
      An OpenVINO runner owns one infer request and a TensorRT runner one execution context
      with preallocated output buffers; neither is re-entrant. ONNX Runtime sessions accept
      concurrent ``run`` calls, but they share the session's intra-op thread pool, so on a
      CPU taking turns costs no throughput and keeps each call's latency predictable. One
      rule for all runners keeps the class correct for any backend added later.
    """

    #: seconds after a failed background build before :meth:`prepare` starts another
    RETRY_AFTER_S = 30.0

    def __init__(self, model: ThreeDPE, backend: str, presets: tuple[str, ...], cache: EngineCache | None,
                 verify: bool, max_batch: int = 1, **backend_options) -> None:
        from .builder import GraphBuilder

        super().__init__()
        self.backend = backend
        self.verify = verify
        self.max_batch = max_batch
        self.retry_after_s = self.RETRY_AFTER_S
        if backend == "openvino" and "precision" not in backend_options:
            backend_options["precision"] = probe().plan.openvino_hint
        if backend == "openvino":
            self.plan = ALL_BF16 if backend_options["precision"] == "bf16" else ALL_FP32
        self.builder = GraphBuilder(model, backend, cache, max_batch=max_batch, **backend_options)
        self._runners: dict[str, _Graph] = {}
        self._builds: dict[str, _BuildState] = {}
        self._state = threading.Lock()
        for graph in ("reference", "encoder", *(RENDERER_PREFIX + p for p in presets)):
            self._built(graph)

    # -- readiness and background builds ---------------------------------------------------
    @staticmethod
    def graph_name(graph_or_preset: Any) -> str:
        """``reference``, ``encoder`` or ``renderer-<preset>`` for a graph name, a preset name
        or a named :class:`RenderPreset` (other presets have no exported graph)."""
        if isinstance(graph_or_preset, str) and graph_or_preset in ("reference", "encoder"):
            return graph_or_preset
        if isinstance(graph_or_preset, str) and graph_or_preset.startswith(RENDERER_PREFIX):
            return RENDERER_PREFIX + get_preset(graph_or_preset[len(RENDERER_PREFIX):]).name
        p = get_preset(graph_or_preset)
        if isinstance(graph_or_preset, RenderPreset) and get_preset(p.name) != p:
            raise ModelInputError(f"preset {p.name!r} is not a named preset; exported graphs exist only for those")
        return RENDERER_PREFIX + p.name

    def ready(self, graph_or_preset: Any) -> bool:
        """Whether the graph is built, so that a call into it waits for no build. Lock-free."""
        return self.graph_name(graph_or_preset) in self._runners

    def ready_presets(self, presets: Iterable[Any]) -> list[str]:
        """The names of those ``presets`` whose renderer graph is built, in the order given."""
        return [get_preset(p).name for p in presets if self.ready(p)]

    def building(self, graph_or_preset: Any) -> bool:
        """Whether a :meth:`prepare` build of the graph is under way (a lock-free snapshot)."""
        state = self._builds.get(self.graph_name(graph_or_preset))
        return state is not None and state.background

    def build_error(self, graph_or_preset: Any) -> str | None:
        """Why the graph's last build failed (one line), or None."""
        state = self._builds.get(self.graph_name(graph_or_preset))
        return None if state is None else state.error

    def prepare(self, graph_or_preset: Any) -> None:
        """Start building the graph in a background daemon thread and return at once.

        Nothing happens when the graph is ready, when a background build of it is under way,
        or within :attr:`retry_after_s` of its last failed build, so a caller may call this on
        every frame. A failure is logged and remembered (:meth:`build_error`); :meth:`ready`
        stays False. A call that needs the graph meanwhile waits for this build rather than
        starting another.
        """
        graph = self.graph_name(graph_or_preset)
        if graph in self._runners:
            return
        with self._state:
            state = self._state_of(graph)
            if state.background or time.monotonic() - state.failed_at < self.retry_after_s:
                return
            state.background = True
        thread = threading.Thread(target=self._build_in_background, args=(graph, state),
                                  name=f"streamfx-build-{graph}", daemon=True)
        try:
            thread.start()
        except RuntimeError:  # no thread could be started (interpreter shutting down, limits)
            with self._state:
                state.background = False
            raise

    def _build_in_background(self, graph: str, state: _BuildState) -> None:
        logger.info("building a graph in the background", extra={"graph": graph, "backend": self.backend})
        start = time.perf_counter()
        try:
            self._build(graph, state)
        except Exception as exc:  # noqa: BLE001 - remembered and logged; calls keep to ready graphs
            reason = (str(exc).splitlines() or [type(exc).__name__])[0]
            with self._state:
                state.error, state.failed_at = reason, time.monotonic()
            logger.warning("background graph build failed", exc_info=True,
                           extra={"graph": graph, "backend": self.backend, "retry_after_s": self.retry_after_s})
        else:
            logger.info("graph ready", extra={"graph": graph, "backend": self.backend,
                                              "seconds": round(time.perf_counter() - start, 1)})
        finally:
            with self._state:
                state.background = False

    # -- building ----------------------------------------------------------------------------
    def _state_of(self, graph: str) -> _BuildState:
        """The graph's build bookkeeping, created on first use; call with ``_state`` held."""
        state = self._builds.get(graph)
        if state is None:
            state = self._builds[graph] = _BuildState()
        return state

    def _built(self, graph: str) -> _Graph:
        """The built graph, building it in this thread first if needed (waiting for a build of
        the same graph already under way instead of starting a second one)."""
        built = self._runners.get(graph)
        if built is not None:
            return built
        with self._state:
            state = self._state_of(graph)
        return self._build(graph, state)

    def _build(self, graph: str, state: _BuildState) -> _Graph:
        with state.lock:
            built = self._runners.get(graph)
            if built is not None:  # built by the thread this one waited for
                return built
            result = self.builder.build(graph)
            runner = self.builder.load(graph, result)
            if self.verify:
                self.builder.check(graph, runner)
            built = self._runners[graph] = _Graph(runner, threading.Lock())
        with self._state:
            state.error, state.failed_at = None, -math.inf
        return built

    # -- calls -------------------------------------------------------------------------------
    def _run(self, graph: str, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        runner, run_lock = self._built(graph)
        with run_lock:  # one call per graph at a time (see the class docstring)
            return runner(**inputs)

    def _single(self, t: torch.Tensor, what: str) -> None:
        if t.shape[0] > self.max_batch:
            raise ModelInputError(f"{what}: these graphs take a batch of at most {self.max_batch}, got {t.shape[0]}")

    def reference_tokens(self, ref224: torch.Tensor) -> torch.Tensor:
        check_tensor(ref224, (3, REF_SIZE, REF_SIZE), "reference")
        self._single(ref224, "reference")
        return self._run("reference", ref224=ref224.float())["tokens"]

    def encode(self, x: torch.Tensor, tokens: torch.Tensor, adapters=None) -> torch.Tensor:
        self._check_encode(x, tokens)
        if adapters and any(a is not None for a in adapters):
            raise ModelInputError(f"style adapters run on the torch backends, not on {self.backend} graphs")
        self._single(x, "input")
        tokens = tokens.expand(x.shape[0], -1, -1) if tokens.shape[0] == 1 else tokens
        return self._run("encoder", x=x.float(), tokens=tokens.float())["planes"]

    def render(self, planes: torch.Tensor, camera: torch.Tensor, preset: Any = "full") -> dict[str, torch.Tensor]:
        check_tensor(planes, PLANES_SHAPE, "planes")
        self._single(planes, "planes")
        return self._run(self.graph_name(preset), planes=planes.float(), camera=camera.float())


class HybridAccelerated(_Accelerated):
    """OpenVINO graphs for ``reference_tokens``, ``encode`` and the presets with full
    super-resolution (OpenVINO runs the big convolutions faster); the torch-bf16 fast renderer
    for the other presets (its tri-plane lookup and decoder are faster)."""

    def __init__(self, model: ThreeDPE, presets: tuple[str, ...], cache: EngineCache | None, verify: bool,
                 **backend_options) -> None:
        super().__init__()
        self.backend = "hybrid"
        graph_presets = tuple(p for p in presets if self._on_graphs(p))
        plan = probe().plan
        backend_options.setdefault("precision", plan.openvino_hint)
        graph_precision = "bf16" if backend_options["precision"] == "bf16" else "fp32"
        self.plan = PrecisionPlan(vit=graph_precision, encoder=graph_precision, decoder=plan.decoder,
                                  superres=plan.superres, reason=plan.reason)
        self.graphs = GraphAccelerated(model, "openvino", graph_presets, cache, verify, **backend_options)
        self.torch = TorchAccelerated(model, "torch", render_only=True, plan=plan)
        self.renderer = self.torch.renderer

    @staticmethod
    def _on_graphs(preset: Any) -> bool:
        p = get_preset(preset)
        return p.superres == "full" and not (isinstance(preset, RenderPreset) and get_preset(p.name) != p)

    def ready_presets(self, presets: Iterable[Any]) -> list[str]:
        """Presets on the torch renderer are always ready; those on graphs once built (at batch 1,
        the only batch that renders on graphs)."""
        return [get_preset(p).name for p in presets if not self._on_graphs(p) or self.graphs.ready(p)]

    def prepare(self, preset: Any) -> None:
        """Start building the renderer graph of a preset with full super-resolution (see
        :meth:`GraphAccelerated.prepare`); the other presets need nothing."""
        if self._on_graphs(preset):
            self.graphs.prepare(preset)

    def reference_tokens(self, ref224: torch.Tensor) -> torch.Tensor:
        return self.graphs.reference_tokens(ref224)

    def encode(self, x: torch.Tensor, tokens: torch.Tensor, adapters=None) -> torch.Tensor:
        return self.graphs.encode(x, tokens, adapters)

    def render(self, planes: torch.Tensor, camera: torch.Tensor, preset: Any = "full") -> dict[str, torch.Tensor]:
        if self._on_graphs(preset) and planes.shape[0] == 1:
            return self.graphs.render(planes, camera, preset)
        return self.torch.render(planes, camera, preset)


def load_accelerated(model: ThreeDPE, backend: str = "auto", presets: tuple[str, ...] | list[str] = (),
                     *, cache: EngineCache | None = None, verify: bool = False, threads: int | None = None,
                     device: torch.device | str = "cpu", max_batch: int = 1, **backend_options):
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
        backend_options: passed to the runtime backend (e.g. ``precision="f32"`` for OpenVINO).

    Raises:
        BackendUnavailable: unknown backend, or its package/hardware is missing (one line).
    """
    for p in presets:
        get_preset(p)
    backend = resolve_backend(backend, device)
    if backend == "torch-cuda":
        from importlib import import_module

        module = import_module("streamfx.runtime.contrib.torch_cuda")  # by name: the core never imports contrib
        return module.TorchCudaAccelerated(model, device, tuple(presets), **backend_options)
    if threads is not None and backend in ("openvino", "hybrid"):
        backend_options.setdefault("threads", threads)
    if backend in TORCH_BACKENDS:
        return TorchAccelerated(model, backend)
    if backend in GRAPH_BACKENDS:
        return GraphAccelerated(model, backend, tuple(presets), cache, verify, max_batch=max_batch, **backend_options)
    if backend == "hybrid":
        return HybridAccelerated(model, tuple(presets), cache, verify, **backend_options)
    raise BackendUnavailable(f"unknown backend {backend!r}; choose one of {', '.join(BACKEND_CHOICES)}")
