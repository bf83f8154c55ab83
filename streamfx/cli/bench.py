"""``streamfx bench``: the whole pipeline on the head-turn test video, per stage."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..pipeline.controls import POSE_MODES
from . import CliError
from .common import add_runtime_args, engine_options_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmark the whole pipeline (per-stage p50/p95/p99)")
    p.add_argument("--engine", action="append", default=None,
                   help="engine(s) to measure (repeatable; default: overlay and the auto engine)")
    p.add_argument("--preset", default="auto", help="3DPE quality preset (auto adapts)")
    p.add_argument("--pose", default="follow", choices=POSE_MODES, help="pose mode (frontal re-poses every frame)")
    p.add_argument("--prompt", default=None, help="a reference image or a preset name, for all engines")
    p.add_argument("--video", type=Path, default=None, help="input video (default: the head-turn test clip)")
    p.add_argument("--sizes", default="640x480,1280x720")
    p.add_argument("--seconds", type=float, default=6.0, help="real-time seconds per engine and size")
    p.add_argument("--json", type=Path, default=Path("benchmarks/results/pipeline.json"))
    p.add_argument("--png", type=Path, default=None, help="plot of per-stage time against the budget")
    p.add_argument("--browser", action="store_true", help="also measure the browser round trip in Chromium")
    p.add_argument("--offline", action="store_true",
                   help="process every frame in order, as streamfx process does (no frame is dropped)")
    p.add_argument("--keyframe-every", type=int, default=1, metavar="N", help="with --offline: encode every Nth frame")
    add_runtime_args(p)
    p.set_defaults(func=run)


def _default_video() -> Path:
    here = Path(__file__).resolve().parents[2]
    for base in (Path.cwd(), here):
        candidate = base.parent / "shared" / "testdata" / "video" / "head_turn_1.mp4"
        if candidate.exists():
            return candidate
    raise CliError("no --video given and the test clip ../shared/testdata/video/head_turn_1.mp4 is not here")


def _engine(name: str, options):
    from dataclasses import replace

    from ..pipeline import engine as registry
    from ..pipeline.engine import EngineUnavailable
    from ..pipeline.select import build_engine, resolve

    name = resolve(name, options)
    if name == "3dpe" and registry.unusable_reason("3dpe", options) is not None:
        print("3dpe: no imported weights, using random weights of the official shapes")
        options = replace(options, random_weights_seed=0)
    try:
        return build_engine(name, options)
    except (EngineUnavailable, ValueError) as exc:
        raise CliError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    import av

    from ..pipeline.bench import plot, run as bench_run
    from ..pipeline.controls import Controls, PoseMode
    from ..pipeline.engine import PromptError
    from ..pipeline.prompts import ReferenceError, prompt_from_arg
    from ..pipeline.processor import CallerPipeline

    video = args.video or _default_video()
    try:
        with av.open(str(video)) as container:
            stream = container.streams.video[0]
            fps = float(stream.average_rate or 25)
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    except (av.error.FFmpegError, OSError, IndexError) as exc:
        raise CliError(f"cannot read {video}: {exc}") from None
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    options = engine_options_from_args(args, offline=args.offline, keyframe_every=args.keyframe_every)
    results = []
    for name in args.engine or ["overlay", "auto"]:
        engine = _engine(name, options)
        for size in sizes:
            pipeline = CallerPipeline(engine, Controls(quality=args.preset, pose=PoseMode(args.pose)))
            try:
                pipeline.set_prompt(prompt_from_arg(args.prompt))
            except (ReferenceError, PromptError) as exc:
                raise CliError(f"{engine.name}: {exc}") from None
            outcome = bench_run(pipeline, frames, fps, args.seconds, size, offline=args.offline)
            pipeline.close()
            result = outcome.as_dict()
            results.append(result)
            stages = "  ".join(f"{k} {v.get('p50', 0):.1f}/{v.get('p95', 0):.1f}" for k, v in result["stages_ms"].items())
            print(f"{outcome.headline()}\n{'':19s}stages p50/p95 ms: {stages}")
        engine.close()
    data = {"benchmark": "pipeline", "video": str(video), "budget_ms": 40.0, "pose": args.pose,
            "prompt": args.prompt, "offline": args.offline, "results": results}
    if args.browser:
        from benchmarks.browser_roundtrip import main as browser_main  # noqa: PLC0415 (dev checkout only)

        out = args.json.with_name(args.json.stem + "_browser.json")
        browser_main(["--sizes", args.sizes, "--json", str(out)])
        data["browser"] = json.loads(out.read_text())
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(data, indent=2))
    if args.png:
        plot(results, args.png)
    print(f"wrote {args.json}" + (f" and {args.png}" if args.png else ""))
    return 0
