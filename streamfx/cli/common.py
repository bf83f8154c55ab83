"""Arguments and helpers shared by several sub-commands."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..pipeline.controls import POSE_MODES, Controls, PoseMode
from ..pipeline.engine import EngineUnavailable, PromptError
from ..pipeline.options import EngineOptions
from ..pipeline.processor import CallerPipeline
from ..pipeline.prompts import ReferenceError, prompt_from_arg
from ..pipeline.select import build_engine
from ..runtime.names import BACKEND_CHOICES, DEVICE_HELP
from . import CliError


def add_device_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", metavar="DEVICE", help=DEVICE_HELP)


def add_runtime_args(parser: argparse.ArgumentParser) -> None:
    """--device, --backend, --threads, --max-fps and --random-weights: how the engine runs."""
    add_device_arg(parser)
    parser.add_argument("--backend", default="auto", choices=BACKEND_CHOICES,
                        help="3DPE execution path (auto: torch-cuda on a GPU; on a CPU measured per machine, "
                             "see streamfx doctor)")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="CPU threads for inference (default: all cores); fewer leave room for the call app")
    parser.add_argument("--max-fps", type=float, default=None, metavar="F",
                        help="filter at most F frames per second (default: every frame the engine can take)")
    parser.add_argument("--batch-window-ms", type=float, default=None, metavar="MS",
                        help="run concurrent callers' frames that arrive within MS as one batch "
                             "(default: 4 on a GPU, off on the CPU; 0: off)")
    parser.add_argument("--random-weights", type=int, default=None, metavar="SEED", nargs="?", const=0,
                        help="run 3DPE on random weights of the official shapes (demos, benchmarks)")


def engine_options_from_args(args: argparse.Namespace, **overrides) -> EngineOptions:
    """The :class:`EngineOptions` the runtime arguments ask for; CliError when out of range."""
    if getattr(args, "threads", None) is not None and args.threads < 1:
        raise CliError("--threads must be at least 1")
    if getattr(args, "max_fps", None) is not None and args.max_fps <= 0:
        raise CliError("--max-fps must be positive")
    device, backend = checked_device(args)
    try:
        return EngineOptions(device=str(device), backend=backend, threads=getattr(args, "threads", None),
                             random_weights_seed=getattr(args, "random_weights", None),
                             batch_window_ms=getattr(args, "batch_window_ms", None), **overrides)
    except ValueError as exc:
        raise CliError(str(exc)) from None


def checked_device(args: argparse.Namespace):
    """(torch device, backend) that ``--device`` and ``--backend`` mean here, checked up front:
    a missing GPU or a backend that cannot load is one line (exit 2), never a quiet CPU fallback."""
    from ..runtime.selection import check_backend, require_tensorrt_package, resolve_backend
    from ..runtime.base import BackendUnavailable
    from ..runtime.devices import DeviceUnavailable, resolve_device

    device = None
    try:
        require_tensorrt_package(getattr(args, "backend", "auto"))
        device = resolve_device(getattr(args, "device", "auto"))
        backend = resolve_backend(getattr(args, "backend", "auto"), device)
        check_backend(backend, device)
    except (DeviceUnavailable, BackendUnavailable) as exc:
        on_gpu_by_default = device is not None and device.type == "cuda" and not device_was_explicit(args)
        raise CliError(f"{exc}{' (pass --device cpu to run on the CPU)' if on_gpu_by_default else ''}") from None
    return device, backend


def device_was_explicit(args: argparse.Namespace) -> bool:
    return getattr(args, "device", "auto") not in (None, "auto")


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
    add_styles_arg(parser)
    add_runtime_args(parser)


def add_styles_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--styles", type=Path, default=None, metavar="DIR",
                        help="folder of named style images (default $STREAMFX_STYLES or ~/.config/streamfx/styles)")


def apply_styles_arg(args: argparse.Namespace) -> None:
    """Make ``--styles`` the styles folder every engine of this process uses."""
    if getattr(args, "styles", None) is not None:
        if not args.styles.is_dir():
            raise CliError(f"--styles {args.styles} is not a folder")
        os.environ["STREAMFX_STYLES"] = str(args.styles.expanduser().resolve())


def controls_from_args(args: argparse.Namespace) -> Controls:
    return Controls(pose=PoseMode(args.pose, args.yaw, args.pitch), quality=args.quality,
                    strength=max(0.0, min(1.0, args.strength)))


def pipeline_from_args(args: argparse.Namespace, **options) -> CallerPipeline:
    """The engine, controls and prompt the engine arguments ask for; CliError if unusable.
    ``options`` override :class:`EngineOptions` fields (``offline=True`` for files)."""
    apply_styles_arg(args)
    engine_options = engine_options_from_args(args, **options)
    try:
        pipeline = CallerPipeline(build_engine(args.engine, engine_options), controls_from_args(args))
        pipeline.set_prompt(prompt_from_arg(args.prompt))
    except (ReferenceError, PromptError, EngineUnavailable, ValueError, KeyError) as exc:
        raise CliError(str(exc).strip("'\"").splitlines()[0] if str(exc) else type(exc).__name__) from None
    return pipeline


def load_model(args: argparse.Namespace):
    """The 3DPE model ``--weights`` / ``--random-weights SEED`` ask for (default: the imported
    weights), float32 on the CPU; a missing or bad checkpoint is one line (CliError)."""
    from ..models import threedpe
    from ..models.checkpoint import CheckpointError

    if getattr(args, "random_weights", None) is not None:
        from ..models.random_weights import random_state_dicts

        return threedpe.from_state(random_state_dicts(args.random_weights))
    try:
        return threedpe.load(args.weights)
    except CheckpointError as exc:
        raise CliError(str(exc)) from None
