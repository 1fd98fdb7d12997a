"""Pure transitions for batch jobs: submit, claim, finish, cancel, and reaping lost supervisors.

A job is a queued ticket whose waiter is the job's supervisor process on the node; when the
queue grants it, the lease carries the job's id, and the supervisor claims it with the token.
"""

from __future__ import annotations

import os

from . import faults
from . import state as st

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .reservations import Transition
    from .state import Ctx
    from .typedefs import Args, Ident, Job, Lease, Result, State, Ticket

# The supervisor renews every third of this while the job runs; tests shorten it.
JOB_LEASE_TTL_S = float(os.environ.get("GPUCONSOLE_JOB_TTL_S") or 60.0)
DEFAULT_GRACE_S = 30.0
MAX_GRACE_S = 3600.0
MAX_TIME_LIMIT_S = 366 * 86400.0
KEEP_FINISHED = 200
ACTIVE = ("queued", "running")


def _jobs(state: State) -> dict[str, Job]:
    return state.setdefault("jobs", {})


def job_view(job: Job, position: int | None = None) -> Result:
    """The `jobs --json` record of the contract (times in ISO UTC)."""
    def iso(wall: float | None) -> str | None:
        return st.iso_utc(wall) if wall else None

    return {
        "id": job["id"], "name": job.get("name") or job["id"], "gpus": list(job.get("gpus") or []),
        "gpus_requested": job["n"], "owner": job["owner"],
        "priority": st.PRIORITY_NAMES.get(job["priority"], "normal"), "state": job["state"],
        "exit_code": job.get("exit_code"), "command": job.get("command", ""),
        "created_at": iso(job["created_wall"]), "started_at": iso(job.get("started_wall")),
        "ended_at": iso(job.get("ended_wall")), "position": position,
        "time_limit_s": job.get("time_limit_s"),
        **({"array": dict(job["array"])} if job.get("array") else {}),
    }


def listing(state: State, ctx: Ctx, reasons: dict[str, Result] | None = None) -> Result:
    """Every job, oldest first; a queued one with why it waits when `reasons` (pending.explain) has it."""
    positions = {t["id"]: i + 1 for i, t in enumerate(st.queue_order(state, ctx.now_bt))}
    jobs = sorted(_jobs(state).values(), key=lambda j: j["created_wall"])
    return {"jobs": [dict(job_view(j, positions.get(j["id"])), **(reasons or {}).get(j["id"], {}))
                     for j in jobs]}


RECENT_S = 600.0
RECENT_MAX = 50


def recent(state: State, ctx: Ctx) -> list[Result]:
    """Active jobs and those that ended in the last ten minutes (what telemetry carries)."""
    positions = {t["id"]: i + 1 for i, t in enumerate(st.queue_order(state, ctx.now_bt))}
    chosen = [j for j in _jobs(state).values()
              if j["state"] in ACTIVE or (j.get("ended_wall") or 0) >= ctx.now_wall - RECENT_S]
    chosen.sort(key=lambda j: (j["state"] not in ACTIVE, -(j["created_wall"])))
    return [job_view(j, positions.get(j["id"])) for j in chosen[:RECENT_MAX]]


def submit(state: State, ctx: Ctx, args: Args) -> Result:
    """Queue a job whose supervisor (args["supervisor"], an identity) waits for the grant."""
    job_id = _enqueue(state, ctx, args)
    st.dispatch(state, ctx)
    position = st.queue_position(state, ctx, job_id)  # None: granted already
    return {"id": job_id, "state": "queued", "position": position, "owner": ctx.user}


MAX_ARRAY = 1000  # jobs one `submit --array` may queue (each still has its own supervisor process)


