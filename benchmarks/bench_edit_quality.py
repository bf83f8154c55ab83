"""Quality of the ``mesh`` engine's reference edits: does an edit keep the caller's features,
carry the reference's look, avoid a visible mask edge, and stay steady?

Every shared test face (placed in a 640x480 frame as the engine tests do) and the middle
frame of each head-turn clip is run against every shared style reference, in ``follow``
and ``frontal`` pose modes, through the real engine.  Per (input, style) case it measures
(``follow`` output, which shares the input's pose, unless noted):

* ``landmark_error_iod``: mean 2-D distance of the mediapipe landmarks found on the output
  to the input's, over the inter-ocular distance (eye-corner midpoints);
* ``highpass_ssim``: SSIM of high-pass luminance (luma minus its Gaussian blur, sigma 3 px)
  of output vs input, averaged over the face hull (convex hull of the input's landmarks);
* ``look_skin`` / ``look_lips``: Lab distance of the output's mean colour to the
  reference's in that region, over the same distance for the input (1 = no transfer,
  0 = full transfer); skin = face hull minus eyes, brows and lips;
* ``cheek_neck_ratio``: Lab distance between the cheeks' and the ear/neck band's mean
  colour (a band just outside the face oval, below eye level) in the output, over the
  same in the input (input distance floored at 1 Lab unit);
* ``flicker_ratio`` (still faces only): mean absolute frame-to-frame change in the face
  hull over a 12-frame clip of the still face with seeded Gaussian noise (sigma 2 levels),
  output over input (the first 2 frames are warm-up and not counted).

A reference the engine refuses is recorded with its message.  Writes a contact sheet
(input | reference | follow | frontal, one row per case) and a JSON file, and prints the
medians against the issue's goals.

    python -m benchmarks.bench_edit_quality [--quick] [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import av  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from benchmarks.common import RESULTS, TESTDATA, machine, write_json  # noqa: E402

SCHEMA = 1
THUMB = 128  # contact sheet thumbnail side; one row per case
FRAME_SHAPE, FILL = (480, 640), (70, 80, 90)
PLACE = (400, 120, 40)  # size, x, y of a 512 crop in the frame (as tests/engines/test_mesh_engine.py)
REPEAT = 3  # frames of a still face before its output is measured
STILL_FRAMES, WARMUP, NOISE_SIGMA, SEED = 12, 2, 2.0, 1234
HP_SIGMA = 3.0

OUTER_LIPS = [61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 375, 321, 405, 314, 17, 84, 181, 91, 146]
INNER_LIPS = [78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 324, 318, 402, 317, 14, 87, 178, 88, 95]
CHEEKS = (50, 280)  # cheek-centre landmarks, image-left and image-right

# metric -> (comparison, threshold, description); "min" goals also hold for every case
GOALS = {
    "landmark_error_iod": ("<=", 0.05, "landmarks within 5% of the inter-ocular distance"),
    "highpass_ssim": (">=", 0.75, "high-pass SSIM >= 0.75 (and no case under 0.7)"),
    "look_skin": ("<=", 0.5, "skin colour distance <= 0.5x the input's"),
    "look_lips": ("<=", 0.5, "lip colour distance <= 0.5x the input's"),
    "cheek_neck_ratio": ("<=", 1.5, "cheek-to-ear/neck distance <= 1.5x the input's"),
    "flicker_ratio": ("<=", 1.2, "flicker <= 1.2x the input's"),
}
SSIM_FLOOR = 0.7


# ---------------------------------------------------------------------------- inputs
def rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.uint8).copy()


def place(image: np.ndarray) -> np.ndarray:
    size, x, y = PLACE
    frame = np.empty((*FRAME_SHAPE, 3), np.uint8)
    frame[:] = FILL
    frame[y:y + size, x:x + size] = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    return frame


def clip_frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [place(f.to_ndarray(format="rgb24")) for f in container.decode(video=0)]


def noisy_still(frame: np.ndarray, n: int = STILL_FRAMES, sigma: float = NOISE_SIGMA, seed: int = SEED):
    rng = np.random.default_rng(seed)
    return [np.clip(frame + rng.normal(0.0, sigma, frame.shape), 0, 255).astype(np.uint8) for _ in range(n)]


# ---------------------------------------------------------------------------- regions
def _poly(shape, pts: np.ndarray, hull: bool = False) -> np.ndarray:
    mask = np.zeros(shape[:2], np.uint8)
    pts = np.round(pts[:, :2]).astype(np.int32)
    cv2.fillPoly(mask, [cv2.convexHull(pts) if hull else pts], 1)
    return mask.astype(bool)


def _grow(mask: np.ndarray, r: float) -> np.ndarray:
    r = max(int(round(r)), 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    return cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)


def _indices(connections) -> np.ndarray:
    return np.array(sorted({i for edge in connections for i in edge}))


def iod(lm: np.ndarray) -> float:
    left, right = (lm[33, :2] + lm[133, :2]) / 2, (lm[362, :2] + lm[263, :2]) / 2
    return float(np.linalg.norm(left - right))


def face_hull(shape, lm: np.ndarray) -> np.ndarray:
    return _poly(shape, lm, hull=True)


def regions(shape, lm: np.ndarray) -> dict[str, np.ndarray]:
    """Boolean masks from (478, 3) landmarks: face, skin, lips, cheeks, ear/neck band."""
    from mediapipe.python.solutions import face_mesh_connections as fmc

    from streamfx.face.mesh import face_oval

    d = iod(lm)
    face = face_hull(shape, lm)
    lips = _poly(shape, lm[OUTER_LIPS]) & ~_poly(shape, lm[INNER_LIPS])
    holes = _poly(shape, lm[OUTER_LIPS])
    for part in (fmc.FACEMESH_LEFT_EYE, fmc.FACEMESH_RIGHT_EYE, fmc.FACEMESH_LEFT_EYEBROW, fmc.FACEMESH_RIGHT_EYEBROW):
        holes |= _poly(shape, lm[_indices(part)], hull=True)
    inner_face = ~_grow(~face, 0.08 * d)  # away from the hairline and the face's edge
    skin = inner_face & ~_grow(holes, 0.08 * d)
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    cheeks = np.zeros(shape[:2], bool)
    for i in CHEEKS:
        cheeks |= (xx - lm[i, 0]) ** 2 + (yy - lm[i, 1]) ** 2 <= (0.25 * d) ** 2
    oval = _poly(shape, lm[face_oval()])
    eye_y = float(lm[[33, 133, 362, 263], 1].mean())
    band = _grow(oval, 0.35 * d) & ~_grow(oval, 0.08 * d) & (yy > eye_y)
    return {"face": face, "skin": skin, "lips": lips, "cheeks": cheeks & skin, "ear_neck": band}


# ---------------------------------------------------------------------------- metric helpers
def mean_lab(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    lab = cv2.cvtColor(image.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)
    return lab[mask].mean(axis=0)


def highpass(image: np.ndarray, sigma: float = HP_SIGMA) -> np.ndarray:
    luma = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float64)
    return luma - cv2.GaussianBlur(luma, (0, 0), sigma)


def ssim_map(a: np.ndarray, b: np.ndarray, sigma: float = 1.5, data_range: float = 255.0) -> np.ndarray:
    """SSIM (Wang et al. 2004) per pixel, Gaussian window, of two float images (H, W)."""
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    blur = lambda x: cv2.GaussianBlur(x, (0, 0), sigma)  # noqa: E731
    mu_a, mu_b = blur(a), blur(b)
    var_a, var_b = blur(a * a) - mu_a ** 2, blur(b * b) - mu_b ** 2
    cov = blur(a * b) - mu_a * mu_b
    return ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))


def highpass_ssim(inp: np.ndarray, out: np.ndarray, mask: np.ndarray) -> float:
    return float(ssim_map(highpass(inp), highpass(out))[mask].mean())


def landmark_error(lm_in: np.ndarray, lm_out: np.ndarray | None) -> float | None:
    if lm_out is None:
        return None
    return float(np.linalg.norm(lm_in[:, :2] - lm_out[:, :2], axis=1).mean() / iod(lm_in))


def look_ratio(inp: np.ndarray, out: np.ndarray, mask: np.ndarray, ref: np.ndarray, ref_mask: np.ndarray) -> float:
    """|Lab(out) - Lab(ref)| / |Lab(inp) - Lab(ref)| of a region: 1 = no transfer, 0 = full."""
    target = mean_lab(ref, ref_mask)
    before = np.linalg.norm(mean_lab(inp, mask) - target)
    return float(np.linalg.norm(mean_lab(out, mask) - target) / max(before, 1e-6))


def cheek_neck_ratio(inp: np.ndarray, out: np.ndarray, regs: dict[str, np.ndarray]) -> float:
    dist = lambda im: np.linalg.norm(mean_lab(im, regs["cheeks"]) - mean_lab(im, regs["ear_neck"]))  # noqa: E731
    return float(dist(out) / max(dist(inp), 1.0))


def flicker(frames: list[np.ndarray], mask: np.ndarray) -> float:
    diffs = [np.abs(b.astype(np.float64) - a.astype(np.float64))[mask].mean() for a, b in zip(frames, frames[1:])]
    return float(np.mean(diffs))


# ---------------------------------------------------------------------------- running the engine
class Runner:
    """The engine, a photo tracker and a frame clock."""

    def __init__(self) -> None:
        from streamfx.face import FaceTracker
        from streamfx.pipeline.engines.mesh.engine import MeshEngine
        from streamfx.pipeline.engines.mesh.config import MeshEngineConfig

        self.engine = MeshEngine(MeshEngineConfig(styles_dir=Path("/nonexistent/streamfx-styles")))
        self.tracker = FaceTracker(static_image=True)
        self.clock = 0

    def landmarks(self, image: np.ndarray) -> np.ndarray | None:
        face = self.tracker.update(image).face
        return None if face is None else face.landmarks.astype(np.float64)

    def session(self, style: Path):
        """An open session with ``style`` as its prompt, or the refusal message (str)."""
        from streamfx.pipeline.engine import PromptError
        from streamfx.pipeline.prompts import ReferenceError, image_prompt

        session = self.engine.open_session()
        try:
            session.set_prompt(image_prompt(style.read_bytes(), name=style.stem))
        except (PromptError, ReferenceError) as exc:
            session.close()
            return str(exc)
        return session

    def process(self, session, frames: list[np.ndarray], mode: str) -> list[np.ndarray]:
        from streamfx.pipeline.controls import Controls, PoseMode
        from streamfx.pipeline.timing import StageTimer

        controls, outs = Controls(pose=PoseMode(mode)), []
        for frame in frames:
            self.clock += 1
            outs.append(session.process(frame, controls, StageTimer(timestamp_s=self.clock / 25.0)))
        return outs

    def close(self) -> None:
        self.tracker.close()
        self.engine.close()


def run_case(runner: Runner, name: str, frames: list[np.ndarray], still: bool, style: Path) -> dict:
    """Outputs and metrics of one (input, style) case; ``frames`` ends at the measured frame."""
    frame = frames[-1]
    ref = rgb(style)
    case = {"case": f"{name}+{style.stem}", "input": name, "style": style.stem, "kind": "face" if still else "clip"}
    images = {"input": frame, "reference": ref, "follow": None, "frontal": None}
    outputs, still_pair = {}, None
    for mode in ("follow", "frontal"):
        session = runner.session(style)
        if isinstance(session, str):
            return case | {"refused": True, "message": session, "metrics": None}, images
        outputs[mode] = runner.process(session, frames, mode)[-1]
        if mode == "follow" and still:
            noisy = noisy_still(frame)
            outs = runner.process(session, noisy, mode)[WARMUP:]
            still_pair = (noisy[WARMUP:], outs)
        session.close()
    images |= outputs
    return case | {"refused": False, "message": None,
                   "metrics": measure(runner, frame, outputs["follow"], ref, still_pair)}, images


def measure(runner: Runner, inp: np.ndarray, out: np.ndarray, ref: np.ndarray, still) -> dict:
    lm_in, lm_ref = runner.landmarks(inp), runner.landmarks(ref)
    if lm_in is None:
        return {"error": "no face found in the input"}
    regs = regions(inp.shape, lm_in)
    metrics = {"landmark_error_iod": landmark_error(lm_in, runner.landmarks(out)),
               "highpass_ssim": highpass_ssim(inp, out, regs["face"]),
               "look_skin": None, "look_lips": None,
               "cheek_neck_ratio": cheek_neck_ratio(inp, out, regs), "flicker_ratio": None}
    if lm_ref is not None:
        ref_regs = regions(ref.shape, lm_ref)
        for part in ("skin", "lips"):
            metrics[f"look_{part}"] = look_ratio(inp, out, regs[part], ref, ref_regs[part])
    if still is not None:
        noisy, outs = still
        metrics["flicker_ratio"] = flicker(outs, regs["face"]) / max(flicker(noisy, regs["face"]), 1e-6)
    return {k: (None if v is None else round(v, 4)) for k, v in metrics.items()}


# ---------------------------------------------------------------------------- outputs
def thumb(image: np.ndarray | None, crop: bool) -> np.ndarray:
    if image is None:
        return np.full((THUMB, THUMB, 3), 128, np.uint8)
    if crop:
        size, x, y = PLACE
        image = image[y:y + size, x:x + size]
    return cv2.resize(image, (THUMB, THUMB), interpolation=cv2.INTER_AREA)


def contact_sheet(rows: list[dict], path: Path) -> Path:
    tiles = []
    for images in rows:
        row = [thumb(images["input"], True), thumb(images["reference"], False),
               thumb(images["follow"], True), thumb(images["frontal"], True)]
        tiles.append(np.concatenate(row, axis=1))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(tiles, axis=0)).save(path)
    return path


def summarise(cases: list[dict]) -> tuple[dict, dict]:
    measured = [c["metrics"] for c in cases if c["metrics"] and "error" not in c["metrics"]]
    medians, goals = {}, {}
    for key, (op, threshold, text) in GOALS.items():
        values = [m[key] for m in measured if m.get(key) is not None]
        med = float(np.median(values)) if values else None
        medians[key] = None if med is None else round(med, 4)
        met = med is not None and (med <= threshold if op == "<=" else med >= threshold)
        if key == "highpass_ssim":
            met = met and min(values) >= SSIM_FLOOR
        if key == "landmark_error_iod":  # a face the tracker loses on the output fails the goal
            met = met and len(values) == len(measured)
        goals[key] = {"goal": f"{op} {threshold}", "text": text, "median": medians[key], "met": bool(met),
                      "n": len(values), "min": round(min(values), 4) if values else None,
                      "max": round(max(values), 4) if values else None}
    return medians, goals


def print_table(goals: dict, cases: list[dict], seconds: float) -> None:
    refused = sum(c["refused"] for c in cases)
    print(f"edit quality: {len(cases)} cases ({refused} refused), {seconds:.0f} s")
    print(f"{'metric':<20}{'median':>9}{'goal':>9}  met")
    for key, g in goals.items():
        med = "-" if g["median"] is None else f"{g['median']:.3f}"
        print(f"{key:<20}{med:>9}{g['goal']:>9}  {'yes' if g['met'] else 'NO'}")


def plan(quick: bool) -> tuple[list[tuple[str, list[np.ndarray], bool]], list[Path]]:
    face_ids = (1, 3) if quick else range(1, 9)
    style_ids = (1, 3) if quick else range(1, 9)
    inputs = [(f"ffhq_{i}", [place(rgb(TESTDATA / "faces" / f"ffhq_{i}.png"))] * REPEAT, True) for i in face_ids]
    if not quick:
        for name in ("head_turn_1", "head_turn_2"):
            frames = clip_frames(TESTDATA / "video" / f"{name}.mp4")
            inputs.append((name, frames[:len(frames) // 2 + 1], False))
    return inputs, [TESTDATA / "styles" / f"style_{i}.png" for i in style_ids]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 faces x 2 styles, no clips")
    parser.add_argument("--out", type=Path, default=RESULTS, help="output folder (default benchmarks/results)")
    args = parser.parse_args(argv)
    began = time.perf_counter()
    inputs, styles = plan(args.quick)
    runner, cases, sheet_rows = Runner(), [], []
    try:
        for name, frames, still in inputs:
            for style in styles:
                case, images = run_case(runner, name, frames, still, style)
                cases.append(case)
                sheet_rows.append(images)
    finally:
        runner.close()
    stem = "edit_quality_quick" if args.quick else "edit_quality"
    sheet = contact_sheet(sheet_rows, args.out / f"{stem}.png")
    medians, goals = summarise(cases)
    seconds = time.perf_counter() - began
    write_json(args.out / f"{stem}.json", {
        "benchmark": "edit_quality", "schema": SCHEMA, "machine": machine(), "quick": args.quick,
        "seconds": round(seconds, 1), "sheet": str(sheet), "sheet_columns": ["input", "reference", "follow", "frontal"],
        "thumb_px": THUMB, "cases": cases, "medians": medians, "goals": goals})
    print_table(goals, cases, seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
