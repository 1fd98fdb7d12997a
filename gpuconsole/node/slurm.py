"""Slurm behind the node protocol: on a cluster's login node (hello with kind "slurm") the agent
answers the operations of a lock-file node by running Slurm's own commands as the SSH user, so
Slurm decides and enforces everything (limits, priorities, preemption, who may cancel what) and
gpuconsole never works around it.

Slurm's view is read from `sinfo --json` and `squeue --json` where the installed Slurm has them
(21.08+), from `scontrol -o show node` and a `squeue` format with the free-text job name last
otherwise (GPU indices per job are then unknown). Commands get argv lists, never a shell; a batch
script is built from the argv with each word quoted and handed to `sbatch` on stdin.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time

from . import state as st

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .typedefs import Args, Result

RESERVE_NAME = "gpuconsole-reserve"  # the job name of the allocations `reserve` makes
COMMAND_TIMEOUT_S = 30.0
MIN_STREAM_S = 5.0  # a console streams a Slurm view at most this often: squeue and sinfo load the controller
IMMEDIATE_S = 10  # salloc --immediate: a reserve without --wait is granted now or refused
_IDX_RE = re.compile(r"^gpu(?::[^:(]+)?:(\d+)\(IDX:([0-9,\-]*)\)")
_GRES_GPU_RE = re.compile(r"(?:^|,)(?:gres[:/])?gpu(?::[^:,(]+)?[:=](\d+)")
JOBID_RE = re.compile(r"(?:Granted job allocation|Submitted batch job|job allocation) ([0-9]+)\s")  # a whole line
UNUSABLE = {"down", "drain", "drained", "draining", "fail", "failing", "not_responding", "maint", "reserved"}
JSON_RETRY_S = 300.0  # after a failed --json read, text until then: a transient failure is not for good
_DIGITS = re.compile(r"[0-9]{1,18}")
_DENIED_RE = re.compile(r"(?i)access/permission denied|not authorized|permission denied|invalid user id")


def run(argv: list[str], stdin: str | None = None) -> tuple[int, str, str]:
    """Run a Slurm command (an argv list, no shell); (exit code, stdout, stderr)."""
    try:
        # Slurm passes job names through as bytes: one that is not UTF-8 must not break every read.
        done = subprocess.run(argv, input=stdin, capture_output=True, encoding="utf-8", errors="replace",
                              timeout=COMMAND_TIMEOUT_S,
                              stdin=None if stdin is not None else subprocess.DEVNULL)
    except FileNotFoundError:
        raise st.OpError("io", "%s: not found on the login node (is Slurm's client installed?)" % argv[0]) from None
    except subprocess.TimeoutExpired:
        raise st.OpError("busy", "%s did not answer within %ds" % (argv[0], COMMAND_TIMEOUT_S)) from None
    return done.returncode, done.stdout, done.stderr


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no message"


def refused(argv0: str, err: str, code: str = "invalid") -> st.OpError:
    """Slurm's refusal as an OpError: a permission refusal is "permission" (exit 4)."""
    if _DENIED_RE.search(err):
        code = "permission"
    return st.OpError(code, "%s: %s" % (argv0, last_line(err)))


def new_tag() -> str:
    """A request's own mark (salloc --comment): unguessable, so no other job can carry it."""
    return "gpuconsole-" + os.urandom(8).hex()


def stream_interval(asked: Any) -> float | None:
    """The stream interval a console asked for, no shorter than MIN_STREAM_S (None: no stream)."""
    if isinstance(asked, bool) or not isinstance(asked, (int, float)) or asked <= 0:
        return None
    return max(float(asked), MIN_STREAM_S)


def expand_indices(text: str) -> list[int]:
    """'0-1,3' → [0, 1, 3] (Slurm's IDX lists)."""
    out: list[int] = []
    for part in text.split(","):
        if not part:
            continue
        low, _, high = part.partition("-")
        if low.isdigit() and (not high or high.isdigit()):
            out.extend(range(int(low), int(high or low) + 1))
    return out


def _without_detail(gres: str) -> str:
    """'gpu:(null):3(IDX:0-2),shard:0' → 'gpu:3,shard:0': the IDX and socket details dropped."""
    return re.sub(r"\([^)]*\)", "", gres).replace("::", ":")


def gpu_count(gres: str) -> int:
    """GPUs in a GRES string such as 'gpu:4' or 'gpu:a100:2(S:0-1),shard:8'."""
    return sum(int(n) for n in _GRES_GPU_RE.findall(gres or ""))


# -- reading Slurm's view ------------------------------------------------------------------------