def submit_array(state: State, ctx: Ctx, args: Args) -> Result:
    """Queue every job of an array in this one transaction (`args["jobs"]`: job_id, index, supervisor
    each; the rest as a submit's), then dispatch once. Each supervisor must be a live process of the
    caller: a service-mode node runs this for the caller and trusts no claimed identity."""
    entries = args.get("jobs")
    array_id = args.get("array_id")
    if not isinstance(entries, list) or not 0 < len(entries) <= MAX_ARRAY:
        raise st.OpError("invalid", "an array has 1 to %d jobs" % MAX_ARRAY)
    if not isinstance(array_id, str) or not array_id.startswith("a-") or not array_id[2:].isalnum():
        raise st.OpError("invalid", "array_id must look like a-XXXXXX")
    name = str(args.get("name") or array_id)[:48]
    queued = []
    for entry in entries:
        ident = entry.get("supervisor") if isinstance(entry, dict) else None
        index = entry.get("index") if isinstance(entry, dict) else None
        if not isinstance(ident, dict) or not isinstance(index, int) or isinstance(index, bool) or index < 0:
            raise st.OpError("invalid", "each array job needs its index and its supervisor's identity")
        _check_own_process(ident, ctx)
        job_id = _enqueue(state, ctx, dict(args, job_id=entry.get("job_id"), supervisor=ident,
                                           name="%s[%d]" % (name, index)))
        _jobs(state)[job_id]["array"] = {"id": array_id, "index": index}
        queued.append(job_id)
    st.dispatch(state, ctx)
    positions = {t["id"]: i + 1 for i, t in enumerate(st.queue_order(state, ctx.now_bt))}
    return {"id": array_id, "state": "queued", "owner": ctx.user,
            "jobs": [{"id": j, "index": _jobs(state)[j]["array"]["index"], "state": "queued",
                      "position": positions.get(j)} for j in queued]}


def _check_own_process(ident: object, ctx: Ctx) -> None:
    """A supervisor (or waiter) identity must name a process of the caller (checked, never claimed)."""
    from . import procs

    pid = ident.get("pid") if isinstance(ident, dict) else None
    if not isinstance(ident, dict) or ident.get("uid") != ctx.uid or not isinstance(pid, int) \
            or procs.proc_uid(pid) != ctx.uid:
        raise st.OpError("permission", "the supervisor of a job must be a process of %s" % ctx.user)


def _enqueue(state: State, ctx: Ctx, args: Args) -> str:
    """Add one job's ticket and record (no dispatch: a batch dispatches once); its id."""
    n, _, priority = st.validate_request(dict(args, ttl_s=JOB_LEASE_TTL_S), ctx)
    if not isinstance(args.get("supervisor"), dict) or "pid" not in args["supervisor"]:
        raise st.OpError("invalid", "submit needs the supervisor's identity")
    supervisor: Ident = args["supervisor"]  # its full shape is checked whenever the state is read
    job_id = args.get("job_id") or st.new_id(state, "j")
    if job_id in _jobs(state) or job_id in state["queue"] or job_id in state["leases"]:
        raise st.OpError("invalid", "job id %s is taken" % job_id)
    grace_s = _grace_s(args.get("grace_s", DEFAULT_GRACE_S))
    limit = args.get("time_limit_s")
    if limit is not None:
        limit = st.number(limit, "time_limit_s must be between 1 s and 366 days", 1, MAX_TIME_LIMIT_S)
    ticket = st.new_ticket(state, ctx, n, JOB_LEASE_TTL_S, priority, False, ticket_id=job_id)
    ticket["agent"] = supervisor
    ticket["job"] = True
    ticket["preempt"] = bool(args.get("preempt"))
    if limit is not None:
        ticket["ends_after_s"] = float(limit) + float(grace_s)
    state["queue"][job_id] = ticket
    _jobs(state)[job_id] = {
        "id": job_id, "uid": ctx.uid, "owner": ctx.user, "name": str(args.get("name") or "")[:64],
        "n": n, "priority": priority, "state": "queued", "exit_code": None,
        "command": str(args.get("command") or "")[:300], "created_wall": ctx.now_wall,
        "started_wall": None, "ended_wall": None, "supervisor": supervisor, "gpus": [],
        "requeue": bool(args.get("requeue")), "cancel_requested": False,
        "preempt_others": bool(args.get("preempt")), "grace_s": float(grace_s), "preempt": None,
        "requeues": 0, "created_bt": ctx.now_bt, "seq": ticket["seq"],
        "time_limit_s": None if limit is None else float(limit),
    }
    return job_id


