"""``streamfx node``: join a Ray cluster as a StreamFX node (one per GPU), or drain one."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import threading

from . import CliError
from .common import add_runtime_args, add_styles_arg, apply_styles_arg, engine_options_from_args

POLL_S = 2.0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("node", help="join a Ray cluster as a StreamFX node (see `serve --cluster`)")
    p.add_argument("--address", required=True, metavar="HOST:PORT",
                   help="the Ray cluster to join (its head's GCS address, as for `ray start --address`)")
    p.add_argument("--name", default=None, help="this node's name (default: host name and device)")
    p.add_argument("--slots", type=int, default=None, metavar="N",
                   help="callers this node holds (default: estimated for the engine and device)")
    p.add_argument("--node-ip", default=None, metavar="IP", help="this machine's address in the cluster (Ray's)")
    p.add_argument("--attach", action="store_true",
                   help="serve on the Ray node already running on this machine (KubeRay starts it) instead of "
                        "starting one; its streamfx_slot resource is the slot count")
    p.add_argument("--drain", default=None, metavar="NAME", nargs="?", const="",
                   help="drain the running node NAME (default: --name): no new calls; it stops once idle")
    p.add_argument("--engine", default="auto", help="auto (default), 3dpe, mesh or overlay")
    p.add_argument("--ice-loopback", action="store_true", default=os.environ.get("STREAMFX_ICE_LOOPBACK") == "1",
                   help="offer 127.0.0.1 ICE candidates (env STREAMFX_ICE_LOOPBACK=1)")
    p.add_argument("--ice-server", action="append", default=[], metavar="URL",
                   help="a STUN/TURN URL (repeatable): callers reach this node's media through it")
    add_styles_arg(p)
    add_runtime_args(p)
    p.set_defaults(func=run)


def _ray():
    from ..cluster.config import missing_ray

    reason = missing_ray()
    if reason is not None:
        raise CliError(reason)


def run(args: argparse.Namespace) -> int:
    _ray()
    if args.drain is not None:
        return _drain(args)
    if args.slots is not None and args.slots < 1:
        raise CliError("--slots must be at least 1")
    from ..cluster import node as nodes
    from ..cluster.capacity import default_slots
    from ..cluster.config import ClusterConfig
    from ..server.config import ServerConfig
    from .serve import _chosen_engine

    apply_styles_arg(args)
    options = engine_options_from_args(args)
    engine = _chosen_engine(args.engine, options)
    name = args.name or f"{socket.gethostname()}-{options.device.replace(':', '')}"
    slots, how = (args.slots, "--slots") if args.slots is not None or args.attach else default_slots(engine, options)
    gpus = 1 if options.device.startswith("cuda") else 0
    config = ServerConfig(engine=engine, engine_options=options, ice_loopback=args.ice_loopback,
                          ice_servers=tuple(args.ice_server), max_fps=args.max_fps)
    cluster = ClusterConfig(address=args.address)
    try:
        if args.attach:
            process, (node_id, slots, how) = None, nodes.attach(args.address)
        else:
            process, node_id = nodes.join(args.address, name, slots, gpus, args.node_ip)
    except nodes.NodeError as exc:
        raise CliError(str(exc)) from None
    try:
        server = nodes.start_server(node_id, config, name, slots, cluster, gpus=gpus)
        print(f"StreamFX node {name} joined {args.address}: {slots} slot(s) ({how}), engine {engine} on "
              f"{options.device}; Ctrl-C or SIGTERM drains it", flush=True)
        return _serve_until_drained(server, node_id, name)
    except nodes.NodeError as exc:
        raise CliError(str(exc)) from None
    finally:
        if process is not None:
            process.terminate()   # `ray start --block` stops this Ray node's processes
            try:
                process.wait(timeout=30)
            except Exception:  # noqa: BLE001 - it is on its way down
                process.kill()


def _serve_until_drained(server, node_id: str, name: str) -> int:
    """Block until SIGTERM or Ctrl-C, then drain and wait for the last call; or until a
    `--drain` from elsewhere empties the node. 1 if the node server died."""
    import ray

    from ..cluster import node as nodes

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    drained = False
    while True:
        try:
            if stop.is_set() and not drained:
                running = nodes.drain(server, node_id)
                print(f"node {name}: draining, {running} call(s) still running", flush=True)
                drained = True
            stats = ray.get(server.stats.remote(), timeout=30)
        except Exception as exc:  # noqa: BLE001 - the actor died: say so and stop
            print(f"node {name}: the node server stopped ({type(exc).__name__})", flush=True)
            return 1
        if stats["draining"] and stats["callers"] == 0:
            ray.get(server.stop.remote())
            print(f"node {name}: drained, stopping", flush=True)
            return 0
        stop.wait(POLL_S)


def _drain(args: argparse.Namespace) -> int:
    import ray

    from ..cluster import node as nodes
    from ..cluster.config import NODE_LABEL

    name = args.drain or args.name
    if not name:
        raise CliError("--drain needs the node's name (--drain NAME)")
    try:
        nodes.connect(args.address)
    except nodes.NodeError as exc:
        raise CliError(str(exc)) from None
    match = [n for n in ray.nodes() if n.get("Alive") and n.get("Labels", {}).get(NODE_LABEL) == name]
    if not match:
        raise CliError(f"no live StreamFX node named {name!r} in {args.address} (see streamfx cluster status)")
    node_id = match[0]["NodeID"]
    server = nodes.find_server(node_id)
    if server is None:
        raise CliError(f"node {name} has no StreamFX server")
    running = nodes.drain(server, node_id)
    print(f"node {name}: draining, {running} call(s) still running; it stops when the last one ends", flush=True)
    return 0
