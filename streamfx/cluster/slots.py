"""Slots: a caller's reservation of ``streamfx_slot: 1``, held as a one-bundle placement group.

A placement group is Ray's reservation of resources without a process: Ray's scheduler
picks the node (any with a free slot), grants it in milliseconds, reschedules nothing we
did not ask for, and removes it when its creator's job ends. So a slot fate-shares with the
front door that reserved it; the node that holds the call releases it when the call ends.
All functions here block on the GCS: call them off the event loop.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import ray
from ray.util.placement_group import PlacementGroup, placement_group, placement_group_table, remove_placement_group

from .config import SLOT


@dataclass(frozen=True)
class Slot:
    group: PlacementGroup
    node_id: str                     # the Ray node Ray granted it on (hex)

    @property
    def id(self) -> str:
        return self.group.id.hex()


def reserve(timeout_s: float) -> Slot | None:
    """One slot on whichever node Ray picks, or None when none is granted within ``timeout_s``."""
    group = placement_group([{SLOT: 1}], strategy="STRICT_PACK")
    if not group.wait(timeout_seconds=timeout_s):
        remove_placement_group(group)  # also withdraws the pending request
        return None
    node = placement_group_table(group)["bundles_to_node_id"][0]
    return Slot(group, node)


def release(slot_id: str) -> None:
    """Give a slot back (idempotent: an already removed one is fine)."""
    try:
        remove_placement_group(PlacementGroup(ray.PlacementGroupID(bytes.fromhex(slot_id))))
    except Exception:  # noqa: BLE001 - already removed, or its job already ended
        pass


def live_slot_ids() -> set[str]:
    """The slots that still exist (created or waiting), by id."""
    return {gid for gid, info in placement_group_table().items() if info.get("state") != "REMOVED"}


@dataclass(frozen=True)
class NodeSlots:
    node_id: str
    address: str
    alive: bool
    total: int
    free: int
    labels: dict = field(default_factory=dict)
    gpus: float = 0.0


def node_slots() -> list[NodeSlots]:
    """Every node of the cluster with its slots (those without the resource have 0)."""
    from ray._private.state import available_resources_per_node  # the per-node view `ray status` prints

    free = available_resources_per_node()
    out = []
    for node in ray.nodes():
        resources = node.get("Resources", {})
        if SLOT not in resources and not node.get("Labels", {}).get("streamfx-node"):
            continue
        nid = node["NodeID"]
        out.append(NodeSlots(nid, node.get("NodeManagerAddress", "?"), bool(node.get("Alive")),
                             int(resources.get(SLOT, 0)), int(free.get(nid, {}).get(SLOT, 0)) if node.get("Alive") else 0,
                             dict(node.get("Labels", {})), float(resources.get("GPU", 0.0))))
    return out


class Demand:
    """Requests the cluster could not place, told to Ray's autoscaler (or KubeRay's) as a floor:
    the slots in use plus those refused in the last ``ttl_s`` seconds."""

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._refused: list[float] = []

    def waiting(self) -> int:
        now = time.monotonic()
        self._refused = [t for t in self._refused if now - t < self.ttl_s]
        return len(self._refused)

    def refused(self, in_use: int) -> int:
        """Record one refusal and ask the autoscaler for room; returns the slots asked for."""
        from ray.autoscaler.sdk import request_resources

        self._refused.append(time.monotonic())
        wanted = in_use + self.waiting()
        request_resources(bundles=[{SLOT: 1}] * wanted)
        return wanted
