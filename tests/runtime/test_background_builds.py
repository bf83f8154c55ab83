"""Graph builds never stall calls into other graphs, build once per graph, and can run in the
background (``GraphAccelerated.prepare``), with failures remembered and retried.

The graphs run on a tiny backend registered for these tests: its builds wait for the test to
release them (or fail on request) and its runners return zeros of the graph's output shapes.
Everything above the backend is the real code: :class:`GraphAccelerated`, the
:class:`~streamfx.runtime.builder.GraphBuilder` and the engine cache. The cache is seeded with
a stand-in ONNX file under each graph's export key, so that the builder skips the real
exports of the 171 M-parameter graphs (tens of seconds each); the backend never reads them.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest
import torch

from streamfx.models import random_weights, threedpe
from streamfx.runtime.graph_paths import GraphAccelerated
from streamfx.runtime.base import BACKENDS, Backend, GraphSpec, Runner
from streamfx.runtime.builder import EXPORT_VERSION, weights_digest
from streamfx.runtime.engine_cache import CacheKey, EngineCache, file_sha256
from streamfx.runtime.graphs import RENDERER_PREFIX

BACKEND = "test-gated"
WAIT_S = 30.0  # a generous bound on anything that should take milliseconds


class Gate:
    """What the test backend's builds do, per graph: wait for an event, or fail."""

    def __init__(self) -> None:
        self.held: dict[str, threading.Event] = {}
        self.started: dict[str, threading.Event] = {}
        self.failing: set[str] = set()
        self.builds: list[str] = []
        self._lock = threading.Lock()

    def hold(self, graph: str) -> threading.Event:
        """Builds of ``graph`` wait until the returned event is set."""
        self.started[graph] = threading.Event()
        self.held[graph] = threading.Event()
        return self.held[graph]

    def on_build(self, graph: str) -> None:
        with self._lock:
            self.builds.append(graph)
        if graph in self.started:
            self.started[graph].set()
        if graph in self.held:
            assert self.held[graph].wait(WAIT_S), f"{graph}: the test never released its build"
        if graph in self.failing:
            raise RuntimeError(f"{graph}: the build failed on purpose")


