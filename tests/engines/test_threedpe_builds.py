"""A live 3DPE session never waits for a renderer graph to build; an offline one does.

The model runs on ``hybrid`` (OpenVINO graphs for the presets with full super-resolution)
when OpenVINO is installed, else on ``onnxruntime`` graphs. Only the graphs the test needs
are built up front, into a temporary engine cache; the ``balanced`` renderer graph is not.
Its build is held (the builder's ``build`` waits for an event before doing the real work)
so that the test decides when it finishes.
"""

from __future__ import annotations

import importlib.util
import threading
import time

import numpy as np
import pytest

from streamfx.pipeline.controls import Controls, PoseMode
from streamfx.pipeline.engines.threedpe.config import ThreeDPEConfig
from streamfx.pipeline.engines.threedpe.engine import ThreeDPEEngine
from streamfx.pipeline.timing import StageTimer
from streamfx.runtime.accelerated import load_accelerated
from streamfx.runtime.engine_cache import EngineCache

pytestmark = pytest.mark.slow

WAIT_S = 180.0  # a bound on an export and compile of one renderer graph on a slow CPU


def _backend() -> str:
    if importlib.util.find_spec("openvino") is not None:
        return "hybrid"
    pytest.importorskip("onnxruntime")
    return "onnxruntime"


def _place(face: np.ndarray, size=(480, 640)) -> np.ndarray:
    frame = np.full((*size, 3), 40, np.uint8)
    y, x = (size[0] - 256) // 2, (size[1] - 256) // 2
    frame[y:y + 256, x:x + 256] = face[::2, ::2]  # a 256x256 head in a 640x480 frame
    return frame


@pytest.mark.full  # a long check (make test-full); make test stays within 15 minutes
def test_a_preset_still_building_renders_live_at_a_ready_one_and_offline_waits(random_model, read_rgb, tmp_path,
                                                                                monkeypatch):
    backend = _backend()
    # hybrid renders fast on torch; onnxruntime needs its graph, built up front
    accelerated = load_accelerated(random_model, backend, ("fast",) if backend == "onnxruntime" else (),
                                   cache=EngineCache(tmp_path / "engines"))
    builder = getattr(accelerated, "graphs", accelerated).builder
    release, started = threading.Event(), threading.Event()
    builds: list[str] = []
    real_build = builder.build

    def held_build(graph: str, check: bool = False):
        builds.append(graph)
        if graph == "renderer-balanced":
            started.set()
            assert release.wait(WAIT_S), "the test never released the build"
        return real_build(graph, check)

    monkeypatch.setattr(builder, "build", held_build)
    # live: one keyframe for the whole test (the frames after the first only render)
    live = ThreeDPEEngine(ThreeDPEConfig(async_encoder=False, keyframe_every=1000, backend=backend),
                          accelerated=accelerated)
    offline = ThreeDPEEngine(ThreeDPEConfig(offline=True, backend=backend), accelerated=accelerated)
    frame = _place(read_rgb("faces/ffhq_3.png"))
    balanced = Controls(pose=PoseMode("frontal"), quality="balanced")
    session = live.open_session()
    try:
        # Live: the frame renders at the best ready preset while balanced builds in the background.
        out = session.process(frame, balanced, StageTimer())
        stats = session.stats()
        assert out is not frame and stats["frames_edited"] == 1
        assert stats["preset"] == "fast" and stats["preset_building"] == "balanced", stats
        assert started.wait(WAIT_S) and live.ready_presets(["balanced", "fast"]) == ["fast"]

        # Offline: the frame waits for the same build (no second one), so output never depends on timing.
        offline_session = offline.open_session()
        waited: dict[str, object] = {}

        def offline_frame() -> None:
            waited["out"] = offline_session.process(frame, balanced, StageTimer())
            waited["stats"] = offline_session.stats()

        blocked = threading.Thread(target=offline_frame, daemon=True)
        blocked.start()
        start = time.monotonic()
        session.process(frame, balanced, StageTimer())  # live frames go on meanwhile
        assert session.stats()["preset"] == "fast" and session.stats()["frames_edited"] == 2
        blocked.join(max(0.0, 2.0 - (time.monotonic() - start)))
        assert blocked.is_alive(), "an offline frame must wait for the preset it asked for"

        release.set()
        blocked.join(WAIT_S)
        assert not blocked.is_alive() and waited["stats"]["preset"] == "balanced"
        assert waited["stats"]["preset_building"] is None and waited["out"] is not frame
        offline_session.close()

        # Ready now: the live session moves to the pinned preset on its own.
        deadline = time.monotonic() + WAIT_S
        while not live.ready_presets(["balanced"]):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        session.process(frame, balanced, StageTimer())
        stats = session.stats()
        assert stats["preset"] == "balanced" and stats["preset_building"] is None, stats
        assert builds.count("renderer-balanced") == 1, builds
    finally:
        release.set()
        session.close()
