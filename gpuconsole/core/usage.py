"""GPU usage from the nodes' ledgers (node/ledger.py): GPU-hours held per user, node or day, of
them the hours held while the watcher judged them idle, unreserved GPU-hours (processes on GPUs no
grant covered), job GPU-hours by how the jobs ended, how long granted requests waited in the queue,
and cloud hours and dollars per owner from the managed EC2 instances. Pure: the caller fetches the
ledgers and instances (`usage` command) and passes the clock.

A grant holds its GPUs from its record to its end record's `ended_at` (an expired lease ends at its
expiry), or, not ended yet, to now or to its latest known expiry (`grant`/`renew`), whichever is
first. It is idle from an `idle_start`'s `idle_since` to its `idle_end` or its end. Unreserved use
runs from `unreserved_start` to `unreserved_end` (or now), each GPU-hour shared among the users
seen on the GPU. An instance costs its list price from launch to its end (or now). Every interval
is clipped to the window [since, until].
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gpuconsole.format import epoch_s
from gpuconsole.model.cloud import Instance

BY = ("user", "node", "day")


@dataclass
class UsageRow:
    """One user's, node's or day's figures."""

    key: str
    gpu_hours_held: float = 0.0
    job_gpu_hours: dict[str, float] = field(default_factory=dict)  # by outcome (succeeded, failed, …)
    waits_s: list[float] = field(default_factory=list)
    gpu_hours_idle: float = 0.0  # of gpu_hours_held, while the watcher judged the grant idle
    gpu_hours_unreserved: float = 0.0
    cloud_hours: float = 0.0
    cloud_usd: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "gpu_hours_held": round(self.gpu_hours_held, 4),
                "gpu_hours_idle": round(self.gpu_hours_idle, 4),
                "gpu_hours_unreserved": round(self.gpu_hours_unreserved, 4),
                "job_gpu_hours": {k: round(v, 4) for k, v in sorted(self.job_gpu_hours.items())},
                "queue_wait_s": {"n": len(self.waits_s), "p50": _percentile(self.waits_s, 50),
                                 "p95": _percentile(self.waits_s, 95)},
                "cloud_hours": round(self.cloud_hours, 4), "cloud_usd": round(self.cloud_usd, 4)}


def _gpu_count(record: Mapping[str, Any]) -> int:
    """How many GPUs a ledger record names (a node's record is hostile: anything else counts 0)."""
    gpus = record.get("gpus")
    return len(gpus) if isinstance(gpus, list) else 0


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


HELD, IDLE, UNRESERVED = "held", "idle", "unreserved"  # what `add` counts, besides jobs by outcome


def usage(ledgers: Mapping[str, list[dict[str, Any]]], since_s: float, until_s: float, by: str,
          instances: Sequence[Instance] = ()) -> list[UsageRow]:
    """The rows, one per key, sorted by key."""
    rows: dict[str, UsageRow] = {}

    def row(key: str) -> UsageRow:
        return rows.setdefault(key, UsageRow(key))

    def add(owner: str, node: str, start_s: float, end_s: float, hours_per_s: float, bucket: str) -> None:
        start_s, end_s = max(start_s, since_s), min(end_s, until_s)
        for a, b in _pieces(start_s, end_s, by):
            target = row(owner if by == "user" else node if by == "node" else _day(a))
            hours = (b - a) * hours_per_s
            if bucket == HELD:
                target.gpu_hours_held += hours
            elif bucket == IDLE:
                target.gpu_hours_idle += hours
            elif bucket == UNRESERVED:
                target.gpu_hours_unreserved += hours
            else:
                target.job_gpu_hours[bucket] = target.job_gpu_hours.get(bucket, 0.0) + hours

    for node, records in ledgers.items():
        _node_usage(node, records, since_s, until_s, row, add, by)
    for instance in instances:
        start_s = max(instance.launched_at_s, since_s)
        end_s = min(until_s, instance.ended_at_s if instance.ended_at_s is not None else until_s)
        if not instance.live and instance.ended_at_s is None:
            continue  # ended, and EC2 did not say when: nothing can be vouched for
        for a, b in _pieces(start_s, end_s, by):
            target = row(instance.owner or "?" if by == "user" else instance.id if by == "node" else _day(a))
            target.cloud_hours += (b - a) / 3600.0
            target.cloud_usd += (b - a) / 3600.0 * (instance.price_per_hour or 0.0)
    return [rows[k] for k in sorted(rows)]


def _node_usage(node: str, records: list[dict[str, Any]], since_s: float, until_s: float,
                row: Callable[[str], UsageRow], add: Callable[[str, str, float, float, float, str], None],
                by: str) -> None:
    """One node's ledger into the rows."""
    grants: dict[str, tuple[dict[str, Any], float]] = {}  # open grants: record, latest expiry
    starts: dict[str, dict[str, Any]] = {}
    idle: dict[str, tuple[str, int, float]] = {}  # idle grants: owner, GPUs, since
    unreserved: dict[str, tuple[list[str], float]] = {}  # GPU → users, since
    for record in records:
        at_s = epoch_s(str(record.get("at") or ""))
        if at_s is None:
            continue
        event, rid = record.get("event"), str(record.get("id"))
        gpus = _gpu_count(record)
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
            add(str(grant.get("owner")), node, start_s, end_s, gpus / 3600.0, HELD)
            if rid in idle:
                owner, count, idle_s = idle.pop(rid)
                add(owner, node, idle_s, end_s, count / 3600.0, IDLE)
        elif event == "idle_start" and rid in grants:
            idle[rid] = (str(record.get("owner")), gpus, epoch_s(str(record.get("idle_since") or "")) or at_s)
        elif event == "idle_end" and rid in idle:
            owner, count, idle_s = idle.pop(rid)
            add(owner, node, idle_s, at_s, count / 3600.0, IDLE)
        elif event == "unreserved_start":
            users = record.get("users")
            unreserved[str(record.get("gpu"))] = ([str(u) for u in users] if isinstance(users, list) and users
                                                  else ["?"], at_s)
        elif event == "unreserved_end" and str(record.get("gpu")) in unreserved:
            users, start_s = unreserved.pop(str(record.get("gpu")))
            for user in users:
                add(user, node, start_s, at_s, 1 / 3600.0 / len(users), UNRESERVED)
        elif event == "job_start":
            starts[rid] = record
        elif event == "job_end" and rid in starts:
            start = starts.pop(rid)
            add(str(start.get("owner")), node, epoch_s(str(start["at"])) or at_s, at_s,
                _gpu_count(start) / 3600.0, str(record.get("state")))
    for start in starts.values():  # still running
        add(str(start.get("owner")), node, epoch_s(str(start["at"])) or until_s, until_s,
            _gpu_count(start) / 3600.0, "running")
    for rid, (grant, expires_s) in grants.items():  # still held (or ended unseen): to now, or its expiry
        start_s = epoch_s(str(grant["at"])) or until_s
        end_s = min(until_s, expires_s)
        add(str(grant.get("owner")), node, start_s, end_s, _gpu_count(grant) / 3600.0, HELD)
        if rid in idle:
            owner, count, idle_s = idle.pop(rid)
            add(owner, node, idle_s, end_s, count / 3600.0, IDLE)
    for users, start_s in unreserved.values():  # still in use
        for user in users:
            add(user, node, start_s, until_s, 1 / 3600.0 / len(users), UNRESERVED)
