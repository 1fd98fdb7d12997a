"""What each agent reply must look like, checked once where it enters the client (the SSH
connection), per node and per op. A reply that does not fit is that node's error (BadReplyError, an
UnreachableError), so every per-node path treats it like a node that did not answer; what passes is
safe to build the frozen model from and to print as strict JSON.

Hand-written on purpose: the shapes are few, the client's runtime dependencies do not include a
schema library, and the checks must also turn NaN/inf into null and name the node and the field.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gpuconsole import notices
from gpuconsole.errors import AgentError, GpuConsoleError, UnreachableError
from gpuconsole.model.slurm import SLURM_FIELD
from gpuconsole.model.wire import (
    ABSENT,
    INT64_MAX,
    Check,
    Opt,
    WireError,
    boolean,
    describe,
    integer,
    iso_time,
    list_of,
    metric,
    metric_int,
    nullable,
    obj,
    string,
    variant,
)

MAX_GPUS = 4096  # per node; an index or count beyond it is not a real machine
GPU_INDEX = integer(0, MAX_GPUS - 1)
GPU_COUNT = integer(0, MAX_GPUS)
COUNT = integer(0, INT64_MAX)
OPT_TEXT = Opt(nullable(string))


class BadReplyError(UnreachableError):
    """A node's agent answered with something that is not a valid reply: that node's error only."""


PROCESS = obj({"pid": integer(0, 2**32), "user": OPT_TEXT, "command": OPT_TEXT, "mem_mib": Opt(metric_int)})
# A GPU's health readings (node/health.py): each one the node could read; the unknown are absent.
HEALTH = obj({name: Opt(check, ABSENT) for name, check in (
    ("xid", metric_int), ("xid_at_wall", metric), ("ecc_uncorrected_volatile", metric_int),
    ("ecc_uncorrected_aggregate", metric_int), ("ecc_corrected_volatile", metric_int),
    ("retired_pages_pending", boolean), ("remap_pending", boolean), ("remap_failure", boolean),
    ("throttle", list_of(string)), ("pcie_tx_kib_s", metric_int), ("pcie_rx_kib_s", metric_int),
    ("nvlink_tx_kib_s", metric_int), ("nvlink_rx_kib_s", metric_int))})
WITHHELD = obj({"reason": string, "since": iso_time})
RESERVATION_REF = obj({"id": string, "owner": string, "expires_at": iso_time, "priority": Opt(string, "normal")})
GPU = obj({
    "index": GPU_INDEX, "uuid": OPT_TEXT, "name": OPT_TEXT, "util_pct": Opt(metric),
    "mem_used_mib": Opt(metric_int), "mem_total_mib": Opt(metric_int), "temperature_c": Opt(metric),
    "power_w": Opt(metric), "reservation": Opt(nullable(RESERVATION_REF)),
    "processes": Opt(list_of(PROCESS), []), "unreserved_use": Opt(boolean, False),
    "health": Opt(nullable(HEALTH), None), "withheld": Opt(nullable(WITHHELD), None),
})
RESERVATION = obj({
    "id": string, "gpus": list_of(GPU_INDEX), "owner": string, "uid": Opt(nullable(COUNT)),
    "priority": Opt(string, "normal"), "preemptible": Opt(boolean, False), "state": Opt(string, "active"),
    "kind": Opt(string, "reservation"), "created_at": iso_time, "expires_at": iso_time,
    "expires_in_s": Opt(metric), "token": Opt(nullable(COUNT)), "withheld_gpus": Opt(list_of(GPU_INDEX), []),
})
# Why a queued request waits and until when (node/pending.py), where the node says so.
PENDING: dict[str, Check | Opt] = {
    "pending_reason": Opt(string, ABSENT),
    "ahead": Opt(list_of(obj({"id": string, "owner": string, "kind": Opt(string, "reservation"),
                              "gpus_requested": GPU_COUNT, "priority": Opt(string, "normal")})), ABSENT),
    "blockers": Opt(list_of(obj({"id": string, "owner": string, "kind": Opt(string, "reservation"),
                                 "gpus": list_of(GPU_INDEX), "priority": Opt(string, "normal"),
                                 "ends_at": Opt(nullable(iso_time)), "ends_in_s": Opt(nullable(metric)),
                                 "idle_since": Opt(iso_time, ABSENT), "idle_for_s": Opt(metric, ABSENT),
                                 "idle_release_in_s": Opt(nullable(metric), ABSENT)})), ABSENT),
    "eta": Opt(nullable(iso_time), ABSENT),
    "eta_in_s": Opt(nullable(metric), ABSENT),
    "quota": Opt(obj({"max_gpus_per_user": COUNT, "held": COUNT}), ABSENT),
    "fair_share": Opt(nullable(metric), ABSENT),
}
QUEUED = obj({
    "id": string, "gpus_requested": GPU_COUNT, "owner": string, "uid": Opt(nullable(COUNT)),
    "priority": Opt(string, "normal"), "position": COUNT, "created_at": iso_time,
    "kind": Opt(string, "reservation"), **PENDING,
})
JOB = obj({
    "id": string, "name": OPT_TEXT, "gpus": Opt(list_of(GPU_INDEX), []), "gpus_requested": Opt(GPU_COUNT, 0),
    "owner": string, "priority": Opt(string, "normal"), "state": string,
    "exit_code": Opt(nullable(integer(-(2**31), 2**31))), "command": Opt(string, ""),
    "created_at": Opt(nullable(iso_time)), "started_at": Opt(nullable(iso_time)),
    "ended_at": Opt(nullable(iso_time)), "position": Opt(nullable(COUNT)),
    "time_limit_s": Opt(nullable(metric), ABSENT), **PENDING,
})
SNAPSHOT = obj({
    "t_wall": Opt(metric), "cpu_pct": Opt(metric), "cpu_count": Opt(metric_int), "load1": Opt(metric),
    "mem_used_bytes": Opt(metric_int), "mem_total_bytes": Opt(metric_int),
    "disk_read_bps": Opt(metric_int), "disk_write_bps": Opt(metric_int),
    "net_rx_bps": Opt(metric_int), "net_tx_bps": Opt(metric_int), "gpu_source": OPT_TEXT,
    "gpus": list_of(GPU, unique="index"), "reservations": list_of(RESERVATION), "queue": list_of(QUEUED),
    "jobs": list_of(JOB), "state_error": OPT_TEXT, "warnings": Opt(list_of(string), []),
    "slurm": SLURM_FIELD,  # a Slurm cluster's login node: Slurm's nodes and jobs (model/slurm.py)
})
HELLO = obj({
    "user": string, "agent_version": Opt(nullable(COUNT)), "uid": Opt(nullable(COUNT)), "admin": Opt(boolean, False),
    "hostname": OPT_TEXT, "boot_id": OPT_TEXT, "python": OPT_TEXT, "gpu_source": OPT_TEXT,
    "gpu_count": Opt(nullable(GPU_COUNT)), "gpu_error": OPT_TEXT, "state_dir": OPT_TEXT,
    "state_dir_error": OPT_TEXT, "pid": Opt(nullable(COUNT)), "mode": OPT_TEXT, "service_error": OPT_TEXT,
    "agent_digest": OPT_TEXT,
})
GRANT = obj({
    "id": string, "gpus": list_of(GPU_INDEX), "owner": string, "expires_at": iso_time, "token": COUNT,
    "cuda_visible_devices": string, "priority": Opt(string, "normal"),
})
TICKET = obj({"id": string, "state": string, "position": COUNT, "owner": OPT_TEXT,
              "gpus_requested": Opt(nullable(GPU_COUNT)), **PENDING})
GRANT_OR_TICKET = variant("state", {"granted": GRANT, "queued": TICKET})

LEDGER_RECORD = obj({
    "seq": COUNT, "event": string, "at": OPT_TEXT, "id": OPT_TEXT, "owner": OPT_TEXT, "by": OPT_TEXT,
    "op": OPT_TEXT, "gpus": Opt(list_of(GPU_INDEX), []), "segment": Opt(nullable(COUNT)), "line": Opt(nullable(COUNT)),
})
LEDGER_BREAK = obj({"segment": COUNT, "line": COUNT, "seq": Opt(nullable(metric_int)), "problem": string})

# The result of every op the client sends; an op not listed must still answer with an object.
RESULTS: dict[str, Check] = {
    "hello": HELLO,
    "snapshot": SNAPSHOT,
    "reservations": obj({"reservations": list_of(RESERVATION), "queue": list_of(QUEUED)}),
    "capacity": obj({"gpu_count": GPU_COUNT, "free": GPU_COUNT, "queued": COUNT, "mine": Opt(GPU_COUNT, 0),
                     "fleet_cap": Opt(nullable(COUNT), None),
                     "unreserved": Opt(list_of(GPU_INDEX), [])}),
    "reserve": GRANT_OR_TICKET,
    "poll": GRANT_OR_TICKET,
    "renew": GRANT,
    "release": obj({"id": string, "released": Opt(boolean, True), "was": OPT_TEXT,
                    "gpus": Opt(list_of(GPU_INDEX), [])}),
    "jobs": obj({"jobs": list_of(JOB)}),
    "submit": obj({"id": string, "state": string, "position": Opt(nullable(COUNT)), "owner": OPT_TEXT}),
    "cancel": JOB,
    "preempt": obj({"id": string, "revoked": Opt(boolean, False), "gpus": Opt(list_of(GPU_INDEX), [])}),
    "logs": obj({"data": string, "offset": COUNT, "state": string, "ended": boolean}),
    "doctor": obj({"checks": list_of(obj({"check": string, "ok": boolean, "detail": OPT_TEXT, "fix": OPT_TEXT}))}),
    "stream": obj({"stream_s": Opt(metric)}),
    "ledger": obj({"head": obj({"seq": Opt(nullable(metric_int)), "hash": OPT_TEXT}), "count": COUNT,
                   "witness": Opt(string, ABSENT),
                   "records": list_of(LEDGER_RECORD), "breaks": list_of(LEDGER_BREAK)}),
    "gpu_clear": obj({"gpu": GPU_INDEX, "was_withheld": boolean, "reason": OPT_TEXT}),
    "ping": obj({}),
}
WARNINGS = list_of(string)
ERROR = obj({"code": string, "message": Opt(string, "")})


@dataclass(frozen=True, slots=True)
class Reply:
    """A checked reply: `result` when ok, else `error` (code, message and any details)."""

    ok: bool
    result: dict[str, Any] = field(default_factory=dict)
    error: dict[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()


def _bad(node: str, where: str, exc: WireError) -> BadReplyError:
    return BadReplyError(f"{node}: bad reply from agent {where}: {exc}")


def check_reply(node: str, op: str, reply: Any) -> Reply:
    """The reply to request `op` from `node`, checked; BadReplyError names the node and field."""
    try:
        if not isinstance(reply, dict):
            raise WireError("", f"expected an object, got {describe(reply)}")
        ok = boolean(reply.get("ok"), "ok")
        warnings = tuple(WARNINGS(reply["warnings"], "warnings")) if "warnings" in reply else ()
        if not ok:
            return Reply(False, error=ERROR(reply.get("error"), "error"), warnings=warnings)
        if "result" not in reply:
            raise WireError("result", "missing")
        result = RESULTS.get(op, RESULTS["ping"])(reply["result"], "")
    except WireError as exc:
        raise _bad(node, f"to {op}", exc) from None
    return Reply(True, result=result, warnings=warnings)


def interpret_reply(node: str, op: str, reply: Any) -> dict[str, Any]:
    """The result of request `op` from an agent's reply line, whichever way it came (a connection
    of ours or the keeper's): checked (BadReplyError), its warnings handed to gpuconsole.notices
    (a committed change can still carry news), an agent's error raised as AgentError."""
    checked = check_reply(node, op, reply)
    for text in checked.warnings:
        notices.node_warning(node, text)
    if not checked.ok:
        raise AgentError(node, checked.error)
    return checked.result


