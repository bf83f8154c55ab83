"""``streamfx camera``: filter a local camera (or a looping file) into a virtual camera, a
virtual microphone in sync, a file, a WHIP push and/or a window, with a control page.

The loop is :mod:`streamfx.camera.loop`; the page :mod:`streamfx.camera.page`; the settings
that outlive a run :mod:`streamfx.camera.settings`."""

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
from ..pipeline.engine import PromptError
from ..pipeline.prompts import ReferenceError, prompt_from_arg
from ..server.control import MAX_MIC_OFFSET_MS
from ..camera.loop import CameraLoop, Outputs
from ..camera.settings import REFERENCE, CameraSettings, SettingsStore, with_flags

PREVIEW_WINDOW = "StreamFX (q to quit)"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "camera", help="filter a local camera into a virtual camera",
        description="Read a camera (index) or a video file (looped at its frame rate), filter it and "
                    "publish it to a virtual camera (--virtual), a window (--preview), a file (--output) and/or a "
                    "WHIP ingest (--whip), with the microphone in sync (--virtual-mic). A control page "
                    "(its URL is printed; --no-ui turns it off) shows both videos and changes the settings, "
                    "which are kept for the next start.")
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
                        help="the microphone for --virtual-mic and --whip (default: the system's; with --whip, "
                             "a file source sends its own audio track)")
    parser.add_argument("--no-audio", action="store_true", help="push video only")
    parser.add_argument("--virtual-mic", action="store_true",
                        help="play the microphone, delayed to match the filtered video, into a virtual "
                             "microphone ('StreamFX Microphone'; pick it in the call app)")
    parser.add_argument("--virtual-mic-device", default=None, metavar="NAME",
                        help="play into this existing output instead of creating 'StreamFX Microphone' "
                             "(Windows: 'CABLE Input' of VB-CABLE; macOS: BlackHole)")
    parser.add_argument("--mic-offset", type=float, default=0.0, metavar="MS",
                        help="added to the virtual microphone's measured delay, -200..200 ms, for a call "
                             "app's own latency (also on the control page)")
    parser.add_argument("--no-ui", action="store_true", help="do not serve the control page")
    parser.add_argument("--ui-host", default="127.0.0.1",
                        help="control page address (default 127.0.0.1; another needs the printed token)")
    parser.add_argument("--ui-port", type=int, default=8766, help="control page port (default 8766; "
                                                                       "busy: any free one, printed)")
    parser.add_argument("--ui-token", default=os.environ.get("STREAMFX_UI_TOKEN"), metavar="TOKEN",
                        help="control page token (env STREAMFX_UI_TOKEN; generated for a non-loopback --ui-host)")
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
    if not -MAX_MIC_OFFSET_MS <= args.mic_offset <= MAX_MIC_OFFSET_MS:
        raise CliError(f"--mic-offset must be within ±{MAX_MIC_OFFSET_MS:g} ms")
    store = SettingsStore()
    settings = with_flags(store.load(), _flags(args))
    if store.problem:
        print(f"streamfx: {store.problem}", file=sys.stderr)
    try:
        if args.virtual and args.virtual_device is None and args.virtual_backend is None:
            virtual_camera.check_available()  # before touching the camera: the likelier problem
        pipeline = pipeline_from_args(args)
    except MediaError as exc:
        raise CliError(str(exc)) from None
    try:
        _apply_saved(pipeline, settings, store, explicit_prompt=args.prompt is not None)
        source = _open_source(args)
        try:
            frames, seconds = _run_loop(args, source, pipeline, store, settings)
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


def _flags(args: argparse.Namespace) -> dict:
    return {"prompt": args.prompt, "pose": args.pose, "yaw": args.yaw, "pitch": args.pitch, "quality": args.quality,
            "strength": max(0.0, min(1.0, args.strength)), "mic_offset_ms": args.mic_offset}


