"""A real Ray cluster on loopback: three nodes of two slots each, a node server on each.

One cluster for the module (starting Ray and three node servers is the slow part);
each test gets its own front door on the test's event loop and leaves every slot free.
Ray is pinned to 127.0.0.1: every node is started with ``node_ip_address="127.0.0.1"``,
and ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` keeps Ray from swapping a loopback address for
the machine's own when a process connects (it is read when Ray is imported).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))  # rtc_client

import pytest

ray = pytest.importorskip("ray")

from aiohttp import web  # noqa: E402

from streamfx.cluster import node as nodes  # noqa: E402
from streamfx.cluster import slots  # noqa: E402
from streamfx.cluster.config import NAMESPACE, SLOT, ClusterConfig  # noqa: E402
from streamfx.cluster.front_door import create_front_door  # noqa: E402
from streamfx.server.app import STATE  # noqa: E402
from streamfx.server.config import ServerConfig  # noqa: E402

from cluster_env import ADMIN, NODE_CONFIG, SLOTS, SYSTEM_CONFIG, TOKEN  # noqa: E402


def node_args(**extra) -> dict:
    return {"num_cpus": 1, "resources": {SLOT: SLOTS}, "node_ip_address": "127.0.0.1",
            "object_store_memory": 80 * 2**20, "include_dashboard": False, **extra}


@dataclass
class RayCluster:
    cluster: object
    cluster_config: ClusterConfig
    servers: dict = field(default_factory=dict)     # node id -> actor
    ray_nodes: dict = field(default_factory=dict)   # node id -> ray._private.node.Node
    added: int = 0
    processes: list = field(default_factory=list)

    async def add_node_process(self) -> str:
        """One Ray node in a process of its own (extra_node.py) and its server, without blocking
        the event loop; returns its node id."""
        process = subprocess.Popen([sys.executable, str(Path(__file__).with_name("extra_node.py")),
                                    self.cluster.address, json.dumps({SLOT: SLOTS})], stdout=subprocess.PIPE, text=True)
        self.processes.append(process)
        loop = asyncio.get_running_loop()
        node_id = (await asyncio.wait_for(loop.run_in_executor(None, process.stdout.readline), 60)).strip()
        self.added += 1
        actor = nodes.create_server(node_id, NODE_CONFIG, f"node-{self.added}", SLOTS, self.cluster_config)
        await asyncio.wait_for(actor.start.remote(), 180)
        self.servers[node_id] = actor
        return node_id

    def start_servers(self, node_ids: list[str]) -> None:
        actors = {}
        for node_id in node_ids:
            self.added += 1
            actors[node_id] = nodes.create_server(node_id, NODE_CONFIG, f"node-{self.added}", SLOTS,
                                                  self.cluster_config)
        for node_id, actor in actors.items():
            nodes.wait_started(actor, node_id, timeout_s=180)
            self.servers[node_id] = actor

    def remove(self, node_id: str) -> None:
        self.cluster.remove_node(self.ray_nodes.pop(node_id), allow_graceful=False)
        self.servers.pop(node_id, None)

    def free(self) -> int:
        return sum(n.free for n in slots.node_slots() if n.alive)

    def wait_free(self, expected: int, timeout_s: float = 20.0) -> int:
        deadline = time.monotonic() + timeout_s
        while (free := self.free()) != expected and time.monotonic() < deadline:
            time.sleep(0.2)
        return free


@pytest.fixture(scope="module")
def ray_cluster():
    from ray.cluster_utils import Cluster

    # shutdown_at_exit=False: Ray would otherwise set a SIGTERM handler per node, which only the
    # main thread may do, and a test adds a node from a thread (its loop keeps streaming meanwhile)
    cluster = Cluster(initialize_head=True, connect=False, shutdown_at_exit=False,
                      head_node_args=node_args(_system_config=SYSTEM_CONFIG, resources={SLOT: SLOTS, "test_head": 1}))
    handle = RayCluster(cluster, ClusterConfig(address=cluster.address, grant_timeout_s=1.0, retry_after_s=1,
                                               sweep_interval_s=0.5, watch_interval_s=0.5))
    ray.init(address=cluster.address, namespace=NAMESPACE, log_to_driver=False)
    handle.ray_nodes[cluster.head_node.node_id] = cluster.head_node
    for _ in range(2):
        node = cluster.add_node(**node_args())
        handle.ray_nodes[node.node_id] = node
    try:
        handle.start_servers(list(handle.ray_nodes))
        yield handle
    finally:
        for process in handle.processes:
            process.terminate()
            process.wait(timeout=30)
        ray.shutdown()
        cluster.shutdown()


@dataclass
class FrontDoor:
    base: str
    state: object


@pytest.fixture
async def front_door(ray_cluster):
    config = ServerConfig(token=TOKEN, admin_token=ADMIN, ice_loopback=True, stats_interval_s=0.5)
    app = create_front_door(config, ray_cluster.cluster_config)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    yield FrontDoor(f"http://127.0.0.1:{port}", app[STATE])
    await runner.cleanup()
