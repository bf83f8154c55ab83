"""``streamfx weights``: import the official 3DPE checkpoint, show what is installed.

* ``streamfx weights import PATH/3dpe.pt [--out DIR]`` reads the checkpoint with the
  weights-only loader, validates every key and shape, and writes ``3dpe.safetensors`` and
  ``manifest.json`` (sha256, source, shapes) into DIR (default: ``$STREAMFX_HOME/weights``
  or ``~/.local/share/streamfx/weights``).
* ``streamfx weights info [DIR]`` says whether weights are imported and summarises them.
* ``streamfx weights random OUT.pt [--seed S]`` writes random weights of the official format
  and shapes, for demos, benchmarks and tests; they import like the real checkpoint.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from . import CliError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("weights", help="import and inspect the 3DPE weights")
    sub = parser.add_subparsers(dest="weights_command", required=True, metavar="ACTION")

    imp = sub.add_parser("import", help="validate an official 3dpe.pt and convert it to safetensors")
    imp.add_argument("path", type=Path, help="the official checkpoint (3dpe.pt)")
    imp.add_argument("--out", type=Path, default=None, help="output directory (default: the user weights dir)")
    imp.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    imp.set_defaults(func=run_import)

    info = sub.add_parser("info", help="show the imported weights")
    info.add_argument("dir", type=Path, nargs="?", default=None, help="weights directory (default: the user weights dir)")
    info.set_defaults(func=run_info)

    rnd = sub.add_parser("random", help="write random weights in the official 3dpe.pt format (demos, tests)")
    rnd.add_argument("path", type=Path, help="output file, e.g. random-3dpe.pt (overwritten)")
    rnd.add_argument("--seed", type=int, default=0, help="random seed (default 0); the same seed gives the same file")
    rnd.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    rnd.set_defaults(func=run_random)


def run_random(args: argparse.Namespace) -> int:
    import sys

    from tqdm import tqdm

    from ..models.random_weights import save_official

    if args.path.exists() and args.path.is_dir():
        raise CliError(f"{args.path} is a folder; give a file name such as {args.path / 'random-3dpe.pt'}")
    with tqdm(desc="random 3dpe weights", unit="tensor", leave=False,
              disable=args.quiet or not sys.stderr.isatty()) as bar:
        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        try:
            path = save_official(args.path, seed=args.seed, progress=progress)
        except OSError as exc:
            raise CliError(f"cannot write {args.path}: {exc.strerror or exc}") from None
    if not args.quiet:
        print(f"wrote {path} ({path.stat().st_size / 2**20:.0f} MiB, seed {args.seed}); "
              f"import it with: streamfx weights import {path}")
    return 0


def run_import(args: argparse.Namespace) -> int:
    from ..models.checkpoint import CheckpointError, import_official

    try:
        out = import_official(args.path, args.out, progress=not args.quiet)
    except CheckpointError as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        raise CliError(f"cannot write the imported weights: {exc}") from None
    manifest = json.loads((out / "manifest.json").read_text())
    params = manifest["parameters"]
    print(f"imported {args.path} -> {out / manifest['file']} "
          f"(encoder {params['encoder'] / 1e6:.1f} M, renderer {params['renderer'] / 1e6:.2f} M parameters, "
          f"sha256 {manifest['sha256'][:16]})")
    return 0


def run_info(args: argparse.Namespace) -> int:
    from ..models.checkpoint import GET_WEIGHTS_HINT, MANIFEST_FILE, default_weights_dir

    root = args.dir or default_weights_dir()
    manifest_path = root / MANIFEST_FILE
    if not manifest_path.is_file():
        raise CliError(f"no weights imported in {root}; {GET_WEIGHTS_HINT}")
    try:
        manifest = json.loads(manifest_path.read_text())
        print(f"{root / manifest['file']}: {manifest['format']}, {manifest['bytes'] / 2**20:.0f} MiB, "
              f"sha256 {manifest['sha256'][:16]}, imported {manifest['imported_at']} "
              f"from {manifest['source']['name']} (sha256 {manifest['source']['sha256'][:16]})")
    except (ValueError, KeyError, TypeError) as exc:
        raise CliError(f"{manifest_path}: unreadable manifest ({exc})") from None
    return 0
