"""The live 3DPE engine on real frames, with random weights of the official shapes."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from streamfx.face import FaceTracker, frame_head_mask, align_face
from streamfx.pipeline.controls import Controls, PoseMode
from streamfx.pipeline.engines.threedpe.config import ThreeDPEConfig
from streamfx.pipeline.engines.threedpe.engine import ThreeDPEEngine
from streamfx.pipeline.prompts import image_prompt
from streamfx.pipeline.timing import StageTimer

pytestmark = pytest.mark.slow


def _place(face: np.ndarray, size=(480, 640)) -> np.ndarray:
    frame = np.full((*size, 3), 40, np.uint8)
    small = face[::2, ::2]  # 256x256 head in a 640x480 frame
    y, x = (size[0] - 256) // 2, (size[1] - 256) // 2
    frame[y:y + 256, x:x + 256] = small
    return frame


@pytest.fixture(scope="module")
def engine(random_model):
    return ThreeDPEEngine(ThreeDPEConfig(async_encoder=False, backend="torch"), model=random_model)


def test_edits_inside_the_head_and_keeps_the_rest(engine, read_rgb):
    frame = _place(read_rgb("faces/ffhq_3.png"))
    session = engine.open_session()
    session.set_prompt(image_prompt(_png(read_rgb("styles/style_3.png"))))
    timer = StageTimer()
    controls = Controls(pose=PoseMode("frontal"), quality="fastest")
    out = session.process(frame, controls, timer)
    assert out.shape == frame.shape and out.dtype == np.uint8
    with FaceTracker(static_image=True) as tracker:
        face = tracker.update(frame).face
    mask = frame_head_mask(align_face(frame, face))
    import cv2

    # a margin for the difference between this photo-mode track and the session's video track
    outside = cv2.dilate((mask > 1e-3).astype(np.uint8), np.ones((21, 21), np.uint8)) == 0
    assert np.abs(out.astype(int) - frame)[outside].max() <= 2
    assert np.abs(out.astype(int) - frame)[mask > 0.9].mean() > 5, "the head region must be re-rendered"
    for stage in ("track", "align", "encode", "render", "composite"):
        assert stage in timer.ms
    stats = session.stats()
    assert stats["face"] == "tracking" and stats["preset"] == "fastest" and stats["planes_age"] == 0
    session.close()


def test_no_face_passes_through_and_unknown_style_is_refused(engine):
    session = engine.open_session()
    blank = np.full((240, 320, 3), 128, np.uint8)
    assert session.process(blank, Controls(), StageTimer()) is blank
    from streamfx.pipeline.engine import PromptError
    from streamfx.pipeline.prompts import preset_prompt

    with pytest.raises(PromptError, match="no style"):
        session.set_prompt(preset_prompt("clown"))
    session.close()


def test_async_keyframes_render_every_frame(random_model, read_rgb):
    engine = ThreeDPEEngine(ThreeDPEConfig(async_encoder=True, backend="torch"), model=random_model)
    session = engine.open_session()
    frame = _place(read_rgb("faces/ffhq_1.png"))
    controls = Controls(quality="fastest")
    outs = [session.process(frame, controls, StageTimer())]
    assert outs[0] is frame, "until the first keyframe is encoded, frames pass through"
    deadline = time.monotonic() + 120
    while session.worker.latest() is None:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    out = session.process(frame, controls, StageTimer())
    assert out is not frame and session.stats()["planes_age"] >= 1
    session.close()


def _png(rgb: np.ndarray) -> bytes:
    import cv2

    ok, data = cv2.imencode(".png", rgb[..., ::-1])
    assert ok
    return data.tobytes()


def test_face_switch_resets_temporal_state(engine, read_rgb):
    """A switched identity (reported by the tracker) restarts smoothing and the caller's own tokens."""
    from streamfx.face.types import TrackResult

    session = engine.open_session()
    frame = _place(read_rgb("faces/ffhq_2.png"))
    controls = Controls(quality="fastest")
    session.process(frame, controls, StageTimer())
    epoch, own = session._epoch, session._own_tokens
    assert own is not None and session.stats()["planes_age"] == 0
    real_update = session.tracker.update

    def switched(frame, t):
        result = real_update(frame, t)
        return TrackResult(result.face, result.status, result.num_faces, switched=True)

    session.tracker.update = switched
    session.process(frame, controls, StageTimer())
    assert session._epoch == epoch + 1, "a face switch must restart tri-plane smoothing"
    assert session._own_tokens is not own, "the new face gets its own identity tokens"
    session.close()


