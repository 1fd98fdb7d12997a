"""A node's tamper-evident ledger: each grant and its end (released, expired, revoked, the job's),
and each job's start and end, appended in the transaction that makes the change to
`<state_dir>/ledger/seg-NNNNNN.jsonl` as hash-chained JSON lines: every record names the sha256 of
the line before it, so an edited or deleted record breaks the chain at the next one.

The state holds the ledger's head (last seq, its hash, segment and committed size), committed with
the change: lines a crashed writer appended past the head are not part of it and the next writer
cuts them off. Segments rotate by size and the chain runs on across them.
"""

from __future__ import annotations

import json
import os

from . import health
from . import state as st
from .fileio import DIR_MODE, append_synced, make_shared_dir, read_regular
from .loader import sha256_hex

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, List, Set, Tuple

    from .state import Ctx
    from .typedefs import Args, Result, State

    # leases by id: (owner, gpus, job, expiry, granted at (wall)); jobs by id: their state
    # (leases: (owner, gpus, job, expiry, granted at, idle since (wall) or None), jobs' states, withheld GPUs,
    # unreserved use: GPU → (since, users))
    Summary = Tuple[Dict[str, Tuple[str, List[int], bool, float, float, Any]], Dict[str, str], Set[int],
                    Dict[str, Any]]
    # a grant the change ended: (id, owner, gpus, was a job's, reason, ended at (wall), granted at (wall))
    Ended = Tuple[str, str, List[int], bool, str, float, float]

GENESIS = "0" * 64
SEGMENT_MAX_BYTES = 4 << 20
ENDED_JOB = ("succeeded", "failed", "cancelled", "preempted", "lost", "timed_out")


def ledger_dir(state_dir: str) -> str:
    return os.path.join(state_dir, "ledger")


def segment_path(state_dir: str, number: int) -> str:
    return os.path.join(ledger_dir(state_dir), "seg-%06d.jsonl" % number)


