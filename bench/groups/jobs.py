"""The `jobs` group's throughput step, and the job plumbing both its steps use (gates, submits, the
`jobs` poller): submits/s and dispatch rate of short jobs on one 8-GPU node."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drivers import DemoProcess
from harness import Check, Result, machine_cpu_ticks, ms, percentile
from plan import Plan

from gpuconsole.config import Config, load_config
from gpuconsole.core.fleet import Fleet
from groups.common import new_req_id

JOB_TERMINAL = frozenset({"succeeded", "failed", "cancelled", "preempted", "lost"})
JOBS_GPUS = 8
JOBS_POLL_S = 0.1  # the `jobs` poller's period while a batch drains
JOBS_DRAIN_TIMEOUT_S = 300.0
JOB_STEP_TIMEOUT_S = 30.0
JOB_SETTLE_S = (0.3, 0.5)  # a queued job's supervisor is up and polling before the gate opens
SHORT_JOB_ARGV = ("true",)


@dataclass
class JobWatch:
    """What the `jobs` poller saw of the submitted jobs: when each started and ended (perf s)."""

    submitted: dict[str, float] = field(default_factory=dict)
    started: dict[str, float] = field(default_factory=dict)
    ended: dict[str, float] = field(default_factory=dict)
    final: dict[str, str] = field(default_factory=dict)
    poll_ms: list[float] = field(default_factory=list)
    expected: int | None = None
    peak_queued: int = 0
    queued_now: int = 0


async def _watch_jobs(fleet: Fleet, node: str, watch: JobWatch) -> None:
    """Poll `jobs` every JOBS_POLL_S until `watch.expected` submitted jobs have all ended.

    A job counts as started when first seen running or with a start time, and as ended when first
    seen in a final state, or gone from the listing (only finished jobs are pruned).
    """
    began = time.perf_counter()
    while True:
        sent = time.perf_counter()
        reply = await fleet.request(node, "jobs", {})
        seen = time.perf_counter()
        watch.poll_ms.append(ms(seen - sent))
        listed = {job["id"]: job for job in reply["jobs"]}
        queued = 0
        for job_id, submitted in list(watch.submitted.items()):
            if job_id in watch.ended:
                continue
            job = listed.get(job_id)
            if job is None:
                if submitted < sent:
                    watch.ended[job_id], watch.final[job_id] = seen, "pruned"
                continue
            queued += job["state"] == "queued"
            if job["state"] == "running" or job["started_at"]:
                watch.started.setdefault(job_id, seen)
            if job["state"] in JOB_TERMINAL:
                watch.ended[job_id], watch.final[job_id] = seen, job["state"]
        watch.queued_now = queued
        watch.peak_queued = max(watch.peak_queued, queued)
        if watch.expected is not None and len(watch.ended) >= watch.expected:
            return
        if seen - began > JOBS_DRAIN_TIMEOUT_S:
            raise RuntimeError(f"jobs: {len(watch.ended)}/{len(watch.submitted)} ended after "
                               f"{JOBS_DRAIN_TIMEOUT_S:g} s")
        await asyncio.sleep(JOBS_POLL_S)


async def _submit_burst(fleets: list[Fleet], node: str, count: int, per_fleet: int,
                        watch: JobWatch, cap_s: float | None = None) -> tuple[list[float], float]:
    """`count` submits of SHORT_JOB_ARGV, `per_fleet` submitters on each Fleet, as fast as they go.

    Returns each request's latency (ms) and the wall time from the first send to the last reply;
    with `cap_s` no new submit starts after that many seconds.
    """
    remaining = [count]
    latencies_ms: list[float] = []
    began = time.perf_counter()

    async def submitter(fleet: Fleet, index: int) -> None:
        while remaining[0] > 0 and (cap_s is None or time.perf_counter() - began < cap_s):
            remaining[0] -= 1
            sent = time.perf_counter()
            reply = await fleet.request(node, "submit", {
                "argv": list(SHORT_JOB_ARGV), "gpus": 1, "name": f"bench-{index}",
                "req_id": new_req_id()})
            done = time.perf_counter()
            watch.submitted[reply["id"]] = done
            latencies_ms.append(ms(done - sent))

    await asyncio.gather(*(submitter(fleet, f * per_fleet + i)
                           for f, fleet in enumerate(fleets) for i in range(per_fleet)))
    return latencies_ms, time.perf_counter() - began


async def job_state(fleet: Fleet, node: str, job_id: str) -> str | None:
    """The job's state in the node's listing (None once pruned)."""
    reply = await fleet.request(node, "jobs", {})
    return next((job["state"] for job in reply["jobs"] if job["id"] == job_id), None)


async def submit_until(fleet: Fleet, node: str, argv: list[str], want: str,
                        lost: list[str]) -> str:
    """Submit argv and return its id once it is `want` (queued/running); a lost job is resubmitted.

    For "queued" the job must still be queued after JOB_SETTLE_S (its supervisor started and
    survived); lost jobs' ids are appended to `lost`.
    """
    for _ in range(20):
        reply = await fleet.request(node, "submit", {"argv": argv, "gpus": 1, "name": "bench",
                                                     "req_id": new_req_id()})
        job_id = str(reply["id"])
        deadline = time.monotonic() + JOB_STEP_TIMEOUT_S
        if want == "queued":
            await asyncio.sleep(random.uniform(*JOB_SETTLE_S))
        while True:
            state = await job_state(fleet, node, job_id)
            if state == want:
                return job_id
            if state == "lost":
                lost.append(job_id)
                break
            if state != "queued" or time.monotonic() > deadline:
                raise RuntimeError(f"jobs: job {job_id} is {state}, expected {want}")
            await asyncio.sleep(0.02)
    raise RuntimeError(f"jobs: 20 submits of {argv} in a row were lost")


def _open_gate(fifo: Path) -> float:
    """Release a `cat FIFO` job: open the write end and close it (EOF); time.time() at the close.

    The non-blocking open fails until the job's `cat` has the FIFO open, so the returned time
    never includes waiting for the job to start.
    """
    deadline = time.monotonic() + JOB_STEP_TIMEOUT_S
    while True:
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno != errno.ENXIO or time.monotonic() > deadline:
                raise
            time.sleep(0.002)
            continue
        released = time.time()
        os.close(fd)
        return released


class Gates:
    """Jobs that hold one GPU each until released: `cat FIFO`, no CPU while they wait.

    (A `while [ ! -e GATE ]; do sleep 0.01; done` loop would spawn 800 `sleep`s a second for
    8 GPUs on the same cores as the queue under test.)
    """

    def __init__(self, fleet: Fleet, node: str, directory: Path) -> None:
        self.fleet = fleet
        self.node = node
        self.directory = directory
        self.held: dict[str, Path] = {}  # job id → FIFO, oldest first
        self.lost: list[str] = []
        self.count = 0

    async def hold(self) -> str:
        """Start one gate job and wait until it runs (holds its GPU)."""
        self.count += 1
        fifo = self.directory / f"gate-{self.count}"
        os.mkfifo(fifo)
        job_id = await submit_until(self.fleet, self.node, ["cat", str(fifo)], "running",
                                     self.lost)
        self.held[job_id] = fifo
        return job_id

    def release_oldest(self) -> tuple[str, float]:
        """Open the oldest gate: (its job id, time.time() of the release)."""
        job_id = next(iter(self.held))
        return job_id, _open_gate(self.held.pop(job_id))

    def release_all(self) -> None:
        """Open every gate still held (cleanup)."""
        while self.held:
            with contextlib.suppress(OSError):
                self.release_oldest()


def _peak_per_s(times: list[float], window_s: float = 1.0) -> int:
    """Most events inside any window of `window_s` seconds."""
    ordered, best, low = sorted(times), 0, 0
    for high, stamp in enumerate(ordered):
        while stamp - ordered[low] > window_s:
            low += 1
        best = max(best, high - low + 1)
    return best


async def _jobs_burst(config: Config, count: int, fleets_n: int, per_fleet: int,
                      gate_dir: Path | None, cap_s: float | None) -> dict[str, Any]:
    """Submit `count` short jobs and poll `jobs` until all ended, on connections opened untimed.

    With `gate_dir`, 8 gate jobs hold every GPU during the submits (a backlog forms) and are
    released together once the submits are done.
    """
    node = config.nodes[0].name
    fleets = [Fleet(config) for _ in range(fleets_n)]
    poller = Fleet(config)
    gates = None
    try:
        for fleet in (*fleets, poller):
            await fleet.connect()
        if gate_dir is not None:
            gates = Gates(poller, node, gate_dir)
            for _ in range(JOBS_GPUS):
                await gates.hold()
        watch = JobWatch()
        busy0 = machine_cpu_ticks()
        watcher = asyncio.create_task(_watch_jobs(poller, node, watch))
        first_submit = time.perf_counter()
        try:
            latencies_ms, submit_s = await _submit_burst(fleets, node, count, per_fleet, watch,
                                                         cap_s)
            watch.expected = len(watch.submitted)
            queued_at_release = None
            released = first_submit
            if gates is not None:
                await asyncio.sleep(2 * JOBS_POLL_S)  # one poll sees the backlog as it stands
                queued_at_release = watch.queued_now
                released = time.perf_counter()
                gates.release_all()
            await watcher
        finally:
            watcher.cancel()
        ended = max(watch.ended.values(), default=released)
        busy1 = machine_cpu_ticks()
        state_path = Path(config.nodes[0].state_dir, "state.json")
        finals: dict[str, int] = {}
        for state in watch.final.values():
            finals[state] = finals.get(state, 0) + 1
        return {
            "submitted": len(watch.submitted), "submit_s": submit_s, "submit_ms": latencies_ms,
            "drain_s": ended - released, "started": len(watch.started),
            "started_times": [t - released for t in watch.started.values()],
            "finals": finals, "lost": finals.get("lost", 0), "peak_queued": watch.peak_queued,
            "queued_at_release": queued_at_release, "poll_ms": watch.poll_ms,
            "gate_jobs_lost": len(gates.lost) if gates else 0,
            "machine_cpu_busy_pct": 100.0 * (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]),
            "state_json_bytes": state_path.stat().st_size,  # noqa: ASYNC240
        }
    finally:
        if gates is not None:
            gates.release_all()
        for fleet in (*fleets, poller):
            await fleet.close()


@contextlib.contextmanager
def jobs_demo(work: Path) -> Any:
    """A one-node, 8-GPU demo shared by the throughput and latency steps."""
    with DemoProcess(work / "jobs", 1, JOBS_GPUS) as demo:
        yield demo.config_path


def _burst_extra(data: dict[str, Any]) -> dict[str, Any]:
    """The JSON `extra` of a burst: counts, drain, CPU, poll cost (raw lists left out)."""
    extra = {k: v for k, v in data.items()
             if k not in ("submit_ms", "started_times", "poll_ms")}
    extra["submit_ms_p50"] = percentile(data["submit_ms"], 50)
    extra["submit_ms_p99"] = percentile(data["submit_ms"], 99)
    extra["jobs_poll_ms_p50"] = percentile(data["poll_ms"], 50)
    extra["jobs_poll_ms_max"] = max(data["poll_ms"], default=math.nan)
    extra["drain_jobs_per_s"] = data["submitted"] / data["drain_s"] if data["drain_s"] else None
    extra["peak_started_in_1s"] = _peak_per_s(data["started_times"])
    return extra


def _dispatch_extra(data: dict[str, Any]) -> dict[str, Any]:
    """The drain side of a burst's `extra`."""
    keys = ("submitted", "started", "drain_s", "drain_jobs_per_s", "peak_started_in_1s",
            "peak_queued", "queued_at_release", "finals", "machine_cpu_busy_pct")
    extra = _burst_extra(data)
    return {key: extra[key] for key in keys}


