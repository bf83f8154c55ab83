"""The live 3DPE engine on real frames, with random weights of the official shapes."""

from __future__ import annotations

import time

import numpy as np
import pytest

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
    return ThreeDPEEngine(ThreeDPEConfig(async_encoder=False, backend="torch-bf16"), model=random_model)


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
    engine = ThreeDPEEngine(ThreeDPEConfig(async_encoder=True, backend="torch-bf16"), model=random_model)
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
