"""The weight-free ``mesh`` engine on real faces, real video and real mediapipe.

Pose is always measured with the face stack's own estimate (a photo tracker: mediapipe
and the pose fit, no smoothing), on the input and on the output alike: the output is
judged by what the face stack sees in it, not by what the engine meant to draw.  "Head
region" is the face stack's EG3D head ellipse grown 1.75x (head, hair, ears, neck and the
band where their displacement fades out); outside it the engine must not touch a pixel.

Missing test data skips these tests locally and fails them under CI (the ``testdata``
fixture of ``tests/conftest.py``).
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
from streamfx.face.paste_geometry import HEAD_AXES, HEAD_CENTRE
from streamfx.face.mesh import face_oval
from streamfx.pipeline.controls import Controls, PoseMode
from streamfx.pipeline.engine import PromptError
from streamfx.pipeline.engines.mesh import LOOKS, MeshEngine, MeshEngineConfig
from streamfx.pipeline.prompts import ReferenceError, image_prompt, preset_prompt
from streamfx.pipeline.timing import StageTimer

TESTDATA = Path(__file__).resolve().parents[2].parent / "shared" / "testdata"
HEAD_SCALE = 1.75
YAW_TOL = 5.0  # degrees: what frontal mode promises, measured on its output
pytestmark = pytest.mark.usefixtures("testdata")  # the shared guard: skip locally, fail under CI


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
def reach_deg(engine) -> float:
    """The largest yaw change the engine's output shows: the mesh turns ``yaw_gain`` times the
    asked change and that turn is clamped to ``max_rotation_deg``."""
    info = engine.info()
    return info["max_rotation_deg"] / info["yaw_gain"]


@pytest.mark.parametrize("video", ["head_turn_1.mp4", "head_turn_2.mp4"])
def test_frontal_mode_faces_the_camera_and_leaves_background(engine, photo_tracker, video):
    """|yaw| < 5 degrees on the output wherever the input's |yaw| is within the rotation limit
    less 5 degrees; further out the engine reports the clamp and still turns by its whole reach."""
    limit, reach = engine.info()["max_rotation_deg"], reach_deg(engine)
    session = engine.open_session()
    controls = Controls(pose=PoseMode("frontal"))
    residual, failures, clamp_errors, untracked, clamped_checked, largest = [], [], [], 0, 0, 0.0
    for i, clip in enumerate(video_frames(video)):
        frame = place(clip, 400, 120, 40)
        out = run(session, frame, controls)
        stats = session.stats()
        src = photo_tracker.update(frame).face
        assert src is not None, f"frame {i}: the photo tracker found no face in the input"
        yaw_in = src.pose.yaw_deg
        if stats["face"] != "tracking":
            # the video tracker may need a frame or two to acquire the face: pass-through then
            untracked += 1
            assert np.array_equal(out, frame), f"frame {i}: no face, but the frame was changed"
            continue
        outside = ~head_region(frame, src)
        assert np.array_equal(out[outside], frame[outside]), f"frame {i}: pixels outside the head region changed"
        res = photo_tracker.update(out).face
        assert res is not None, f"frame {i}: no face found in the output"
        yaw_out = res.pose.yaw_deg
        target = stats["target_pose_deg"]
        assert target is not None, f"frame {i}: tracking, but no target pose reported"
        if not stats["pose_clamped"]:
            # frontal; changes under a quarter degree are not rendered, and the target stays live
            assert max(map(abs, target)) <= 0.3, f"frame {i}: not clamped, yet the target is {target}"
        else:  # the target stays on the input's side, short of frontal
            assert target[0] * yaw_in >= 0 and abs(target[0]) < abs(yaw_in), f"frame {i}: clamped target {target}"
        if abs(yaw_in) <= limit - 5.0:
            residual.append(abs(yaw_out))
            largest = max(largest, abs(yaw_in))
            if abs(yaw_out) >= YAW_TOL:
                failures.append((i, round(yaw_in, 1), round(yaw_out, 1)))
        if abs(yaw_in) >= reach + 2.0:
            clamped_checked += 1
            if stats["pose_clamped"] is not True:
                clamp_errors.append(f"frame {i}: yaw {yaw_in:.1f} is beyond reach, but no clamp reported")
            if abs(yaw_out) >= abs(yaw_in) - reach + YAW_TOL:
                clamp_errors.append(f"frame {i}: the clamped turn fell short ({yaw_in:.1f} -> {yaw_out:.1f})")
        elif abs(yaw_in) <= reach - 2.0 and stats["pose_clamped"] is not False:
            clamp_errors.append(f"frame {i}: yaw {yaw_in:.1f} is within reach, but a clamp was reported")
    session.close()
    summary = f"residual |yaw| max {max(residual, default=0):.2f}, median {np.median(residual or [0]):.2f} over {len(residual)} frames"
    assert not failures, f"|yaw| >= {YAW_TOL} on (frame, yaw in, yaw out): {failures}; {summary}"
    assert not clamp_errors, "; ".join(clamp_errors)
    assert untracked <= 3, f"the engine's tracker missed the face on {untracked} frames"
    assert len(residual) >= 35 and largest >= 15.0, f"only {len(residual)} frames in range, largest |yaw| {largest:.1f}"
    assert clamped_checked >= 3, f"only {clamped_checked} frames beyond the engine's reach"


def test_follow_mode_without_prompt_is_exact(session):
    frame = place(rgb(TESTDATA / "faces" / "ffhq_2.png"), 300, 150, 80)
    out = run(session, frame, Controls(), repeat=2)
    assert np.array_equal(out, frame)
    assert session.stats()["face"] == "tracking"


def test_large_rotation_is_clamped_and_reported(engine, session, photo_tracker):
    """Asked turns beyond the limit are clamped, reported, and still turn the head by the
    whole reach (measured on the output); smaller ones are neither clamped nor reported."""
    assert engine.info()["max_rotation_deg"] == pytest.approx(25.0)
    reach = reach_deg(engine)
    frame = place(rgb(TESTDATA / "faces" / "ffhq_4.png"), 320, 160, 60)
    src = photo_tracker.update(frame).face
    assert src is not None
    yaw0, pitch0 = src.pose.yaw_deg, src.pose.pitch_deg
    for mode, clamped, change in [(PoseMode("fixed", yaw_deg=55.0), True, reach), (PoseMode("fixed", yaw_deg=-55.0), True, -reach),
                                  (PoseMode("offset", yaw_deg=10.0), False, 10.0), (PoseMode("offset", yaw_deg=-10.0), False, -10.0)]:
        out = run(session, frame, Controls(pose=mode), repeat=2)
        stats = session.stats()
        assert stats["pose_clamped"] is clamped, (mode, stats)
        # the engine's live pose (video tracker) and the photo tracker's differ by a degree or so
        assert stats["target_pose_deg"][0] - yaw0 == pytest.approx(change, abs=2.0), (mode, stats)
        res = photo_tracker.update(out).face
        assert res is not None, mode
        assert res.pose.yaw_deg - yaw0 == pytest.approx(change, abs=YAW_TOL), (mode, yaw0, res.pose.yaw_deg)
    run(session, frame, Controls(pose=PoseMode("fixed", yaw_deg=0.0, pitch_deg=40.0)), repeat=2)
    stats = session.stats()
    assert stats["pose_clamped"] is True  # pitch is clamped at the limit itself
    assert stats["target_pose_deg"][1] - pitch0 == pytest.approx(25.0, abs=2.0), stats
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

    outside = ~head_region(frame, face)  # ears and neck may take the skin's change; beyond them nothing does
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
    assert face is not None
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
    assert face is not None
    inside = face_mask(frame, face.landmarks)
    diff = np.abs(out.astype(int) - frame.astype(int)).max(axis=2)
    assert diff[inside].mean() > 8.0, f"{look}: the face barely changed"
    outside = ~head_region(frame, face)  # the look reaches ears and neck, nothing further
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
        assert eng.prepare(preset_prompt("STYLE_3")).name == "style_3"  # any case
        with pytest.raises(PromptError, match="no style or preset matches 'Style-3'"):
            eng.prepare(preset_prompt("Style-3"))  # no fuzzy match here: free text is the server's
        assert eng.prepare(preset_prompt("cartoon")).kind == "look"
        with pytest.raises(PromptError, match="no style or preset matches 'zebra'.*cartoon.*style_2"):
            eng.prepare(preset_prompt("zebra"))
    finally:
        eng.close()


def test_reference_without_face_gives_its_colours_and_says_so(session):
    """A reference the tracker finds no face in is not refused: it gives its global look and
    its colours, and the returned ack fields say so. A prompt the engine cannot use at all
    (an unknown preset) is refused and the previous prompt stays."""
    frame = rgb(TESTDATA / "faces" / "ffhq_3.png")
    session.set_prompt(image_prompt((TESTDATA / "styles" / "style_3.png").read_bytes(), name="style_3"))
    edited = run(session, frame, Controls(), repeat=2)
    yy, xx = np.mgrid[0:300, 0:400]
    gradient = np.stack([xx % 256, yy % 256, (xx + yy) % 256], axis=2).astype(np.uint8)
    note = session.set_prompt(image_prompt(png_bytes(gradient), name="gradient"))
    assert "no face found in the reference" in note["note"] and note["look"] in ("photo", "cartoon", "oil")
    assert session.stats()["edit"] == "reference:gradient"
    assert not np.array_equal(run(session, frame, Controls(), repeat=2), frame)
    with pytest.raises(PromptError):
        session.set_prompt(preset_prompt("zebra"))
    assert session.stats()["edit"] == "reference:gradient"
    session.set_prompt(image_prompt((TESTDATA / "styles" / "style_3.png").read_bytes(), name="style_3"))
    again = run(session, frame, Controls(), repeat=3)
    still = np.abs(again.astype(int) - edited.astype(int)).mean()  # small: tracker smoothing settles
    edit = np.abs(edited.astype(int) - frame.astype(int)).mean()
    assert still < 0.2 * edit, (still, edit)


def odd_reference(kind: str) -> bytes:
    """style_3 encoded the way ``kind`` says."""
    img = Image.fromarray(rgb(TESTDATA / "styles" / "style_3.png"))
    return {
        "huge_jpeg": lambda: png_bytes(img.resize((3000, 3000), Image.Resampling.BILINEAR), "JPEG", quality=80),
        "grey_png": lambda: png_bytes(img.convert("L")),
        "rgba_png": lambda: png_bytes(img.convert("RGBA")),
        "palette_gif": lambda: png_bytes(img.convert("P", palette=Image.Palette.ADAPTIVE), "GIF"),
        "cmyk_jpeg": lambda: png_bytes(img.convert("CMYK"), "JPEG"),
        "webp": lambda: png_bytes(img, "WEBP"),
        "png16": lambda: png_bytes(Image.fromarray((np.asarray(img.convert("L"), np.uint16) * 257))),
    }[kind]()


@pytest.mark.parametrize("kind", ["huge_jpeg", "grey_png", "rgba_png", "palette_gif", "cmyk_jpeg", "webp"])
def test_odd_reference_formats(session, photo_tracker, kind):
    """Every common encoding of a reference works: the face colour moves at least halfway to
    the reference's face colour, as decoded."""
    prompt = image_prompt(odd_reference(kind), name=kind)
    assert max(prompt.image.shape[:2]) <= 1024 and prompt.image.dtype == np.uint8 and prompt.image.shape[2] == 3
    session.set_prompt(prompt)
    assert session.stats()["edit"] == f"reference:{kind}"
    frame = rgb(TESTDATA / "faces" / "ffhq_3.png")
    out = run(session, frame, Controls(), repeat=2)
    face, ref_face = photo_tracker.update(frame).face, photo_tracker.update(prompt.image).face
    assert face is not None and ref_face is not None
    region = face_mask(frame, face.landmarks)
    target = mean_lab(prompt.image, face_mask(prompt.image, ref_face.landmarks))
    before = np.linalg.norm(mean_lab(frame, region) - target)
    after = np.linalg.norm(mean_lab(out, region) - target)
    assert after <= 0.5 * before, f"{kind}: face colour moved from {before:.1f} to {after:.1f} Lab units from the reference"


