"""Submit, list, follow and cancel batch jobs across the fleet (CLI and TUI share these)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gpuconsole.core.nodeapi import NodeRequests, new_req_id
from gpuconsole.core.placement import Capacity
from gpuconsole.core.reservations import capacities, is_mine
from gpuconsole.errors import GpuConsoleError, NoCapacityError, NotFoundError, UsageError
from gpuconsole.model.jobs import Job, LogChunk, Preempted, Submitted, SubmittedArray
from gpuconsole.model.replies import BadReplyError

FOLLOW_POLL_S = 0.3


@dataclass(frozen=True, slots=True)
class SubmitRequest:
    """A job: argv exactly as given (sent as JSON, exec'd without a shell)."""

    argv: tuple[str, ...]
    gpus: int
    node: str | None = None
    priority: str = "normal"
    name: str | None = None
    requeue: bool = False
    preempt: bool = False
    grace_s: float | None = None
    array: tuple[int, ...] = ()  # `--array`: the indices (empty: one job)
    time_limit_s: float | None = None  # `--time`: stopped (TERM, grace, KILL) once it ran this long


MAX_ARRAY_JOBS = 1000  # the node's limit too (node/jobs.py MAX_ARRAY)
MAX_ARRAY_INDEX = 10**6


def parse_array(spec: str) -> tuple[int, ...]:
    """`--array` indices: comma-separated `N`, `A-B` or `A-B:STEP` (inclusive), distinct, sorted;
    UsageError (exit 2) for anything else, an empty range, or more than MAX_ARRAY_JOBS jobs."""
    if "%" in spec:
        raise UsageError(f"--array {spec!r}: a %LIMIT on concurrent jobs is not supported")
    found: set[int] = set()
    for part in spec.split(","):
        match = _ARRAY_PART.fullmatch(part.strip())
        first = int(match["first"]) if match else -1
        last = int(match["last"] or first) if match else -1
        step = int(match["step"] or 1) if match else 0
        if first < 0 or last < first or step < 1 or last > MAX_ARRAY_INDEX:
            raise UsageError(f"--array {spec!r}: give indices as N, A-B or A-B:STEP (0 ≤ A ≤ B ≤ "
                             f"{MAX_ARRAY_INDEX}, STEP ≥ 1), comma-separated")
        if (last - first) // step + 1 + len(found) > MAX_ARRAY_JOBS:
            raise UsageError(f"--array {spec!r}: at most {MAX_ARRAY_JOBS} jobs in one array")
        found.update(range(first, last + 1, step))
    return tuple(sorted(found))


_ARRAY_PART = re.compile(r"(?P<first>[0-9]{1,7})(?:-(?P<last>[0-9]{1,7})(?::(?P<step>[0-9]{1,7}))?)?")


def best_start(caps: list[Capacity], gpus: int) -> str | None:
    """Best expected start: a node with enough free GPUs (tightest fit), else the shortest queue."""
    fitting = [c for c in caps if c.free >= gpus and c.queued == 0]
    if fitting:
        return min(fitting, key=lambda c: (c.free - gpus, c.node)).node
    big_enough = [c for c in caps if c.gpu_count >= gpus]
    if not big_enough:
        return None
    return min(big_enough, key=lambda c: (c.queued, -c.free, c.node)).node


async def _place(fleet: NodeRequests, request: SubmitRequest) -> str:
    """The node where the job (or array) should start soonest; UsageError/NoCapacityError otherwise."""
    if not request.argv or not request.argv[0]:
        raise UsageError("submit: give the command after `--`")
    caps = await capacities(fleet, [request.node] if request.node else None)
    target = best_start(caps, request.gpus)
    if target is None:
        largest = max((c.gpu_count for c in caps), default=0)
        where = f"node {request.node} has" if request.node else "the largest reachable node has"
        raise NoCapacityError(f"{request.gpus} GPUs requested but {where} {largest}")
    return target


def _job_args(request: SubmitRequest) -> dict[str, Any]:
    """The `submit` op's arguments (a fresh req_id: a retry of this request is recognised)."""
    return {
        "argv": list(request.argv), "gpus": request.gpus, "priority": request.priority,
        "name": request.name, "requeue": request.requeue, "cwd": os.getcwd(), "preempt": request.preempt,
        **({"grace_s": request.grace_s} if request.grace_s is not None else {}),
        **({"time_limit_s": request.time_limit_s} if request.time_limit_s is not None else {}),
        "req_id": new_req_id(),
    }


async def submit(fleet: NodeRequests, request: SubmitRequest) -> Submitted:
    """Queue the job on the node where it should start soonest; the node's supervisor runs it."""
    target = await _place(fleet, request)
    result = await fleet.request(target, "submit", _job_args(request))
    return Submitted.from_agent(target, result)


async def submit_array(fleet: NodeRequests, request: SubmitRequest) -> SubmittedArray:
    """Queue one job per index of `request.array` on one node (where it should start soonest), in one
    request and one state transaction; each job sees its index as $GPUCONSOLE_ARRAY_INDEX."""
    target = await _place(fleet, request)
    result = await fleet.request(target, "submit_array", {
        **_job_args(request), "indices": list(request.array),
    })
    try:
        return SubmittedArray.from_agent(target, result)
    except ValueError as exc:
        raise BadReplyError(f"{target}: bad reply from agent to submit_array: {exc}") from None


def array_jobs(found: list[Job], array_id: str) -> list[Job]:
    """The jobs of array `array_id` (as `jobs` lists them), in index order."""
    def index(job: Job) -> int:
        array = job.extra.get("array")
        return int(array["index"]) if isinstance(array, dict) and isinstance(array.get("index"), int) else -1

    members = [job for job in found
               if isinstance(job.extra.get("array"), dict) and job.extra["array"].get("id") == array_id]
    return sorted(members, key=index)


async def list_jobs(fleet: NodeRequests) -> tuple[list[Job], dict[str, str]]:
    """Every job on every reachable node (with its node), and the nodes that could not be read."""
    results = await fleet.call_all("jobs")
    found: list[Job] = []
    errors: dict[str, str] = {}
    for node, result in sorted(results.items()):
        if isinstance(result, GpuConsoleError):
            errors[node] = str(result)
        else:
            found += [Job.from_agent(node, job) for job in result["jobs"]]
    found.sort(key=lambda j: (j.created_at or "", j.id))
    return found, errors


def select_jobs(fleet: NodeRequests, found: list[Job], *, mine: bool = False, user: str | None = None,
                state: str | None = None) -> list[Job]:
    """The jobs that pass `jobs --mine/--user/--state` (mine: `release --mine`'s rule, is_mine)."""
    return [job for job in found
            if (not mine or is_mine(fleet, job)) and (user is None or job.owner == user)
            and (state is None or job.state == state)]


async def job_on(fleet: NodeRequests, node: str, job_id: str) -> Job | None:
    """The job as its own node reports it now (one request to that node), or None if it is gone."""
    result = await fleet.request(node, "jobs")
    return next((Job.from_agent(node, job) for job in result["jobs"] if job["id"] == job_id), None)


async def find_job(fleet: NodeRequests, job_id: str) -> Job:
    """The job with this id on whichever reachable node has it; NotFoundError otherwise."""
    jobs, errors = await list_jobs(fleet)
    for job in jobs:
        if job.id == job_id:
            return job
    unreachable = f" (unreachable: {', '.join(sorted(errors))})" if errors else ""
    raise NotFoundError(f"no job {job_id!r} on any reachable node{unreachable}")


async def cancel(fleet: NodeRequests, job_id: str) -> Job:
    """Queued: withdrawn. Running: SIGTERM to its process group, SIGKILL after the grace. The job
    as the node left it (`already_ended` when there was nothing to cancel)."""
    job = await find_job(fleet, job_id)
    result = await fleet.request(job.node, "cancel", {"id": job_id, "req_id": new_req_id()})
    return Job.from_agent(job.node, result)


async def cancel_array(fleet: NodeRequests, array_id: str) -> list[Job]:
    """`cancel a-…`: every job of the array, as `cancel` does each (one request per job, so a job the
    caller may not cancel fails alone); the jobs as their node left them."""
    found, errors = await list_jobs(fleet)
    members = array_jobs(found, array_id)
    if not members:
        unreachable = f" (unreachable: {', '.join(sorted(errors))})" if errors else ""
        raise NotFoundError(f"no job array {array_id!r} on any reachable node{unreachable}")
    results = await asyncio.gather(*(fleet.request(job.node, "cancel", {"id": job.id, "req_id": new_req_id()})
                                     for job in members))
    return [Job.from_agent(job.node, result) for job, result in zip(members, results, strict=True)]


async def preempt(fleet: NodeRequests, target_id: str, grace_s: float | None = None) -> Preempted:
    """Preempt a running job (TERM, grace, KILL; requeued if it asked) or revoke a reservation."""
    try:
        node = (await find_job(fleet, target_id)).node
    except NotFoundError:
        from gpuconsole.core.reservations import find_node

        node = await find_node(fleet, target_id)
    args: dict[str, Any] = {"id": target_id, "req_id": new_req_id()}
    if grace_s is not None:
        args["grace_s"] = grace_s
    result = await fleet.request(node, "preempt", args)
    return Preempted.from_agent(node, result)


async def follow_logs(fleet: NodeRequests, job_id: str, on_chunk: Callable[[str, str], None], *,
                      follow: bool = False, on_job: Callable[[Job], None] | None = None,
                      tail_lines: int | None = None) -> Job:
    """Stream stdout and stderr (each chunk with its stream name) until the end, or the job's end
    (from the last `tail_lines` lines of each, when given). `on_job` sees the job (its owner) before
    the first chunk. Following, the job is returned as its node reports it after its end (its exit code)."""
    job = await find_job(fleet, job_id)
    if on_job is not None:
        on_job(job)
    offsets = {"stdout": 0, "stderr": 0}
    tails = {"stdout": tail_lines, "stderr": tail_lines}
    saw_end = False
    while True:
        ended = True
        for stream in ("stdout", "stderr"):
            while True:
                args: dict[str, Any] = {"id": job_id, "stream": stream, "offset": offsets[stream]}
                if tails[stream] is not None:
                    args["tail_lines"] = tails[stream]
                    tails[stream] = None  # once: then on from where the tail ends
                chunk = LogChunk.from_agent(await fleet.request(job.node, "logs", args))
                if chunk.data:
                    on_chunk(stream, chunk.data)
                offsets[stream] = chunk.offset
                ended = chunk.ended
                if not chunk.data:
                    break
        if not follow:
            return dataclasses.replace(job, state=chunk.state)
        if saw_end:
            return await job_on(fleet, job.node, job_id) or dataclasses.replace(job, state=chunk.state)
        if ended:
            saw_end = True  # one more pass: output written just before the end is still read
            continue
        await asyncio.sleep(FOLLOW_POLL_S)