def nodes_json() -> list[dict[str, Any]] | None:
    """`sinfo --json`'s nodes, or None where this Slurm has no --json."""
    code, out, _err = run(["sinfo", "--json"])
    return parse_nodes_json(out) if code == 0 else None


def _json_list(text: str, key: str) -> list[Any] | None:
    try:
        document = json.loads(text)
    except ValueError:
        return None
    found = document.get(key) if isinstance(document, dict) else None
    return found if isinstance(found, list) else None


def parse_nodes_json(text: str) -> list[dict[str, Any]] | None:
    nodes = _json_list(text, "nodes")
    if nodes is None:
        return None
    found = []
    for node in nodes:
        if not isinstance(node, dict):
            continue
        state = node.get("state")
        if isinstance(state, list):  # 23.02+: a list of flags
            state = "+".join(str(s) for s in state)
        flags = node.get("state_flags")  # 22.05: DRAIN, NOT_RESPONDING… beside the base state
        if isinstance(flags, list) and flags:
            state = "+".join([str(state or "unknown")] + [str(f) for f in flags])
        found.append({
            "name": str(node.get("name") or node.get("hostname") or "?"),
            "address": str(node.get("address") or node.get("hostname") or ""),
            "state": str(state or "unknown").lower(),
            "reason": str(node.get("reason") or ""),
            "partitions": [str(p) for p in node.get("partitions") or []],
            "gpus": gpu_count(str(node.get("gres") or "")),
            "gpus_used": gpu_count(_without_detail(str(node.get("gres_used") or ""))),
            "cpus": node.get("cpus") if isinstance(node.get("cpus"), int) else None,
        })
    return found


def _scontrol_fields(line: str) -> dict[str, str]:
    """`Key=value Key=value` of one `scontrol -o` line; the first occurrence of a key wins (node
    fields are set by Slurm and the site's admins)."""
    fields: dict[str, str] = {}
    for match in re.finditer(r"(?:^|\s)([A-Za-z][A-Za-z0-9_:/]*)=(.*?)(?=\s+[A-Za-z][A-Za-z0-9_:/]*=|$)", line):
        fields.setdefault(match.group(1), match.group(2).strip())
    return fields


def nodes_text() -> list[dict[str, Any]]:
    code, out, err = run(["scontrol", "-d", "-o", "show", "node"])  # -d: GresUsed
    if code != 0:
        raise refused("scontrol", err, "io")
    return parse_nodes_text(out)


def parse_nodes_text(out: str) -> list[dict[str, Any]]:
    found = []
    for line in out.splitlines():
        fields = _scontrol_fields(line)
        if "NodeName" not in fields:
            continue
        used = fields.get("GresUsed", "")
        found.append({
            "name": fields["NodeName"], "address": fields.get("NodeAddr", ""),
            "state": fields.get("State", "unknown").lower(),
            "reason": fields.get("Reason", ""),
            "partitions": [p for p in fields.get("Partitions", "").split(",") if p],
            "gpus": gpu_count(fields.get("Gres", "")), "gpus_used": gpu_count(_without_detail(used)),
            "cpus": int(fields["CPUTot"]) if fields.get("CPUTot", "").isdigit() else None,
        })
    return found


def jobs_json() -> list[dict[str, Any]] | None:
    """`squeue --json`'s jobs (every user's, as Slurm lets this user see them), or None."""
    code, out, _err = run(["squeue", "--json"])
    return parse_jobs_json(out) if code == 0 else None


def parse_jobs_json(text: str) -> list[dict[str, Any]] | None:
    jobs = _json_list(text, "jobs")
    if jobs is None:
        return None
    found = []
    for job in jobs:
        if not isinstance(job, dict) or not isinstance(job.get("job_id"), int):
            continue
        gpus_by_node: dict[str, list[int]] = {}
        allocated = (job.get("job_resources") or {}).get("allocated_nodes") or []
        details = job.get("gres_detail") or []
        for index, node in enumerate(allocated):
            name = node.get("nodename") if isinstance(node, dict) else None
            if isinstance(name, str) and index < len(details) and isinstance(details[index], str):
                match = _IDX_RE.match(details[index])
                gpus_by_node[name] = expand_indices(match.group(2)) if match else []
        state = job.get("job_state")
        if isinstance(state, list):
            state = state[0] if state else "UNKNOWN"
        found.append(_job(job["job_id"], str(job.get("name") or ""), str(job.get("user_name") or "?"),
                          str(state or "UNKNOWN"), str(job.get("state_reason") or ""),
                          gpu_count(str(job.get("tres_per_node") or "")), _number(job.get("time_limit")),
                          _number(job.get("start_time")), _number(job.get("end_time")),
                          str(job.get("nodes") or ""), gpus_by_node, bool(job.get("batch_flag")),
                          _number(job.get("submit_time")), _exit_code(job.get("exit_code"))))
    return found


