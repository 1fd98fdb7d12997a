"""Idle managed instances: no reservation, no job, no GPU process and every GPU quiet, continuously
for `idle_stop_minutes`. An instance is judged only while its agent answers: one that is booting or
unreachable is never "idle" (stopping it on missing data would be the dstack 3-second-timeout bug)."""

from __future__ import annotations

from gpuconsole.cloud.monitor import CloudView
from gpuconsole.format import iso_utc
from gpuconsole.model.alerts import Alert
from gpuconsole.model.fleet import FleetState, Health
from gpuconsole.model.telemetry import NodeSnapshot

ENDED_JOB_STATES = frozenset({"succeeded", "failed", "cancelled", "preempted", "lost"})


def busy_reason(snapshot: NodeSnapshot, util_below_pct: float) -> str | None:
    """Why the node is not idle, or None if it is."""
    if snapshot.reservations:
        return f"{len(snapshot.reservations)} reservation(s)"
    if snapshot.queue:
        return f"{len(snapshot.queue)} queued request(s)"
    if any(job.state not in ENDED_JOB_STATES for job in snapshot.jobs):
        return "a job"
    for gpu in snapshot.gpus:
        if gpu.processes:
            return f"processes on GPU {gpu.index}"
        if (gpu.util_pct or 0.0) >= util_below_pct:
            return f"GPU {gpu.index} at {gpu.util_pct:.0f}%"
    return None


class IdleCloudJudge:
    """Tracks when each running managed instance was first seen idle; raises `idle_cloud` conditions."""

    def __init__(self, idle_stop_s: float, util_below_pct: float) -> None:
        self.idle_stop_s = idle_stop_s
        self.util_below_pct = util_below_pct
        self.idle_since_s: dict[str, float] = {}

    def judge(self, now_s: float, fleet: FleetState, view: CloudView) -> list[Alert]:
        """The idle_cloud conditions that hold now (keyed `idle_cloud:<instance id>`)."""
        running = {i.id: i for i in view.instances if i.managed and i.state == "running"}
        for instance_id in list(self.idle_since_s):
            if instance_id not in running:
                del self.idle_since_s[instance_id]
        alerts: list[Alert] = []
        for instance_id, instance in running.items():
            node = fleet.nodes.get(instance_id)
            snapshot = node.snapshot if node is not None and node.health() == Health.UP else None
            if snapshot is None or busy_reason(snapshot, self.util_below_pct) is not None:
                self.idle_since_s.pop(instance_id, None)
                continue
            since_s = self.idle_since_s.setdefault(instance_id, now_s)
            idle_s = now_s - since_s
            if idle_s < self.idle_stop_s:
                continue
            price = f"${instance.price_per_hour:.2f}/h " if instance.price_per_hour is not None else ""
            alerts.append(Alert(
                kind="idle_cloud", node=instance_id, since=iso_utc(since_s),
                gpus=tuple(g.index for g in snapshot.gpus), owner=instance.owner,
                key=f"idle_cloud:{instance_id}",
                message=(f"{price}{instance.type} {instance_id} idle for {idle_s / 60:.1f} min: "
                         "no reservation, no job, GPUs quiet"),
                extra={"instance": instance_id, "type": instance.type, "price_per_hour": instance.price_per_hour},
            ))
        return alerts