def bench_jobs_throughput(plan: Plan, work: Path, config_path: Path) -> list[Result]:
    """Submits/s (1 and 4 submitters) and dispatches/s of short jobs on one 8-GPU node."""
    config = load_config(str(config_path))
    n = plan.jobs_n
    label = f"{n} x `true`, 1 node x {JOBS_GPUS} GPUs"
    variants = (("sequential, 1 connection", 1, 1), ("4 concurrent submitters, 1 connection", 1, 4),
                ("4 concurrent submitters, 4 connections", 4, 1))
    cap_s = plan.jobs_submit_cap_s
    runs = {name: asyncio.run(_jobs_burst(config, n, fleets_n, per_fleet, None, cap_s))
            for name, fleets_n, per_fleet in variants}
    backlog_dir = work / "jobs-gates-backlog"
    backlog_dir.mkdir()
    backlog = asyncio.run(_jobs_burst(config, plan.jobs_backlog_n, 1, 1, backlog_dir, cap_s))
    rows = [Result(f"jobs submit, {name}, {label}", "jobs", "jobs/s",
                   value=data["submitted"] / data["submit_s"], extra=_burst_extra(data),
                   notes=f"{data['submitted']} submitted in {data['submit_s']:.1f} s (cap "
                         f"{cap_s:g} s), {data['lost']} lost; drain "
                         f"{data['submitted'] / data['drain_s']:.1f} jobs/s")
            for name, data in runs.items()]
    sequential = runs["sequential, 1 connection"]
    rows += [
        Result(f"jobs submit request latency, sequential, 1 connection, {label}", "jobs", "ms",
               sequential["submit_ms"], notes="one `submit` request on an open connection"),
        Result(f"jobs dispatch rate, first submit → all ended, sequential submits, {label}",
               "jobs", "jobs/s", value=sequential["started"] / sequential["drain_s"],
               extra=_dispatch_extra(sequential),
               notes=f"jobs that ran ({sequential['started']}) over first submit → last end "
                     f"({sequential['drain_s']:.1f} s); `jobs` polled every {JOBS_POLL_S:g} s"),
        Result(f"jobs submit into a backlog (8 GPUs held), sequential, up to "
               f"{plan.jobs_backlog_n} x `true`", "jobs", "jobs/s",
               value=backlog["submitted"] / backlog["submit_s"], extra=_burst_extra(backlog),
               notes=f"{backlog['submitted']} submitted in {backlog['submit_s']:.1f} s (cap "
                     f"{cap_s:g} s); {backlog['lost']} lost"),
        Result(f"jobs dispatch rate, backlog of up to {plan.jobs_backlog_n} queued behind "
               f"{JOBS_GPUS} held GPUs, release → all ended", "jobs", "jobs/s",
               value=backlog["started"] / backlog["drain_s"] if backlog["drain_s"] else None,
               extra=_dispatch_extra(backlog),
               notes=f"{backlog['queued_at_release']} queued at release, {backlog['started']} "
                     f"ran in {backlog['drain_s']:.1f} s"),
    ]
    lost = {name: data["lost"] for name, data in [*runs.items(), ("backlog", backlog)]}
    submitted = sum(data["submitted"] for data in [*runs.values(), backlog])
    rows.append(Result(
        "jobs lost in the throughput runs", "jobs", "count", value=float(sum(lost.values())),
        budget="0", checks=[Check("value", "==", 0.0)],
        notes=f"of {submitted} submitted: a lost job never ran (its supervisor was gone)",
        extra={"lost_by_run": lost, "submitted": submitted}))
    return rows
