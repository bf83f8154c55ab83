"""The cluster against one server, in the same run on the same machine (loopback Ray).

    python -m benchmarks.cluster [--callers 2] [--seconds 10]

1. **Round trip** per caller (stamped frames, mesh engine, 320x240 at 15 fps): through a
   single ``streamfx serve`` process, then through a front door and a node server (an
   actor in its own process, as a node is). Goal: the cluster's p50/p95 within 5 %.
2. **What the front door adds to an offer**: its own time per offer, without the node's
   answer (slot reservation, actor lookup, the Ray round trip). Goal: <= 50 ms p95.
3. **A lost node**: the time from killing the node that holds the callers to each of them
   getting frames again from another node with room. Goal: <= 5 s.

Writes ``benchmarks/results/cluster.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # keep 127.0.0.1 as the cluster's address

from benchmarks.common import RESULTS, machine, percentiles, write_json  # noqa: E402
from benchmarks.server_harness import HarnessCaller, ServerProcess  # noqa: E402

SIZE, FPS = (320, 240), 15.0
OFFERS = 12
HEALTH = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 300, "health_check_timeout_ms": 300,
          "health_check_failure_threshold": 3}


async def round_trips(base: str, callers: int, seconds: float, token: str | None = None) -> dict:
    peers = [HarnessCaller(SIZE, FPS) for _ in range(callers)]
    offer_ms = []
    try:
        for p in peers:
            began = time.perf_counter()
            await p.connect(base, token)
            offer_ms.append((time.perf_counter() - began) * 1000.0)
        await asyncio.gather(*(asyncio.wait_for(p.first_frame.wait(), 30) for p in peers))
        await asyncio.sleep(2.0)                       # warm-up, not counted
        for p in peers:
            p.take_window()
        await asyncio.sleep(seconds)
        windows = [p.take_window() for p in peers]
    finally:
        await asyncio.gather(*(p.close() for p in peers))
    rtt = [v for w in windows for v in w["rtt_ms"]]
    return {"rtt_ms": percentiles(rtt), "fps": [w["fps"] for w in windows], "offer_ms": percentiles(offer_ms)}


def start_cluster(slots: int):
    import ray
    from ray.cluster_utils import Cluster

    from streamfx.cluster import node as nodes
    from streamfx.cluster.config import NAMESPACE, SLOT, ClusterConfig
    from streamfx.server.config import Limits, ServerConfig

    args = {"num_cpus": 1, "node_ip_address": "127.0.0.1", "object_store_memory": 80 * 2**20,
            "include_dashboard": False}
    cluster = Cluster(initialize_head=True, connect=False, shutdown_at_exit=False,
                      head_node_args={**args, "resources": {SLOT: 0}, "_system_config": HEALTH})
    ray.init(address=cluster.address, namespace=NAMESPACE, log_to_driver=False)
    workers = [cluster.add_node(**args, resources={SLOT: slots}) for _ in range(2)]
    config = ServerConfig(engine="mesh", ice_loopback=True, limits=Limits(admit_by_cost=False))
    cluster_config = ClusterConfig(address=cluster.address)
    servers = {w.node_id: nodes.create_server(w.node_id, config, f"node-{i + 1}", slots, cluster_config)
               for i, w in enumerate(workers)}
    for node_id, actor in servers.items():
        nodes.wait_started(actor, node_id)
    return cluster, workers, servers, cluster_config


async def front_door_run(cluster_config, callers: int, seconds: float, cluster, workers) -> dict:
    from aiohttp import web

    from streamfx.cluster.front_door import create_front_door
    from streamfx.server.app import STATE
    from streamfx.server.config import ServerConfig

    app = create_front_door(ServerConfig(ice_loopback=True), cluster_config)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
    state = app[STATE]
    try:
        through = await round_trips(base, callers, seconds)
        for _ in range(OFFERS):        # more offers: each placed, streamed to its first frame, hung up
            peer = HarnessCaller(SIZE, FPS)
            await peer.connect(base)
            await asyncio.wait_for(peer.first_frame.wait(), 30)
            await peer.close()
        added = percentiles(state.offer_ms)
        recovery = await lost_node(base, state, callers, cluster, workers)
    finally:
        await runner.cleanup()
    return {"through_front_door": through, "front_door_added_ms": added, "lost_node": recovery}


async def lost_node(base: str, state, callers: int, cluster, workers) -> dict:
    """Fill one node, kill it, offer again on the front door's word (as the page does)."""
    import aiohttp

    peers = [HarnessCaller(SIZE, FPS) for _ in range(callers)]
    answers = [await p.connect(base) for p in peers]
    await asyncio.gather(*(asyncio.wait_for(p.first_frame.wait(), 30) for p in peers))
    victim_name = answers[0]["node"]
    victim = next(w for w in workers if state.placed[answers[0]["caller"]].node_id == w.node_id)
    told: dict[str, float] = {}
    resumed: dict[str, float] = {}
    moved: list[HarnessCaller] = []

    async def follow(caller_id: str) -> None:
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(f"{base.replace('http', 'ws', 1)}/ws?caller={caller_id}") as ws:
                async for msg in ws:
                    if json.loads(msg.data).get("event") == "node-lost":
                        told[caller_id] = time.monotonic()
                        peer = HarnessCaller(SIZE, FPS)
                        moved.append(peer)
                        while True:
                            try:
                                await peer.connect(base)
                                break
                            except Exception:  # noqa: BLE001 - 503 while the cluster settles
                                await asyncio.sleep(0.2)
                        await asyncio.wait_for(peer.first_frame.wait(), 30)
                        resumed[caller_id] = time.monotonic()
                        return

    followers = [asyncio.ensure_future(follow(a["caller"])) for a in answers if a["node"] == victim_name]
    await asyncio.sleep(0.5)
    killed = time.monotonic()
    cluster.remove_node(victim, allow_graceful=False)
    await asyncio.wait_for(asyncio.gather(*followers), 60)
    await asyncio.gather(*(p.close() for p in peers + moved))
    return {"callers_moved": len(resumed),
            "told_s": percentiles([t - killed for t in told.values()]),
            "streaming_again_s": percentiles([t - killed for t in resumed.values()])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--callers", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    result: dict = {"machine": machine(), "callers": args.callers, "seconds": args.seconds,
                    "size": list(SIZE), "fps": FPS}

    server = ServerProcess(engine="mesh").start()
    try:
        result["single_server"] = asyncio.run(round_trips(server.base, args.callers, args.seconds))
    finally:
        server.stop()

    import ray

    cluster, workers, servers, cluster_config = start_cluster(slots=args.callers)
    try:
        result.update(asyncio.run(front_door_run(cluster_config, args.callers, args.seconds, cluster, workers)))
    finally:
        ray.shutdown()
        cluster.shutdown()

    single, through = result["single_server"]["rtt_ms"], result["through_front_door"]["rtt_ms"]
    result["rtt_ratio"] = {k: round(through[k] / single[k], 3) for k in ("p50", "p95") if single[k]}
    result["goals"] = {"rtt_within_5_percent": all(v <= 1.05 for v in result["rtt_ratio"].values()),
                       "front_door_p95_le_50_ms": (result["front_door_added_ms"]["p95"] or 0) <= 50,
                       "back_within_5_s": (result["lost_node"]["streaming_again_s"]["p95"] or 99) <= 5}
    path = write_json(RESULTS / "cluster.json", result)
    print(json.dumps({k: result[k] for k in ("rtt_ratio", "front_door_added_ms", "lost_node", "goals")}, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
