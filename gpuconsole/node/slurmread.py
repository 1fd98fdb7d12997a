"""Slurm's view as the login node's agent reads it: Slurm's commands run as argv lists (never a
shell), their output decoded with replacement, and parsed from `sinfo --json`/`squeue --json`
(21.08+; 22.05's and 23.02+'s shapes) or, without them, from `scontrol -d -o show node` and a
`squeue` format whose free-text job name comes last, each job line confirmed by a listing without
free text. node/slurm.py answers the protocol's operations from it.
"""

from __future__ import annotations

import json
import re
import subprocess

from . import state as st

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

RESERVE_NAME = "gpuconsole-reserve"  # the job name of the allocations `reserve` makes
COMMAND_TIMEOUT_S = 30.0
_IDX_RE = re.compile(r"^gpu(?::[^:(]+)?:(\d+)\(IDX:([0-9,\-]*)\)")
_GRES_GPU_RE = re.compile(r"(?:^|,)(?:gres[:/])?gpu(?::[^:,(]+)?[:=](\d+)")
DIGITS = re.compile(r"[0-9]{1,18}")
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


def placed(job: dict[str, Any]) -> tuple[str, list[int]]:
    """(node, GPU indices) of a job's first node; (Slurm's node list, []) where the indices are unknown."""
    if job["gpus_by_node"]:
        node, gpus = sorted(job["gpus_by_node"].items())[0]
        return node, gpus
    return job["nodes"], []


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
        if len(parts) == 3 and DIGITS.fullmatch(parts[0]):
            trusted[int(parts[0])] = (parts[1], parts[2].upper())
    seen: dict[int, int] = {}
    for job in jobs:
        seen[job["job_id"]] = seen.get(job["job_id"], 0) + 1
    return [j for j in jobs if seen[j["job_id"]] == 1 and trusted.get(j["job_id"]) == (j["user"], j["state"])]


def parse_jobs_text(out: str) -> list[dict[str, Any]]:
    found = []
    for line in out.splitlines():
        parts = line.split("|", 7)
        if len(parts) != 8 or not DIGITS.fullmatch(parts[0]):
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
