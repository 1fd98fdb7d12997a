"""Queued jobs cost no process: one waiter per user per node starts each job's supervisor on its grant."""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gpuconsole.demo.cluster import DemoThread
from tests.helpers import cli_json, run_cli, submit_job, wait_for

pytestmark = pytest.mark.timeout(180)
QUEUED_JOBS = 100  # issue 14: queued jobs add at most one process per user (1,000 in bench/), each `true`


def _roles(state_dir: Path) -> dict[str, int]:
    """This node's gpuconsole background processes of ours: waiters and job supervisors.

    A waiter's child between fork and exec still shows the waiter's environment: a "waiter" whose
    parent is a waiter is that supervisor on its way, not a second waiter.
    """
    found = {"waiter": 0, "supervisor": 0}
    waiters: dict[int, int] = {}  # pid → parent pid
    want = str(state_dir.resolve())
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/environ").read_bytes()
            if b"GPUCONSOLE_ROLE=supervisor" not in raw:
                continue
            status = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = status.rsplit(")", 1)[1].split()
        if fields[0] == "Z":
            continue  # exited, not yet reaped
        env = dict(item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
        if os.path.realpath(env.get(b"GPUCONSOLE_STATE_DIR", b"").decode()) != want:
            continue
        if env.get(b"GPUCONSOLE_JOB_ID"):
            found["supervisor"] += 1
        else:
            waiters[int(entry)] = int(fields[1])
    found["waiter"] = sum(1 for parent in waiters.values() if parent not in waiters)
    return found


def _jobs_of(state_dir: Path) -> list[dict[str, Any]]:
    """The node's job records in queue order (read from the state file: no CLI process per poll)."""
    state = json.loads((state_dir / "state.json").read_text())
    return sorted(state["jobs"].values(), key=lambda j: j["seq"])


def test_queued_jobs_add_one_waiter_process_and_all_run_in_order(demo_factory: Callable[..., DemoThread]) -> None:
    """100 queued jobs: one waiter process for the user (the old design had a supervisor per job),
    and, once the GPU frees, every job runs, each after the one queued before it."""
    demo = demo_factory(nodes=1, gpus=1)
    config = demo.config_path
    state_dir = demo.cluster.nodes["node-01"].state_dir
    hold = cli_json("reserve", "--gpus", "1", config=config)  # the GPU is taken: every job queues
    first = submit_job(config, "first", "--gpus", "1", argv=["true"])
    result = run_cli("submit", "--array", f"0-{QUEUED_JOBS - 3}", "--gpus", "1", "--name", "many", "--json", "--",
                     "true", config=config)
    assert result.returncode == 0, result.stderr
    last = submit_job(config, "last", "--gpus", "1", argv=["true"])
    assert first["position"] == 1 and last["position"] == QUEUED_JOBS
    # Every queued job waits on the one waiter: no process of its own.
    assert wait_for(lambda: _roles(state_dir), timeout_s=10) == {"waiter": 1, "supervisor": 0}
    assert [j["state"] for j in _jobs_of(state_dir)] == ["queued"] * QUEUED_JOBS

    released = run_cli("release", hold["id"], config=config)
    assert released.returncode == 0, released.stderr
    waiters_seen: set[int] = set()

    def all_succeeded() -> bool:
        waiters_seen.add(_roles(state_dir)["waiter"])
        return [j["state"] for j in _jobs_of(state_dir)] == ["succeeded"] * QUEUED_JOBS

    wait_for(all_succeeded, timeout_s=150, interval_s=0.5, message=f"all {QUEUED_JOBS} jobs succeeded")
    assert waiters_seen <= {0, 1}  # never a second waiter while the queue drained
    # In queue order: on one GPU each starts after the one queued before it has ended.
    records = _jobs_of(state_dir)
    assert all(earlier["ended_wall"] <= later["started_wall"] for earlier, later in itertools.pairwise(records))
    assert records[0]["id"] == first["id"] and records[-1]["id"] == last["id"]
    assert [j["array"]["index"] for j in records[1:-1]] == list(range(QUEUED_JOBS - 2))
    listed = cli_json("jobs", config=config)["jobs"]
    assert len(listed) == QUEUED_JOBS and {j["state"] for j in listed} == {"succeeded"}
    # With nothing queued the waiter is gone too.
    wait_for(lambda: _roles(state_dir) == {"waiter": 0, "supervisor": 0}, timeout_s=20, message="no process left")


def test_a_job_queued_behind_a_busy_gpu_starts_when_it_frees(demo_factory: Callable[..., DemoThread],
                                                              tmp_path: Path) -> None:
    """The waiter wakes on the state change itself (inotify), starts the supervisor, which claims."""
    demo = demo_factory(nodes=1, gpus=1)
    config = demo.config_path
    gate = tmp_path / "gate"
    wait_gate = f"while [ ! -e {gate} ]; do sleep 0.05; done"
    blocker = submit_job(config, "blocker", "--gpus", "1", argv=["sh", "-c", wait_gate])
    queued = submit_job(config, "next", "--gpus", "1", argv=["sh", "-c", "echo next on $CUDA_VISIBLE_DEVICES"])
    assert queued["position"] == 1
    wait_for(lambda: _roles(demo.cluster.nodes["node-01"].state_dir) == {"waiter": 1, "supervisor": 1},
             timeout_s=15, message="the blocker's supervisor and one waiter")
    gate.touch()
    wait_for(lambda: {j["name"]: j["state"] for j in cli_json("jobs", config=config)["jobs"]}
             == {"blocker": "succeeded", "next": "succeeded"}, timeout_s=30, message="both ran")
    logs = run_cli("logs", queued["id"], config=config)
    assert logs.stdout == "next on 0\n"
    assert blocker["position"] is None
