"""Export, build, verify and cache the 3DPE graphs for one backend.

Two kinds of entries go into the engine cache (``engines/manifest.json``):

* the **ONNX export** of a graph, keyed by the graph name, a digest of the weights it holds,
  backend ``"onnx"`` and :data:`EXPORT_VERSION` (bumped when the export code changes);
* the **backend artefact** built from it (the ONNX file itself for ONNX Runtime and OpenVINO,
  a ``.plan`` for TensorRT), keyed by the graph, the ONNX file's sha256, the backend and its
  fingerprint (runtime version and precision; for TensorRT the GPU name, compute capability,
  TensorRT version and the precision setup: ``fp32``, or ``fp16`` with a digest of the rules
  pinning layers to FP32).

Verification runs the built graph and the PyTorch float32 module on the same inputs and
compares them (:func:`~.export.compare_outputs`).
"""

from __future__ import annotations

import hashlib
import platform
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from .. import log
from ..models.threedpe import ThreeDPE
from .base import Backend, GraphSpec, Runner, get_backend
from .engine_cache import CacheKey, EngineCache, file_sha256
from .export import compare_outputs, export_onnx
from .graphs import RENDERER_PREFIX, example_inputs, graph_module, graph_spec
from .onnx_ops import check_tensorrt_support

logger = log.get(__name__)

EXPORT_VERSION = "2"  # 2: the encoder graph is the coordinate-folded encoder
#: largest |got - expected| / max|expected| accepted by verification, per backend precision
TOLERANCE = {"fp32": 2e-3, "reduced": 0.1}

Progress = Callable[[str], None]


class VerificationError(RuntimeError):
    """A built graph's outputs differ from PyTorch beyond the tolerance (one line)."""


@dataclass
class BuildResult:
    graph: str
    backend: str
    artefact: Path
    onnx: Path
    reused: bool
    seconds: float
    problems: tuple[str, ...] = ()
    errors: dict[str, float] = field(default_factory=dict)  # relative max error per output


def weights_digest(module: torch.nn.Module) -> str:
    """A digest of a module's state (names, shapes, dtypes, values): 16 hex digits."""
    digest = hashlib.blake2b(digest_size=8)
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tuple(t.shape)}|{t.dtype}".encode())
        if t.dtype == torch.bfloat16 or t.dtype == torch.float16:
            t = t.view(torch.int16)
        digest.update(memoryview(t.numpy()).cast("B"))
    return digest.hexdigest()


def backend_fingerprint(name: str, backend: Backend) -> str:
    """What a built artefact is valid for (a different value rebuilds), read from the backend
    instance that builds it (its device and precision)."""
    if name == "tensorrt":
        from .contrib.trt_backend import fingerprint
        from .contrib.trt_precision import precision_setup

        return f"{fingerprint(backend.device)}|{precision_setup(backend.fp16)}"
    if name == "onnxruntime":
        import onnxruntime

        return f"onnxruntime{onnxruntime.__version__}|cpu"
    if name == "openvino":
        import openvino

        return f"openvino{openvino.__version__}|{getattr(backend, 'precision', '')}|{platform.machine()}"
    return name


def _graph_weights(model: ThreeDPE, graph: str) -> torch.nn.Module:
    if graph == "reference":
        return model.vit
    if graph == "encoder":
        return model.encoder
    return model.renderer


