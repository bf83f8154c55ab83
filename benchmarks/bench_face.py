"""Face pipeline speed: tracking + alignment + pose + compositing per frame.

    python benchmarks/bench_face.py [--frames 150]

Plays the head-turn clip pasted into 640x480 and 1280x720 frames (over a textured
background) and times, per frame, the tracker update (mesh + smoothing + pose), the
EG3D alignment and the composite of a rendered crop.  The baseline, measured in the same
run on the same frames, is mediapipe's face mesh alone.  Writes
benchmarks/results/face.json (milliseconds, p50/p95).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import RESULTS, TESTDATA, machine, percentiles, write_json  # noqa: E402
from streamfx.face import FaceTracker, align_face, composite, pose_to_label  # noqa: E402

CLIP = TESTDATA / "video" / "head_turn_1.mp4"
SIZES = {"640x480": (640, 480), "1280x720": (1280, 720)}
BUDGET_MS = {"640x480": 8.0}


def load_frames(size: tuple[int, int], n: int) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(CLIP))
    clip = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        clip.append(cv2.cvtColor(f, cv2.COLOR_BGR2RGB))
    if not clip:
        raise SystemExit(f"cannot read {CLIP}")
    clip = clip + clip[::-1]  # ping-pong so the motion is continuous
    w, h = size
    rng = np.random.default_rng(0)
    bg = cv2.resize(rng.integers(40, 200, (h // 16, w // 16, 3), dtype=np.uint8), (w, h), interpolation=cv2.INTER_CUBIC)
    side = int(0.8 * h)
    frames = []
    for i in range(n):
        face = cv2.resize(clip[i % len(clip)], (side, side), interpolation=cv2.INTER_AREA)
        frame = bg.copy()
        x = (w - side) // 2 + int(20 * np.sin(i / 15))
        frame[(h - side) // 2 : (h - side) // 2 + side, x : x + side] = face
        frames.append(frame)
    return frames


def stats(ms: list[float]) -> dict:
    return percentiles(ms, (50, 95))


def bench_size(frames: list[np.ndarray]) -> dict:
    import mediapipe as mp

    mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1, refine_landmarks=True)
    base = []
    for f in frames:
        t0 = time.perf_counter()
        mesh.process(f)
        base.append((time.perf_counter() - t0) * 1e3)
    mesh.close()

    tracker = FaceTracker()
    track, align, comp, total = [], [], [], []
    for i, f in enumerate(frames):
        t0 = time.perf_counter()
        res = tracker.update(f, i / 30.0)
        t1 = time.perf_counter()
        if res.face is None:
            continue
        aligned = align_face(f, res.face)
        pose_to_label(res.face.pose)
        t2 = time.perf_counter()
        composite(f, aligned.crop, aligned)  # the crop stands in for a rendered one
        t3 = time.perf_counter()
        track.append((t1 - t0) * 1e3)
        align.append((t2 - t1) * 1e3)
        comp.append((t3 - t2) * 1e3)
        total.append((t3 - t0) * 1e3)
    tracker.close()
    skip = 5  # warm-up
    out = {
        "baseline_mesh_only_ms": stats(base[skip:]),
        "track_ms": stats(track[skip:]),
        "align_and_label_ms": stats(align[skip:]),
        "composite_ms": stats(comp[skip:]),
        "total_ms": stats(total[skip:]),
        "frames_with_face": len(total),
        "frames": len(frames),
    }
    out["overhead_vs_mesh_p50_ms"] = round(out["total_ms"]["p50"] - out["baseline_mesh_only_ms"]["p50"], 3)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--out", type=Path, default=RESULTS / "face.json")
    args = parser.parse_args()
    results = {
        "benchmark": "face",
        "machine": machine(),
        "budget_ms": BUDGET_MS,
        "sizes": {},
    }
    for name, size in SIZES.items():
        r = bench_size(load_frames(size, args.frames))
        if name in BUDGET_MS:
            r["within_budget_p50"] = r["total_ms"]["p50"] <= BUDGET_MS[name]
        results["sizes"][name] = r
        print(f"{name}: total p50 {r['total_ms']['p50']} ms p95 {r['total_ms']['p95']} ms "
              f"(mesh alone p50 {r['baseline_mesh_only_ms']['p50']} ms)")
    write_json(args.out, results)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
