"""The `jobs` group's queue step: a deep queue on one node (issue 14: 1,000 queued jobs, ≤ one
waiting process per user, submit ≥ 100 jobs/s, array ≥ 1,000 jobs/s), on one warm connection."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from harness import Check, Result, ms, percentile
from plan import Plan

from gpuconsole.config import Config, load_config
from gpuconsole.core.fleet import Fleet
from gpuconsole.node import procs
from groups.common import TTL_S, new_req_id
from groups.jobs import JOB_STEP_TIMEOUT_S, JOBS_GPUS, SHORT_JOB_ARGV

ARRAY_CHUNK = 1000  # jobs.MAX_ARRAY: the most one `submit --array` may queue
ARRAY_BUDGET_JOBS_PER_S = 1000.0
SUBMIT_BUDGET_JOBS_PER_S = 100.0


def node_roles(state_dir: str, waiter_pids: list[int] | None = None) -> dict[str, int]:
    """This node's gpuconsole background processes (waiters, job supervisors), from /proc; the
    waiters' pids go to `waiter_pids` when given."""
    found = {"waiter": 0, "supervisor": 0}
    want = os.path.realpath(state_dir)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as handle:
                raw = handle.read()
            if b"GPUCONSOLE_ROLE=supervisor" not in raw:
                continue
            with open(f"/proc/{entry}/stat", "rb") as handle:
                if handle.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                    continue
        except OSError:
            continue
        env = dict(item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
        if os.path.realpath(env.get(b"GPUCONSOLE_STATE_DIR", b"").decode()) != want:
            continue
        role = "supervisor" if env.get(b"GPUCONSOLE_JOB_ID") else "waiter"
        found[role] += 1
        if role == "waiter" and waiter_pids is not None:
            waiter_pids.append(int(entry))
    return found


def _cpu_s(pids: list[int]) -> float:
    """CPU seconds (user + system) the processes used so far; 0 for one that is gone."""
    total = 0
    for pid in pids:
        total += procs.cpu_ticks(pid) or 0
    return total / os.sysconf("SC_CLK_TCK")


async def _deep_queue(config: Config, queued_n: int, singles_n: int) -> dict[str, Any]:
    """Hold every GPU, queue `queued_n` jobs by arrays (≤ ARRAY_CHUNK each), then `singles_n` single
    submits on the same open connection; count the node's processes; cancel everything."""
    node = config.nodes[0].name
    state_dir = config.nodes[0].state_dir
    async with Fleet(config) as fleet:
        await fleet.connect()
        hold = await fleet.request(node, "reserve", {"gpus": JOBS_GPUS, "ttl_s": TTL_S, "req_id": new_req_id()})
        arrays: list[dict[str, Any]] = []
        singles_ms: list[float] = []
        queued_ids: list[str] = []
        try:
            left = queued_n
            while left > 0:
                count = min(ARRAY_CHUNK, left)
                sent = time.perf_counter()
                reply = await fleet.request(node, "submit_array", {
                    "argv": list(SHORT_JOB_ARGV), "gpus": 1, "indices": list(range(count)),
                    "name": "queue", "req_id": new_req_id()})
                arrays.append({"id": reply["id"], "jobs": count, "s": time.perf_counter() - sent})
                queued_ids.extend(job["id"] for job in reply["jobs"])
                left -= count
            waiter_pids: list[int] = []
            roles_queued = node_roles(state_dir, waiter_pids)
            waiter_cpu0 = _cpu_s(waiter_pids)
            began = time.perf_counter()
            for _ in range(singles_n):
                sent = time.perf_counter()
                reply = await fleet.request(node, "submit", {"argv": list(SHORT_JOB_ARGV), "gpus": 1,
                                                             "name": "single", "req_id": new_req_id()})
                singles_ms.append(ms(time.perf_counter() - sent))
                queued_ids.append(reply["id"])
            singles_s = time.perf_counter() - began
            waiter_cpu_s = _cpu_s(waiter_pids) - waiter_cpu0
            roles_after = node_roles(state_dir)
        finally:
            for start in range(0, len(queued_ids), 50):  # the node cancels one job per request
                await asyncio.gather(*(fleet.request(node, "cancel", {"id": job_id, "req_id": new_req_id()})
                                       for job_id in queued_ids[start:start + 50]))
            await fleet.request(node, "release", {"id": hold["id"], "req_id": new_req_id()})
        deadline = time.monotonic() + JOB_STEP_TIMEOUT_S
        while time.monotonic() < deadline:  # the waiter leaves once nothing names it
            if not node_roles(state_dir)["waiter"]:
                break
            await asyncio.sleep(0.05)
        return {"arrays": arrays, "singles_ms": singles_ms, "singles_s": singles_s, "waiter_cpu_s": waiter_cpu_s,
                "roles_queued": roles_queued, "roles_after_singles": roles_after,
                "roles_after_cancel": node_roles(state_dir),
                "state_json_bytes": Path(state_dir, "state.json").stat().st_size}  # noqa: ASYNC240


def bench_jobs_queue(plan: Plan, work: Path, config_path: Path) -> list[Result]:
    """Array submit jobs/s, single submit jobs/s on a warm connection behind a deep queue, and the
    node's processes with that queue."""
    queued_n, singles_n = plan.jobs_queue_n, plan.jobs_queue_singles
    data = asyncio.run(_deep_queue(load_config(str(config_path)), queued_n, singles_n))
    label = f"1 node x {JOBS_GPUS} GPUs held, `true`"
    array_rates = [a["jobs"] / a["s"] for a in data["arrays"]]
    singles_rate = singles_n / data["singles_s"] if data["singles_s"] else None
    roles = data["roles_queued"]
    extra = {k: v for k, v in data.items() if k != "singles_ms"}
    return [
        Result(f"jobs array submit, {queued_n} queued in arrays of ≤ {ARRAY_CHUNK}, {label}", "jobs",
               "jobs/s", value=min(array_rates), budget=f"≥ {ARRAY_BUDGET_JOBS_PER_S:g} jobs/s",
               checks=[Check("value", ">=", ARRAY_BUDGET_JOBS_PER_S)] if not plan.quick else [],
               notes="slowest array request (request sent → reply, one warm connection); "
                     + ", ".join(f"{a['jobs']} in {ms(a['s']):.0f} ms" for a in data["arrays"]),
               extra=extra),
        Result(f"jobs single submit, warm connection, behind {queued_n} queued, {label}", "jobs", "jobs/s",
               value=singles_rate, budget=f"≥ {SUBMIT_BUDGET_JOBS_PER_S:g} jobs/s",
               checks=[Check("value", ">=", SUBMIT_BUDGET_JOBS_PER_S)] if not plan.quick else [],
               notes=f"{singles_n} sequential `submit` requests; p50 "
                     f"{percentile(data['singles_ms'], 50):.1f} ms, p99 {percentile(data['singles_ms'], 99):.1f} ms; "
                     f"the user's waiter used {data['waiter_cpu_s']:.2f} CPU s meanwhile (it re-reads the state "
                     f"on every change)",
               extra={"submit_ms_p50": percentile(data["singles_ms"], 50),
                      "submit_ms_p99": percentile(data["singles_ms"], 99)}),
        Result(f"jobs processes on the node with {queued_n} queued (one user)", "jobs", "count",
               value=float(roles["waiter"] + roles["supervisor"]), budget="≤ 1 per user",
               checks=[Check("value", "<=", 1.0)],
               notes=f"waiters {roles['waiter']}, job supervisors {roles['supervisor']}; "
                     f"after {singles_n} more submits {data['roles_after_singles']}",
               extra={"roles": roles, "roles_after_singles": data["roles_after_singles"],
                      "roles_after_cancel": data["roles_after_cancel"]}),
    ]
