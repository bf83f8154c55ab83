"""``streamfx serve``: start the WebRTC filter server."""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
import socket
from urllib.parse import quote
from pathlib import Path

from aiohttp import web

from ..server import ServerConfig, create_app
from ..server.config import Limits
from ..server.security import new_token
from . import CliError
from .common import add_runtime_args, add_styles_arg, apply_styles_arg, engine_options_from_args

WILDCARDS = ("0.0.0.0", "::")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="start the WebRTC filter server (the browser page)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1; others need a token)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080; 0: any free port, printed)")
    p.add_argument("--token", default=os.environ.get("STREAMFX_TOKEN"),
                   help="access token (env STREAMFX_TOKEN); generated when --host is not loopback")
    p.add_argument("--token-file", type=Path, default=None, metavar="PATH",
                   help="more caller tokens, one per line (blank lines and # comments ignored)")
    p.add_argument("--admin-token", default=os.environ.get("STREAMFX_ADMIN_TOKEN"), metavar="TOKEN",
                   help="token for /metrics and /ws without a caller (env STREAMFX_ADMIN_TOKEN); "
                        "generated when --host is not loopback")
    p.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                   help="another Host name the server answers to, e.g. a DNS name or proxy (repeatable)")
    p.add_argument("--tls", choices=("self-signed",), default=None,
                   help="serve HTTPS with a self-signed certificate kept in ~/.config/streamfx/tls")
    p.add_argument("--cert", type=Path, default=None, metavar="PATH", help="serve HTTPS with this PEM certificate")
    p.add_argument("--key", type=Path, default=None, metavar="PATH", help="the PEM key of --cert")
    p.add_argument("--engine", default="auto", help="auto (default), 3dpe, mesh or overlay")
    p.add_argument("--ice-loopback", action="store_true", default=os.environ.get("STREAMFX_ICE_LOOPBACK") == "1",
                   help="offer 127.0.0.1 ICE candidates (env STREAMFX_ICE_LOOPBACK=1)")
    p.add_argument("--ice-server", action="append", default=[], metavar="URL",
                   help="a STUN/TURN URL (repeatable); none by default")
    p.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                   help="another page origin allowed to connect (repeatable)")
    p.add_argument("--max-callers", type=int, default=None, metavar="N",
                   help="at most N callers at once (default: as many as the engine's measured cost allows)")
    p.add_argument("--text-model", type=Path, default=None, metavar="DIR",
                   help="a local InstructPix2Pix folder: text prompts generate a reference from the caller's face "
                        "(needs the text extra)")
    p.add_argument("--text-steps", type=int, default=20, metavar="N",
                   help="diffusion steps of one text prompt (default 20)")
    p.add_argument("--cluster", default=None, metavar="RAY_ADDRESS",
                   help="be a front door of this Ray cluster: place each caller on a StreamFX node "
                        "(`streamfx node`) with a free slot; holds no calls itself (needs the cluster extra)")
    p.add_argument("--whip-out", default=None, metavar="URL",
                   help="also push every session to this WHIP ingest; {session} in the URL gives each its own "
                        "(e.g. http://sfu:7080/whip/endpoint/{session})")
    p.add_argument("--whip-out-token", default=os.environ.get("STREAMFX_WHIP_OUT_TOKEN"), metavar="TOKEN",
                   help="Bearer token for --whip-out (env STREAMFX_WHIP_OUT_TOKEN)")
    add_styles_arg(p)
    add_runtime_args(p)
    p.set_defaults(func=run)


def _whip_url(url: str | None) -> str | None:
    if url is not None and not url.startswith(("http://", "https://")):
        raise CliError(f"--whip-out must be an http(s) URL, not {url!r}")
    return url


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text.split("%", 1)[0])
        return True
    except ValueError:
        return False


def text_model_from_args(args: argparse.Namespace) -> Path | None:
    """The checked ``--text-model`` folder, or None; a one-line error when it cannot be used."""
    if args.text_steps < 1:
        raise CliError("--text-steps must be at least 1")
    if args.text_model is None:
        return None
    from ..styles.text import TextModelError, check_model_folder, require_text_extra

    try:
        require_text_extra()
        return check_model_folder(args.text_model)
    except TextModelError as exc:
        raise CliError(str(exc)) from None


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