def _count(value: object, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def head_of(state: State, state_dir: str) -> Result:
    """The committed head; a new chain on a node without one. A head that is not one (the state is
    shared, so anything may be written there) starts a new chain in a new segment: nothing written
    is cut, and the chain's break stays there for `audit` to report."""
    head: Any = state.get("ledger")
    if head is None:
        return {"seq": 0, "hash": GENESIS, "segment": 1, "size": 0}
    if (isinstance(head, dict) and _count(head.get("seq"), 0) and _count(head.get("segment"), 1)
            and _count(head.get("size"), 0) and isinstance(head.get("hash"), str) and len(head["hash"]) == 64):
        return head
    try:
        taken = [int(name[4:10]) for name in os.listdir(ledger_dir(state_dir))
                 if name.startswith("seg-") and name[4:10].isdigit()]
    except OSError:
        taken = []
    return {"seq": 0, "hash": GENESIS, "segment": max(taken, default=0) + 1, "size": 0}


def summary(state: State) -> Summary:
    """What the change's events are told apart by: the leases and the jobs' states before it."""
    leases = {i: (lease["owner"], list(lease["gpus"]), bool(lease.get("job")), lease["exp_bt"],
                  float(lease["created_wall"]), lease.get("idle_since_wall")) for i, lease in state["leases"].items()}
    unreserved: Any = state.get("unreserved") or {}
    return (leases, {i: job["state"] for i, job in state.get("jobs", {}).items()}, health.withheld(state),
            {gpu: (entry.get("since_wall"), list(entry.get("users") or [])) for gpu, entry in unreserved.items()
             if health.gpu_key(gpu) and isinstance(entry, dict)})


def events(before: Summary, state: State, ctx: Ctx, op: str, ended: list[Ended]) -> list[Result]:
    """The ledger records of one transaction: what its housekeeping and its op changed (`ended`: its
    ended_grants, computed once by the caller, who also charges them to fair share)."""
    leases_before, jobs_before, withheld_before, unreserved_before = before
    at = st.iso_utc(ctx.now_wall)
    out: list[Result] = []
    for lease_id, lease in state["leases"].items():
        if lease_id not in leases_before:
            record: Result = {"event": "grant", "id": lease_id, "owner": lease["owner"], "gpus": list(lease["gpus"]),
                              "kind": "job" if lease.get("job") else "reservation",
                              "expires_at": st.iso_utc(ctx.wall_at(lease["exp_bt"]))}
            if lease.get("backfill_for"):
                record["backfill_for"] = lease.get("backfill_for")
            if lease.get("queued_wall"):
                record["queued_at"] = st.iso_utc(float(lease.get("queued_wall") or 0))
            out.append(record)
        elif lease.get("idle_since_wall") != leases_before[lease_id][5]:
            # The watcher's word that it went idle (since when), or is in use again.
            idle_since = lease.get("idle_since_wall")
            record = {"event": "idle_start" if idle_since is not None else "idle_end", "id": lease_id,
                      "owner": lease["owner"], "gpus": list(lease["gpus"])}
            if idle_since is not None:
                record["idle_since"] = st.iso_utc(float(idle_since))
            out.append(record)
        elif not lease.get("job") and lease["exp_bt"] > leases_before[lease_id][3]:
            # A reservation renewed (a job's lease renews itself while it runs: its end says enough).
            out.append({"event": "renew", "id": lease_id, "owner": lease["owner"], "gpus": list(lease["gpus"]),
                        "expires_at": st.iso_utc(ctx.wall_at(lease["exp_bt"]))})
    for lease_id, owner, gpus, _, reason, ended_wall, _ in ended:
        out.append({"event": "end", "id": lease_id, "owner": owner, "gpus": gpus, "reason": reason,
                    "ended_at": st.iso_utc(ended_wall)})
    for job_id, job in state.get("jobs", {}).items():
        was = jobs_before.get(job_id)
        if job["state"] == "running" and was != "running":
            out.append({"event": "job_start", "id": job_id, "owner": job["owner"], "gpus": list(job.get("gpus") or [])})
        elif job["state"] in ENDED_JOB and was not in ENDED_JOB:
            out.append({"event": "job_end", "id": job_id, "owner": job["owner"], "state": job["state"],
                        "exit_code": job.get("exit_code")})
    withheld = health.withheld(state)
    table: Any = state.get("gpu_health") or {}
    for index in sorted(withheld - withheld_before):
        why = table[str(index)]["withheld"]
        out.append({"event": "gpu_withheld", "gpu": index, "reason": str(why.get("reason")),
                    "owner": ", ".join(sorted({lease["owner"] for lease in state["leases"].values()
                                               if index in lease["gpus"] and lease["exp_bt"] > ctx.now_bt}))})
    out.extend({"event": "gpu_cleared", "gpu": index, "owner": ctx.user}
               for index in sorted(withheld_before - withheld))
    unreserved: Any = state.get("unreserved") or {}
    for gpu in sorted({g for g in unreserved if health.gpu_key(g)} - set(unreserved_before), key=str):
        users = list(unreserved[gpu].get("users") or [])
        out.append({"event": "unreserved_start", "gpu": int(gpu), "gpus": [int(gpu)], "owner": ",".join(users),
                    "users": users})
    for gpu in sorted(set(unreserved_before) - set(unreserved), key=str):
        since_wall, users = unreserved_before[gpu]
        out.append({"event": "unreserved_end", "gpu": int(gpu), "gpus": [int(gpu)], "owner": ",".join(users),
                    "users": users, "since": st.iso_utc(float(since_wall or ctx.now_wall))})
    for record in out:
        record.update(at=at, by=ctx.user, op=op)
    return out


def ended_grants(before: Summary, state: State, ctx: Ctx, op: str, args: Args) -> list[Ended]:
    """The grants the change ended, why, and when their GPUs came back (an expired lease: at its
    expiry, though the change that noticed may come later)."""
    out: list[Ended] = []
    for lease_id, (owner, gpus, was_job, exp_bt, granted_wall, _) in before[0].items():
        if lease_id not in state["leases"]:
            reason = ("job" if was_job else "expired" if exp_bt <= ctx.now_bt
                      else ("idle_release" if args.get("reason") == "idle" else "released")
                      if op == "release" and args.get("id") == lease_id else "revoked")
            ended = ctx.wall_at(exp_bt) if reason == "expired" else ctx.now_wall
            out.append((lease_id, owner, gpus, was_job, reason, ended, granted_wall))
    return out


def append(state_dir: str, head: Result, records: list[Result], file_mode: int, dir_mode: int = DIR_MODE) -> Result:
    """Write the records after `head` durably; the new head (which the caller commits with the state)."""
    prev, seq = str(head["hash"]), int(head["seq"])
    lines = []
    for record in records:
        seq += 1
        line = json.dumps(dict(record, seq=seq, prev=prev), sort_keys=True, separators=(",", ":")).encode() + b"\n"
        prev = sha256_hex(line)
        lines.append(line)
    body = b"".join(lines)
    segment, size = int(head["segment"]), int(head["size"])
    make_shared_dir(ledger_dir(state_dir), dir_mode)
    if size and size + len(body) > SEGMENT_MAX_BYTES:
        append_synced(segment_path(state_dir, segment), size, b"", file_mode)  # cut any uncommitted tail
        segment, size = segment + 1, 0
    append_synced(segment_path(state_dir, segment), size, body, file_mode)
    return {"seq": seq, "hash": prev, "segment": segment, "size": size + len(body)}


def verify(state_dir: str, head: Result) -> tuple[list[Result], list[Result]]:
    """Every committed record (with `segment` and `line`) and the breaks in the chain, each with its
    place and what is wrong; a break does not stop the walk (the chain resumes from that record)."""
    records: list[Result] = []
    breaks: list[Result] = []
    prev, seq = GENESIS, 0
    last = int(head.get("segment", 1))
    for number in range(1, last + 1):
        try:
            data = read_regular(segment_path(state_dir, number))
        except (OSError, ValueError) as exc:
            if number < last or int(head.get("size", 0)):
                breaks.append({"segment": number, "line": 0, "seq": seq + 1, "problem": "segment unreadable: %s" % exc})
            continue
        short = number == last and len(data) < int(head.get("size", 0))
        if number == last:
            data = data[:int(head.get("size", 0))]
        for index, line in enumerate(data.splitlines(keepends=True), 1):
            place = {"segment": number, "line": index}
            try:
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise ValueError("not an object")
            except ValueError:
                breaks.append(dict(place, seq=seq + 1, problem="not a JSON record"))
                prev, seq = sha256_hex(line), seq + 1
                continue
            if record.get("prev") != prev:
                breaks.append(dict(place, seq=record.get("seq"), problem="does not follow the record before it "
                                   "(that record, or its link, was changed or removed)"))
            elif record.get("seq") != seq + 1:
                breaks.append(dict(place, seq=record.get("seq"), problem="sequence gap after %d" % seq))
            prev = sha256_hex(line)
            if not (_count(record.get("seq"), 1) and isinstance(record.get("event"), str)):
                breaks.append(dict(place, seq=seq + 1, problem="a record without its seq or event"))
                seq += 1
                continue
            seq = record["seq"]
            records.append(dict(record, **place))
        if short:
            breaks.append({"segment": number, "line": 0, "seq": seq + 1,
                           "problem": "segment is shorter than the committed %s bytes" % head.get("size")})
    if not breaks and (seq != head.get("seq") or prev != head.get("hash")):
        breaks.append({"segment": last, "line": 0, "seq": seq, "problem": "the ledger does not end where the state "
                       "says (seq %s)" % head.get("seq")})
    return records, breaks


def witnessed(records: list[Result], head: Result, seen: object) -> str:
    """Whether the chain still holds a head an earlier `audit` saw ({seq, hash}): "held", "gone"
    (the ledger was cut below it or that record rewritten: a rewrite the chain alone cannot show),
    "unknown" (older than the records read), or "invalid"."""
    if not isinstance(seen, dict) or not _count(seen.get("seq"), 0) or not isinstance(seen.get("hash"), str):
        return "invalid"
    seq, digest = int(seen["seq"]), str(seen["hash"])
    if seq == 0:
        return "held"
    if seq > int(head.get("seq") or 0):
        return "gone"
    if seq == int(head.get("seq") or 0):
        return "held" if head.get("hash") == digest else "gone"
    after = next((r for r in records if r.get("seq") == seq + 1), None)
    if after is None:
        return "unknown"
    return "held" if after.get("prev") == digest else "gone"