class GraphBuilder:
    """Builds and loads the graphs of one model for one backend, through the engine cache.

    Args:
        model: a float32 :class:`ThreeDPE` (its weights go into the graphs).
        backend: ``onnxruntime``, ``openvino`` or ``tensorrt``.
        cache: the engine cache (``engines/`` by default).
        progress: called with one-line status messages (e.g. ``print``); quiet by default.
        max_batch: 1 for static graphs; more exports a dynamic batch dimension and builds
            for 1..max_batch rows (a separate export and artefact in the cache).
        backend_options: passed to the backend (e.g. ``precision="f32"`` for OpenVINO).
    """

    def __init__(self, model: ThreeDPE, backend: str, cache: EngineCache | None = None,
                 progress: Progress | None = None, max_batch: int = 1, **backend_options) -> None:
        if model.dtype != torch.float32:
            raise ValueError(f"graphs are exported from a float32 model, got {model.dtype}")
        self.model = model
        self.backend_name = backend
        self.backend = get_backend(backend, **backend_options)
        self.cache = cache or EngineCache()
        self.progress = progress or (lambda message: logger.info(message))
        self.max_batch = max_batch
        self.fingerprint = backend_fingerprint(backend, self.backend) + (f"|batch{max_batch}" if max_batch > 1 else "")
        self._digests: dict[str, str] = {}
        self._lock = threading.Lock()

    @property
    def reduced_precision(self) -> bool:
        return self.backend_name == "tensorrt" or getattr(self.backend, "precision", "f32") not in ("f32", "fp32")

    def _digest(self, graph: str) -> str:
        part = "renderer" if graph.startswith(RENDERER_PREFIX) else graph
        if part not in self._digests:
            self._digests[part] = weights_digest(_graph_weights(self.model, graph))
        return self._digests[part]

    def onnx_for(self, graph: str) -> tuple[Path, str, bool]:
        """(path, sha256, reused) of the graph's ONNX export, exporting it if not cached."""
        variant = f"export{EXPORT_VERSION}" + ("-dynamic-batch" if self.max_batch > 1 else "")
        key = CacheKey(graph, self._digest(graph), "onnx", variant)
        entry = self.cache.entry(key)
        if entry is not None:
            return self.cache.root / entry["file"], entry["sha256"], True
        self.progress(f"{graph}: exporting ONNX")
        path = export_onnx(graph_module(self.model, graph), self.spec(graph), self.cache.path_for(key, ".onnx"),
                           dynamic_batch=self.max_batch > 1)
        sha = file_sha256(path)
        self.cache.record(key, path, sha256=sha)
        return path, sha, False

    def spec(self, graph: str) -> GraphSpec:
        return graph_spec(graph, self.max_batch)

    def build(self, graph: str, check: bool = False) -> BuildResult:
        """Export (if needed), build (if needed) and optionally verify one graph."""
        with self._lock:
            start = time.perf_counter()
            spec = self.spec(graph)
            onnx_path, sha, _ = self.onnx_for(graph)
            key = CacheKey(graph, sha, self.backend_name, self.fingerprint)
            artefact = self.cache.lookup(key)
            reused = artefact is not None
            problems: tuple[str, ...] = ()
            if not reused:
                problems = check_tensorrt_support(onnx_path).problems
                self.progress(f"{graph}: building for {self.backend_name}")
                artefact = self.backend.build(onnx_path, spec, self.cache.root)
                self.cache.record(key, artefact, onnx=onnx_path.name, tensorrt_problems=list(problems))
            result = BuildResult(graph, self.backend_name, artefact, onnx_path, reused,
                                 time.perf_counter() - start, problems)
        if check:
            result.errors = self.check(graph, self.load(graph, result))
        return result

    def load(self, graph: str, result: BuildResult | None = None) -> Runner:
        """A runner for ``graph``, building it first if needed."""
        result = result or self.build(graph)
        return self.backend.load(result.artefact, self.spec(graph))

    def check(self, graph: str, runner: Runner) -> dict[str, float]:
        """Verify ``runner`` against PyTorch; raises :class:`VerificationError` beyond tolerance."""
        self.progress(f"{graph}: verifying against PyTorch")
        errors = compare_outputs(runner, graph_module(self.model, graph), example_inputs(graph))
        limit = TOLERANCE["reduced" if self.reduced_precision else "fp32"]
        worst = max(errors, key=errors.get)
        if errors[worst] > limit:
            raise VerificationError(f"{graph} on {self.backend_name}: {worst} differs from PyTorch by "
                                    f"{errors[worst]:.2e} (relative), above {limit:.0e}")
        return errors


def describe(spec: GraphSpec) -> str:
    ins = ", ".join(f"{t.name}{tuple(t.shape)}" for t in spec.inputs)
    outs = ", ".join(f"{t.name}{tuple(t.shape)}" for t in spec.outputs)
    return f"{spec.name}: {ins} -> {outs}"
