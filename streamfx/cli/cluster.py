"""``streamfx cluster status``: the StreamFX nodes of a Ray cluster, their slots and callers."""

from __future__ import annotations

import argparse
import json

from . import CliError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cluster", help="the StreamFX nodes of a Ray cluster (status)")
    p.add_argument("action", choices=("status",))
    p.add_argument("--address", required=True, metavar="HOST:PORT", help="the Ray cluster (its head's GCS address)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..cluster.config import NAMESPACE, missing_ray

    reason = missing_ray()
    if reason is not None:
        raise CliError(reason)
    import ray

    from ..cluster.config import unreachable
    from ..cluster.status import gather_sync, table

    if unreachable(args.address):
        raise CliError(unreachable(args.address))
    try:
        ray.init(address=args.address, namespace=NAMESPACE, log_to_driver=False, configure_logging=False)
    except Exception as exc:  # noqa: BLE001 - one line: unreachable, wrong token ...
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CliError(f"cannot reach the Ray cluster at {args.address}: {first[:300]}") from None
    view = gather_sync()
    for row in view["nodes"]:
        row.pop("info", None)
    print(json.dumps(view, indent=2) if args.json else table(view))
    return 0
