"""Cloud instances as gpuconsole sees them (plain data; the boto3 side lives in gpuconsole.cloud)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from gpuconsole.format import iso_utc

MANAGED_TAG = "gpuconsole:managed"
OWNER_TAG = "gpuconsole:owner"
LIVE_STATES = ("pending", "running")
LISTED_STATES = (*LIVE_STATES, "stopping", "stopped")  # what `cloud ls` shows without --all
# A launch's phases, in order, and how people read them.
PHASE_LABELS = {"pending": "pending", "running": "running", "ssh": "SSH reachable", "agent": "agent ready"}


@dataclass(frozen=True, slots=True)
class Instance:
    """One EC2 instance: what `cloud ls` prints and what discovery turns into a node."""

    id: str
    type: str
    state: str  # pending | running | stopping | stopped | shutting-down | terminated
    spot: bool
    gpus: int | None
    price_per_hour: float | None
    launched_at_s: float  # epoch seconds
    managed: bool
    owner: str | None = None
    public_ip: str | None = None
    private_ip: str | None = None
    # When a stopped or terminated instance stopped running (epoch seconds, from EC2's state
    # transition reason); None while it is live or when EC2 did not say.
    ended_at_s: float | None = None

    @property
    def live(self) -> bool:
        """Pending or running: it costs money (or soon will) and counts against max_instances."""
        return self.state in LIVE_STATES

    @property
    def node(self) -> str | None:
        """The node name it has in the fleet while it runs (its instance id)."""
        return self.id if self.state == "running" else None

    def uptime_s(self, now_s: float | None = None) -> float:
        """Seconds it has run: until now while live, until it stopped once it has (so an ended
        instance keeps its final cost); 0 when EC2 did not say when it ended."""
        if self.live:
            return max(0.0, (now_s if now_s is not None else time.time()) - self.launched_at_s)
        if self.ended_at_s is None:
            return 0.0
        return max(0.0, self.ended_at_s - self.launched_at_s)

    def cost_so_far(self, now_s: float | None = None) -> float | None:
        """Dollars since launch at the list price (EC2 bills per second for Linux); an ended
        instance's final cost."""
        if self.price_per_hour is None:
            return None
        return round(self.price_per_hour * self.uptime_s(now_s) / 3600.0, 4)

    def to_json(self, now_s: float | None = None) -> dict[str, Any]:
        """The `cloud ls --json` shape of the CLI contract (plus `managed`, `owner`, `uptime_s`)."""
        return {
            "id": self.id,
            "type": self.type,
            "state": self.state,
            "spot": self.spot,
            "gpus": self.gpus,
            "price_per_hour": self.price_per_hour,
            "launched_at": iso_utc(self.launched_at_s),
            "uptime_s": round(self.uptime_s(now_s), 1),
            "cost_so_far": self.cost_so_far(now_s),
            "node": self.node,
            "managed": self.managed,
            "owner": self.owner,
        }
