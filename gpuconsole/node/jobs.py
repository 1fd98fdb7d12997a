"""Pure transitions for batch jobs: submit, claim, finish, cancel, and reaping lost supervisors.

A job is a queued ticket whose waiter is the job's supervisor process on the node; when the
queue grants it, the lease carries the job's id, and the supervisor claims it with the token.
"""

from __future__ import annotations

from . import state as st

JOB_LEASE_TTL_S = 60.0  # the supervisor renews every third of this while the job runs
KEEP_FINISHED = 200
ACTIVE = ("queued", "running")


def _jobs(state):
    return state.setdefault("jobs", {})


def job_view(job, position=None):
    """The `jobs --json` record of the contract (times in ISO UTC)."""
    def iso(wall):
        return st.iso_utc(wall) if wall else None

    return {
        "id": job["id"], "name": job.get("name") or job["id"], "gpus": list(job.get("gpus") or []),
        "gpus_requested": job["n"], "owner": job["owner"],
        "priority": st.PRIORITY_NAMES.get(job["priority"], "normal"), "state": job["state"],
        "exit_code": job.get("exit_code"), "command": job.get("command", ""),
        "created_at": iso(job["created_wall"]), "started_at": iso(job.get("started_wall")),
        "ended_at": iso(job.get("ended_wall")), "position": position,
    }


def listing(state, ctx):
    positions = {t["id"]: i + 1 for i, t in enumerate(st.queue_order(state, ctx.now_bt))}
    jobs = sorted(_jobs(state).values(), key=lambda j: j["created_wall"])
    return {"jobs": [job_view(j, positions.get(j["id"])) for j in jobs]}


def submit(state, ctx, args):
    """Queue a job whose supervisor (args["supervisor"], an identity) waits for the grant."""
    n, _, priority = st._validate_request(dict(args, ttl_s=JOB_LEASE_TTL_S), ctx)
    supervisor = args.get("supervisor")
    if not isinstance(supervisor, dict) or "pid" not in supervisor:
        raise st.OpError("invalid", "submit needs the supervisor's identity")
    job_id = args.get("job_id") or st.new_id(state, "j")
    if job_id in _jobs(state) or job_id in state["queue"] or job_id in state["leases"]:
        raise st.OpError("invalid", "job id %s is taken" % job_id)
    ticket = st._ticket(state, ctx, n, JOB_LEASE_TTL_S, priority, False, ticket_id=job_id)
    ticket["agent"] = supervisor
    ticket["job"] = True
    state["queue"][job_id] = ticket
    _jobs(state)[job_id] = {
        "id": job_id, "uid": ctx.uid, "owner": ctx.user, "name": str(args.get("name") or "")[:64],
        "n": n, "priority": priority, "state": "queued", "exit_code": None,
        "command": str(args.get("command") or "")[:300], "created_wall": ctx.now_wall,
        "started_wall": None, "ended_wall": None, "supervisor": supervisor, "gpus": [],
        "requeue": bool(args.get("requeue")), "cancel_requested": False,
    }
    st.dispatch(state, ctx)
    order = [t["id"] for t in st.queue_order(state, ctx.now_bt)]
    position = order.index(job_id) + 1 if job_id in order else None  # None: granted already
    return {"id": job_id, "state": "queued", "position": position, "owner": ctx.user}


def _own_job(state, ctx, job_id):
    job = _jobs(state).get(job_id)
    if job is None:
        raise st.OpError("not_found", "no job %s on this node" % job_id)
    if job["uid"] != ctx.uid and not ctx.admin:
        raise st.OpError("permission", "job %s belongs to %s; only its owner or an admin may change it"
                         % (job_id, job["owner"]))
    return job


def claim(state, ctx, args):
    """The supervisor takes its grant: the job runs on the lease's GPUs (fenced by the token)."""
    job = _own_job(state, ctx, args.get("id"))
    lease = state["leases"].get(job["id"])
    if lease is None or lease["exp_bt"] <= ctx.now_bt:
        raise st.OpError("not_found", "job %s has no grant" % job["id"])
    if args.get("token") != lease["token"]:
        raise st.OpError("stale_token", "stale token for job %s" % job["id"])
    job.update(state="running", started_wall=ctx.now_wall, gpus=list(lease["gpus"]))
    return {"id": job["id"], "gpus": list(lease["gpus"]), "token": lease["token"]}


def finish(state, ctx, args):
    """Record how the job ended, free its GPUs and hand them to the queue."""
    job = _own_job(state, ctx, args.get("id"))
    lease = state["leases"].get(job["id"])
    if lease is not None and args.get("token") not in (None, lease["token"]):
        raise st.OpError("stale_token", "stale token for job %s" % job["id"])
    exit_code = args.get("exit_code")
    if job.get("cancel_requested"):
        job["state"] = "cancelled"
    elif exit_code == 0:
        job["state"] = "succeeded"
    else:
        job["state"] = "failed"
    job.update(exit_code=exit_code, ended_wall=ctx.now_wall)
    state["leases"].pop(job["id"], None)
    state["queue"].pop(job["id"], None)
    st.dispatch(state, ctx)
    return job_view(job)


def cancel(state, ctx, args):
    """Queued: withdrawn now. Running: the supervisor sees the request and signals the job."""
    job = _own_job(state, ctx, args.get("id"))
    if job["state"] == "queued":
        state["queue"].pop(job["id"], None)
        state["leases"].pop(job["id"], None)  # granted but not yet claimed
        job.update(state="cancelled", ended_wall=ctx.now_wall, cancel_requested=True)
        st.dispatch(state, ctx)
    elif job["state"] == "running":
        job["cancel_requested"] = True
    else:
        raise st.OpError("invalid", "job %s already ended (%s)" % (job["id"], job["state"]))
    return job_view(job)


def reap(state, ctx):
    """Jobs whose supervisor is gone become lost and free their GPUs; old finished jobs go."""
    changed = False
    jobs = _jobs(state)
    for job in jobs.values():
        if job["state"] in ACTIVE and not ctx.alive(job.get("supervisor")):
            job.update(state="lost", ended_wall=ctx.now_wall)
            state["queue"].pop(job["id"], None)
            state["leases"].pop(job["id"], None)
            changed = True
    finished = sorted((j for j in jobs.values() if j["state"] not in ACTIVE), key=lambda j: j["ended_wall"] or 0)
    for job in finished[: max(0, len(finished) - KEEP_FINISHED)]:
        del jobs[job["id"]]
        changed = True
    return changed


MUTATIONS = {"submit_job": submit, "claim_job": claim, "finish_job": finish, "cancel_job": cancel}
