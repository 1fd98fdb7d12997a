"""GPU usage from the nodes' ledgers (node/ledger.py): GPU-hours held per user, node or day, job
GPU-hours by how the jobs ended, and how long granted requests waited in the queue. Pure: the
caller fetches the ledgers (`usage` command) and passes the clock.

A grant holds its GPUs from its record to its end record's `ended_at` (an expired lease ends at its
expiry), or, not ended yet, to now or to its latest known expiry (`grant`/`renew`), whichever is
first. Every interval is clipped to the window [since, until].
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gpuconsole.format import epoch_s

BY = ("user", "node", "day")


@dataclass
class UsageRow:
    """One user's, node's or day's figures."""

    key: str
    gpu_hours_held: float = 0.0
    job_gpu_hours: dict[str, float] = field(default_factory=dict)  # by outcome (succeeded, failed, …)
    waits_s: list[float] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "gpu_hours_held": round(self.gpu_hours_held, 4),
                "job_gpu_hours": {k: round(v, 4) for k, v in sorted(self.job_gpu_hours.items())},
                "queue_wait_s": {"n": len(self.waits_s), "p50": _percentile(self.waits_s, 50),
                                 "p95": _percentile(self.waits_s, 95)}}


def _percentile(values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile (None for none)."""
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)], 1)


def _day(at_s: float) -> str:
    return datetime.fromtimestamp(at_s, UTC).strftime("%Y-%m-%d")


def _pieces(start_s: float, end_s: float, by: str) -> Iterable[tuple[float, float]]:
    """The interval, cut at UTC midnights when counting by day."""
    while by == "day" and _day(start_s) != _day(end_s - 1e-6) and start_s < end_s:
        midnight = datetime.fromisoformat(_day(start_s) + "T00:00:00+00:00").timestamp() + 86400
        yield start_s, midnight
        start_s = midnight
    if start_s < end_s:
        yield start_s, end_s


def usage(ledgers: Mapping[str, list[dict[str, Any]]], since_s: float, until_s: float, by: str) -> list[UsageRow]:
    """The rows, one per key, sorted by key."""
    rows: dict[str, UsageRow] = {}

    def row(key: str) -> UsageRow:
        return rows.setdefault(key, UsageRow(key))

    def add(owner: str, node: str, start_s: float, end_s: float, hours_per_s: float, bucket: str | None) -> None:
        start_s, end_s = max(start_s, since_s), min(end_s, until_s)
        for a, b in _pieces(start_s, end_s, by):
            key = owner if by == "user" else node if by == "node" else _day(a)
            if bucket is None:
                row(key).gpu_hours_held += (b - a) * hours_per_s
            else:
                target = row(key).job_gpu_hours
                target[bucket] = target.get(bucket, 0.0) + (b - a) * hours_per_s

    for node, records in ledgers.items():
        grants: dict[str, tuple[dict[str, Any], float]] = {}  # open grants: record, latest expiry
        starts: dict[str, dict[str, Any]] = {}
        for record in records:
            at_s = epoch_s(str(record.get("at") or ""))
            if at_s is None:
                continue
            event, rid = record.get("event"), str(record.get("id"))
            gpus = len(record.get("gpus") or [])
            if event == "grant":
                grants[rid] = (record, epoch_s(str(record.get("expires_at") or "")) or until_s)
                if since_s <= at_s <= until_s:  # a row even for a grant shorter than the records' second
                    row(str(record.get("owner")) if by == "user" else node if by == "node" else _day(at_s))
                queued_s = epoch_s(str(record.get("queued_at") or ""))
                if queued_s is not None and since_s <= at_s <= until_s:
                    key = str(record.get("owner")) if by == "user" else node if by == "node" else _day(at_s)
                    row(key).waits_s.append(at_s - queued_s)
            elif event == "renew" and rid in grants:
                grants[rid] = (grants[rid][0], epoch_s(str(record.get("expires_at") or "")) or grants[rid][1])
            elif event == "end" and rid in grants:
                grant, _ = grants.pop(rid)
                start_s = epoch_s(str(grant["at"])) or at_s
                end_s = epoch_s(str(record.get("ended_at") or "")) or at_s
                add(str(grant.get("owner")), node, start_s, end_s, gpus / 3600.0, None)
            elif event == "job_start":
                starts[rid] = record
            elif event == "job_end" and rid in starts:
                start = starts.pop(rid)
                add(str(start.get("owner")), node, epoch_s(str(start["at"])) or at_s, at_s,
                    len(start.get("gpus") or []) / 3600.0, str(record.get("state")))
        for start in starts.values():  # still running
            add(str(start.get("owner")), node, epoch_s(str(start["at"])) or until_s, until_s,
                len(start.get("gpus") or []) / 3600.0, "running")
        for grant, expires_s in grants.values():  # still held (or ended unseen): to now, or its expiry
            start_s = epoch_s(str(grant["at"])) or until_s
            add(str(grant.get("owner")), node, start_s, min(until_s, expires_s), len(grant.get("gpus") or []) / 3600.0,
                None)
    return [rows[k] for k in sorted(rows)]
