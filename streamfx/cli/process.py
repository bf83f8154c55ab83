"""``streamfx process INPUT -o OUTPUT``: run the filter over a video file.

Files are processed offline: every frame in order, and with the 3DPE engine every frame
(or every Nth, ``--keyframe-every N``) is encoded in the frame path at a fixed quality, so
two runs give identical frames. The keyframe worker of live calls is not used.
"""

from __future__ import annotations

import argparse
import sys

from . import CliError
from .common import add_engine_args, pipeline_from_args
from ..io.encoding import FORMATS
from ..io.errors import MediaError
from ..io.video_file import process_video
from ..pipeline.pacing import FramePacer


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "process", help="filter a video file",
        description="Run the filter over a video file; keeps frame rate, size and audio. "
                    f"The output extension picks the format: {', '.join(FORMATS)}. "
                    "Every frame is processed; two runs give identical frames.")
    parser.add_argument("input", help="input video file")
    parser.add_argument("-o", "--output", required=True, help="output video file (overwritten)")
    parser.add_argument("--no-audio", action="store_true", help="leave the audio out")
    parser.add_argument("--max-frames", type=int, default=None, metavar="N", help="stop after N frames")
    parser.add_argument("--keyframe-every", type=int, default=1, metavar="N",
                        help="3dpe: encode every Nth frame and reuse its smoothed tri-planes in between (default 1)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no summary")
    add_engine_args(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.max_frames is not None and args.max_frames < 1:
        raise CliError("--max-frames must be at least 1")
    if args.keyframe_every < 1:
        raise CliError("--keyframe-every must be at least 1")
    pipeline = pipeline_from_args(args, offline=True, keyframe_every=args.keyframe_every)
    pacer = FramePacer(args.max_fps)

    def filter_frame(rgb, timestamp_s):
        pacer.wait()
        pacer.started()
        return pipeline.filter_at(rgb, timestamp_s)

    try:
        result = process_video(args.input, args.output, filter_frame, audio=not args.no_audio,
                               max_frames=args.max_frames, progress=not args.quiet and sys.stderr.isatty())
    except MediaError as exc:
        raise CliError(str(exc)) from None
    finally:
        pipeline.close()
    if not args.quiet:
        print(f"processed {result.summary()} (engine {pipeline.engine.name})")
    return 0