def test_sixteen_bit_reference_is_used_or_refused_in_one_line(session):
    """A 16-bit greyscale PNG: either it works like any reference, or it is refused with a
    one-line message and the session keeps no prompt.  (Today it is refused: PIL's RGB
    conversion clips 16-bit values, so no face is found in the white image that results.)"""
    prompt = image_prompt(odd_reference("png16"), name="png16")
    assert max(prompt.image.shape[:2]) <= 1024 and prompt.image.dtype == np.uint8
    try:
        session.set_prompt(prompt)
    except PromptError as exc:
        assert "\n" not in str(exc) and str(exc)
        assert session.stats()["edit"] is None
        return
    assert session.stats()["edit"] == "reference:png16"
    frame = rgb(TESTDATA / "faces" / "ffhq_3.png")
    assert not np.array_equal(run(session, frame, Controls(), repeat=2), frame)


def test_non_image_reference_is_refused_before_the_engine():
    with pytest.raises(ReferenceError):
        image_prompt(b"this is not an image at all")


# ---------------------------------------------------------------------------- degenerate frames
def test_no_face_and_bad_frames_pass_through(session):
    blank = np.full((480, 640, 3), 30, np.uint8)
    assert np.array_equal(run(session, blank, Controls(pose=PoseMode("frontal"))), blank)
    assert session.stats()["face"] == "none"
    tiny = np.zeros((8, 8, 3), np.uint8)  # too small for a face: handed back unchanged
    out = session.process(tiny, Controls(pose=PoseMode("frontal")), StageTimer())
    assert out.shape == tiny.shape and np.array_equal(out, tiny)
    assert session.stats()["face"] == "none"
    gray = np.zeros((48, 64), np.uint8)  # not an RGB frame: handed back, no exception
    assert session.process(gray, Controls(), StageTimer()) is gray


