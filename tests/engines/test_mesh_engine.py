"""The weight-free ``mesh`` engine on real faces, real video and real mediapipe.

Pose is always measured with the face stack's own estimate, on the input and on the
output alike (a photo tracker run on each frame), so tracker smoothing lag does not
enter the comparison.  "Head region" is the face stack's EG3D head ellipse grown 1.75x
(head, hair, ears, neck and the band where their displacement fades out); outside it
the engine must not touch a pixel.
"""

from __future__ import annotations

import io
import threading
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from PIL import Image

from streamfx.face import FaceTracker, align_face
from streamfx.face.compositing import HEAD_AXES, HEAD_CENTRE, frame_head_mask
from streamfx.face.mesh import face_oval
from streamfx.pipeline.controls import Controls, PoseMode
from streamfx.pipeline.engine import PromptError
from streamfx.pipeline.engines.mesh import LOOKS, MeshEngine, MeshEngineConfig
from streamfx.pipeline.prompts import ReferenceError, image_prompt, preset_prompt
from streamfx.pipeline.timing import StageTimer

TESTDATA = Path(__file__).resolve().parents[2].parent / "shared" / "testdata"
HEAD_SCALE = 1.75
pytestmark = pytest.mark.skipif(not TESTDATA.is_dir(), reason=f"test data missing: {TESTDATA}")


# ---------------------------------------------------------------------------- helpers
def rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.uint8).copy()


