"""``streamfx process INPUT -o OUTPUT``: run the filter over a video file."""

from __future__ import annotations

import argparse
import sys

from . import CliError
from .common import add_engine_args, pipeline_from_args
from ..io.encoding import FORMATS
from ..io.errors import MediaError
from ..io.video_file import process_video


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "process", help="filter a video file",
        description="Run the filter over a video file; keeps frame rate, size and audio. "
                    f"The output extension picks the format: {', '.join(FORMATS)}.")
    parser.add_argument("input", help="input video file")
    parser.add_argument("-o", "--output", required=True, help="output video file (overwritten)")
    parser.add_argument("--no-audio", action="store_true", help="leave the audio out")
    parser.add_argument("--max-frames", type=int, default=None, metavar="N", help="stop after N frames")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no summary")
    add_engine_args(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.max_frames is not None and args.max_frames < 1:
        raise CliError("--max-frames must be at least 1")
    pipeline = pipeline_from_args(args)
    try:
        result = process_video(args.input, args.output, pipeline, audio=not args.no_audio,
                               max_frames=args.max_frames, progress=not args.quiet and sys.stderr.isatty())
    except MediaError as exc:
        raise CliError(str(exc)) from None
    finally:
        pipeline.close()
    if not args.quiet:
        print(f"processed {result.summary()} (engine {pipeline.engine.name})")
    return 0
