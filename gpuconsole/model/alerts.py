"""Alerts the watcher raises (and the console shows): the `watch --json` shape of the CLI contract."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ALERT_KINDS = ("idle_reservation", "unreserved_use", "idle_cloud", "node_down", "gpu_unhealthy", "resolved")


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert. `key` names the condition (kind + node + subject) so onset, repeat and resolve
    of the same condition can be matched; `resolves` is the kind a `resolved` alert ends."""

    kind: str
    node: str | None
    message: str
    since: str  # ISO 8601 UTC: when the condition began
    gpus: tuple[int, ...] = ()
    owner: str | None = None
    reservation: str | None = None
    key: str = ""
    resolves: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": self.kind,
            "node": self.node,
            "gpus": list(self.gpus),
            "owner": self.owner,
            "reservation": self.reservation,
            "since": self.since,
            "message": self.message,
        }
        if self.resolves is not None:
            out["resolves"] = self.resolves
        if self.key:
            out["key"] = self.key  # matches an alert with its repeats and its `resolved`
        out.update(self.extra)
        return out