def video_frames(name: str) -> list[np.ndarray]:
    with av.open(str(TESTDATA / "video" / name)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def place(image: np.ndarray, size: int, x: int, y: int, shape=(480, 640), fill=(70, 80, 90)) -> np.ndarray:
    """``image`` resized to ``size`` and pasted at (x, y) into a frame (may be cut by the border)."""
    frame = np.empty((*shape, 3), np.uint8)
    frame[:] = fill
    small = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    fx0, fy0 = max(x, 0), max(y, 0)
    fx1, fy1 = min(x + size, shape[1]), min(y + size, shape[0])
    frame[fy0:fy1, fx0:fx1] = small[fy0 - y:fy1 - y, fx0 - x:fx1 - x]
    return frame


def head_region(frame: np.ndarray, face, scale: float = HEAD_SCALE) -> np.ndarray:
    """(H, W) bool: the face stack's EG3D head ellipse, grown ``scale`` times, in frame pixels."""
    inv = align_face(frame, face).inverse
    centre = inv @ np.array([HEAD_CENTRE[0], HEAD_CENTRE[1], 1.0])
    k = float(np.sqrt(abs(np.linalg.det(inv[:, :2]))))
    mask = np.zeros(frame.shape[:2], np.uint8)
    axes = (int(np.ceil(HEAD_AXES[0] * k * scale)), int(np.ceil(HEAD_AXES[1] * k * scale)))
    cv2.ellipse(mask, (int(round(centre[0])), int(round(centre[1]))), axes, 0, 0, 360, 1, -1)
    return mask.astype(bool)


def face_mask(image: np.ndarray, landmarks: np.ndarray, erode_frac: float = 0.06) -> np.ndarray:
    """(H, W) bool inside the face outline, eroded by a fraction of the face size."""
    pts = np.round(landmarks[face_oval(), :2]).astype(np.int32)
    mask = np.zeros(image.shape[:2], np.uint8)
    cv2.fillPoly(mask, [pts], 1)
    r = max(int(erode_frac * np.ptp(pts[:, 0])), 1)
    mask = cv2.erode(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
    return mask.astype(bool)


def mean_lab(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    lab = cv2.cvtColor(image.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)
    return lab[mask].mean(axis=0)


_clock = iter(range(10**9))


def run(session, frame: np.ndarray, controls: Controls, repeat: int = 1) -> np.ndarray:
    """Process ``frame`` ``repeat`` times, as consecutive frames of a 25 fps video."""
    out = frame
    for _ in range(repeat):
        out = session.process(frame, controls, StageTimer(timestamp_s=next(_clock) / 25.0))
    assert out.shape == frame.shape and out.dtype == np.uint8
    return out


def png_bytes(image: np.ndarray | Image.Image, fmt: str = "PNG", **kw) -> bytes:
    img = Image.fromarray(image) if isinstance(image, np.ndarray) else image
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


# ---------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def engine():
    eng = MeshEngine(MeshEngineConfig(styles_dir=Path("/nonexistent/streamfx-styles")))
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def photo_tracker():
    tracker = FaceTracker(static_image=True)
    yield tracker
    tracker.close()


@pytest.fixture
def session(engine):
    s = engine.open_session()
    yield s
    s.close()


# ---------------------------------------------------------------------------- re-posing
@pytest.mark.parametrize("video", ["head_turn_1.mp4", "head_turn_2.mp4"])
def test_frontal_mode_halves_yaw_and_leaves_background(engine, photo_tracker, video):
    session = engine.open_session()
    controls = Controls(pose=PoseMode("frontal"))
    checked, failures, untracked = 0, [], 0
    for i, clip in enumerate(video_frames(video)):
        frame = place(clip, 400, 120, 40)
        out = run(session, frame, controls)
        src = photo_tracker.update(frame).face
        if src is None or session.stats()["face"] == "none":
            # the video tracker may need a frame or two to acquire the face: pass-through then
            untracked += 1
            assert np.array_equal(out, frame), f"frame {i}: no face, but the frame was changed"
            continue
        outside = ~head_region(frame, src)
        assert np.array_equal(out[outside], frame[outside]), f"frame {i}: pixels outside the head region changed"
        if abs(src.pose.yaw_deg) < 10.0:
            continue
        res = photo_tracker.update(out).face
        assert res is not None, f"frame {i}: no face found in the output"
        checked += 1
        if abs(res.pose.yaw_deg) > 0.5 * abs(src.pose.yaw_deg):
            failures.append((i, round(src.pose.yaw_deg, 1), round(res.pose.yaw_deg, 1)))
    session.close()
    assert untracked <= 3, f"the engine's tracker missed the face on {untracked} frames"
    assert checked >= 20, f"only {checked} frames with |yaw| >= 10"
    assert not failures, f"|yaw| not halved on (frame, yaw in, yaw out): {failures}"


def test_follow_mode_without_prompt_is_exact(session):
    frame = place(rgb(TESTDATA / "faces" / "ffhq_2.png"), 300, 150, 80)
    out = run(session, frame, Controls(), repeat=2)
    assert np.array_equal(out, frame)
    assert session.stats()["face"] == "tracking"


def test_large_rotation_is_clamped_and_reported(engine, session):
    assert engine.info()["max_rotation_deg"] == pytest.approx(25.0)
    frame = place(rgb(TESTDATA / "faces" / "ffhq_4.png"), 320, 160, 60)
    run(session, frame, Controls(pose=PoseMode("fixed", yaw_deg=55.0)), repeat=2)
    stats = session.stats()
    assert stats["pose_clamped"] is True
    live_yaw = stats["target_pose_deg"][0] - 25.0
    assert abs(live_yaw) < 30.0  # the change was clamped to 25 degrees, not the 55 asked for
    run(session, frame, Controls(pose=PoseMode("offset", yaw_deg=10.0)))
    assert session.stats()["pose_clamped"] is False


# ---------------------------------------------------------------------------- reference transfer
@pytest.mark.parametrize("face_id,style_id", [(3, 3), (1, 1), (5, 5), (2, 7)])
def test_reference_transfer_moves_face_colour(session, photo_tracker, face_id, style_id):
    frame = rgb(TESTDATA / "faces" / f"ffhq_{face_id}.png")
    style_path = TESTDATA / "styles" / f"style_{style_id}.png"
    style = rgb(style_path)
    session.set_prompt(image_prompt(style_path.read_bytes(), name=f"style_{style_id}"))
    out = run(session, frame, Controls(), repeat=3)

    face = photo_tracker.update(frame).face
    ref_face = photo_tracker.update(style).face
    assert face is not None and ref_face is not None
    region = face_mask(frame, face.landmarks)
    target = mean_lab(style, face_mask(style, ref_face.landmarks))
    before = np.linalg.norm(mean_lab(frame, region) - target)
    after = np.linalg.norm(mean_lab(out, region) - target)
    assert after <= 0.5 * before, f"face colour moved from {before:.1f} to {after:.1f} Lab units from the reference"

    outside = frame_head_mask(align_face(frame, face)) <= 0
    diff = np.abs(out.astype(int) - frame.astype(int)).max(axis=2)
    assert diff[outside].max(initial=0) <= 2

    zero = run(session, frame, Controls(strength=0.0))
    assert np.array_equal(zero, frame)
    half = run(session, frame, Controls(strength=0.5))
    half_dist = np.linalg.norm(mean_lab(half, region) - target)
    assert after < half_dist < before


def test_open_mouth_stays_the_callers(session, photo_tracker):
    # ffhq_1 smiles with open mouth (teeth visible): the teeth must not take the reference's colour
    frame = rgb(TESTDATA / "faces" / "ffhq_1.png")
    face = photo_tracker.update(frame).face
    lm = face.landmarks
    inner = [78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 324, 318, 402, 317, 14, 87, 178, 88, 95]
    mouth = np.zeros(frame.shape[:2], np.uint8)
    cv2.fillPoly(mouth, [np.round(lm[inner, :2]).astype(np.int32)], 1)
    mouth = cv2.erode(mouth, np.ones((5, 5), np.uint8)).astype(bool)
    assert mouth.sum() > 200, "test face should have an open mouth"
    session.set_prompt(image_prompt((TESTDATA / "styles" / "style_3.png").read_bytes()))
    out = run(session, frame, Controls(), repeat=3)
    skin = face_mask(frame, lm) & ~cv2.dilate(mouth.astype(np.uint8), np.ones((25, 25), np.uint8)).astype(bool)
    mouth_change = np.abs(mean_lab(out, mouth) - mean_lab(frame, mouth)).sum()
    skin_change = np.abs(mean_lab(out, skin) - mean_lab(frame, skin)).sum()
    assert mouth_change < 0.25 * skin_change, (mouth_change, skin_change)


@pytest.mark.parametrize("look", LOOKS)
def test_looks_change_only_the_face(session, photo_tracker, look):
    frame = rgb(TESTDATA / "faces" / "ffhq_6.png")
    session.set_prompt(preset_prompt(look))
    out = run(session, frame, Controls(), repeat=2)
    face = photo_tracker.update(frame).face
    inside = face_mask(frame, face.landmarks)
    diff = np.abs(out.astype(int) - frame.astype(int)).max(axis=2)
    assert diff[inside].mean() > 8.0, f"{look}: the face barely changed"
    outside = frame_head_mask(align_face(frame, face)) <= 0
    assert np.array_equal(out[outside], frame[outside])
    assert session.stats()["edit"] == f"look:{look}"


# ---------------------------------------------------------------------------- prompts
def test_presets_list_looks_and_styles_folder(tmp_path):
    for i in (2, 3):
        (tmp_path / f"style_{i}.png").write_bytes((TESTDATA / "styles" / f"style_{i}.png").read_bytes())
    (tmp_path / "notes.txt").write_text("not a style")
    eng = MeshEngine(MeshEngineConfig(styles_dir=tmp_path))
    try:
        assert eng.presets() == [*LOOKS, "style_2", "style_3"]
        assert eng.prepare(preset_prompt("style_3")).name == "style_3"
        assert eng.prepare(preset_prompt("Style-3")).name == "style_3"  # closest name wins
        assert eng.prepare(preset_prompt("cartoon")).kind == "look"
        with pytest.raises(PromptError, match="no style or preset matches 'zebra'.*cartoon.*style_2"):
            eng.prepare(preset_prompt("zebra"))
    finally:
        eng.close()


def test_reference_without_face_is_refused_and_previous_prompt_stays(session):
    frame = rgb(TESTDATA / "faces" / "ffhq_3.png")
    session.set_prompt(image_prompt((TESTDATA / "styles" / "style_3.png").read_bytes(), name="style_3"))
    edited = run(session, frame, Controls(), repeat=2)
    yy, xx = np.mgrid[0:300, 0:400]
    gradient = np.stack([xx % 256, yy % 256, (xx + yy) % 256], axis=2).astype(np.uint8)
    for no_face in (gradient, np.full((64, 64, 3), 128, np.uint8)):
        with pytest.raises(PromptError, match="no face found in the reference"):
            session.set_prompt(image_prompt(png_bytes(no_face)))
    assert session.stats()["edit"] == "reference:style_3"
    again = run(session, frame, Controls())
    still = np.abs(again.astype(int) - edited.astype(int)).mean()  # small: tracker smoothing settles
    edit = np.abs(edited.astype(int) - frame.astype(int)).mean()
    assert still < 0.2 * edit, (still, edit)


@pytest.mark.parametrize("kind", ["huge_jpeg", "grey_png", "rgba_png", "palette_gif", "cmyk_jpeg", "webp", "png16"])
def test_odd_reference_formats(session, kind):
    style = rgb(TESTDATA / "styles" / "style_3.png")
    img = Image.fromarray(style)
    data = {
        "huge_jpeg": lambda: png_bytes(img.resize((3000, 3000), Image.Resampling.BILINEAR), "JPEG", quality=80),
        "grey_png": lambda: png_bytes(img.convert("L")),
        "rgba_png": lambda: png_bytes(img.convert("RGBA")),
        "palette_gif": lambda: png_bytes(img.convert("P", palette=Image.Palette.ADAPTIVE), "GIF"),
        "cmyk_jpeg": lambda: png_bytes(img.convert("CMYK"), "JPEG"),
        "webp": lambda: png_bytes(img, "WEBP"),
        "png16": lambda: png_bytes(Image.fromarray((np.asarray(img.convert("L"), np.uint16) * 257))),
    }[kind]()
    prompt = image_prompt(data, name=kind)
    assert max(prompt.image.shape[:2]) <= 1024 and prompt.image.dtype == np.uint8
    try:
        session.set_prompt(prompt)
    except PromptError as exc:  # acceptable only as the clear one-line refusal
        assert "\n" not in str(exc) and kind == "png16"
        return
    assert session.stats()["edit"] == f"reference:{kind}"
    frame = rgb(TESTDATA / "faces" / "ffhq_3.png")
    out = run(session, frame, Controls(), repeat=2)
    assert not np.array_equal(out, frame)


def test_non_image_reference_is_refused_before_the_engine():
    with pytest.raises(ReferenceError):
        image_prompt(b"this is not an image at all")


# ---------------------------------------------------------------------------- degenerate frames
def test_no_face_and_bad_frames_pass_through(session):
    blank = np.full((480, 640, 3), 30, np.uint8)
    assert np.array_equal(run(session, blank, Controls(pose=PoseMode("frontal"))), blank)
    assert session.stats()["face"] == "none"
    tiny = np.zeros((8, 8, 3), np.uint8)
    assert session.process(tiny, Controls(), StageTimer()) is not None
    gray = np.zeros((48, 64), np.uint8)  # not an RGB frame: handed back, no exception
    assert session.process(gray, Controls(), StageTimer()) is gray


def test_profile_like_faces_do_not_break(engine, photo_tracker):
    """Squeezed and turned faces (the face stack sees large yaw or nothing): a valid frame
    comes back, only the head region changes, and big turns are reported as clamped."""
    session = engine.open_session()
    clips = video_frames("head_turn_2.mp4")
    turned = clips[0]  # head_turn_2 starts at its largest turn (~27 degrees)
    squeezed = cv2.resize(rgb(TESTDATA / "faces" / "ffhq_8.png"), (180, 512))
    cases = [place(turned, 420, 110, 30), place(squeezed, 400, 120, 40), place(np.fliplr(squeezed).copy(), 400, 120, 40)]
    session.set_prompt(preset_prompt("oil"))
    for frame in cases:
        session.reset()
        out = run(session, frame, Controls(pose=PoseMode("fixed", yaw_deg=-40.0)), repeat=3)
        face = photo_tracker.update(frame).face
        if face is not None:
            outside = ~head_region(frame, face)
            assert np.array_equal(out[outside], frame[outside])
        stats = session.stats()
        if stats["face"] == "tracking":
            assert stats["pose_clamped"] is True
    session.close()


@pytest.mark.parametrize("x", [-170, 420])
def test_face_partly_out_of_frame(session, photo_tracker, x):
    frame = place(rgb(TESTDATA / "faces" / "ffhq_3.png"), 380, x, 60)
    session.set_prompt(image_prompt((TESTDATA / "styles" / "style_3.png").read_bytes()))
    out = run(session, frame, Controls(pose=PoseMode("frontal")), repeat=3)
    face = photo_tracker.update(frame).face
    if face is not None:
        outside = ~head_region(frame, face)
        assert np.array_equal(out[outside], frame[outside])
        assert not np.array_equal(out, frame)


def test_prompt_switch_from_another_thread(session):
    frame = place(rgb(TESTDATA / "faces" / "ffhq_5.png"), 360, 140, 60)
    prompts = [image_prompt((TESTDATA / "styles" / f"style_{i}.png").read_bytes()) for i in (5, 6)]
    prompts += [preset_prompt("sketch"), None]
    errors: list[BaseException] = []

    def switch():
        try:
            for p in prompts * 2:
                session.set_prompt(p)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    worker = threading.Thread(target=switch)
    worker.start()
    while worker.is_alive():
        run(session, frame, Controls(pose=PoseMode("offset", yaw_deg=8.0)))
    worker.join()
    assert not errors
    assert session.stats()["edit"] is None
