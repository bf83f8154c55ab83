"""The ``streamfx`` command line.

Each sub-command lives in its own module in this package and exposes
``register(subparsers)``, which adds its parser and sets ``func`` to a callable taking
the parsed arguments and returning an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .. import __version__, log

# Sub-command modules, in the order ``--help`` lists them.
COMMANDS = ("serve", "node", "cluster", "process", "camera", "align", "edit", "styles", "weights", "engines", "bench", "doctor")


class CliError(Exception):
    """An error shown to the user as one line, with exit code 2 (no traceback)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamfx", description="Real-time 3D-aware portrait filter.")
    parser.add_argument("--version", action="version", version=f"streamfx {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logs (-v info, -vv debug)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"{__name__}.{name}":
                continue  # command not built yet
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log.setup(args.verbose)
    try:
        return int(args.func(args) or 0)
    except CliError as exc:
        print(f"streamfx {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
