"""Onset, repeat and resolve of conditions. Pure: the caller passes the time and persists `to_json()`.

Each condition alerts once at onset, again every `cooldown_s` while it lasts (0 = never again),
and raises one `resolved` alert when it ends. A condition the judgement cannot decide (its node
is down or not seen yet, its window is incomplete after a restart) is kept, not resolved, so a
restart of the watcher or a dead node does not turn into a burst of resolve/re-alert pairs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from gpuconsole.durations import format_duration_s
from gpuconsole.format import iso_utc
from gpuconsole.model.alerts import Alert
from gpuconsole.model.detect import Judgement


@dataclass
class Tracked:
    """A raised condition: the alert as last seen and when it last went out."""

    alert: Alert
    first_alert_s: float
    last_alert_s: float
    repeats: int = 0

    def to_json(self) -> dict[str, Any]:
        alert = asdict(self.alert)
        alert["gpus"] = list(self.alert.gpus)
        return {"alert": alert, "first_alert_s": self.first_alert_s, "last_alert_s": self.last_alert_s,
                "repeats": self.repeats}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Tracked:
        raw = dict(data["alert"])
        raw["gpus"] = tuple(int(g) for g in raw.get("gpus") or ())
        raw["extra"] = dict(raw.get("extra") or {})
        return cls(Alert(**raw), float(data["first_alert_s"]), float(data["last_alert_s"]),
                   int(data.get("repeats", 0)))


def _ended_text(alert: Alert) -> str:
    gpus = ",".join(str(g) for g in alert.gpus)
    if alert.kind == "idle_reservation":
        return f"reservation {alert.reservation} of {alert.owner} on {alert.node} GPUs {gpus} is no longer idle"
    if alert.kind == "unreserved_use":
        return f"unreserved use on {alert.node} by {alert.owner} ended"
    if alert.kind == "node_down":
        return f"node {alert.node} is back"
    if alert.kind == "gpu_unhealthy":
        return f"GPU {gpus} of {alert.node} is back in the pool"
    return f"{alert.kind} on {alert.node} ended"


class Tracker:
    """Turns each judgement into the alerts to send now."""

    def __init__(self, cooldown_s: float) -> None:
        self.cooldown_s = cooldown_s
        self.active: dict[str, Tracked] = {}

    def update(self, now_s: float, judgement: Judgement) -> list[Alert]:
        """Onsets, due repeats and resolutions for this judgement, in that order."""
        out: list[Alert] = []
        for key, alert in judgement.conditions.items():
            tracked = self.active.get(key)
            if tracked is None:
                self.active[key] = Tracked(alert, now_s, now_s)
                out.append(alert)
                continue
            tracked.alert = replace(alert, since=tracked.alert.since)  # the onset time stays
            if self.cooldown_s > 0 and now_s - tracked.last_alert_s >= self.cooldown_s:
                tracked.last_alert_s = now_s
                tracked.repeats += 1
                out.append(replace(tracked.alert, extra={**tracked.alert.extra, "repeat": tracked.repeats}))
        for key, tracked in list(self.active.items()):
            if key not in judgement.conditions and not judgement.holds(tracked.alert):
                out.append(self.resolve(key, now_s))
        return out

    def resolve(self, key: str, now_s: float, text: str | None = None, **extra: Any) -> Alert:
        """End a raised condition now (also used after an action removed its cause: pass `text`)."""
        tracked = self.active.pop(key)
        alert = tracked.alert
        lasted_s = max(0.0, now_s - tracked.first_alert_s)
        text = text or _ended_text(alert)
        return Alert(
            kind="resolved", node=alert.node, since=alert.since, gpus=alert.gpus, owner=alert.owner,
            reservation=alert.reservation, key=key, resolves=alert.kind,
            message=f"{text} (alerted {format_duration_s(lasted_s)} ago)",
            extra={"resolved_at": iso_utc(now_s), **extra},
        )

    def resolve_node(self, node: str, now_s: float) -> list[Alert]:
        """End every raised condition of a node that left the fleet (a terminated instance is not "back")."""
        keys = [key for key, tracked in self.active.items() if tracked.alert.node == node]
        return [self.resolve(key, now_s, text=f"node {node} left the fleet") for key in keys]

    def to_json(self) -> dict[str, Any]:
        return {key: tracked.to_json() for key, tracked in self.active.items()}

    def load_json(self, data: dict[str, Any]) -> list[str]:
        """Restore raised conditions; returns the keys that could not be read (they are dropped)."""
        bad = []
        for key, raw in data.items():
            try:
                self.active[key] = Tracked.from_json(raw)
            except (KeyError, TypeError, ValueError):
                bad.append(key)
        return bad
