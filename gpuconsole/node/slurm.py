"""Slurm behind the node protocol: on a cluster's login node (hello with kind "slurm") the agent
answers the operations of a lock-file node by running Slurm's own commands as the SSH user, so
Slurm decides and enforces everything (limits, priorities, preemption, who may cancel what) and
gpuconsole never works around it.

Slurm's view is read by node/slurmread.py; batch jobs, logs and the shell are node/slurmjobs.py's.
"""

from __future__ import annotations

import os
import re
import time

from . import state as st
from .slurmread import (
    DIGITS,
    RESERVE_NAME,
    jobs_json,
    jobs_text,
    last_line,
    nodes_json,
    nodes_text,
    placed,
    refused,
    run,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .typedefs import Args, Result

MIN_STREAM_S = 5.0  # a console streams a Slurm view at most this often: squeue and sinfo load the controller
IMMEDIATE_S = 10  # salloc --immediate: a reserve without --wait is granted now or refused
JOBID_RE = re.compile(r"(?:Granted job allocation|Submitted batch job|job allocation) ([0-9]+)\s")  # a whole line
UNUSABLE = {"down", "drain", "drained", "draining", "fail", "failing", "not_responding", "maint", "reserved"}
JSON_RETRY_S = 300.0  # after a failed --json read, text until then: a transient failure is not for good


def new_tag() -> str:
    """A request's own mark (salloc --comment): unguessable, so no other job can carry it."""
    return "gpuconsole-" + os.urandom(8).hex()


def stream_interval(asked: Any) -> float | None:
    """The stream interval a console asked for, no shorter than MIN_STREAM_S (None: no stream)."""
    if isinstance(asked, bool) or not isinstance(asked, (int, float)) or asked <= 0:
        return None
    return max(float(asked), MIN_STREAM_S)


class Backend:
    """The operations of a Slurm login node, for the OS user this agent runs as."""

    def __init__(self, cluster: str, user: str, uid: int) -> None:
        self.cluster = cluster
        self.user = user
        self.uid = uid
        self.json_failed_at: float | None = None  # the last failed --json read: text for JSON_RETRY_S

    def view(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]], str]:
        """(nodes, jobs, "json" | "text")."""
        if self.json_failed_at is None or time.monotonic() - self.json_failed_at > JSON_RETRY_S:
            nodes, jobs = nodes_json(), jobs_json()
            if nodes is not None and jobs is not None:
                self.json_failed_at = None
                return nodes, jobs, "json"
            self.json_failed_at = time.monotonic()
        return nodes_text(), jobs_text(), "text"

    def hello(self) -> Result:
        nodes, _jobs, source = self.view()
        code, out, _err = run(["sinfo", "--version"])
        return {"kind": "slurm", "cluster": self.cluster, "slurm_version": last_line(out) if code == 0 else None,
                "slurm_source": source, "gpu_source": "slurm",
                # One allocation is on one node: the most a reserve could get (a cluster's total may be huge).
                "gpu_count": max((n["gpus"] for n in nodes), default=0)}

    def snapshot(self) -> Result:
        """Slurm's nodes and jobs, and the allocations as the node protocol lists reservations."""
        nodes, jobs, source = self.view()
        listed = self.listing(jobs)
        return {"t_wall": time.time(), "gpu_source": "slurm", "gpus": [], "jobs": [],
                "reservations": listed["reservations"], "queue": listed["queue"],
                "slurm": {"cluster": self.cluster, "source": source, "nodes": nodes, "jobs": jobs}}

    def reservation_id(self, job_id: int) -> str:
        return "%s.%d" % (self.cluster, job_id)

    def job_id(self, reservation_id: Any) -> int:
        text = str(reservation_id)
        prefix = self.cluster + "."
        if not text.startswith(prefix) or not DIGITS.fullmatch(text[len(prefix):]):
            raise st.OpError("not_found", "no allocation %r on Slurm cluster %s" % (text[:80], self.cluster))
        return int(text[len(prefix):])

    @staticmethod
    def salloc(args: Args, immediate_s: int | None, tag: str) -> list[str]:
        """The `salloc --no-shell` of a reserve: GPUs, one node, `--time` from the lease, how long
        Slurm may take to grant it (None: until it does), and a tag that finds it again if salloc
        dies before naming its job."""
        gpus = st.integer(args.get("gpus"), "gpus must be an integer 1..64", 1, 64)
        ttl_s = args.get("ttl_s")
        argv = ["salloc", "--no-shell", "--job-name=" + RESERVE_NAME, "--comment=" + tag, "--gres=gpu:%d" % gpus,
                "--nodes=1"]
        if isinstance(ttl_s, (int, float)) and not isinstance(ttl_s, bool) and ttl_s > 0:
            argv.append("--time=%d" % max(1, int((float(ttl_s) + 59) // 60)))
        if immediate_s is not None:
            argv.append("--immediate=%d" % max(1, immediate_s))
        return argv

    def reserve(self, args: Args) -> Result:
        """`salloc --no-shell`: an allocation Slurm grants now (within IMMEDIATE_S) or refuses; a
        refusal leaves nothing in Slurm (what salloc queued before it failed is cancelled)."""
        tag = new_tag()
        try:
            code, out, err = run(self.salloc(args, IMMEDIATE_S, tag))
        except st.OpError:
            self.cancel_tagged(tag)  # salloc timed out (and was killed): its request may be queued
            raise
        match = JOBID_RE.search(err + out)
        if code != 0 or match is None or "Granted" not in err + out:
            self.cancel_tagged(tag)
            raise refused("salloc", err or out, "insufficient")
        return self.grant(int(match.group(1)))

    def cancel_tagged(self, tag: str) -> None:
        """Cancel this user's jobs carrying `tag` (a request whose salloc died before naming its job)."""
        code, out, _err = run(["squeue", "-h", "-u", self.user, "-o", "%i %k"])
        for line in out.splitlines() if code == 0 else ():
            job_id, _, comment = line.partition(" ")
            if comment == tag and DIGITS.fullmatch(job_id):
                run(["scancel", job_id])

    def grant(self, job_id: int, job: dict[str, Any] | None = None) -> Result:
        """A granted allocation (`job`: its record, when the caller has just read it). Once Slurm
        named it, the answer is a grant even if it cannot be looked up now (GPU indices then
        unknown): the allocation exists, so it must be reported."""
        if job is None:
            try:
                job = self.find(job_id)
            except st.OpError:
                job = None
        node, gpus = placed(job) if job is not None else ("", [])
        end_s = job.get("end_s") if job else None
        return {"state": "granted", "id": self.reservation_id(job_id), "gpus": gpus,
                "owner": job["user"] if job else self.user,
                "expires_at": st.iso_utc(end_s) if end_s else st.iso_utc(time.time() + 365 * 86400.0),
                "token": 1, "cuda_visible_devices": ",".join(str(g) for g in gpus), "priority": "normal",
                "slurm_job_id": job_id, "slurm_node": node}

    def allocation(self, reservation_id: Any) -> dict[str, Any]:
        """One of the allocations `reserve` makes (not a batch job: those are ended by `cancel`)."""
        job_id = self.job_id(reservation_id)
        job = self.find(job_id)
        if job is None:
            raise st.OpError("not_found", "no allocation %s on Slurm cluster %s" % (job_id, self.cluster))
        if job["name"] != RESERVE_NAME or job["batch"]:
            raise st.OpError("invalid", "%s is a batch job, not a reservation: `gpuconsole cancel %s` ends it" % (
                self.reservation_id(job_id), self.reservation_id(job_id)))
        return job

    def find(self, job_id: int) -> dict[str, Any] | None:
        _nodes, jobs, _source = self.view()
        for job in jobs:
            if job["job_id"] == job_id:
                return job
        return None

    def release(self, args: Args) -> Result:
        """`scancel` of an allocation: Slurm itself refuses another user's (exit 4)."""
        job = self.allocation(args.get("id"))
        code, _out, err = run(["scancel", str(job["job_id"])])
        if code != 0:
            raise refused("scancel", err)
        gpus = placed(job)[1]
        return {"id": self.reservation_id(job["job_id"]), "released": True,
                "was": "queued" if job["state"] == "PENDING" else "granted", "gpus": gpus}

    def listing(self, jobs: list[Result] | None = None) -> Result:
        """Allocations made by `reserve` (every user's Slurm shows) as reservations and queue."""
        if jobs is None:
            jobs = self.view()[1]
        reservations: list[Result] = []
        queue: list[Result] = []
        for job in jobs:
            if job["name"] != RESERVE_NAME or job["batch"]:
                continue
            node, gpus = placed(job)
            started = job["start_s"] or time.time()
            entry = {"id": self.reservation_id(job["job_id"]), "owner": job["user"], "slurm_node": node,
                     "slurm_job_id": job["job_id"], "created_at": st.iso_utc(started)}
            if job["state"] == "PENDING":
                entry.update(gpus_requested=job["gpus"], position=len(queue) + 1, pending_reason=job["reason"])
                queue.append(entry)
            elif job["state"] in ("RUNNING", "CONFIGURING", "COMPLETING"):
                entry.update(gpus=gpus, expires_at=st.iso_utc(job["end_s"] or started + 365 * 86400.0))
                reservations.append(entry)
        return {"reservations": reservations, "queue": queue}

    def capacity(self) -> Result:
        nodes, jobs, _source = self.view()
        usable = [n for n in nodes if not UNUSABLE & set(n["state"].split("+"))]
        free = max((n["gpus"] - n["gpus_used"] for n in usable), default=0)  # one node per allocation
        return {"gpu_count": max((n["gpus"] for n in usable), default=0), "free": max(0, free),
                "queued": sum(1 for j in jobs if j["state"] == "PENDING"), "unreserved": []}
