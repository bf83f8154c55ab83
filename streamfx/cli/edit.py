"""``streamfx edit PHOTO --ref IMAGE | --style NAME -o OUT.png``: 3DPE on one photo (the paper's own use).

``--style`` takes a named style; a trained pack's adapter applies to this edit.

Aligns the face, encodes it with the reference, renders at the photo's own pose or the
one given (or an orbit video), and pastes the result back into the photo with ``--paste``.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from ..runtime.names import BACKEND_CHOICES
from . import CliError
from .common import add_device_arg, add_styles_arg, checked_device, load_model


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("edit", help="edit a portrait photo with a reference image (3DPE)")
    p.add_argument("photo", type=Path)
    prompt = p.add_mutually_exclusive_group(required=True)
    prompt.add_argument("--ref", type=Path, help="reference (style) image")
    prompt.add_argument("--style", metavar="NAME", help="a named style or trained style pack (streamfx styles list)")
    add_styles_arg(p)
    p.add_argument("-o", "--output", type=Path, required=True, help="output image (png/jpg)")
    p.add_argument("--yaw", type=float, default=None, help="render at this yaw (degrees; default: the photo's)")
    p.add_argument("--pitch", type=float, default=None, help="render at this pitch (degrees; default: the photo's)")
    p.add_argument("--views", type=int, default=0, help="also render an orbit of N views")
    p.add_argument("--video", type=Path, default=None, help="write the orbit as a video (with --views)")
    p.add_argument("--paste", action="store_true", help="paste the edited face back into the photo")
    p.add_argument("--preset", default="full", help="render preset (default: full quality)")
    p.add_argument("--weights", type=Path, default=None, help="3dpe.pt or an imported weights folder")
    p.add_argument("--fp32", action="store_true", help="use the fp32 reference path (same as --backend torch-fp32)")
    p.add_argument("--backend", default="torch", choices=BACKEND_CHOICES,
                   help="execution path (default torch: precision per stage measured on this machine)")
    p.add_argument("--threads", type=int, default=None, metavar="N", help="CPU threads (default: all cores)")
    add_device_arg(p)
    p.add_argument("--random-weights", type=int, default=None, metavar="SEED", nargs="?", const=0,
                   help="random weights of the official shapes (demos, benchmarks)")
    p.set_defaults(func=run)


def _read(path: Path):
    import cv2

    if not path.is_file():
        raise CliError(f"no such file: {path}")
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise CliError(f"cannot read an image from {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _library(args):
    from ..styles import StyleLibrary, default_styles_dir

    return StyleLibrary((args.styles or default_styles_dir()).expanduser())


def _style(args):
    """(reference image, Style) of ``--style NAME``: an exact or case-insensitive name."""
    from ..styles import StyleError, match_name

    library = _library(args)
    try:
        style = library.style(match_name(args.style, library.names(), fuzzy=False))
        return library.image(style.name), style
    except StyleError as exc:
        raise CliError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    import cv2
    import numpy as np
    import torch

    from ..face import FaceTracker, align_face, composite, label_from_degrees
    from ..models import threedpe
    from ..pipeline.engines.threedpe.engine import to_uint8
    from ..runtime.accelerated import load_accelerated
    from ..runtime.threads import apply_threads

    if args.views < 0 or (args.video and args.views < 2):
        raise CliError("--video needs --views N with N >= 2")
    photo = _read(args.photo)
    reference, style = (_read(args.ref), None) if args.ref is not None else _style(args)
    with FaceTracker(static_image=True) as tracker:
        found = tracker.update(photo)
    if found.face is None:
        raise CliError(f"no face found in {args.photo}")
    aligned = align_face(photo, found.face)
    if args.threads is not None and args.threads < 1:
        raise CliError("--threads must be at least 1")
    apply_threads(args.threads)
    if args.fp32:
        args.backend = "torch-fp32"
    elif args.backend == "torch" and (args.device not in ("auto", "cpu") or torch.cuda.is_available()):
        args.backend = "auto"  # on a GPU: what auto means there (torch-cuda; torch-fp32 on mps)
    device, backend = checked_device(args)
    model = load_model(args)
    if backend == "torch-fp32":
        model = model.to(device)
    model = load_accelerated(model, backend, [args.preset], threads=args.threads, device=device)
    yaw = found.face.pose.yaw_deg if args.yaw is None else args.yaw
    pitch = found.face.pose.pitch_deg if args.pitch is None else args.pitch
    try:
        tokens = model.reference_tokens(threedpe.prepare_reference(reference))
        adapters = None
        if style is not None and style.adapter_path is not None:
            from ..pipeline.engines.threedpe.packs import PackAdapters

            adapters = [PackAdapters(_library(args), model.weights_sha256).adapter(style.name)]
        planes = model.encode(threedpe.prepare_input(aligned.crop), tokens, adapters=adapters)

        def render(y: float, p: float) -> np.ndarray:
            camera = torch.from_numpy(label_from_degrees(y, p)).float()[None]
            return to_uint8(model.render(planes, camera, args.preset)["image"])

        image = render(yaw, pitch)
        orbit = [render(25 * math.sin(2 * math.pi * i / args.views), 8 * math.cos(2 * math.pi * i / args.views))
                 for i in range(args.views)]
    except (threedpe.ModelInputError, ValueError) as exc:  # StyleError among them
        raise CliError(str(exc)) from None
    result = composite(photo, image, aligned) if args.paste else image
    args.output.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(args.output), cv2.cvtColor(result, cv2.COLOR_RGB2BGR)):
        raise CliError(f"cannot write {args.output}")
    for i, view in enumerate(orbit):
        if not args.video:
            cv2.imwrite(str(args.output.with_name(f"{args.output.stem}_view{i:02d}{args.output.suffix}")),
                        cv2.cvtColor(view, cv2.COLOR_RGB2BGR))
    if args.video and orbit:
        from ..io.encoding import VideoWriter
        from ..io.errors import MediaError

        try:
            with VideoWriter(args.video, orbit[0].shape[1], orbit[0].shape[0], 12) as writer:
                for view in orbit:
                    writer.write(view)
        except MediaError as exc:
            raise CliError(str(exc)) from None
    print(f"wrote {args.output} (yaw {yaw:+.1f}, pitch {pitch:+.1f})"
          + (f" and {len(orbit)} views" if orbit else ""))
    return 0
