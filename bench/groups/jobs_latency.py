"""The `jobs` group's latency step: GPU free → queued job start, on the state the throughput step left."""

from __future__ import annotations

import asyncio
import json
import shlex
import subprocess
import time
from pathlib import Path
from typing import Any

from harness import Check, Result, ms, percentile
from plan import Plan

from gpuconsole.config import Config, load_config
from gpuconsole.core.fleet import Fleet
from groups.jobs import JOB_STEP_TIMEOUT_S, JOB_TERMINAL, JOBS_GPUS, Gates, job_state, submit_until

STAMP_ARGV = ("date", "+%s.%N")  # GNU date: wall clock in ns as the job's first action, ~1 ms
JOBS_LATENCY_BUDGET = "p50 ≤ 300 ms, p99 ≤ 1 s"  # issue 14: GPU free → next job start p50 ≤ 300 ms


async def _latency_trials(config: Config, trials: int, gate_dir: Path) -> dict[str, Any]:
    """8 gate jobs hold the GPUs; per trial queue a stamp job, open one gate, read the stamp.

    Trial 0 is a warm-up. Phases come from the node's state file (float wall times): gate →
    gate job recorded ended (exit seen + finish commit), → stamp job claimed (supervisor poll +
    claim), → stamp (spawn + exec of the command).
    """
    node = config.nodes[0].name
    state_path = Path(config.nodes[0].state_dir, "state.json")
    async with Fleet(config) as fleet:
        await fleet.connect()
        reply = await fleet.request(node, "jobs", {})
        active = [job["id"] for job in reply["jobs"] if job["state"] not in JOB_TERMINAL]
        if active:
            raise RuntimeError(f"jobs latency: node not idle, active jobs {active[:5]}")
        gates = Gates(fleet, node, gate_dir)
        stamp_lost: list[str] = []
        samples_ms: list[float] = []
        phases: dict[str, list[float]] = {"gate_to_gpu_freed_ms": [], "freed_to_claimed_ms": [],
                                          "claimed_to_stamp_ms": []}
        try:
            for _ in range(JOBS_GPUS):
                await gates.hold()
            for trial in range(trials + 1):
                stamp_id = await submit_until(fleet, node, list(STAMP_ARGV), "queued",
                                               stamp_lost)
                gate_id, released = gates.release_oldest()
                stamp = await _read_stamp(fleet, node, stamp_id)
                await _wait_ended(fleet, node, stamp_id)
                await gates.hold()  # the stamp job's GPU is free again: hold all 8 once more
                if not trial:
                    continue
                samples_ms.append(ms(stamp - released))
                jobs = json.loads(state_path.read_text())["jobs"]  # noqa: ASYNC240
                freed, claimed = jobs[gate_id]["ended_wall"], jobs[stamp_id]["started_wall"]
                phases["gate_to_gpu_freed_ms"].append(ms(freed - released))
                phases["freed_to_claimed_ms"].append(ms(claimed - freed))
                phases["claimed_to_stamp_ms"].append(ms(stamp - claimed))
        finally:
            gates.release_all()
        return {"samples_ms": samples_ms, "phases": phases, "stamp_jobs_lost": len(stamp_lost),
                "gate_jobs_lost": len(gates.lost), "gate_jobs": gates.count}


async def _read_stamp(fleet: Fleet, node: str, job_id: str) -> float:
    """The wall time the stamp job printed, polling its stdout every 20 ms."""
    deadline = time.monotonic() + JOB_STEP_TIMEOUT_S
    while True:
        reply = await fleet.request(node, "logs", {"id": job_id, "stream": "stdout", "offset": 0})
        if reply["data"].endswith("\n"):
            return float(reply["data"].split()[0])
        if reply["ended"] or time.monotonic() > deadline:
            raise RuntimeError(f"jobs: stamp job {job_id} is {reply.get('state')} "
                               f"without output")
        await asyncio.sleep(0.02)


async def _wait_ended(fleet: Fleet, node: str, job_id: str) -> None:
    """Wait until the job has ended (its GPU is free again)."""
    deadline = time.monotonic() + JOB_STEP_TIMEOUT_S
    while await job_state(fleet, node, job_id) not in JOB_TERMINAL:
        if time.monotonic() > deadline:
            raise RuntimeError(f"jobs: job {job_id} did not end")
        await asyncio.sleep(0.02)


def _stamp_floor_ms(runs: int) -> list[float]:
    """Spawn → wall time printed by STAMP_ARGV from this process: the instrument's own share."""
    samples = []
    for _ in range(runs):
        spawned = time.time()
        out = subprocess.run(list(STAMP_ARGV), capture_output=True, text=True, timeout=10,
                             check=True)
        samples.append(ms(float(out.stdout) - spawned))
    return samples


def bench_jobs_latency(plan: Plan, work: Path, config_path: Path) -> list[Result]:
    """GPU free → queued job start: open one gate job's FIFO, time until the queued job stamps."""
    from gpuconsole.node.supervisor import POLL_S

    gate_dir = work / "jobs-gates-latency"
    gate_dir.mkdir()
    data = asyncio.run(_latency_trials(load_config(str(config_path)), plan.jobs_latency_trials,
                                       gate_dir))
    floor_ms = percentile(_stamp_floor_ms(10), 50)
    phases = {f"{key}_p50": percentile(values, 50) for key, values in data["phases"].items()}
    phases.update({f"{key}_max": max(values) for key, values in data["phases"].items()})
    return [Result(
        f"jobs GPU free → queued job start (gate release → job's first action), "
        f"1 node x {JOBS_GPUS} GPUs", "jobs", "ms", data["samples_ms"],
        budget=JOBS_LATENCY_BUDGET, checks=[Check("p50", "<=", 300.0), Check("p99", "<=", 1000.0)],
        notes=f"8 `cat FIFO` jobs hold the GPUs; the queued job's waiter wakes on the state change "
              f"(inotify) and starts its supervisor (poll {POLL_S:g} s only without a waiter); "
              f"stamp `{shlex.join(STAMP_ARGV)}` spawn floor {floor_ms:.1f} ms",
        extra={**phases, "supervisor_poll_s": POLL_S, "stamp_spawn_floor_ms": floor_ms,
               **{k: v for k, v in data.items() if k not in ("samples_ms", "phases")}})]