def _number(value: Any) -> int | None:
    """An int, or 23.02+'s {"set": true, "number": N}; None where unset or infinite."""
    if isinstance(value, dict):
        if not value.get("set") or value.get("infinite"):
            return None
        value = value.get("number")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _exit_code(value: Any) -> int | None:
    """A job's exit code: an int (22.05), or 23.02+'s {"return_code": …}."""
    if isinstance(value, dict):
        value = _number(value.get("return_code"))
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def jobs_text() -> list[dict[str, Any]]:
    """Every job from a squeue format whose last field is the name (free text, so nothing after
    it can be spoofed); no GPU indices."""
    code, out, err = run(["squeue", "-h", "-o", "%i|%u|%T|%r|%b|%l|%N|%j"])
    if code != 0:
        raise refused("squeue", err, "io")
    # A name may hold a newline and so a whole fake line: keep only jobs a listing without free
    # text also has, with the same user and state, and only ids seen once.
    code, plain, err = run(["squeue", "-h", "-o", "%i|%u|%T"])
    if code != 0:
        raise refused("squeue", err, "io")
    return trusted_jobs(parse_jobs_text(out), plain)


def trusted_jobs(jobs: list[dict[str, Any]], plain: str) -> list[dict[str, Any]]:
    """The parsed jobs that `plain` (`%i|%u|%T`, no free text) confirms: same id, user and state,
    and an id that appears once (a name with a newline cannot add or shadow a job)."""
    trusted = {}
    for line in plain.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and _DIGITS.fullmatch(parts[0]):
            trusted[int(parts[0])] = (parts[1], parts[2].upper())
    seen: dict[int, int] = {}
    for job in jobs:
        seen[job["job_id"]] = seen.get(job["job_id"], 0) + 1
    return [j for j in jobs if seen[j["job_id"]] == 1 and trusted.get(j["job_id"]) == (j["user"], j["state"])]


def parse_jobs_text(out: str) -> list[dict[str, Any]]:
    found = []
    for line in out.splitlines():
        parts = line.split("|", 7)
        if len(parts) != 8 or not _DIGITS.fullmatch(parts[0]):
            continue
        job_id, user, job_state, reason, tres, _limit, nodes, name = parts
        found.append(_job(int(job_id), name, user, job_state, reason, gpu_count(tres), None, None, None,
                          nodes, {}, name != RESERVE_NAME))
    return found


def _job(job_id: int, name: str, user: str, job_state: str, reason: str, gpus: int, limit_min: int | None,
         start_s: int | None, end_s: int | None, nodes: str, gpus_by_node: dict[str, list[int]],
         batch: bool, submit_s: int | None = None, exit_code: int | None = None) -> dict[str, Any]:
    return {"job_id": job_id, "name": name, "user": user, "state": job_state.upper(), "reason": reason,
            "gpus": gpus, "time_limit_min": limit_min, "start_s": start_s, "end_s": end_s, "nodes": nodes,
            "gpus_by_node": gpus_by_node, "batch": batch, "submit_s": submit_s, "exit_code": exit_code}


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
        if not text.startswith(prefix) or not _DIGITS.fullmatch(text[len(prefix):]):
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
            if comment == tag and _DIGITS.fullmatch(job_id):
                run(["scancel", job_id])

    def grant(self, job_id: int) -> Result:
        """A granted allocation. Once Slurm named it, the answer is a grant even if it cannot be
        looked up now (GPU indices then unknown): the allocation exists, so it must be reported."""
        try:
            job = self.find(job_id)
        except st.OpError:
            job = None
        node: str = ""
        gpus: list[int] = []
        if job is not None and job["gpus_by_node"]:
            node, gpus = sorted(job["gpus_by_node"].items())[0]
        end_s = job.get("end_s") if job else None
        return {"state": "granted", "id": self.reservation_id(job_id), "gpus": gpus,
                "owner": job["user"] if job else self.user,
                "expires_at": st.iso_utc(end_s) if end_s else st.iso_utc(time.time() + 365 * 86400.0),
                "token": 1, "cuda_visible_devices": ",".join(str(g) for g in gpus), "priority": "normal",
                "slurm_job_id": job_id, "slurm_node": node or (job["nodes"] if job else "")}

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
        gpus = sorted(job["gpus_by_node"].items())[0][1] if job["gpus_by_node"] else []
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
            node, gpus = sorted(job["gpus_by_node"].items())[0] if job["gpus_by_node"] else (job["nodes"], [])
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
