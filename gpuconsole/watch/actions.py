"""`--release-idle`: warn the owner of an idle reservation, then release it after a grace period.

Pure policy (the runner performs the release through the normal node operation): an idle
reservation gets a countdown at its first idle judgement, announced to every sink as an
`idle_reservation` alert with `"action": "will_release"` and `"release_at"`. When the countdown
ends and the reservation is *still* judged idle, it is due. Work on its GPUs resolves the
condition and cancels the countdown. Jobs' leases are never released (that is `cancel`), and a
refusal (not the owner, not an admin) is remembered so it is logged once, never retried in a loop.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from gpuconsole.format import iso_utc
from gpuconsole.model.alerts import Alert
from gpuconsole.model.detect import Judgement

RETRY_AFTER_S = 60.0  # a release that failed for a transient reason (node unreachable) is retried then


@dataclass
class PendingRelease:
    """An announced release: what, and when."""

    node: str
    reservation: str
    owner: str | None
    gpus: list[int]
    release_at_s: float


class ReleasePolicy:
    """Countdowns per idle-reservation condition key."""

    def __init__(self, grace_s: float) -> None:
        self.grace_s = grace_s
        self.pending: dict[str, PendingRelease] = {}
        self.refused: dict[str, str] = {}

    def plan(self, now_s: float, judgement: Judgement, raised: set[str],
             emitted: list[Alert]) -> tuple[list[Alert], list[tuple[str, PendingRelease]]]:
        """(alerts to send, releases due now). `raised` are the keys the tracker holds as active;
        alerts about to go out for an idle reservation are annotated with its release time."""
        for table in (self.pending, self.refused):
            for key in [k for k in table if k not in raised]:
                del table[key]  # the condition ended: a later idle spell starts a new countdown
        out = list(emitted)
        index = {a.key: i for i, a in enumerate(out) if a.kind == "idle_reservation"}
        due: list[tuple[str, PendingRelease]] = []
        for key, alert in judgement.conditions.items():
            if alert.kind != "idle_reservation" or key in self.refused or alert.reservation is None:
                continue
            if alert.extra.get("reservation_kind") == "job":
                continue
            pending = self.pending.get(key)
            if pending is None:
                pending = PendingRelease(alert.node or "", alert.reservation, alert.owner, list(alert.gpus),
                                         now_s + self.grace_s)
                self.pending[key] = pending
                if key in index:
                    out[index[key]] = self._announce(out[index[key]], pending)
                else:
                    out.append(self._announce(alert, pending))
            elif now_s >= pending.release_at_s:
                due.append((key, pending))
            elif key in index:
                out[index[key]] = self._announce(out[index[key]], pending)
        return out, due

    @staticmethod
    def _announce(alert: Alert, pending: PendingRelease) -> Alert:
        at = iso_utc(pending.release_at_s)
        return replace(alert, message=f"{alert.message}; the watcher will release it at {at} unless it is used",
                       extra={**alert.extra, "action": "will_release", "release_at": at})

    def released(self, key: str) -> None:
        self.pending.pop(key, None)

    def refuse(self, key: str, reason: str) -> None:
        self.pending.pop(key, None)
        self.refused[key] = reason

    def postpone(self, key: str, now_s: float) -> None:
        if key in self.pending:
            self.pending[key].release_at_s = now_s + RETRY_AFTER_S

    def to_json(self) -> dict[str, Any]:
        return {"pending": {k: asdict(p) for k, p in self.pending.items()}, "refused": dict(self.refused)}

    def load_json(self, data: dict[str, Any]) -> None:
        for key, raw in (data.get("pending") or {}).items():
            try:
                self.pending[key] = PendingRelease(**raw)
            except TypeError:
                continue
        self.refused.update({str(k): str(v) for k, v in (data.get("refused") or {}).items()})
