"""``streamfx align PHOTO -o CROP.png [--json]``: the EG3D crop and camera label of a photo."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from . import CliError


def register(subparsers) -> None:
    p = subparsers.add_parser("align", help="cut the 512x512 EG3D crop of a portrait and estimate its camera")
    p.add_argument("photo", type=Path, help="input image (png, jpg, ...)")
    p.add_argument("-o", "--output", type=Path, required=True, help="where to write the 512x512 crop (png)")
    p.add_argument("--size", type=int, default=512, help="crop size in pixels (default 512)")
    p.add_argument("--json", action="store_true", help="print the camera label, pose and transform as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import cv2

    from ..face import FaceTracker, align_face, pose_to_label

    if not args.photo.is_file():
        raise CliError(f"no such file: {args.photo}")
    if not 64 <= args.size <= 4096:
        raise CliError(f"--size must be between 64 and 4096, got {args.size}")
    bgr = cv2.imread(str(args.photo), cv2.IMREAD_COLOR)
    if bgr is None:
        raise CliError(f"cannot read an image from {args.photo}")
    image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    with FaceTracker(static_image=True) as tracker:
        res = tracker.update(image)
    if res.face is None:
        raise CliError(f"no face found in {args.photo}")
    aligned = align_face(image, res.face, size=args.size)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(args.output), cv2.cvtColor(aligned.crop, cv2.COLOR_RGB2BGR)):
        raise CliError(f"cannot write {args.output}")
    pose = res.face.pose
    info = {
        "input": str(args.photo),
        "crop": str(args.output),
        "size": args.size,
        "faces_found": res.num_faces,
        "camera_label": [round(float(v), 6) for v in pose_to_label(pose)],
        "pose_deg": {"yaw": round(pose.yaw_deg, 2), "pitch": round(pose.pitch_deg, 2), "roll": round(pose.roll_deg, 2)},
        "matrix": [[round(float(v), 6) for v in row] for row in aligned.matrix],
        "five_points": [[round(float(v), 2) for v in p] for p in res.face.five_points],
    }
    if args.json:
        print(json.dumps(info))
    else:
        print(f"wrote {args.output} (yaw {pose.yaw_deg:+.1f}, pitch {pose.pitch_deg:+.1f} degrees)")
    return 0