def test_profile_like_faces_do_not_break(engine, photo_tracker):
    """A strongly turned face and squeezed faces (which the face stack takes for near-frontal
    ones) asked to turn to -40 degrees: each is tracked, only its head region changes, and
    the turn, beyond the engine's reach from each of them, is reported as clamped."""
    session = engine.open_session()
    turned = video_frames("head_turn_2.mp4")[0]  # head_turn_2 starts at its largest turn (~27 degrees)
    squeezed = cv2.resize(rgb(TESTDATA / "faces" / "ffhq_8.png"), (180, 512))
    cases = {"turned": place(turned, 420, 110, 30), "squeezed": place(squeezed, 400, 120, 40),
             "squeezed, mirrored": place(np.fliplr(squeezed).copy(), 400, 120, 40)}
    session.set_prompt(preset_prompt("oil"))
    for name, frame in cases.items():
        session.reset()
        out = run(session, frame, Controls(pose=PoseMode("fixed", yaw_deg=-40.0)), repeat=3)
        face = photo_tracker.update(frame).face
        assert face is not None, name
        outside = ~head_region(frame, face)
        assert np.array_equal(out[outside], frame[outside]), name
        assert not np.array_equal(out, frame), name
        stats = session.stats()
        assert stats["face"] == "tracking" and stats["pose_clamped"] is True, (name, stats)
        assert stats["target_pose_deg"][0] - face.pose.yaw_deg == pytest.approx(-reach_deg(engine), abs=2.0), (name, stats)
    session.close()