# ---------------------------------------------------------------------------- tokens
def read_token_file(path: Path) -> tuple[str, ...]:
    """Caller tokens from ``path``: one a line; blank lines, ``#`` lines and `` # ...`` tails are skipped."""
    try:
        text = path.expanduser().read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc).splitlines()[0]
        raise CliError(f"cannot read --token-file {path}: {reason}") from None
    tokens = [re.sub(r"\s#.*$", "", line).strip() for line in text.splitlines()]
    tokens = list(dict.fromkeys(t for t in tokens if t and not t.startswith("#")))
    if not tokens:
        raise CliError(f"--token-file {path} has no tokens (one a line; # starts a comment)")
    if any(len(t.split()) != 1 for t in tokens):
        raise CliError(f"--token-file {path}: a token cannot contain spaces (one token a line)")
    return tuple(tokens)


def tokens_from_args(args: argparse.Namespace) -> tuple[str | None, tuple[str, ...], str | None]:
    """(caller token, more caller tokens, admin token) after the defaults for an exposed bind."""
    exposed = not _is_loopback(args.host)
    token = args.token or None
    tokens = read_token_file(args.token_file) if args.token_file is not None else ()
    if exposed and not token and not tokens:
        token = new_token()
    admin = args.admin_token or None
    if exposed and not admin:
        admin = new_token()
    if admin is not None and admin in (token, *tokens):
        raise CliError("--admin-token must differ from every caller token (--token, --token-file)")
    return token, tokens, admin


# ---------------------------------------------------------------------------- TLS
def tls_names(host: str) -> tuple[list[str], list[str]]:
    """(DNS names, IP addresses) a self-signed certificate for ``--host`` should name."""
    from ..server.tls import reachable_addresses

    names = [socket.gethostname(), "localhost"]
    addresses = ["127.0.0.1", "::1"]
    if host in WILDCARDS:
        for item in reachable_addresses():
            (addresses if _is_address(item) else names).append(item)
    elif _is_address(host):
        addresses.append(host.split("%", 1)[0])
    else:
        names.append(host)
    return list(dict.fromkeys(n for n in names if n)), list(dict.fromkeys(addresses))


def tls_from_args(args: argparse.Namespace):
    """The :class:`~streamfx.server.tls.TlsFiles` asked for, or None for plain HTTP."""
    if (args.cert is None) != (args.key is None):
        raise CliError("--cert and --key go together: give both or neither")
    if args.tls and args.cert is not None:
        raise CliError("give --tls self-signed or --cert/--key, not both")
    if not args.tls and args.cert is None:
        return None
    from ..server import tls

    try:
        if args.cert is not None:
            return tls.load(args.cert, args.key)
        names, addresses = tls_names(args.host)
        return tls.self_signed(names, addresses)
    except tls.TlsError as exc:
        raise CliError(str(exc)) from None


# ---------------------------------------------------------------------------- URLs
def url_hosts(host: str) -> list[str]:
    """The hosts the printed URLs use: for a wildcard bind, loopback then every reachable
    address of the bound family (``::`` serves IPv6 only), then the host name."""
    if host not in WILDCARDS:
        return [host]
    from ..server.tls import reachable_addresses

    ipv6 = host == "::"
    found = [a for a in reachable_addresses() if not _is_address(a) or (":" in a) == ipv6]
    return ["::1" if ipv6 else "127.0.0.1", *found]


def urls(host: str, port: int, token: str | None, tls: bool) -> list[str]:
    scheme = "https" if tls else "http"
    query = f"?token={quote(token, safe='')}" if token else ""
    shown = [f"[{h}]" if ":" in h else h for h in url_hosts(host)]
    return [f"{scheme}://{h}:{port}/{query}" for h in shown]


