"""The cluster as ``streamfx cluster status`` and the front door's ``/metrics`` show it."""

from __future__ import annotations

import asyncio

from ray.exceptions import RayError

from ..server.metrics import _line
from . import node as nodes
from . import slots

STATS_TIMEOUT_S = 2.0


async def gather() -> dict:
    """Every StreamFX node: Ray's view (alive, slots, free, GPUs) and its server's (callers, fps)."""
    loop = asyncio.get_running_loop()
    found = await loop.run_in_executor(None, slots.node_slots)
    servers = await loop.run_in_executor(None, nodes.servers)

    async def one(entry: slots.NodeSlots) -> dict:
        row = {"node_id": entry.node_id, "name": entry.labels.get("streamfx-node") or entry.node_id[:8],
               "address": entry.address, "alive": entry.alive, "slots": entry.total, "free": entry.free,
               "gpus": entry.gpus, "server": False}
        server = servers.get(entry.node_id)
        if server is not None and entry.alive:
            try:
                stats = await asyncio.wait_for(server.stats.remote(), STATS_TIMEOUT_S)
            except (RayError, asyncio.TimeoutError):
                return row
            row.update({k: stats[k] for k in ("callers", "fps", "draining", "device", "engine", "info", "capacity")})
            row["starting"] = bool(stats.get("starting"))
            row["name"], row["server"] = stats["node"], True
        return row

    return {"nodes": list(await asyncio.gather(*(one(e) for e in found)))}


def gather_sync() -> dict:
    return asyncio.run(gather())


def table(view: dict) -> str:
    """The status as an aligned text table, then the totals."""
    head = ("node", "address", "state", "device", "slots", "used", "free", "callers", "fps")
    rows = []
    for n in view["nodes"]:
        state = ("lost" if not n["alive"] else "draining" if n.get("draining") else
                 "starting" if n.get("starting") else "ready" if n["server"] else "no server")
        rows.append((n["name"], n["address"], state, n.get("device", "-"), str(n["slots"]),
                     str(n["slots"] - n["free"]) if n["alive"] else "-", str(n["free"]),
                     str(n.get("callers", "-")), f"{n.get('fps', 0.0):.1f}" if n["server"] else "-"))
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]
    lines = ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in (head, *rows)]
    live = [n for n in view["nodes"] if n["alive"]]
    lines.append(f"{len(live)} node(s), {sum(n['slots'] for n in live)} slot(s), "
                 f"{sum(n['free'] for n in live)} free, {sum(n.get('callers', 0) for n in live)} caller(s)")
    return "\n".join(lines)


def cluster_metrics(view: dict, counts, waiting: int, offer_ms: list[float]) -> str:
    """Prometheus text: the cluster's nodes, slots, callers and frame rates, and the front door's offers."""
    live = [n for n in view["nodes"] if n["alive"]]
    ordered = sorted(offer_ms)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))] if ordered else None
    families = [
        ("streamfx_cluster_nodes", "gauge", "live StreamFX nodes", [_line("streamfx_cluster_nodes", len(live))]),
        ("streamfx_cluster_slots", "gauge", "callers each node holds",
         [_line("streamfx_cluster_slots", n["slots"], node=n["name"]) for n in live]),
        ("streamfx_cluster_slots_free", "gauge", "free slots per node",
         [_line("streamfx_cluster_slots_free", n["free"], node=n["name"]) for n in live]),
        ("streamfx_cluster_callers", "gauge", "callers per node",
         [_line("streamfx_cluster_callers", n.get("callers"), node=n["name"]) for n in live]),
        ("streamfx_cluster_fps", "gauge", "filtered frames per second per node",
         [_line("streamfx_cluster_fps", n.get("fps"), node=n["name"]) for n in live]),
        ("streamfx_cluster_demand", "gauge", "offers refused in the last minute (told to the autoscaler)",
         [_line("streamfx_cluster_demand", waiting)]),
        ("streamfx_front_door_offers_total", "counter", "offers by outcome",
         [_line("streamfx_front_door_offers_total", counts.get(k, 0), outcome=k) for k in ("placed", "refused")]),
        ("streamfx_front_door_nodes_lost_total", "counter", "nodes lost while holding calls placed here",
         [_line("streamfx_front_door_nodes_lost_total", counts.get("nodes_lost", 0))]),
        ("streamfx_front_door_offer_ms", "gauge", "time the front door adds to an offer (all but the node's answer), p95 of the last 500, ms",
         [_line("streamfx_front_door_offer_ms", p95, quantile="0.95")]),
    ]
    out: list[str] = []
    for name, kind, help_text, lines in families:
        out += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        out += [line for line in lines if line is not None]
    return "\n".join(out) + "\n"
