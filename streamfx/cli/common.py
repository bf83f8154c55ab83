"""Arguments and helpers shared by several sub-commands."""

from __future__ import annotations

import argparse

from ..pipeline.controls import POSE_MODES, Controls, PoseMode


def add_engine_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--engine", default="auto",
                        help="filter engine: auto (default), 3dpe, mesh or overlay")
    parser.add_argument("--prompt", default=None,
                        help="a preset/style name, or the path of a reference image")
    parser.add_argument("--pose", default="follow", choices=POSE_MODES, help="pose mode")
    parser.add_argument("--yaw", type=float, default=0.0, help="yaw in degrees (offset/fixed modes)")
    parser.add_argument("--pitch", type=float, default=0.0, help="pitch in degrees (offset/fixed modes)")
    parser.add_argument("--quality", default="auto", help="quality preset (auto by default)")
    parser.add_argument("--strength", type=float, default=1.0, help="edit strength 0..1")


def controls_from_args(args: argparse.Namespace) -> Controls:
    return Controls(pose=PoseMode(args.pose, args.yaw, args.pitch), quality=args.quality,
                    strength=max(0.0, min(1.0, args.strength)))