def test_strength_zero_is_the_reconstruction_and_one_the_full_edit(engine, read_rgb):
    """Strength blends the reference tokens from the caller's own (0) to the prompt's (1)."""
    frame = _place(read_rgb("faces/ffhq_4.png"))
    prompt = image_prompt(_png(read_rgb("styles/style_2.png")))

    def run(with_prompt: bool, strength: float):
        session = engine.open_session()
        if with_prompt:
            session.set_prompt(prompt)
        out = session.process(frame, Controls(quality="fastest", strength=strength), StageTimer())
        assert session.stats()["frames_edited"] == 1 and session.stats()["strength"] == strength
        return out, session

    own, _ = run(False, 1.0)
    zero, session = run(True, 0.0)
    full, _ = run(True, 1.0)
    assert np.array_equal(zero, own), "strength 0 must give the unedited reconstruction"
    assert not np.array_equal(full, own), "strength 1 must give the edit"
    session._set_strength(1.0)  # the tokens at 1 and in between, without encoding again
    assert session._tokens_for(None) is session._tokens
    session._set_strength(0.5)
    half = session._tokens_for(None)
    assert torch.allclose(half, (session._tokens + session._own_tokens) / 2, atol=1e-6)
    session.close()


def test_offline_processing_encodes_in_order_and_is_deterministic(random_model, read_rgb, testdata, tmp_path):
    """Files: no keyframe worker, no frame left unedited while a keyframe encodes, fixed
    quality, and two runs give identical frames. ``keyframe_every=2`` reuses the planes of
    the previous keyframe in between."""
    import av

    from streamfx.io import process_video
    from streamfx.pipeline.processor import CallerPipeline

    config = ThreeDPEConfig(offline=True, keyframe_every=2, backend="torch", offline_quality="fastest")
    engine = ThreeDPEEngine(config, model=random_model)
    decoded = []
    for run in range(2):
        pipeline = CallerPipeline(engine, Controls(pose=PoseMode("frontal")))
        pipeline.set_prompt(image_prompt(_png(read_rgb("styles/style_3.png"))))
        out = tmp_path / f"run{run}.mp4"
        result = process_video(testdata / "video" / "head_turn_1.mp4", out, pipeline.filter_at, max_frames=5)
        stats = pipeline.session.stats()
        assert result.frames == 5 and pipeline.session.worker is None
        assert stats["frames_edited"] + stats["frames_passed"] == 5
        assert stats["frames_edited"] >= 3, stats  # every frame with a tracked face is edited
        assert stats["preset"] == "fastest", "offline, quality auto is the fixed offline_quality"
        assert pipeline.stats.stage_ms["encode"].__len__() == (stats["frames_edited"] + 1) // 2
        pipeline.close()
        with av.open(str(out)) as container:
            decoded.append([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    assert len(decoded[0]) == len(decoded[1]) == 5
    for a, b in zip(*decoded):
        assert np.array_equal(a, b), "two offline runs must give identical frames"


def test_batched_callers_get_their_own_frames_as_if_alone(random_model, read_rgb):
    """Two callers' frames share the encoder's and the renderer's batches (batching forced on
    the CPU with a window long enough that only a full batch goes), and each caller gets the
    frame it gets from an engine without batching: its own face, prompt and pose."""
    config = ThreeDPEConfig(async_encoder=False, backend="torch-fp32", batch_window_ms=60_000, max_batch=2,
                            frame_budget_ms=600_000)
    batched = ThreeDPEEngine(config, model=random_model)
    alone = ThreeDPEEngine(ThreeDPEConfig(async_encoder=False, backend="torch-fp32"), model=random_model)
    frames = [_place(read_rgb("faces/ffhq_3.png")), _place(read_rgb("faces/ffhq_1.png"))]
    controls = [Controls(pose=PoseMode("frontal"), quality="fastest"), Controls(quality="fastest")]
    style = image_prompt(_png(read_rgb("styles/style_3.png")))

    def run(engine, i, out):
        session = engine.open_session()
        if i == 0:
            session.set_prompt(style)
        out[i] = session.process(frames[i], controls[i], StageTimer())
        session.close()

    import threading

    together: dict[int, np.ndarray] = {}
    threads = [threading.Thread(target=run, args=(batched, i, together)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    separate: dict[int, np.ndarray] = {}
    for i in range(2):
        run(alone, i, separate)
    stats = batched.info()["batching"]
    assert stats["sizes"] == {2: 2}, stats  # one encode batch and one render batch, two frames each
    for i in range(2):
        assert np.abs(together[i].astype(int) - separate[i]).max() <= 2, f"caller {i}"
    assert np.abs(together[0].astype(int) - frames[0]).mean() > 0.5  # both were edited
    batched.close()
