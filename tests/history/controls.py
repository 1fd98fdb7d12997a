"""The shapes of the histories: the nemesis run (CI, bench), and the negative controls, histories
on a deliberately broken node that the checker must catch, each contentious enough that the fault
shows within seconds."""

from __future__ import annotations

from tests.history.nemesis import NemesisSpec
from tests.history.runner import RunSpec
from tests.history.workload import Workload

CHURN = {"reserve": 5.0, "release": 4.0, "renew": 1.0, "reservations": 0.2}


def nemesis(seconds: float, seed: int = 1) -> RunSpec:
    """Two nodes × 4 GPUs, four CLI clients and two API clients, every fault kind, 4 s job leases."""
    return RunSpec(seconds=seconds, nodes=2, gpus=4, cli_clients=4, api_clients=2, job_ttl_s=4.0, seed=seed)


def no_lock(seconds: float = 15.0) -> RunSpec:
    """Six fast clients reserving and releasing on one node whose agents never lock."""
    return RunSpec(seconds=seconds, nodes=1, gpus=4, cli_clients=0, api_clients=6, nemesis=None,
                   workload=Workload(max_gpus=2, ttl_s=(2.0, 6.0), think_s=(0.0, 0.01), weights=dict(CHURN)),
                   agent_faults="no_lock", job_ttl_s=None, seed=11)


def ack_before_commit(seconds: float = 10.0) -> RunSpec:
    """Answers as if committed, never written."""
    return RunSpec(seconds=seconds, nodes=1, gpus=4, cli_clients=1, api_clients=2, nemesis=None,
                   workload=Workload(max_gpus=2, ttl_s=(3.0, 8.0), weights=dict(CHURN)),
                   agent_faults="ack_before_commit", job_ttl_s=None, seed=12)


def job_lease_expires(seconds: float = 25.0) -> RunSpec:
    """Long jobs hidden from NVML hold both GPUs; their supervisors are stopped beyond the 3 s
    lease while three clients keep asking for a GPU."""
    return RunSpec(
        seconds=seconds, nodes=1, gpus=2, cli_clients=0, api_clients=3,
        workload=Workload(max_gpus=1, ttl_s=(2.0, 5.0), job_s=(10.0, 15.0), invisible_jobs=1.0, max_jobs=2,
                          stubborn_jobs=0.0, think_s=(0.02, 0.1),
                          weights={"reserve": 6.0, "release": 3.0, "submit": 2.0}),
        nemesis=NemesisSpec(kinds=("stop_supervisor",), stop_s=(7.0, 9.0), every_s=(0.3, 0.8), first_s=2.0),
        agent_faults="job_lease_expires", job_ttl_s=3.0, seed=13)
