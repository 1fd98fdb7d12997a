"""Hand-made snapshots for the watcher's unit tests (no cluster, injected clock)."""

from __future__ import annotations

from gpuconsole.model.telemetry import GpuProcess, GpuSample, Job, NodeSnapshot, ReservationRef

EXPIRES = "2030-01-01T00:00:00Z"


def gpu(index: int, *, util: float | None = 0.0, mem: int | None = 0, power: float | None = 70.0,
        res: str | None = None, owner: str = "alice", procs: tuple[tuple[int, str], ...] = ()) -> GpuSample:
    """One GPU sample; `res` reserves it for `owner`, `procs` are (pid, user) pairs on it."""
    ref = ReservationRef(res, owner, EXPIRES) if res else None
    processes = tuple(GpuProcess(pid, user, "python train.py", 1024) for pid, user in procs)
    return GpuSample(index, f"GPU-{index}", "Sim H100", util, mem, 81559, 35.0, power, ref, processes)


def snap(name: str, *gpus: GpuSample, job_ids: tuple[str, ...] = ()) -> NodeSnapshot:
    jobs = tuple(Job(j, name, j, (), 1, "alice", "normal", "running", None, "train", None, None, None)
                 for j in job_ids)
    return NodeSnapshot(name=name, reachable=True, gpus=gpus, jobs=jobs)