def _apply_saved(pipeline, settings: CameraSettings, store: SettingsStore, explicit_prompt: bool) -> None:
    """The saved (or flagged) controls; the saved prompt unless --prompt was given. A saved
    prompt or quality this engine lacks is left out with one line."""
    controls = settings.controls()
    if controls.quality not in pipeline.engine.qualities():
        controls.quality = "auto"
    controls.prompt = pipeline.controls.prompt
    pipeline.controls = controls
    if explicit_prompt or settings.prompt is None:
        return
    try:
        saved = str(store.reference_path) if settings.prompt == REFERENCE else settings.prompt
        pipeline.set_prompt(prompt_from_arg(saved))
    except (ReferenceError, PromptError, ValueError, KeyError) as exc:
        print(f"streamfx: the saved prompt {settings.prompt!r} is not available here ({exc}); "
              "starting without it", file=sys.stderr)


def _run_loop(args: argparse.Namespace, source, pipeline, store: SettingsStore,
              settings: CameraSettings) -> tuple[int, float]:
    width, height = source.size
    outputs = Outputs(window=_show if args.preview else None)
    loop = CameraLoop(source, pipeline, outputs, args.max_fps, args.frames)
    try:
        if args.virtual:
            outputs.virtual = virtual_camera.KeptVirtualCamera(lambda: virtual_camera.VirtualCamera(
                width, height, source.fps, args.virtual_device, args.virtual_backend))
            outputs.names.append(f"virtual camera {args.virtual_device or args.virtual_backend or ''}".strip())
        if args.output:
            outputs.writer = VideoWriter(args.output, width, height, source.fps)
            outputs.names.append(f"file {args.output}")
        if args.whip:
            outputs.push = _push(args, source)
            outputs.names.append(f"WHIP {args.whip}")
            loop.on_frame = lambda: _check_push(args, outputs)
        if args.virtual_mic:
            outputs.mic = _virtual_mic(args, settings.mic_offset_ms)
            outputs.names.append(f"virtual microphone {outputs.mic.status().get('device') or ''}".strip())
        if not args.no_ui:
            outputs.page = _page(args, pipeline, store, loop, outputs.mic)
            print(f"control page: {outputs.page.url}", flush=True)
        try:
            return loop.run()
        except KeyboardInterrupt:
            return loop.frames, time.monotonic() - loop.started
    except BaseException:
        if outputs.writer is not None:
            outputs.writer.abort()
            outputs.writer = None
        raise
    finally:
        _close(outputs, args.preview)


def _close(outputs: Outputs, preview: bool) -> None:
    for part in (outputs.page, outputs.writer, outputs.virtual, outputs.push, outputs.mic):
        if part is not None:
            part.close()
    if preview:
        import cv2
        cv2.destroyAllWindows()


def _check_push(args: argparse.Namespace, outputs: Outputs) -> None:
    push = outputs.push
    if push.status.state == "refused" and not (outputs.virtual or outputs.writer or outputs.window):
        raise CliError(f"WHIP push to {args.whip} refused: {push.status.error}")


def _page(args: argparse.Namespace, pipeline, store: SettingsStore, loop: CameraLoop, mic):
    from ..camera.page import ControlPage
    from ..server.config import ServerConfig
    from ..server.security import new_token

    exposed = args.ui_host not in ("127.0.0.1", "localhost", "::1")
    token = args.ui_token or (new_token() if exposed else None)
    config = ServerConfig(host=args.ui_host, port=args.ui_port, token=token)
    try:
        return ControlPage(pipeline, config, store, status=loop.status, mic=mic)
    except OSError as exc:
        raise CliError(f"cannot serve the control page on {args.ui_host}:{args.ui_port} ({exc}); "
                       "pass --ui-port N or --no-ui") from None


def _virtual_mic(args: argparse.Namespace, offset_ms: float):
    from ..io.virtual_mic import VirtualMicrophone

    mic = VirtualMicrophone(mic=args.mic, device=args.virtual_mic_device, offset_ms=offset_ms)
    mic.start()
    return mic


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
