"""A StreamFX node: a Ray node joined to the cluster, and the node server actor pinned to it.

:func:`join` starts the Ray node as ``ray start --address ... --block`` would (it is that
command, as a child process that stops with us), advertising ``streamfx_slot: N`` and a
label with the node's name. :func:`start_server` creates the node server on a given Ray
node (node affinity, not soft: a node server never runs anywhere else). :func:`drain` asks
Ray to stop placing work on the node and the server to refuse new calls; the calls running
go on until they end.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from .. import log
from ..server.config import ServerConfig
from .config import NAMESPACE, NODE_LABEL, SLOT, ClusterConfig, server_name, unreachable
from .node_server import NodeServer

logger = log.get(__name__)


class NodeError(RuntimeError):
    """A node could not join or start; the message says why in one line."""


def ray_start_command(address: str, name: str, slots: int, gpus: int, node_ip: str | None) -> list[str]:
    ray_cli = shutil.which("ray") or str(__import__("pathlib").Path(sys.executable).with_name("ray"))
    command = [ray_cli, "start", f"--address={address}", "--block", f"--num-gpus={gpus}",
               f"--resources={json.dumps({SLOT: slots})}", f"--labels={json.dumps({NODE_LABEL: name})}",
               "--disable-usage-stats"]
    if node_ip:
        command.append(f"--node-ip-address={node_ip}")
    return command


def join(address: str, name: str, slots: int, gpus: int = 0, node_ip: str | None = None,
         timeout_s: float = 60.0) -> tuple[subprocess.Popen, str]:
    """Start this machine's Ray node in the cluster at ``address``; returns the ``ray start``
    process and the new node's id once the cluster lists it."""
    # its own session: a SIGTERM to our process group (systemd, `timeout`, a terminal) drains
    # the node first; the Ray node stops only after its last call, when we stop it. Its output
    # goes to a file (a pipe nobody reads would fill and stop it).
    log = tempfile.NamedTemporaryFile("w+", prefix=f"streamfx-ray-start-{name}-", suffix=".log", delete=False)
    process = subprocess.Popen(ray_start_command(address, name, slots, gpus, node_ip), start_new_session=True,
                               stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        connect(address)
    except NodeError:
        process.terminate()
        raise
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.seek(0)
            tail = log.read().strip().splitlines()[-1:] or ["no output"]
            raise NodeError(f"ray start failed to join {address}: {tail[0][:300]} (log: {log.name})")
        for node in ray.nodes():
            if node.get("Alive") and node.get("Labels", {}).get(NODE_LABEL) == name:
                return process, node["NodeID"]
        time.sleep(0.5)
    process.terminate()
    raise NodeError(f"the Ray node {name!r} did not join {address} within {timeout_s:.0f} s")


def connect(address: str) -> None:
    """Join the cluster at ``address`` as a driver; a one-line NodeError when it cannot."""
    reason = unreachable(address)
    if reason is not None:
        raise NodeError(reason)
    try:
        ray.init(address=address, namespace=NAMESPACE, log_to_driver=False, configure_logging=False)
    except Exception as exc:  # noqa: BLE001 - unreachable, refused token, version mismatch ...
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise NodeError(f"cannot join the Ray cluster at {address}: {first[:300]}") from None


def attach(address: str) -> tuple[str, int, str]:
    """Connect to the Ray node already running here (KubeRay's): (node id, its slots, how known)."""
    connect(address)
    node_id = ray.get_runtime_context().get_node_id()
    here = next((n for n in ray.nodes() if n["NodeID"] == node_id), {})
    slots = int(here.get("Resources", {}).get(SLOT, 0))
    if slots < 1:
        raise NodeError(f"the Ray node here advertises no {SLOT} resource (add it to its ray start --resources)")
    return node_id, slots, f"the Ray node's {SLOT} resource"


def create_server(node_id: str, config: ServerConfig, name: str, slots: int,
                  cluster: ClusterConfig, gpus: float = 0.0):
    """The node server actor on Ray node ``node_id`` (node affinity, never soft); not started yet."""
    return ray.remote(NodeServer).options(
        name=server_name(node_id), namespace=NAMESPACE, num_cpus=0, num_gpus=gpus, max_concurrency=1000,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
    ).remote(config, name, slots, cluster)


def wait_started(actor, name: str, timeout_s: float = 300.0) -> dict:
    """Wait until the server's engine is loaded; a one-line NodeError (and the actor gone) if not."""
    try:
        return ray.get(actor.start.remote(), timeout=timeout_s)
    except Exception as exc:  # noqa: BLE001 - one line for the operator
        ray.kill(actor)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
        raise NodeError(f"node {name}: the server did not start: {first[:300]}") from None


def start_server(node_id: str, config: ServerConfig, name: str, slots: int,
                 cluster: ClusterConfig, gpus: float = 0.0, timeout_s: float = 300.0):
    """The node server on ``node_id``, its engine loaded; returns its handle."""
    actor = create_server(node_id, config, name, slots, cluster, gpus)
    wait_started(actor, name, timeout_s)
    logger.info("node server ready", extra={"node": name, "node_id": node_id, "slots": slots})
    return actor


def drain(actor, node_id: str, reason: str = "streamfx node --drain") -> int:
    """Stop new placements on the node; returns the calls still running there."""
    running = ray.get(actor.drain.remote())
    try:
        from ray.core.generated import autoscaler_pb2

        gcs = ray._raylet.GcsClient(address=ray.get_runtime_context().gcs_address)
        accepted, why = gcs.drain_node(node_id, autoscaler_pb2.DrainNodeReason.Value("DRAIN_NODE_REASON_PREEMPTION"),
                                       reason, 0)
        if not accepted:
            logger.warning("Ray refused to drain the node; the server still refuses calls", extra={"why": why})
    except Exception:  # noqa: BLE001 - an older Ray without drain: the server's refusal still holds
        logger.warning("Ray's drain is unavailable; the server still refuses calls", exc_info=True)
    return running


def find_server(node_id: str):
    """The node server on ``node_id``, or None."""
    try:
        return ray.get_actor(server_name(node_id), namespace=NAMESPACE)
    except ValueError:
        return None


def servers() -> dict[str, object]:
    """Every node server by node id."""
    from ray.util import list_named_actors

    found = {}
    for entry in list_named_actors(all_namespaces=True):
        if entry.get("namespace") == NAMESPACE and entry.get("name", "").startswith("node:"):
            node_id = entry["name"].split(":", 1)[1]
            handle = find_server(node_id)
            if handle is not None:
                found[node_id] = handle
    return found