def _grace_s(value: object) -> float:
    return st.number(value, "grace must be between 0 and %d seconds" % MAX_GRACE_S, 0, MAX_GRACE_S)


def _own_job(state: State, ctx: Ctx, job_id: Any) -> Job:
    job = _jobs(state).get(job_id)
    if job is None:
        raise st.OpError("not_found", "no job %s on this node" % job_id)
    if job["uid"] != ctx.uid and not ctx.admin:
        raise st.OpError("permission", "job %s belongs to %s; only its owner or an admin may change it"
                         % (job_id, job["owner"]))
    return job


def claim(state: State, ctx: Ctx, args: Args) -> Result:
    """The supervisor takes its grant: the job runs on the lease's GPUs (fenced by the token)."""
    job = _own_job(state, ctx, args.get("id"))
    lease = state["leases"].get(job["id"])
    if lease is None or lease["exp_bt"] <= ctx.now_bt:
        raise st.OpError("not_found", "job %s has no grant" % job["id"])
    if args.get("token") != lease["token"]:
        raise st.OpError("stale_token", "stale token for job %s" % job["id"])
    supervisor = args.get("supervisor")
    if supervisor is not None:  # started by the user's waiter: the claiming supervisor holds the job from now on
        _check_own_process(supervisor, ctx)
        job["supervisor"] = supervisor
    job.update({"state": "running", "started_wall": ctx.now_wall, "gpus": list(lease["gpus"])})
    return {"id": job["id"], "gpus": list(lease["gpus"]), "token": lease["token"]}


def finish(state: State, ctx: Ctx, args: Args) -> Result:
    """Record how the job ended, free its GPUs and hand them to the queue."""
    job = _own_job(state, ctx, args.get("id"))
    lease = state["leases"].get(job["id"])
    if lease is not None and args.get("token") not in (None, lease["token"]):
        raise st.OpError("stale_token", "stale token for job %s" % job["id"])
    exit_code = args.get("exit_code")
    state["leases"].pop(job["id"], None)
    state["queue"].pop(job["id"], None)
    preempted = job.get("preempt") is not None
    if args.get("lease_lost"):
        job["state"] = "lost"  # its grant vanished under it (an admin or a forged edit): stopped at once
    elif job.get("cancel_requested"):
        job["state"] = "cancelled"
    elif args.get("timed_out") is True and exit_code != 0:
        job["state"] = "timed_out"  # stopped at its `--time` limit by its supervisor
    elif exit_code == 0:
        job["state"] = "succeeded"  # finished, even if a preemption signal came first
    elif preempted and job.get("requeue"):
        _requeue(state, ctx, job)
        st.dispatch(state, ctx)
        return dict(job_view(job), requeued=True)
    else:
        job["state"] = "preempted" if preempted else "failed"
    job.update({"exit_code": exit_code, "ended_wall": ctx.now_wall})
    st.dispatch(state, ctx)
    return job_view(job)


def _requeue(state: State, ctx: Ctx, job: Job) -> None:
    """Back in the queue at its original place (its submit time and sequence), same supervisor."""
    ticket: Ticket = {
        "id": job["id"], "uid": job["uid"], "owner": job["owner"], "n": job["n"], "ttl_s": JOB_LEASE_TTL_S,
        "priority": job["priority"], "preemptible": False, "created_bt": job.get("created_bt", ctx.now_bt),
        "created_wall": job["created_wall"], "seq": job.get("seq", 0), "agent": job["supervisor"],
        "job": True, "preempt": job.get("preempt_others", False),
    }
    if job.get("time_limit_s"):
        ticket["ends_after_s"] = float(job["time_limit_s"] or 0) + float(job.get("grace_s", DEFAULT_GRACE_S))
    state["queue"][job["id"]] = ticket
    job.update({"state": "queued", "started_wall": None, "gpus": [], "preempt": None,
               "requeues": job.get("requeues", 0) + 1, "exit_code": None})


