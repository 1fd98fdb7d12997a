"""A Slurm cluster's view as the fleet shows it: the login node's `snapshot` carries Slurm's nodes and
jobs (node/slurm.py); each Slurm node becomes one entry named `CLUSTER/NODE` with `source` "slurm",
one GPU per GRES GPU, held by the job Slurm allocated it to. GPU telemetry is unknown (null) unless
an agent runs on the compute nodes, never guessed."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from gpuconsole.model.jobs import Job
from gpuconsole.model.telemetry import GpuSample, NodeSnapshot, ReservationRef, SlurmNode
from gpuconsole.model.wire import (
    ABSENT,
    Opt,
    WireError,
    boolean,
    describe,
    integer,
    join,
    list_of,
    metric_int,
    nullable,
    obj,
    string,
)

RESERVE_NAME = "gpuconsole-reserve"  # node/slurm.py: the allocations `reserve` makes
MAX_GPUS = 4096
SLURM_STREAM_S = 5.0  # node/slurm.py's MIN_STREAM_S: a login node streams no more often (tests hold them equal)

_INDICES = list_of(integer(0, 4095))
_EPOCH = integer(0, 253402300799)  # seconds, up to the year 9999 (what time.gmtime can show)
# Slurm node and partition names become parts of entry names and table cells: identifiers only.
_IDENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def _ident(value: Any, path: str) -> str:
    text = string(value, path)
    if not _IDENT.fullmatch(text):
        raise WireError(path, f"not a Slurm name: {describe(value)}")
    return text


def _gpus_by_node(value: Any, path: str) -> dict[str, list[int]]:
    """{Slurm node name: [GPU index, …]} of one job."""
    if not isinstance(value, dict):
        raise WireError(path, f"expected an object, got {describe(value)}")
    return {_ident(node, path): _INDICES(indices, join(path, str(node))) for node, indices in value.items()}


SLURM_NODE = obj({
    "name": _ident, "address": Opt(string, ""), "state": string, "reason": Opt(string, ""),
    "partitions": Opt(list_of(_ident), []),
    "gpus": integer(0, MAX_GPUS), "gpus_used": Opt(integer(0, MAX_GPUS), 0), "cpus": Opt(nullable(metric_int)),
})
SLURM_JOB = obj({
    "job_id": integer(0, 2**63 - 1), "name": Opt(string, ""), "user": string, "state": string,
    "reason": Opt(string, ""), "gpus": Opt(integer(0, MAX_GPUS), 0), "start_s": Opt(nullable(_EPOCH)),
    "end_s": Opt(nullable(_EPOCH)), "nodes": Opt(string, ""),
    "gpus_by_node": Opt(_gpus_by_node, {}), "batch": Opt(boolean, False),
})
SLURM_VIEW = obj({"cluster": string, "source": Opt(string, "json"), "nodes": list_of(SLURM_NODE),
                  "jobs": list_of(SLURM_JOB)})
SLURM_FIELD = Opt(SLURM_VIEW, ABSENT)  # the `slurm` key of a snapshot (model/replies.py)


def _iso(epoch_s: Any) -> str:
    import time

    try:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch_s)) if isinstance(epoch_s, int) else ""
    except (OverflowError, OSError, ValueError):
        return ""


def node_snapshots(name: str, result: object, source: str = "onprem") -> list[NodeSnapshot]:
    """A member's `snapshot` answer as fleet entries: a Slurm login node's, one per Slurm node (or
    the cluster itself, unreachable, with its error); any other member's, itself."""
    if source != "slurm" or not isinstance(result, dict) or not isinstance(result.get("slurm"), dict):
        return [NodeSnapshot.from_result(name, result, source)]
    view = result["slurm"]
    holders: dict[tuple[str, int], ReservationRef] = {}
    jobs: dict[str, list[Job]] = {}  # batch jobs by node: the detector names their GPUs a job's, never released
    for job in view["jobs"]:
        if job["state"] not in ("RUNNING", "COMPLETING", "CONFIGURING"):
            continue
        ref = ReservationRef(id=f"{name}.{job['job_id']}", owner=job["user"], expires_at=_iso(job.get("end_s")))
        for node, indices in job["gpus_by_node"].items():
            for index in indices:
                holders[(node, index)] = ref
            if job["batch"] or job["name"] != RESERVE_NAME:
                jobs.setdefault(node, []).append(Job(
                    id=ref.id, node=f"{name}/{node}", name=job["name"], gpus=tuple(indices),
                    gpus_requested=job["gpus"], owner=job["user"], priority="normal", state="running",
                    exit_code=None, command="", created_at=None, started_at=_iso(job.get("start_s")) or None,
                    ended_at=None))
    snapshots = []
    for node in view["nodes"]:
        gpus = tuple(GpuSample(index=i, uuid=None, name=None, util_pct=None, mem_used_mib=None, mem_total_mib=None,
                               temperature_c=None, power_w=None, reservation=holders.get((node["name"], i)))
                     for i in range(node["gpus"]))
        snapshots.append(NodeSnapshot(
            name=f"{name}/{node['name']}", source="slurm", reachable=True, taken_at=result.get("t_wall"),
            cpu_count=node.get("cpus"), gpu_source="slurm", gpus=gpus, jobs=tuple(jobs.get(node["name"], ())),
            slurm=SlurmNode(name, node["name"], node["state"], node.get("reason") or "",
                            tuple(node.get("partitions") or ()))))
    return snapshots


def with_telemetry(slurm: NodeSnapshot, agent: NodeSnapshot | None) -> NodeSnapshot:
    """A Slurm node's entry with what the agent on it measured: host I/O and, GPU by GPU (Slurm's GRES
    index = the device's index), utilization, memory, temperature, power and processes; who holds a
    GPU stays Slurm's word. Without an agent (or with one that failed), the entry as Slurm has it."""
    if agent is None or not agent.reachable:
        return slurm
    measured = {gpu.index: gpu for gpu in agent.gpus}
    gpus = tuple(replace(measured[g.index], reservation=g.reservation) if g.index in measured else g
                 for g in slurm.gpus)
    return replace(slurm, taken_at=agent.taken_at, cpu_pct=agent.cpu_pct, cpu_count=agent.cpu_count,
                   load1=agent.load1, mem_used_bytes=agent.mem_used_bytes, mem_total_bytes=agent.mem_total_bytes,
                   disk_read_bps=agent.disk_read_bps, disk_write_bps=agent.disk_write_bps,
                   net_rx_bps=agent.net_rx_bps, net_tx_bps=agent.net_tx_bps, gpu_source=agent.gpu_source,
                   gpus=gpus, warnings=agent.warnings)


def addresses(name: str, result: object) -> dict[str, str]:
    """{entry name `CLUSTER/NODE`: the address Slurm gives the node} of a login node's snapshot."""
    if not isinstance(result, dict) or not isinstance(result.get("slurm"), dict):
        return {}
    return {f"{name}/{node['name']}": node.get("address") or node["name"] for node in result["slurm"]["nodes"]}
