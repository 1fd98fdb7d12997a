"""Idle managed instances: no reservation, no queued request, no job, no GPU process, and every GPU
quiet by the one idle rule, continuously for `idle_stop_minutes`.

A use of the detector (`model/detect.py`) that judges idle reservations, fed the same events with the
same `[watch]` thresholds: an instance's GPUs are quiet when the detector's windows say so (utilization
below `util_below_pct`, the same processes, memory and power steady, no gap in the samples), so a burst
of work between two judgements counts. What the detector does not judge is checked here at every
judgement and must also have held since: the instance has no reservation, queued request, running job
or GPU process (a quiet process still stops the instance from being idle: stopping it would kill the
process). An instance is judged only while its agent answers: one that is booting, unreachable or
whose state is unreadable is never "idle" (stopping it on missing data would be the dstack 3-second-
timeout bug)."""

from __future__ import annotations

from gpuconsole.cloud.monitor import CloudView
from gpuconsole.format import iso_utc
from gpuconsole.model.alerts import Alert
from gpuconsole.model.detect import Detector
from gpuconsole.model.telemetry import NodeSnapshot

ENDED_JOB_STATES = frozenset({"succeeded", "failed", "cancelled", "preempted", "lost", "timed_out"})


def busy_reason(snapshot: NodeSnapshot) -> str | None:
    """Why the instance is in use apart from its GPUs' activity (which the detector judges), or None."""
    if snapshot.reservations:
        return f"{len(snapshot.reservations)} reservation(s)"
    if snapshot.queue:
        return f"{len(snapshot.queue)} queued request(s)"
    if any(job.state not in ENDED_JOB_STATES for job in snapshot.jobs):
        return "a job"
    for gpu in snapshot.gpus:
        if gpu.processes:
            return f"processes on GPU {gpu.index}"
    return None


class IdleCloudJudge:
    """Raises `idle_cloud` conditions from the detector's quiet windows and the instances' own state."""

    def __init__(self, idle_stop_s: float, detector: Detector) -> None:
        self.idle_stop_s = idle_stop_s
        self.detector = detector
        self.unused_since_s: dict[str, float] = {}  # first judgement that saw no reservation/job/process

    def _answering(self, name: str) -> NodeSnapshot | None:
        """The node's latest snapshot while its agent answers and its state is readable, else None."""
        snapshot = self.detector.snapshots.get(name)
        if snapshot is None or name in self.detector.down or snapshot.state_error:
            return None
        return snapshot

    def judge(self, now_s: float, view: CloudView) -> list[Alert]:
        """The idle_cloud conditions that hold now (keyed `idle_cloud:<instance id>`); `now_s` is on the
        clock the detector is fed with."""
        running = {i.id: i for i in view.instances if i.managed and i.state == "running"}
        for instance_id in list(self.unused_since_s):
            if instance_id not in running:
                del self.unused_since_s[instance_id]
        alerts: list[Alert] = []
        for instance_id, instance in running.items():
            snapshot = self._answering(instance_id)
            if snapshot is None or busy_reason(snapshot) is not None:
                self.unused_since_s.pop(instance_id, None)
                continue
            unused_since_s = self.unused_since_s.setdefault(instance_id, now_s)
            quiet_s = [self.detector.quiet_for_s(instance_id, gpu.index, now_s) for gpu in snapshot.gpus]
            if any(q is None for q in quiet_s):
                continue  # a GPU is busy by the idle rule (or not seen yet)
            idle_s = min([now_s - unused_since_s, *(q for q in quiet_s if q is not None)])
            if idle_s < self.idle_stop_s:
                continue
            price = f"${instance.price_per_hour:.2f}/h " if instance.price_per_hour is not None else ""
            alerts.append(Alert(
                kind="idle_cloud", node=instance_id, since=iso_utc(now_s - idle_s),
                gpus=tuple(g.index for g in snapshot.gpus), owner=instance.owner,
                key=f"idle_cloud:{instance_id}",
                message=(f"{price}{instance.type} {instance_id} idle for {idle_s / 60:.1f} min: "
                         "no reservation, no job, GPUs quiet"),
                extra={"instance": instance_id, "type": instance.type, "price_per_hour": instance.price_per_hour},
            ))
        return alerts
