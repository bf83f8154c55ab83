"""Exported-graph execution paths: ``GraphAccelerated`` (ONNX Runtime, OpenVINO, TensorRT)
and ``HybridAccelerated`` (OpenVINO graphs for the heavy parts, the torch fast renderer for
the light presets). :func:`~.accelerated.load_accelerated` chooses between these and the
torch paths; the module docstring there says which runs where.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, NamedTuple

import torch

from .. import log
from ..models.renderer.presets import RenderPreset, get_preset
from ..models.threedpe import PLANES_SHAPE, REF_SIZE, ModelInputError, ThreeDPE, check_tensor
from .accelerated import TorchAccelerated, _Accelerated, torch_cuda_path
from .base import Runner
from .device_ops import DeviceOps, device_ops
from .engine_cache import EngineCache
from .graphs import RENDERER_PREFIX
from .probe import PrecisionPlan, probe
from .selection import ALL_BF16, ALL_FP32

logger = log.get(__name__)


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
                 verify: bool, max_batch: int = 1, ops: DeviceOps | None = None, **backend_options) -> None:
        from .builder import GraphBuilder

        super().__init__()
        self.backend = backend
        self.ops = ops or device_ops("cpu")
        self.device = self.ops.device
        if backend == "tensorrt":
            backend_options.setdefault("device", self.device)  # engines and their runners live on this GPU
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
        self._adapted: _Accelerated | None = None  # style adapters: see encode()
        self._adapted_lock = threading.Lock()
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
            with self.ops.bound():  # a new thread starts on CUDA device 0
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

    per_sample_adapters = True

    def _adapted_encoder(self) -> _Accelerated:
        """The torch encoder for encodes with style adapters (built on first use, shared by all
        styles): the exported graphs stay those of the base weights, so a style pack never
        exports or builds anything. It runs where the graphs run (:func:`adapted_encoder`)."""
        with self._adapted_lock:
            if self._adapted is None:
                logger.info("building the torch encoder for style adapters", extra={"backend": self.backend})
                self._adapted = adapted_encoder(self.builder.model, self.ops)
        return self._adapted

    def prepare_adapter(self, adapter: Any) -> Any:
        return self._adapted_encoder().prepare_adapter(adapter)

    def encode(self, x: torch.Tensor, tokens: torch.Tensor, adapters=None) -> torch.Tensor:
        """Planes of a batch on the encoder graph; a batch with a style adapter on any row runs
        on the torch fast encoder instead, row i with ``adapters[i]``."""
        self._check_encode(x, tokens)
        if adapters and any(a is not None for a in adapters):
            return self._adapted_encoder().encode(x, tokens, adapters)
        self._single(x, "input")
        tokens = tokens.expand(x.shape[0], -1, -1) if tokens.shape[0] == 1 else tokens
        return self._run("encoder", x=x.float(), tokens=tokens.float())["planes"]

    def render(self, planes: torch.Tensor, camera: torch.Tensor, preset: Any = "full") -> dict[str, torch.Tensor]:
        check_tensor(planes, PLANES_SHAPE, "planes")
        self._single(planes, "planes")
        return self._run(self.graph_name(preset), planes=planes.float(), camera=camera.float())


def adapted_encoder(model: ThreeDPE, ops: DeviceOps) -> _Accelerated:
    """A torch encoder of ``model`` on ``ops.device`` for encodes with style adapters: on the
    GPU road the ``torch-cuda`` encoder in the GPU's half precision (the graphs get device
    tensors), on the CPU the ``torch`` fast encoder in the probe's precision."""
    if ops.accelerator:
        return torch_cuda_path(model, ops.device, ops=ops, encoder_only=True)
    return TorchAccelerated(model, "torch", encoder_only=True)


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

    per_sample_adapters = True

    def encode(self, x: torch.Tensor, tokens: torch.Tensor, adapters=None) -> torch.Tensor:
        return self.graphs.encode(x, tokens, adapters)

    def render(self, planes: torch.Tensor, camera: torch.Tensor, preset: Any = "full") -> dict[str, torch.Tensor]:
        if self._on_graphs(preset) and planes.shape[0] == 1:
            return self.graphs.render(planes, camera, preset)
        return self.torch.render(planes, camera, preset)
