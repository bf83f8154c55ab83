"""``streamfx camera``: filter a local camera (or a looping file) into a virtual camera,
a preview window and/or a video file."""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from . import CliError
from .common import add_engine_args, pipeline_from_args
from ..io import virtual_camera
from ..io.camera_source import CameraSource
from ..io.camera_watch import WatchedCamera
from ..io.encoding import VideoWriter
from ..io.errors import MediaError
from ..pipeline.pacing import FramePacer
from ..pipeline.timing import StageTimer

PREVIEW_WINDOW = "StreamFX (q to quit)"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "camera", help="filter a local camera into a virtual camera",
        description="Read a camera (index) or a video file (looped at its frame rate), filter it and "
                    "publish it to a virtual camera (--virtual), a window (--preview) and/or a file (--output).")
    parser.add_argument("--source", default="0", help="camera index (0, 1, ...) or a video file (default 0)")
    parser.add_argument("--virtual", action="store_true", help="publish to a virtual camera (pyvirtualcam)")
    parser.add_argument("--virtual-device", default=None, metavar="PATH",
                        help="virtual camera device, e.g. /dev/video10 (Linux); --device is the inference device")
    parser.add_argument("--virtual-backend", default=None, metavar="NAME",
                        help="pyvirtualcam backend: v4l2loopback (Linux), obs, unitycapture (default: the platform's)")
    parser.add_argument("--preview", action="store_true", help="show the original and filtered video in a window")
    parser.add_argument("--output", default=None, metavar="FILE", help="also write the filtered video to FILE")
    parser.add_argument("--whip", default=None, metavar="URL",
                        help="also push the filtered video and the sound to this WHIP ingest (Janus, LiveKit, "
                             "MediaMTX, Cloudflare, another StreamFX)")
    parser.add_argument("--whip-token", default=os.environ.get("STREAMFX_WHIP_TOKEN"), metavar="TOKEN",
                        help="Bearer token for --whip (env STREAMFX_WHIP_TOKEN)")
    parser.add_argument("--mic", default=None, metavar="DEVICE",
                        help="the microphone pushed with --whip from a camera (default: the system's; "
                             "a file source sends its own audio track)")
    parser.add_argument("--no-audio", action="store_true", help="push video only")
    parser.add_argument("--frames", type=int, default=None, metavar="N", help="stop after N frames")
    parser.add_argument("--width", type=int, default=None, help="requested camera width")
    parser.add_argument("--height", type=int, default=None, help="requested camera height")
    parser.add_argument("--fps", type=float, default=None, help="requested camera frame rate")
    add_engine_args(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not (args.virtual or args.preview or args.output or args.whip):
        raise CliError("nowhere to send the video: add --virtual, --preview, --output FILE or --whip URL")
    if args.whip and not args.whip.startswith(("http://", "https://")):
        raise CliError(f"--whip must be an http(s) URL, not {args.whip!r}")
    if args.frames is not None and args.frames < 1:
        raise CliError("--frames must be at least 1")
    if args.preview and sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or
                                                                    os.environ.get("WAYLAND_DISPLAY")):
        raise CliError("--preview needs a display (DISPLAY is not set)")
    try:
        if args.virtual and args.virtual_device is None and args.virtual_backend is None:
            virtual_camera.check_available()  # before touching the camera: the likelier problem
        pipeline = pipeline_from_args(args)
    except MediaError as exc:
        raise CliError(str(exc)) from None
    try:
        source = _open_source(args)
        try:
            frames, seconds = _loop(args, source, pipeline)
        finally:
            source.close()
    except MediaError as exc:
        raise CliError(str(exc)) from None
    finally:
        pipeline.close()
    ms = pipeline.stats.stage_ms.get("engine")
    mean = f", engine {np.mean(ms):.1f} ms/frame" if ms else ""
    print(f"filtered {frames} frames in {seconds:.1f} s{mean} (engine {pipeline.engine.name})")
    return 0


def _loop(args: argparse.Namespace, source: CameraSource, pipeline) -> tuple[int, float]:
    width, height = source.size
    vcam = virtual_camera.VirtualCamera(width, height, source.fps, args.virtual_device,
                                        args.virtual_backend) if args.virtual else None
    writer = VideoWriter(args.output, width, height, source.fps) if args.output else None
    push = _push(args, source) if args.whip else None
    started = time.monotonic()
    frames = 0
    pacer = FramePacer(args.max_fps)
    try:
        while args.frames is None or frames < args.frames:
            pacer.wait()
            frame, live = source.read() if isinstance(source, WatchedCamera) else (source.read(), True)
            read_at = time.perf_counter()
            pacer.started()
            if live:
                timer = StageTimer()
                out = pipeline.process(frame, timer)
                pipeline.stats.record(timer, sum(timer.ms.values()))
            else:
                out = frame  # the camera is gone: its "camera lost" still, unfiltered
            frames += 1
            pipeline.stats.frames_in = pipeline.stats.frames_out = frames
            if vcam is not None:
                vcam.send(out)
            if writer is not None:
                writer.write(out, None if source.is_file else time.monotonic() - started)
            if push is not None:
                push.send(out, read_at)
                if push.status.state == "refused" and not (vcam or writer or args.preview):
                    raise CliError(f"WHIP push to {args.whip} refused: {push.status.error}")
            if args.preview and not _show(frame, out):
                break
    except KeyboardInterrupt:
        pass
    except BaseException:
        if writer is not None:
            writer.abort()
            writer = None
        raise
    finally:
        if writer is not None:
            writer.close()
        if vcam is not None:
            vcam.close()
        if push is not None:
            push.close()
        if args.preview:
            import cv2
            cv2.destroyAllWindows()
    return frames, time.monotonic() - started


def _open_source(args: argparse.Namespace):
    """A file as it is; a camera watched, so an unplugged one shows a still and comes back."""
    def open_camera() -> CameraSource:
        return CameraSource(args.source, width=args.width, height=args.height, fps=args.fps)

    first = open_camera()
    if first.is_file:
        return first
    opened = iter([first])
    return WatchedCamera(lambda: next(opened, None) or open_camera())


def _push(args: argparse.Namespace, source: CameraSource):
    """The WHIP publisher, with the file's sound or the microphone (none if it cannot open)."""
    from ..whip.camera_push import AudioFeed, CameraPush, has_audio

    audio, is_file = None, source.is_file
    if not args.no_audio:
        if is_file:
            audio = args.source if has_audio(args.source) else None
        else:
            try:
                AudioFeed.open_mic(args.mic).close()
                audio = args.mic or ""
            except MediaError as exc:
                print(f"streamfx: pushing video only: {exc}", file=sys.stderr)
    return CameraPush(args.whip, args.whip_token, audio, is_file)


def _show(original: np.ndarray, filtered: np.ndarray) -> bool:
    """Show both frames side by side; False when the user closes the window (q / Esc)."""
    import cv2
    cv2.imshow(PREVIEW_WINDOW, cv2.cvtColor(np.hstack([original, filtered]), cv2.COLOR_RGB2BGR))
    return (cv2.waitKey(1) & 0xFF) not in (ord("q"), 27)
