"""The cluster's names and timings."""

from __future__ import annotations

from dataclasses import dataclass

#: the custom resource a node advertises: how many callers it holds
SLOT = "streamfx_slot"
#: the Ray namespace of StreamFX's named actors
NAMESPACE = "streamfx"
#: the label that names a StreamFX node (``ray start --labels``)
NODE_LABEL = "streamfx-node"


def server_name(node_id: str) -> str:
    """The Ray actor name of the node server on the Ray node ``node_id`` (hex)."""
    return f"node:{node_id}"


def unreachable(address: str, timeout_s: float = 5.0) -> str | None:
    """Why nothing answers at ``address`` (host:port of a Ray head), or None. Ray itself
    retries an unreachable address for minutes; this says so at once."""
    import socket

    if address in ("auto", "local") or ":" not in address:
        return None
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            return None
    except (OSError, ValueError) as exc:
        return f"nothing answers at {address} ({getattr(exc, 'strerror', None) or exc}); is the Ray head running?"


def missing_ray() -> str | None:
    """Why the cluster cannot run here (Ray missing), or None."""
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        return "the cluster needs Ray: pip install 'streamfx[cluster]'"
    return None


@dataclass(frozen=True)
class ClusterConfig:
    address: str                        # the Ray cluster (host:port of its GCS, or "auto")
    grant_timeout_s: float = 1.0        # an offer waits this long for a free slot, then 503
    retry_after_s: int = 2              # the Retry-After of that 503
    demand_ttl_s: float = 60.0          # an unmet request counts as demand for the autoscaler this long
    sweep_interval_s: float = 2.0       # the front door forgets ended calls this often
    watch_interval_s: float = 1.0       # a node checks its calls' slots this often (a front door died)