def orphans(state: State, uid: int) -> list[str]:
    """Requeued jobs of `uid` that lost their supervisor and wait to be adopted."""
    return [j["id"] for j in _jobs(state).values() if j.get("orphaned") and j["uid"] == uid]


def adopt(state: State, ctx: Ctx, args: Args) -> Result:
    """A new supervisor (started by the owner's agent) takes over a requeued orphan job."""
    job = _own_job(state, ctx, args.get("id"))
    if not job.get("orphaned"):
        raise st.OpError("invalid", "job %s has a supervisor" % job["id"])
    job["orphaned"] = False
    job["supervisor"] = args.get("supervisor")
    requeues = job.get("requeues", 0)
    _requeue(state, ctx, job)
    job["requeues"] = requeues  # counted when it was orphaned
    st.dispatch(state, ctx)
    return job_view(job)


def preempt_for_head(state: State, ctx: Ctx) -> bool:
    """If the queue head may preempt and is blocked, mark the fewest lower-priority victims.

    Victims: running jobs of lower priority (lowest priority first, then the youngest), and
    interactive reservations made `--preemptible` (revoked at once). Nothing is marked unless
    the victims would free enough GPUs. Returns True when something changed.
    """
    _, blocked, _ = st.plan(state, ctx)
    if not blocked or not blocked[0].get("preempt") or st.over_quota(state, ctx, blocked[0]):
        return False
    head = blocked[0]
    need = head["n"] - len(st.free_gpus(state, ctx))
    need -= sum(len(lease["gpus"]) for lease in state["leases"].values() if lease.get("preempted_by") == head["id"])
    if need <= 0:
        return False
    candidates: list[tuple[int, float, Lease]] = []
    for lease in state["leases"].values():
        if lease["exp_bt"] <= ctx.now_bt or lease.get("preempted_by") or lease["priority"] >= head["priority"]:
            continue
        if lease.get("job") or lease.get("preemptible"):
            job = _jobs(state).get(lease["id"])
            started = (job.get("started_wall") if job is not None else None) or lease["created_wall"]
            candidates.append((lease["priority"], -started, lease))
    chosen = []
    for _, _, lease in sorted(candidates, key=lambda c: (c[0], c[1])):
        if need <= 0:
            break
        chosen.append(lease)
        need -= len(lease["gpus"])
    if need > 0:
        return False
    for lease in chosen:
        _mark_victim(state, ctx, lease, head["id"], None)
    return True


def _mark_victim(state: State, ctx: Ctx, lease: Lease, by: str, grace_s: float | None) -> None:
    job = _jobs(state).get(lease["id"])
    if job is None:
        del state["leases"][lease["id"]]  # an interactive reservation: preempting revokes it
        return
    grace = job.get("grace_s", DEFAULT_GRACE_S) if grace_s is None else grace_s
    lease["preempted_by"] = by
    job["preempt"] = {"by": by, "grace_s": grace, "deadline_wall": ctx.now_wall + grace}


def preempt(state: State, ctx: Ctx, args: Args) -> Result:
    """`preempt ID` by hand (owner or admin): a running job is signalled, a reservation revoked."""
    target: Any = args.get("id")
    grace_s = args.get("grace_s")
    if grace_s is not None:
        grace_s = _grace_s(grace_s)
    job = _jobs(state).get(target)
    if job is not None:
        job = _own_job(state, ctx, target)
        lease = state["leases"].get(target)
        if job["state"] != "running" or lease is None:
            raise st.OpError("invalid", "job %s is %s, not running" % (target, job["state"]))
        _mark_victim(state, ctx, lease, "manual:" + ctx.user, grace_s)
        return job_view(job)
    lease = state["leases"].get(target)
    if lease is None or lease["exp_bt"] <= ctx.now_bt:
        raise st.OpError("not_found", "no running job or active reservation %s" % target)
    st.check_owner(lease, ctx, "reservation")
    del state["leases"][target]
    st.dispatch(state, ctx)
    return {"id": target, "revoked": True, "gpus": list(lease["gpus"])}


