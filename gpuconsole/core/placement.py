"""Choose nodes for a request: pure functions over the capacity each node reports."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Capacity:
    """What a node can offer right now (its `capacity` reply): GPUs, free ones, queued requests,
    and GPUs in use without a reservation."""

    node: str
    gpu_count: int
    free: int
    queued: int
    unreserved: tuple[int, ...] = ()
    mine: int = 0  # GPUs the caller holds there
    fleet_cap: int | None = None  # the node's policy's max_gpus_per_user_fleet

    @classmethod
    def from_agent(cls, node: str, data: Mapping[str, Any]) -> Capacity:
        return cls(node, int(data["gpu_count"]), int(data["free"]), int(data["queued"]),
                   tuple(data.get("unreserved") or ()), int(data.get("mine") or 0), data.get("fleet_cap"))

    def to_wire(self) -> dict[str, Any]:
        """The reply as the agent sent it."""
        return {"gpu_count": self.gpu_count, "free": self.free, "queued": self.queued,
                "unreserved": list(self.unreserved), "mine": self.mine, "fleet_cap": self.fleet_cap}


def best_fit(capacities: list[Capacity], gpus: int) -> list[str]:
    """Nodes that can grant ``gpus`` now, tightest fit first (keeps big holes for big requests)."""
    fitting = [c for c in capacities if c.free >= gpus]
    return [c.node for c in sorted(fitting, key=lambda c: (c.free - gpus, c.queued, c.node))]


def queue_choice(capacities: list[Capacity], gpus: int) -> str | None:
    """Where to wait: among nodes big enough, the shortest queue, then the most free GPUs."""
    big_enough = [c for c in capacities if c.gpu_count >= gpus]
    if not big_enough:
        return None
    return min(big_enough, key=lambda c: (c.queued, -c.free, c.node)).node
