"""Style packs in the live 3DPE engine: a pack's adapter applies to the callers that chose
it, two callers use two packs at once (in one batch), and the base model stays as it was."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from streamfx.models import threedpe
from streamfx.pipeline.controls import Controls, PoseMode
from streamfx.pipeline.engine import PromptError
from streamfx.pipeline.engines.threedpe.config import ThreeDPEConfig
from streamfx.pipeline.engines.threedpe.engine import ThreeDPEEngine
from streamfx.pipeline.prompts import preset_prompt
from streamfx.pipeline.timing import StageTimer
from streamfx.runtime.adapters import default_targets, random_adapter
from streamfx.styles.pack import write_pack

pytestmark = pytest.mark.slow
CONTROLS = Controls(pose=PoseMode("frontal"), quality="fastest")


def _place(face: np.ndarray) -> np.ndarray:
    frame = np.full((480, 640, 3), 40, np.uint8)
    frame[112:368, 192:448] = face[::2, ::2]
    return frame


@pytest.fixture(scope="module")
def styles(random_model, read_rgb, tmp_path_factory):
    folder = tmp_path_factory.mktemp("styles")
    sha = threedpe.weights_sha256(random_model)
    targets = default_targets(random_model.encoder)
    reference = read_rgb("styles/style_3.png")
    for name, seed in (("alpha", 1), ("beta", 2)):
        adapter = random_adapter(random_model.encoder, targets, rank=4, seed=seed, std=0.13)
        write_pack(folder / name, reference, {"kind": "trained", "base_sha256": sha}, adapter)
    write_pack(folder / "plain", reference, {"kind": "reference"})
    write_pack(folder / "foreign", reference, {"kind": "trained", "base_sha256": "f" * 64},
               random_adapter(random_model.encoder, targets, rank=4, seed=3))
    return folder


def _frame(engine, face, prompt):
    session = engine.open_session()
    if prompt:
        session.set_prompt(preset_prompt(prompt))
    out = session.process(face, CONTROLS, StageTimer())
    session.close()
    return out.astype(int)


@pytest.mark.full  # a long check (make test-full); make test stays within 15 minutes
def test_two_callers_use_two_packs_at_once_and_the_base_is_untouched(random_model, styles, read_rgb):
    sha = threedpe.weights_sha256(random_model)
    alone = ThreeDPEEngine(ThreeDPEConfig(async_encoder=False, backend="torch-fp32", styles_dir=styles),
                           model=random_model)
    face = _place(read_rgb("faces/ffhq_3.png"))
    separate = {name: _frame(alone, face, name) for name in ("plain", "alpha", "beta")}
    assert np.abs(separate["alpha"] - separate["plain"]).mean() > 1, "a pack's adapter changes the edit"
    assert np.abs(separate["alpha"] - separate["beta"]).mean() > 1, "two packs, two edits"

    batched = ThreeDPEEngine(ThreeDPEConfig(async_encoder=False, backend="torch-fp32", styles_dir=styles,
                                            batch_window_ms=60_000, max_batch=2, frame_budget_ms=600_000),
                             model=random_model)
    together: dict[str, np.ndarray] = {}
    threads = [threading.Thread(target=lambda n=n: together.__setitem__(n, _frame(batched, face, n)))
               for n in ("alpha", "beta")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert batched.info()["batching"]["sizes"].get(2, 0) >= 1, "the two callers shared a batch"
    for name in ("alpha", "beta"):
        assert np.abs(together[name] - separate[name]).max() <= 2, name
    batched.close()
    assert np.array_equal(_frame(alone, face, "plain"), separate["plain"]), "the base model is as it was"
    assert threedpe.weights_sha256(random_model) == sha


def test_packs_run_on_the_fast_torch_path_and_foreign_packs_are_refused(random_model, styles, read_rgb):
    engine = ThreeDPEEngine(ThreeDPEConfig(async_encoder=False, backend="torch", styles_dir=styles),
                            model=random_model)
    face = _place(read_rgb("faces/ffhq_3.png"))
    assert np.abs(_frame(engine, face, "Alpha") - _frame(engine, face, "plain")).mean() > 1
    session = engine.open_session()
    with pytest.raises(PromptError, match=r"style 'foreign' was trained on other 3DPE weights") as info:
        session.set_prompt(preset_prompt("foreign"))
    assert "\n" not in str(info.value)
    session.close()