@pytest.mark.parametrize("mirrored", [False, True], ids=["cut-left", "cut-right"])
def test_face_partly_out_of_frame(session, photo_tracker, mirrored):
    """A face cut by the frame border is still tracked, edited and turned frontal."""
    frame = place(rgb(TESTDATA / "faces" / "ffhq_3.png"), 380, -90, 60)
    frame = np.fliplr(frame).copy() if mirrored else frame
    session.set_prompt(image_prompt((TESTDATA / "styles" / "style_3.png").read_bytes()))
    out = run(session, frame, Controls(pose=PoseMode("frontal")), repeat=3)
    assert session.stats()["face"] == "tracking"
    face = photo_tracker.update(frame).face
    assert face is not None and abs(face.pose.yaw_deg) > 8.0  # the input is turned
    outside = ~head_region(frame, face)
    assert np.array_equal(out[outside], frame[outside])
    res = photo_tracker.update(out).face
    assert res is not None and abs(res.pose.yaw_deg) < YAW_TOL, res and res.pose.yaw_deg


@pytest.mark.parametrize("x", [-260, 480])
def test_face_out_of_frame_passes_through(session, x):
    frame = place(rgb(TESTDATA / "faces" / "ffhq_3.png"), 380, x, 60)
    session.set_prompt(image_prompt((TESTDATA / "styles" / "style_3.png").read_bytes()))
    out = run(session, frame, Controls(pose=PoseMode("frontal")), repeat=3)
    assert session.stats()["face"] == "none"
    assert np.array_equal(out, frame)


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
