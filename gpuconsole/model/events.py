"""Facts the poller reports about nodes over time."""

from __future__ import annotations

from dataclasses import dataclass

from gpuconsole.model.telemetry import NodeSnapshot


@dataclass(frozen=True, slots=True)
class NodeUpdated:
    """A fresh snapshot arrived from a node."""

    snapshot: NodeSnapshot
    received_at: float  # client monotonic seconds


@dataclass(frozen=True, slots=True)
class NodeFailed:
    """A node could not be reached; `final` means no retry (auth or host-key failure)."""

    name: str
    error: str
    final: bool
    retry_in_s: float | None
    failed_at: float  # client monotonic seconds


PollEvent = NodeUpdated | NodeFailed
