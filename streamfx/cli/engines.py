"""``streamfx engines``: build and list the exported 3DPE graphs in ``engines/``.

* ``streamfx engines build [--backend onnxruntime|openvino|tensorrt] [--preset NAME ...]
  [--weights PATH | --random-weights]`` exports the reference encoder, the encoder and one
  renderer per preset to ONNX (static shapes, opset 17), builds them for the backend
  (TensorRT: FP16 engines with a timing cache), checks each against PyTorch, and records
  them in ``engines/manifest.json``. Already built graphs are reused.
* ``streamfx engines list`` shows what the manifest holds, the folder's size and its cap.
* ``streamfx engines prune [--max-size SIZE] [--keep-weights SHA | --all] [--dry-run]`` drops
  entries whose file is gone, deletes files no entry owns (older than an hour) and then the
  least recently used artefacts until the folder fits the cap (``$STREAMFX_ENGINES_MAX_GB``
  GiB, default 8). ``--keep-weights`` first removes what other weights built; ``--all`` empties
  the cache (README.md stays).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from . import CliError
from .common import add_device_arg

BACKENDS = ("onnxruntime", "openvino", "tensorrt")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("engines", help="build, list and prune exported 3DPE graphs (ONNX/OpenVINO/TensorRT)")
    sub = parser.add_subparsers(dest="engines_command", required=True, metavar="ACTION")

    build = sub.add_parser("build", help="export, build and verify the 3DPE graphs for a backend")
    build.add_argument("--backend", default="onnxruntime", choices=BACKENDS, help="runtime (default onnxruntime)")
    build.add_argument("--preset", action="append", default=None, metavar="NAME",
                       help="renderer preset to build (repeatable; default: all presets)")
    build.add_argument("--graph", action="append", default=None, choices=("reference", "encoder", "renderer"),
                       help="only these graphs (repeatable; default: all)")
    weights = build.add_mutually_exclusive_group()
    weights.add_argument("--weights", type=Path, default=None,
                         help="official 3dpe.pt or imported weights (default: the imported weights)")
    weights.add_argument("--random-weights", action="store_true",
                         help="random weights of the official shapes (for trying the tool chain)")
    build.add_argument("--precision", default=None,
                       help="OpenVINO inference precision: bf16 (default) or f32")
    build.add_argument("--no-verify", action="store_true", help="skip the check against PyTorch")
    add_device_arg(build)
    build.add_argument("--engines-dir", type=Path, default=None, help="engine cache folder (default: engines/)")
    build.set_defaults(func=run_build)

    ls = sub.add_parser("list", help="list the built graphs in the engine cache")
    ls.add_argument("--engines-dir", type=Path, default=None, help="engine cache folder (default: engines/)")
    ls.set_defaults(func=run_list)

    prune = sub.add_parser("prune", help="remove stale, orphaned and least-recently-used engines")
    prune.add_argument("--max-size", default=None, metavar="SIZE",
                       help="size cap: bytes or 500M, 8G, 2.5G (binary units; default: $STREAMFX_ENGINES_MAX_GB "
                            "GiB, else 8 GiB; with STREAMFX_ENGINES_MAX_GB=0 only stale files go)")
    which = prune.add_mutually_exclusive_group()
    which.add_argument("--keep-weights", action="append", default=None, metavar="SHA",
                       help="first remove everything not built from these weights (a digest prefix from "
                            "`streamfx engines list`; repeatable: each graph part has its own digest)")
    which.add_argument("--all", action="store_true", help="empty the cache (README.md stays)")
    prune.add_argument("--dry-run", action="store_true", help="only print what would be removed")
    prune.add_argument("--engines-dir", type=Path, default=None, help="engine cache folder (default: engines/)")
    prune.set_defaults(func=run_prune)


def _load_model(args: argparse.Namespace):
    import torch

    from ..models import random_weights, threedpe
    from ..models.checkpoint import CheckpointError

    if args.random_weights:
        return threedpe.from_state(random_weights.random_state_dicts(0), dtype=torch.float32)
    try:
        return threedpe.load(args.weights, dtype=torch.float32)
    except CheckpointError as exc:
        raise CliError(f"{exc} (or pass --random-weights to try the tool chain)") from None


def _selected_graphs(args: argparse.Namespace) -> list[str]:
    from ..models.renderer.errors import UnknownPresetError
    from ..runtime.graphs import RENDERER_PREFIX, graph_names

    try:
        names = graph_names(args.preset)
    except UnknownPresetError as exc:
        raise CliError(str(exc)) from None
    if args.graph:
        names = [n for n in names if (n.split("-")[0] if n.startswith(RENDERER_PREFIX) else n) in args.graph]
    return names


def run_build(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..runtime.base import BackendUnavailable, get_backend
    from ..runtime.builder import GraphBuilder, VerificationError
    from ..runtime.engine_cache import EngineCache

    graphs = _selected_graphs(args)
    options = {}
    if args.precision:
        if args.backend != "openvino":
            raise CliError("--precision applies to --backend openvino only")
        options["precision"] = args.precision
    from ..runtime.devices import DeviceUnavailable, resolve_device

    from ..runtime.selection import require_tensorrt_package

    try:
        require_tensorrt_package(args.backend)  # missing, or not TensorRT 10: one line, before the device
        device = resolve_device(args.device)
        if (args.backend == "tensorrt") != (device.type == "cuda"):
            raise BackendUnavailable(f"--backend {args.backend} builds for "
                                     f"{'an NVIDIA GPU (--device cuda)' if args.backend == 'tensorrt' else 'the CPU'}, "
                                     f"not --device {device}")
        if args.backend == "tensorrt":
            options["device"] = device  # engines are built (and timed) on the GPU --device names
        get_backend(args.backend, **options)  # fail fast, before loading weights
    except (BackendUnavailable, DeviceUnavailable) as exc:
        raise CliError(str(exc)) from None
    model = _load_model(args)
    cache = EngineCache(args.engines_dir) if args.engines_dir else EngineCache()
    bar = tqdm(total=len(graphs), desc=f"engines ({args.backend})", unit="graph", file=sys.stderr)
    builder = GraphBuilder(model, args.backend, cache, progress=lambda m: bar.set_postfix_str(m), **options)
    rows = []
    try:
        for graph in graphs:
            start = time.perf_counter()
            result = builder.build(graph, check=not args.no_verify)
            rows.append((graph, result, time.perf_counter() - start))
            bar.update(1)
    except (BackendUnavailable, VerificationError) as exc:
        raise CliError(str(exc)) from None
    finally:
        bar.close()
    for graph, result, seconds in rows:
        worst = max(result.errors.values()) if result.errors else None
        check = "not verified" if worst is None else f"max rel. error {worst:.1e}"
        state = "reused" if result.reused else "built"
        trt = "TensorRT-ready" if not result.problems else f"TensorRT problems: {'; '.join(result.problems)}"
        print(f"{graph:<20} {state:<6} {seconds:6.1f} s  {check:<24} {trt}  {result.artefact.name}")
    print(f"engine cache: {cache.root}")
    return 0


def _cache(args: argparse.Namespace):
    from ..runtime.engine_cache import EngineCache

    return EngineCache(args.engines_dir) if args.engines_dir else EngineCache()


def _env_cap() -> int | None:
    from ..runtime.engine_prune import max_bytes_from_env

    try:
        return max_bytes_from_env()
    except ValueError as exc:
        raise CliError(str(exc)) from None


def _cap_text(cap: int | None) -> str:
    from ..runtime.engine_prune import MAX_GB_ENV, human_size

    return f"cap {human_size(cap)}" if cap is not None else f"no cap ({MAX_GB_ENV}=0)"


def run_list(args: argparse.Namespace) -> int:
    import os
    import time

    from ..runtime.engine_prune import MAX_GB_ENV, human_size, weights_of

    cache = _cache(args)
    cap = _env_cap()
    entries = cache.manifest().get("entries", {})
    total = sum(p.stat().st_size for p in cache.root.iterdir() if p.is_file())
    footer = f"size: {human_size(total)}, {_cap_text(cap)} (set by {MAX_GB_ENV}; `streamfx engines prune` enforces it)"
    if not entries:
        print(f"no engines built in {cache.root} (run: streamfx engines build)")
        print(footer)
        return 0
    weights = weights_of(entries)
    print(f"{'graph':<20} {'kind':<12} {'size':>11}  {'built':<19}  {'last used':<16}  {'weights':<12}  fingerprint")
    for slug, entry in sorted(entries.items(), key=lambda kv: (kv[1]["key"]["graph"], kv[1]["key"]["backend"])):
        key = entry["key"]
        path = cache.root / entry["file"]
        exists = path.exists()
        size = f"{path.stat().st_size / 2**20:7.1f} MiB" if exists else "  missing  "
        used = time.strftime("%Y-%m-%d %H:%M", time.localtime(os.path.getmtime(path))) if exists else "-"
        kind = "onnx export" if key["backend"] == "onnx" else key["backend"]
        print(f"{key['graph']:<20} {kind:<12} {size}  {entry.get('built', '?'):<19}  {used:<16}  "
              f"{(weights[slug] or '?')[:12]:<12}  {key['fingerprint']}")
    print(f"manifest: {cache.manifest_path} ({len(entries)} entries)")
    print(footer)
    return 0


def run_prune(args: argparse.Namespace) -> int:
    from ..runtime.engine_prune import human_size, parse_size

    if args.all and args.max_size is not None:
        raise CliError("--all empties the cache; it takes no --max-size")
    try:
        cap = None if args.all else parse_size(args.max_size) if args.max_size is not None else _env_cap()
    except ValueError as exc:
        raise CliError(f"--max-size: {exc}") from None
    for sha in args.keep_weights or ():
        if len(sha) < 4 or any(c not in "0123456789abcdefABCDEF" for c in sha):
            raise CliError(f"--keep-weights {sha!r}: give at least 4 hex digits of a weights digest "
                           "(see: streamfx engines list)")
    cache = _cache(args)
    try:
        report = cache.prune(cap, dry_run=args.dry_run, keep_weights=args.keep_weights or (), everything=args.all)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    verb = "would remove" if args.dry_run else "removed"
    for item in report.removed:
        what = "  (entry of a missing file)" if item.reason == "missing" else _entries_text(item.entries)
        print(f"{verb} {item.reason:<7} {human_size(item.bytes):>10}  {item.name}{what}")
    if not report.removed:
        print(f"nothing to remove in {cache.root}")
    print(f"size before: {human_size(report.bytes_before)}")
    print(f"size after:  {human_size(report.bytes_after)}"
          + ("" if args.all else f" ({_cap_text(cap)}{', still above it' if report.over_cap else ''})"))
    return 0


def _entries_text(slugs: tuple[str, ...]) -> str:
    """``  (encoder: onnx, openvino)`` from slugs ``<graph>.<backend>.<fingerprint>.<hash>``."""
    if not slugs:
        return ""
    graphs = dict.fromkeys(s.split(".")[0] for s in slugs)
    backends = dict.fromkeys(s.split(".")[1] for s in slugs)
    return f"  ({', '.join(graphs)}: {', '.join(backends)})"
