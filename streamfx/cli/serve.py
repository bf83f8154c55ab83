"""``streamfx serve``: start the WebRTC filter server."""

from __future__ import annotations

import argparse
import ipaddress
import os

from aiohttp import web

from ..server import ServerConfig, create_app
from ..server.config import Limits
from ..server.security import new_token
from . import CliError
from .common import add_runtime_args, add_styles_arg, apply_styles_arg, engine_options_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="start the WebRTC filter server (the browser page)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1; others need a token)")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--token", default=os.environ.get("STREAMFX_TOKEN"),
                   help="access token (env STREAMFX_TOKEN); generated when --host is not loopback")
    p.add_argument("--engine", default="auto", help="auto (default), 3dpe, mesh or overlay")
    p.add_argument("--ice-loopback", action="store_true", default=os.environ.get("STREAMFX_ICE_LOOPBACK") == "1",
                   help="offer 127.0.0.1 ICE candidates (env STREAMFX_ICE_LOOPBACK=1)")
    p.add_argument("--ice-server", action="append", default=[], metavar="URL",
                   help="a STUN/TURN URL (repeatable); none by default")
    p.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                   help="another page origin allowed to connect (repeatable)")
    p.add_argument("--max-callers", type=int, default=4)
    add_styles_arg(p)
    add_runtime_args(p)
    p.set_defaults(func=run)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _chosen_engine(requested: str, options) -> str:
    """The engine ``requested`` resolves to; a one-line error when it cannot run here."""
    from ..pipeline import engine as registry
    from ..pipeline.select import resolve

    try:
        name = resolve(requested, options)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    reason = registry.unusable_reason(name, options)
    if reason is not None:
        raise CliError(reason)
    return name


def runtime_line(options) -> str:
    """One line: how 3DPE will run here and why (the capability probe's choice)."""
    from ..runtime.selection import plan_for, resolve_backend
    from ..runtime.threads import default_threads

    threads = options.threads or default_threads()  # applied when the engine is built
    backend = resolve_backend(options.backend, options.device)
    if options.device != "cpu":
        import torch

        from ..runtime.devices import describe_device

        gpu = describe_device(torch.device(options.device))
        return (f"3dpe runtime: {backend} on {gpu['device']} ({gpu['name']}); precision measured at start; "
                "CUDA graphs captured before the first call")
    plan = plan_for(backend)
    stages = ", ".join(f"{s} {getattr(plan, s)}" for s in ("vit", "encoder", "decoder", "superres"))
    return f"3dpe runtime: {backend} on the CPU, {threads} threads, {stages} ({plan.reason})"


def run(args: argparse.Namespace) -> int:
    token = args.token
    if not _is_loopback(args.host) and not token:
        token = new_token()
    if args.max_callers < 1:
        raise CliError("--max-callers must be at least 1")
    apply_styles_arg(args)
    options = engine_options_from_args(args)
    engine = _chosen_engine(args.engine, options)
    config = ServerConfig(host=args.host, port=args.port, token=token, ice_loopback=args.ice_loopback,
                          ice_servers=tuple(args.ice_server), allowed_origins=tuple(args.allow_origin),
                          engine=engine, engine_options=options, max_fps=args.max_fps,
                          limits=Limits(max_callers=args.max_callers))
    shown_host = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    url = f"http://{shown_host}:{args.port}/" + (f"?token={token}" if token else "")
    print(f"StreamFX serving on {url}  (engine: {engine}; Ctrl-C to stop)", flush=True)
    if engine != "3dpe":
        print("  3DPE weights not imported: using the weight-free engine. "
              "See the README (streamfx weights import) for 3DPE.", flush=True)
    else:
        print(f"  {runtime_line(options)}", flush=True)
    try:
        web.run_app(create_app(config), host=args.host, port=args.port, print=None,
                    handle_signals=True, shutdown_timeout=5.0)
    except OSError as exc:
        raise CliError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
    return 0