def cancel(state: State, ctx: Ctx, args: Args) -> Result:
    """Queued: withdrawn now. Running: the supervisor sees the request and signals the job."""
    job = _own_job(state, ctx, args.get("id"))
    if job["state"] == "queued":
        state["queue"].pop(job["id"], None)
        state["leases"].pop(job["id"], None)  # granted but not yet claimed
        job.update({"state": "cancelled", "ended_wall": ctx.now_wall, "cancel_requested": True})
        st.dispatch(state, ctx)
    elif job["state"] == "running":
        job["cancel_requested"] = True
    else:
        return dict(job_view(job), already_ended=True)  # the wish is already true: not an error
    return job_view(job)


def hold_while_supervised(state: State, ctx: Ctx) -> bool:
    """A running job's lease lasts as long as its supervisor lives, renewed or not.

    A supervisor that cannot renew (stopped, starved of the lock, a suspended node) still has a
    job on those GPUs, so letting the lease lapse would grant them twice. Extending here, before
    expiry, ties the hold to the supervisor's life; reap() ends it when the supervisor is gone.
    Only leases about to lapse are touched, so a healthy job costs no extra commit.
    """
    if faults.active("job_lease_expires"):  # negative control for the history checker only
        return False
    lapsing = lapsing_supervised(state, ctx)
    for lease in lapsing:
        lease["exp_bt"] = ctx.now_bt + JOB_LEASE_TTL_S
        lease["exp_wall"] = ctx.wall_at(lease["exp_bt"])
    return bool(lapsing)


def lapsing_supervised(state: State, ctx: Ctx) -> list[Lease]:
    """Leases of active jobs with a live supervisor that are within a third of their TTL of lapsing."""
    jobs = _jobs(state)
    found = []
    for lease in state["leases"].values():
        job = jobs.get(lease["id"])
        if not lease.get("job") or job is None or job["state"] not in ACTIVE:
            continue
        if lease["exp_bt"] - ctx.now_bt < JOB_LEASE_TTL_S / 3 and ctx.alive(job.get("supervisor")):
            found.append(lease)
    return found


def abandon(state: State, ctx: Ctx, args: Args) -> Result:
    """An orphaned job its owner's agent refused to restart (its private files are not the
    owner's, or it already ended) is recorded as lost instead of waiting forever."""
    job = _own_job(state, ctx, args.get("id"))
    if not job.get("orphaned"):
        raise st.OpError("invalid", "job %s is not waiting for a new supervisor" % job["id"])
    state["queue"].pop(job["id"], None)
    job.update({"state": "lost", "orphaned": False, "ended_wall": ctx.now_wall,
                "note": str(args.get("reason") or "")[:200]})
    return job_view(job)


def reap(state: State, ctx: Ctx) -> bool:
    """Jobs whose supervisor is gone become lost and free their GPUs; old finished jobs go."""
    changed = False
    jobs = _jobs(state)
    for job in jobs.values():
        if job["state"] in ACTIVE and not job.get("orphaned") and not ctx.alive(job.get("supervisor")):
            state["queue"].pop(job["id"], None)
            state["leases"].pop(job["id"], None)
            if job.get("requeue"):
                # Queued again, waiting for its owner's next connection to start a new supervisor.
                job.update({"state": "queued", "orphaned": True, "started_wall": None, "gpus": [], "preempt": None,
                           "requeues": job.get("requeues", 0) + 1})
            else:
                job.update({"state": "lost", "ended_wall": ctx.now_wall})
            changed = True
    finished = sorted((j for j in jobs.values() if j["state"] not in ACTIVE), key=lambda j: j["ended_wall"] or 0)
    for job in finished[: max(0, len(finished) - KEEP_FINISHED)]:
        del jobs[job["id"]]
        changed = True
    return changed


MUTATIONS: dict[str, Transition] = {
    "submit_job": submit, "submit_array_jobs": submit_array, "claim_job": claim, "finish_job": finish,
    "cancel_job": cancel, "preempt": preempt, "adopt_job": adopt, "abandon_job": abandon,
}
