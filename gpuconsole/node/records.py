"""Shape checks for the records inside a state file, which any gpu-group member can write.

A record that does not have the shape the transitions rely on is moved to the state's
`quarantine` list and reported, so a planted or damaged record is skipped, never a KeyError
that stops every user's commands on the node. This checks shape, not authorship: what an agent
executes or signals is checked against files only its own user can write (see jobops).
"""

from __future__ import annotations

import json
import math

from . import health

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, Tuple

    Schema = Dict[str, Tuple[Callable[[Any], bool], bool]]

QUARANTINE_KEEP = 20
JOB_STATES = ("queued", "running", "succeeded", "failed", "cancelled", "preempted", "lost", "timed_out")
MAX_GPU_INDEX = 4095


def _int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _num(value: object) -> bool:
    return (_int(value) or isinstance(value, float)) and not (isinstance(value, float) and not math.isfinite(value))


def _wall(value: object) -> bool:
    """A Unix time a clock can show (a planted 1e20 would make every view that prints it fail)."""
    return _num(value) and 0 <= value < 2 ** 33  # type: ignore[operator]


def _opt_wall(value: object) -> bool:
    return value is None or _wall(value)


def _str(value: object) -> bool:
    return isinstance(value, str) and len(value) <= 4096


def _bool(value: object) -> bool:
    return isinstance(value, bool)


def _gpus(value: object) -> bool:
    return (isinstance(value, list) and len(value) <= MAX_GPU_INDEX + 1 and len(set(value)) == len(value)
            and all(_int(g) and 0 <= g <= MAX_GPU_INDEX for g in value))


def _ident(value: Any) -> bool:
    """A process identity (pid, start ticks, boot id), or None."""
    return value is None or (isinstance(value, dict) and _int(value.get("pid")) and value["pid"] > 0
                             and (value.get("start") is None or _int(value.get("start")))
                             and _str(value.get("boot_id", "")))


def _priority(value: Any) -> bool:
    return _int(value) and 0 <= value <= 2


def _preempt_notice(value: Any) -> bool:
    return value is None or (isinstance(value, dict) and _str(value.get("by")) and _num(value.get("grace_s"))
                             and _num(value.get("deadline_wall")))


# field -> (check, required); a missing optional field is fine, a present one must pass.
LEASE: Schema = {
    "id": (_str, True), "uid": (_int, True), "owner": (_str, True), "gpus": (_gpus, True),
    "token": (_int, True), "priority": (_priority, True), "exp_bt": (_num, True), "exp_wall": (_wall, True),
    "created_wall": (_wall, True), "ttl_s": (_num, False), "preemptible": (_bool, False),
    "from_queue": (_bool, False), "job": (_bool, False), "preempted_by": (lambda v: v is None or _str(v), False),
    "ends_by_bt": (_num, False), "backfill_for": (_str, False), "backfill_until_bt": (_num, False),
    "queued_wall": (_wall, False), "idle_since_wall": (_wall, False), "idle_release_wall": (_wall, False),
    "idle_by": (_str, False),
}
TICKET: Schema = {
    "id": (_str, True), "uid": (_int, True), "owner": (_str, True), "n": (lambda v: _int(v) and v >= 1, True),
    "ttl_s": (_num, True), "priority": (_priority, True), "created_bt": (_num, True),
    "created_wall": (_wall, True), "seq": (_int, True), "agent": (_ident, False),
    "preemptible": (_bool, False), "job": (_bool, False), "preempt": (_bool, False),
    "deadline_bt": (_num, False), "ends_after_s": (lambda v: _num(v) and v > 0, False),
}
JOB: Schema = {
    "id": (_str, True), "uid": (_int, True), "owner": (_str, True), "name": (_str, False),
    "n": (lambda v: _int(v) and v >= 1, True), "priority": (_priority, True),
    "state": (lambda v: v in JOB_STATES, True), "exit_code": (lambda v: v is None or _int(v), False),
    "command": (_str, False), "created_wall": (_wall, True), "started_wall": (_opt_wall, False),
    "ended_wall": (_opt_wall, False), "supervisor": (_ident, False), "gpus": (_gpus, False),
    "requeue": (_bool, False), "cancel_requested": (_bool, False), "preempt_others": (_bool, False),
    "grace_s": (_num, False), "preempt": (_preempt_notice, False), "requeues": (_int, False),
    "created_bt": (_num, False), "seq": (_int, False), "orphaned": (_bool, False), "note": (_str, False),
    "time_limit_s": (lambda v: v is None or (_num(v) and v > 0), False),
}
APPLIED: Schema = {"bt": (_num, True), "res": (lambda v: isinstance(v, dict), True)}
DROPPED: Schema = dict(TICKET, dropped_bt=(_num, True))
USAGE: Schema = {"gpu_s": (lambda v: _num(v) and v >= 0, True), "at_wall": (_wall, True)}
FAIR_SHARE: Schema = {"factor": (lambda v: _num(v) and 0 <= v <= 1, True), "gpu_h": (_num, True)}
GPU_HEALTH: Schema = {
    "withheld": (lambda v: isinstance(v, dict) and _str(v.get("reason")) and _wall(v.get("since_wall")), False),
    "baseline": (lambda v: isinstance(v, dict) and all(_int(x) or _bool(x) for x in v.values()), False),
    "cleared_wall": (_wall, False), "cleared_by": (_str, False),
}
UNRESERVED: Schema = {"since_wall": (_wall, True),
                      "users": (lambda v: isinstance(v, list) and len(v) <= 64 and all(_str(u) for u in v), True)}