def _bind_any_port(host: str) -> socket.socket:
    """A socket bound to a free port on ``host`` (``--port 0``), held until the server listens on it."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, 0, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise CliError(f"cannot listen on {host}: {exc.strerror or exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # as a bind by address would
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise CliError(f"cannot listen on {host}: {exc.strerror or exc}") from None
    return sock


def _print_banner(args: argparse.Namespace, shown: list[str], engine: str, options, token: str | None,
                  tokens: tuple[str, ...], admin: str | None, files) -> None:
    """Where the server is, how to trust it, and the secrets it made up (each on its own line)."""
    print(f"StreamFX serving on {shown[0]}  (engine: {engine}; Ctrl-C to stop)", flush=True)
    for url in shown[1:]:
        print(f"  also on {url}", flush=True)
    if tokens and not token:
        print(f"  callers add ?token=<one of the {len(tokens)} tokens in {args.token_file}> to the URL", flush=True)
    if files is not None:
        print(f"  TLS certificate SHA-256 {files.fingerprint_sha256}  ({files.cert})", flush=True)
    elif not _is_loopback(args.host):
        print("  Warning: browsers on other machines will refuse the camera over plain HTTP; "
              "restart with --tls self-signed (or --cert FILE --key FILE) to serve HTTPS.", flush=True)
    if getattr(args, "text_model", None) is not None:
        print(f"  text prompts: {args.text_model} ({args.text_steps} steps; loaded on the first one)", flush=True)
    if admin is not None and admin != args.admin_token:
        print(f"  admin token (for /metrics and /ws without a caller): {admin}", flush=True)
    if engine == "cluster":
        print(f"  front door of the Ray cluster at {args.cluster}: callers go to its StreamFX nodes", flush=True)
    elif engine != "3dpe":
        print("  3DPE weights not imported: using the weight-free engine. "
              "See the README (streamfx weights import) for 3DPE.", flush=True)
    else:
        print(f"  {runtime_line(options)}", flush=True)


# ---------------------------------------------------------------------------- run
def run(args: argparse.Namespace) -> int:
    if args.max_callers is not None and args.max_callers < 1:
        raise CliError("--max-callers must be at least 1")
    if not 0 <= args.port <= 65535:
        raise CliError("--port must be between 0 and 65535")
    token, tokens, admin = tokens_from_args(args)
    text_model = text_model_from_args(args)
    files = tls_from_args(args)
    ssl_context = None
    if files is not None:
        from ..server import tls

        try:
            ssl_context = tls.ssl_context(files)
        except tls.TlsError as exc:
            raise CliError(str(exc)) from None
    apply_styles_arg(args)
    options = engine_options_from_args(args)
    if args.cluster:
        from ..cluster.config import missing_ray

        if missing_ray():
            raise CliError(missing_ray())
        engine = "cluster"
    else:
        engine = _chosen_engine(args.engine, options)
    sock = _bind_any_port(args.host) if args.port == 0 else None
    port = sock.getsockname()[1] if sock is not None else args.port
    try:
        shown = urls(args.host, port, token, files is not None)
        allowed_hosts = [h.strip() for h in args.allow_host if h.strip()]
        if args.host in WILDCARDS:  # the hosts the printed URLs (and the certificate) use must pass the Host check
            allowed_hosts += [*url_hosts(args.host), "localhost"]
        config = ServerConfig(host=args.host, port=port, token=token, tokens=tokens, admin_token=admin,
                              allowed_hosts=tuple(dict.fromkeys(allowed_hosts)), tls=files is not None,
                              ice_loopback=args.ice_loopback, ice_servers=tuple(args.ice_server),
                              allowed_origins=tuple(args.allow_origin), engine=engine, engine_options=options,
                              max_fps=args.max_fps, limits=Limits(max_callers=args.max_callers),
                              text_model=text_model, text_steps=args.text_steps,
                              whip_out=_whip_url(args.whip_out), whip_out_token=args.whip_out_token)

        _print_banner(args, shown, engine, options, token, tokens, admin, files)
        where = {"sock": sock} if sock is not None else {"host": args.host, "port": port}
        if args.cluster:
            from ..cluster.config import ClusterConfig
            from ..cluster.front_door import connect, create_front_door

            try:
                connect(args.cluster)
            except ConnectionError as exc:
                raise CliError(str(exc)) from None
            app = create_front_door(config, ClusterConfig(address=args.cluster))
        else:
            app = create_app(config)
        try:
            web.run_app(app, **where, ssl_context=ssl_context, print=None,
                        handle_signals=True, shutdown_timeout=5.0)
        except OSError as exc:
            raise CliError(f"cannot listen on {args.host}:{port}: {exc.strerror or exc}") from None
    finally:
        if sock is not None:
            sock.close()
    return 0
