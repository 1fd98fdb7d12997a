"""Jobs that must outlive their cloud instance: a spot reclaim or a termination takes the node and its
state files with it, so the submitter keeps a local journal of requeue-able jobs it sent to cloud
nodes and resubmits them (as the same user, so ownership holds) once EC2 says the instance is gone.

Semantics are at-least-once, like Slurm's requeue: a job that finished after the last time this user's
gpuconsole saw it runs again.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from gpuconsole.config import local_state_dir
from gpuconsole.core import jobs as core_jobs
from gpuconsole.core.nodeapi import NodeRequests
from gpuconsole.errors import GpuConsoleError
from gpuconsole.model.jobs import Job, Submitted
from gpuconsole.node.fileio import write_atomic

TERMINAL_STATES = ("succeeded", "failed", "cancelled", "timed_out")


def journal_path() -> Path:
    return local_state_dir() / "cloud-jobs.json"


def _load() -> dict[str, dict[str, Any]]:
    try:
        data = json.loads(journal_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _save(entries: dict[str, dict[str, Any]]) -> None:
    path = journal_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(str(path), json.dumps(entries, indent=1).encode("utf-8"), 0o644)


def remember(fleet: NodeRequests, request: core_jobs.SubmitRequest, result: Submitted) -> None:
    """Journal a requeue-able job that landed on a cloud node."""
    name = result.node
    if not request.requeue or not fleet.has(name):
        return
    node = fleet.node(name)
    if node.source != "cloud":
        return
    entries = _load()
    entries[result.id] = {
        "node": node.name, "argv": list(request.argv), "gpus": request.gpus, "priority": request.priority,
        "name": request.name, "preempt": request.preempt, "grace_s": request.grace_s, "cwd": os.getcwd(),
        "submitted_at": time.time(),
    }
    _save(entries)


def forget_finished(jobs: list[Job]) -> None:
    """Drop journal entries whose job was seen in a terminal state."""
    entries = _load()
    done = [j.id for j in jobs if j.id in entries and j.state in TERMINAL_STATES]
    if done:
        for job_id in done:
            entries.pop(job_id, None)
        _save(entries)


async def requeue_lost(fleet: NodeRequests, live: frozenset[str] | None) -> list[tuple[str, Submitted]]:
    """Resubmit journaled jobs whose instance is not among ``live`` (the managed instances EC2 reports
    pending or running; None when EC2 could not be asked: then nothing is judged lost);
    (old id, new submit result)."""
    if live is None:
        return []
    lost = {job_id: e for job_id, e in _load().items() if e.get("node") not in live}
    requeued: list[tuple[str, Submitted]] = []
    for job_id, entry in lost.items():
        request = core_jobs.SubmitRequest(
            tuple(entry["argv"]), int(entry["gpus"]), None, str(entry.get("priority", "normal")),
            entry.get("name"), True, bool(entry.get("preempt")), entry.get("grace_s"),
        )
        try:
            result = await core_jobs.submit(fleet, request)
        except GpuConsoleError:
            continue  # nowhere to put it right now: try again next time
        remember(fleet, request, result)
        current = _load()
        current.pop(job_id, None)
        _save(current)
        requeued.append((job_id, result))
    return requeued