class _ZerosRunner(Runner):
    def __init__(self, spec: GraphSpec) -> None:
        self.spec = spec

    def __call__(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        return {t.name: torch.zeros(t.shape, dtype=t.dtype) for t in self.spec.outputs}


class GatedBackend(Backend):
    name = BACKEND

    def __init__(self, gate: Gate) -> None:
        self.gate = gate

    def build(self, onnx_path: Path, spec: GraphSpec, out_dir: Path) -> Path:
        self.gate.on_build(spec.name)
        return onnx_path

    def load(self, artefact: Path, spec: GraphSpec) -> Runner:
        return _ZerosRunner(spec)


def _stand_in_onnx(path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    value = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "stand-in", [value], [out])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


@pytest.fixture(scope="module")
def model():
    return threedpe.from_state(random_weights.random_state_dicts(seed=3))


@pytest.fixture(scope="module")
def digests(model) -> dict[str, str]:
    """The weights digests that key the graphs' exports in the engine cache."""
    return {"reference": weights_digest(model.vit), "encoder": weights_digest(model.encoder),
            "renderer": weights_digest(model.renderer)}


@pytest.fixture
def cache(digests, tmp_path) -> EngineCache:
    """A fresh engine cache whose exports are stand-ins (see the module docstring)."""
    cache = EngineCache(tmp_path / "engines")
    for graph in ("reference", "encoder", *(RENDERER_PREFIX + p for p in ("full", "balanced", "fast", "fastest"))):
        digest = digests["renderer" if graph.startswith(RENDERER_PREFIX) else graph]
        key = CacheKey(graph, digest, "onnx", f"export{EXPORT_VERSION}")
        path = cache.path_for(key, ".onnx")
        _stand_in_onnx(path)
        cache.record(key, path, sha256=file_sha256(path))
    return cache


@pytest.fixture
def gate(monkeypatch):
    monkeypatch.setitem(BACKENDS, BACKEND, f"{__name__}:GatedBackend")
    return Gate()


def _accelerated(model, cache, gate) -> GraphAccelerated:
    """reference, encoder and renderer-fastest built up front; the other renderers not."""
    return GraphAccelerated(model, BACKEND, ("fastest",), cache, verify=False, gate=gate)


def _render_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.zeros(1, 96, 256, 256), torch.zeros(1, 25)


def _wait_for(predicate, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_a_held_build_stalls_no_other_graph_and_same_graph_builds_once(model, cache, gate):
    acc = _accelerated(model, cache, gate)
    assert acc.ready("reference") and acc.ready("fastest") and acc.ready("renderer-fastest")
    assert not acc.ready("fast") and acc.ready_presets(["full", "fast", "fastest"]) == ["fastest"]
    release = gate.hold("renderer-fast")
    planes, camera = _render_inputs()
    results: dict[str, object] = {}

    def first_use(name: str) -> None:
        results[name] = acc.render(planes, camera, "fast")

    callers = [threading.Thread(target=first_use, args=(f"caller{i}",), daemon=True) for i in range(2)]
    for t in callers:
        t.start()
    assert gate.started["renderer-fast"].wait(WAIT_S)

    # While renderer-fast builds, ready graphs serve calls from other threads.
    served: list[str] = []

    def ready_calls() -> None:
        acc.reference_tokens(torch.zeros(1, 3, 224, 224))
        acc.render(planes, camera, "fastest")
        served.append("done")

    other = threading.Thread(target=ready_calls, daemon=True)
    other.start()
    other.join(WAIT_S)
    assert served == ["done"], "a call into a ready graph waited for another graph's build"
    assert not acc.ready("fast") and all(t.is_alive() for t in callers)
    start = time.perf_counter()
    acc.prepare("fast")  # a build of this graph is under way: nothing more to start
    assert time.perf_counter() - start < 0.5

    release.set()
    for t in callers:
        t.join(WAIT_S)
    assert acc.ready("fast") and set(results) == {"caller0", "caller1"}
    assert results["caller0"]["image"].shape == (1, 3, 256, 256)
    assert gate.builds.count("renderer-fast") == 1, "two first uses of one graph must build it once"


def test_prepare_returns_at_once_and_builds_in_the_background(model, cache, gate):
    acc = _accelerated(model, cache, gate)
    release = gate.hold("renderer-balanced")
    start = time.perf_counter()
    acc.prepare("balanced")
    acc.prepare("balanced")  # at most one background build per graph
    assert time.perf_counter() - start < 0.5, "prepare must not wait for the build"
    assert gate.started["renderer-balanced"].wait(WAIT_S)
    assert acc.building("balanced") and not acc.ready("balanced")
    release.set()
    _wait_for(lambda: acc.ready("balanced"), "the background build")
    _wait_for(lambda: not acc.building("balanced"), "the build thread to finish")
    assert gate.builds.count("renderer-balanced") == 1 and acc.build_error("balanced") is None
    planes, camera = _render_inputs()
    assert acc.render(planes, camera, "balanced")["image"].shape == (1, 3, 512, 512)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_a_failed_background_build_is_logged_and_retried_later(model, cache, gate):
    acc = _accelerated(model, cache, gate)
    acc.retry_after_s = 0.5
    gate.failing.add("renderer-fast")
    records = _Records()
    log = logging.getLogger("streamfx.runtime.graph_paths")
    log.addHandler(records)
    try:
        acc.prepare("fast")
        _wait_for(lambda: acc.build_error("fast") is not None and not acc.building("fast"), "the failure")
    finally:
        log.removeHandler(records)
    assert not acc.ready("fast") and "failed on purpose" in acc.build_error("fast")
    assert [r.graph for r in records.records] == ["renderer-fast"]
    assert "failed" in records.records[0].getMessage()

    acc.prepare("fast")  # too soon after the failure: no new build
    assert not acc.building("fast") and gate.builds.count("renderer-fast") == 1
    gate.failing.clear()
    time.sleep(acc.retry_after_s)
    acc.prepare("fast")
    _wait_for(lambda: acc.ready("fast"), "the retried build")
    assert gate.builds.count("renderer-fast") == 2 and acc.build_error("fast") is None