def interpret_all(op: str, replies: Mapping[str, Any]) -> dict[str, dict[str, Any] | GpuConsoleError]:
    """Per node, the checked result of its reply line, or the error (transport, bad reply, agent)."""
    out: dict[str, dict[str, Any] | GpuConsoleError] = {}
    for name, reply in replies.items():
        try:
            out[name] = reply if isinstance(reply, GpuConsoleError) else interpret_reply(name, op, reply)
        except GpuConsoleError as exc:
            out[name] = exc
    return out


def check_snapshot(node: str, data: Any) -> dict[str, Any]:
    """A streamed telemetry snapshot from `node`, checked like a `snapshot` reply."""
    try:
        checked: dict[str, Any] = SNAPSHOT(data, "")
    except WireError as exc:
        raise _bad(node, "in telemetry", exc) from None
    return checked


def check_message(node: str, message: Any) -> dict[str, Any]:
    """One line from the agent: an object that is an event or has an integer (or null) id."""
    if not isinstance(message, dict):
        raise BadReplyError(f"{node}: bad reply from agent: expected a JSON object, got {describe(message)}")
    msg_id = message.get("id")
    if "event" not in message and msg_id is not None and (isinstance(msg_id, bool) or not isinstance(msg_id, int)):
        raise BadReplyError(f"{node}: bad reply from agent: id: expected an integer, got {describe(msg_id)}")
    return message


def _int_or_inf(digits: str) -> int | float:
    # Beyond CPython's int-parsing limit: a number no check accepts, but the line still parses.
    if len(digits) <= 4000:
        return int(digits)
    return float("-inf") if digits.startswith("-") else float("inf")


def decode_line(line: bytes) -> Any:
    """One JSON line from the agent (ValueError when it is not JSON). Integers too long for
    Python's int parser become inf, which every check then refuses or nulls."""
    try:
        return json.loads(line)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    except ValueError:
        try:
            return json.loads(line, parse_int=_int_or_inf)
        except RecursionError:
            raise ValueError("nested too deeply") from None