TABLES = (("leases", LEASE), ("queue", TICKET), ("jobs", JOB), ("applied", APPLIED), ("dropped", DROPPED),
          ("usage", USAGE), ("fair_share", FAIR_SHARE), ("gpu_health", GPU_HEALTH),
          ("unreserved", UNRESERVED))
OPTIONAL_TABLES = ("jobs", "dropped", "usage", "fair_share", "gpu_health", "unreserved")
GPU_TABLES = ("gpu_health", "unreserved")  # keyed by GPU index


def problem(record: object, schema: Schema, key: str | None = None) -> str | None:
    """Why a record does not fit its schema (one short phrase), or None."""
    if not isinstance(record, dict):
        return "not an object"
    if key is not None and "id" in schema and record.get("id") != key:
        return "id does not match its key"
    for field, (check, required) in schema.items():
        if field not in record:
            if required:
                return "missing %s" % field
            continue
        try:
            ok = check(record[field])
        except Exception:
            ok = False
        if not ok:
            return "bad %s" % field
    return None


def sanitize(state: dict[str, Any]) -> list[str]:
    """Quarantine every malformed record in place; return one warning line per record moved."""
    warnings: list[str] = []
    for optional in OPTIONAL_TABLES:
        if optional in state and not isinstance(state[optional], dict):
            warnings.append("quarantined %s: not an object" % optional)
            _keep(state, optional, state[optional], "not an object")
            state[optional] = {}
    state.setdefault("jobs", {})
    weight = state.get("fair_share_weight")
    if "fair_share_weight" in state and not (_num(weight) and 0 <= float(weight or 0) <= 100):
        _keep(state, "fair_share_weight", weight, "bad weight")
        warnings.append("quarantined fair_share_weight: bad weight")
        del state["fair_share_weight"]
    for name, schema in TABLES:
        table = state.get(name, {})
        for key in list(table):
            why = problem(table[key], schema, key if name != "applied" else None)
            if why is None and name in GPU_TABLES and not health.gpu_key(key):
                why = "not a GPU index"
            if why is not None:
                _keep(state, "%s/%s" % (name, key), table.pop(key), why)
                warnings.append("quarantined %s/%s: %s" % (name, _short(key), why))
    # gen and next_token are checked by state.validate_state (a bad one makes the file unusable,
    # since a guessed token could go backwards); seq only orders the queue.
    if not _int(state.get("seq", 0)) or state.get("seq", 0) < 0:
        _keep(state, "seq", state.get("seq"), "bad counter")
        warnings.append("quarantined seq: bad counter")
        state["seq"] = max([t["seq"] for t in state["queue"].values()] + [0])
    if not _str(state.get("boot_id")):
        state["boot_id"] = "unknown"
    if "quarantine" in state and not isinstance(state["quarantine"], list):
        state["quarantine"] = []
    return warnings


def _short(text: object, limit: int = 40) -> str:
    text = str(text)
    return text if len(text) <= limit else text[:limit] + "…"


def _keep(state: dict[str, Any], where: str, record: object, why: str) -> None:
    quarantine = state.get("quarantine")
    if not isinstance(quarantine, list):
        quarantine = state["quarantine"] = []
    try:
        dumped = json.dumps(record, sort_keys=True)[:2000]
    except (TypeError, ValueError):
        dumped = repr(record)[:2000]
    quarantine.append({"where": _short(where, 80), "reason": why, "record": dumped})
    del quarantine[:-QUARANTINE_KEEP]
