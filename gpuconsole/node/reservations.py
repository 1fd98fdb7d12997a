"""Interactive reservations: reserve (now or queued), poll, reattach, release, renew.

Pure transitions on the state dict like jobs.py, built on the queue and grant rules of
state.py; the agent runs each one inside a transaction (lock, housekeeping, commit).
"""

from __future__ import annotations

from . import health, pending, policy
from . import state as st
from .state import OpError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable

    from .state import Ctx
    from .typedefs import Args, Lease, Result, State, Ticket

    Transition = Callable[[State, Ctx, Args], Result]


def reserve(state: State, ctx: Ctx, args: Args) -> Result:
    """Grant n GPUs now, or (wait=True) queue the request; never overtakes a blocked queue head."""
    n, ttl_s, priority = st.validate_request(args, ctx)
    preemptible = bool(args.get("preemptible", False))
    longest = ctx.policy.get("max_reservation_s")
    if args.get("ttl_up_to_policy") is True and longest is not None:
        ttl_s = min(ttl_s, float(longest))  # the client's default length, not one the user asked for
    _within_policy(ctx, n, ttl_s)
    st.dispatch(state, ctx)
    ticket = st.new_ticket(state, ctx, n, ttl_s, priority, preemptible)
    granted, _, backfilled = st.plan(state, ctx, extra=ticket)
    for candidate, gpus in granted:
        if candidate is ticket:
            lease = st.grant(state, ctx, ticket["id"], ctx.uid, ctx.user, gpus, ttl_s, priority, preemptible)
            st.mark_backfill(lease, backfilled.get(ticket["id"]))
            return dict(st.grant_result(lease, ctx), state="granted")
    if args.get("wait"):
        wait_s = args.get("wait_s")
        if wait_s is not None:
            ticket["deadline_bt"] = ctx.now_bt + st.duration_s(wait_s, "wait_s")
        state["queue"][ticket["id"]] = ticket
        return pending.queued_view(state, ctx, ticket["id"], owner=ctx.user, gpus_requested=n)
    free = len(st.free_gpus(state, ctx))
    quota = st.over_quota(state, ctx, ticket)
    if quota is not None:
        raise OpError("insufficient", "%d GPUs requested: you hold %d here and the node's policy allows %s"
                      % (n, quota["held"], policy.cap_text(ctx.policy)), gpu_count=ctx.gpu_count, free=free,
                      queued=len(state["queue"]), quota=quota)
    raise OpError("insufficient", "%d GPUs requested, %d free of %d" % (n, free, ctx.gpu_count),
                  gpu_count=ctx.gpu_count, free=free, queued=len(state["queue"]))


def _within_policy(ctx: Ctx, n: int, ttl_s: float) -> None:
    """Refuse what the node's policy never allows: more GPUs than a user may hold, or longer."""
    cap = ctx.policy.get("max_gpus_per_user")
    if cap is not None and n > cap:
        raise OpError("permission", "%d GPUs requested; the node's policy allows %s" % (n, policy.cap_text(ctx.policy)))
    longest = ctx.policy.get("max_reservation_s")
    if longest is not None and ttl_s > longest:
        raise OpError("permission", "a reservation for %s; the node's policy allows at most %s"
                      % (policy.human_s(ttl_s), policy.human_s(longest)))


def poll(state: State, ctx: Ctx, args: Args) -> Result:
    """Where a queued request stands: granted (with the grant), queued (position) or gone."""
    ticket_id: Any = args.get("id")  # any value: one that names no record is not_found
    lease = state["leases"].get(ticket_id)
    if lease is not None and lease["exp_bt"] > ctx.now_bt:
        if lease["uid"] != ctx.uid:
            raise OpError("permission", "%s belongs to %s" % (ticket_id, lease["owner"]))
        return dict(st.grant_result(lease, ctx), state="granted")
    if ticket_id in state["queue"]:
        return pending.queued_view(state, ctx, ticket_id)
    raise OpError("not_found", "no queued or active reservation %s" % ticket_id)


def reattach(state: State, ctx: Ctx, args: Args) -> Result:
    """A waiter back after a dropped connection takes its ticket over, keeping its place.

    The ticket is still queued (its old agent not yet reaped) or was dropped less than
    REATTACH_GRACE_S ago: then it returns with its original submit time and sequence, so it is
    ahead of everyone who queued after it. A grant made meanwhile is returned as by poll().
    """
    ticket_id: Any = args.get("id")
    lease = state["leases"].get(ticket_id)
    if lease is not None and lease["exp_bt"] > ctx.now_bt:
        return poll(state, ctx, args)
    ticket = state["queue"].get(ticket_id)
    if ticket is None:
        tombstone = state.get("dropped", {}).get(ticket_id)
        if tombstone is None:
            raise OpError("not_found", "no queued request %s (dropped more than %ds ago, or granted and ended)"
                          % (ticket_id, st.REATTACH_GRACE_S))
        _check_waiter(tombstone, ctx)
        # The tombstone less its drop time is the ticket as it was queued.
        revived: Ticket = {k: v for k, v in tombstone.items() if k != "dropped_bt"}  # type: ignore[assignment]
        del state["dropped"][ticket_id]
        state["queue"][ticket_id] = ticket = revived
    _check_waiter(ticket, ctx)
    ticket["agent"] = ctx.agent
    st.dispatch(state, ctx)
    return poll(state, ctx, args)


def _check_waiter(ticket: Ticket, ctx: Ctx) -> None:
    """Only the user who queued a request may wait on it (an admin may withdraw it, not take it)."""
    if ticket["uid"] != ctx.uid:
        raise OpError("permission", "queued request %s belongs to %s" % (ticket["id"], ticket["owner"]))


def _held_lease(state: State, ctx: Ctx, args: Args) -> Lease:
    """The live lease named by args["id"], checked for ownership and (if given) its token."""
    target: Any = args.get("id")
    lease = state["leases"].get(target)
    if lease is None or lease["exp_bt"] <= ctx.now_bt:
        raise OpError("not_found", "no active reservation %s (released or expired)" % target)
    st.check_owner(lease, ctx, "reservation")
    token = args.get("token")
    if token is not None and token != lease["token"]:
        raise OpError("stale_token", "token %s is stale for %s: the grant it named is over"
                      % (token, target))
    return lease


def release(state: State, ctx: Ctx, args: Args) -> Result:
    """End a reservation (or withdraw a queued request); the owner or an admin only."""
    target: Any = args.get("id")
    if target in state["queue"]:
        ticket = state["queue"][target]
        st.check_owner(ticket, ctx, "queued request")
        if ticket.get("job"):
            raise OpError("invalid", "%s is a queued job; use `gpuconsole cancel %s`" % (target, target))
        del state["queue"][target]
        return {"id": target, "released": True, "was": "queued", "gpus": []}
    lease = _held_lease(state, ctx, args)
    if lease.get("job"):
        raise OpError("invalid", "%s holds GPUs for a running job; use `gpuconsole cancel %s`" % (target, target))
    del state["leases"][target]
    st.dispatch(state, ctx)
    return {"id": target, "released": True, "was": "active", "gpus": list(lease["gpus"])}


def renew(state: State, ctx: Ctx, args: Args) -> Result:
    """Extend a live lease to at least now + ttl; a late renew never shortens it."""
    lease = _held_lease(state, ctx, args)
    ttl_s = float(st.duration_s(args.get("ttl_s"), "ttl_s"))
    until_bt = lease.get("backfill_until_bt")
    if until_bt is not None and lease.get("backfill_for") in state["queue"] and ctx.now_bt + ttl_s > until_bt:
        raise OpError("invalid", "%s was granted ahead of the waiting %s and must end by %s: it cannot be "
                      "extended past that while %s waits" % (lease["id"], lease.get("backfill_for"),
                                                             st.iso_utc(ctx.wall_at(until_bt)),
                                                             lease.get("backfill_for")))
    longest = ctx.policy.get("max_reservation_s")
    granted_bt = ctx.now_bt - (ctx.now_wall - float(lease["created_wall"]))
    if longest is not None and ctx.now_bt + ttl_s > granted_bt + longest:
        raise OpError("permission", "%s would last past %s from its grant, the node's policy's longest "
                      "reservation (it may run until %s)" % (lease["id"], policy.human_s(longest),
                                                             st.iso_utc(float(lease["created_wall"]) + longest)))
    lease["exp_bt"] = max(lease["exp_bt"], ctx.now_bt + ttl_s)
    lease["exp_wall"] = ctx.wall_at(lease["exp_bt"])
    return st.grant_result(lease, ctx)


def idle_note(state: State, ctx: Ctx, args: Args) -> Result:
    """The watcher says a reservation is idle since `since` (Unix seconds) and, with --release-idle,
    when it will release it (`release_at`); `since` null: in use again. Shown to whoever waits for
    its GPUs (pending.py: the ETA counts the release) and kept in the ledger (idle GPU-hours in
    `usage`), so only a watcher that could release it says so: its owner's or an admin's."""
    target: Any = args.get("id")
    lease = state["leases"].get(target)
    if lease is None or lease["exp_bt"] <= ctx.now_bt:
        raise OpError("not_found", "no active reservation %s (released or expired)" % target)
    st.check_owner(lease, ctx, "reservation")
    since, release_at = args.get("since"), args.get("release_at")
    if since is None:
        for key in ("idle_since_wall", "idle_release_wall", "idle_by"):
            lease.pop(key, None)  # type: ignore[misc]  # (a literal loop over optional keys)
        return {"id": target, "idle": False}
    since = st.number(since, "since must be a time in Unix seconds, not in the future", 0, ctx.now_wall + 60)
    lease["idle_since_wall"] = max(float(since), float(lease["created_wall"]))  # never idle before it began
    if release_at is None:
        lease.pop("idle_release_wall", None)
    else:
        release_wall = st.number(release_at, "release_at must be a time in Unix seconds", 0, 2 ** 33 - 1)
        lease["idle_release_wall"] = max(float(release_wall), ctx.now_wall)
    lease["idle_by"] = ctx.user
    return {"id": target, "idle": True}


def gpu_clear(state: State, ctx: Ctx, args: Args) -> Result:
    """An admin returns a GPU withheld for its health to the pool (`gpuconsole gpu clear`); its
    error counters now are the baseline later readings are compared with."""
    if not ctx.admin:
        raise OpError("permission", "only an admin (the policy's admin_group) may return a withheld GPU")
    index = st.integer(args.get("gpu"), "gpu must be a GPU index", low=0)
    if index >= ctx.gpu_count:
        raise OpError("not_found", "this node has no GPU %d (it has %d)" % (index, ctx.gpu_count))
    was = health.clear(state, index, ctx.health.get(index), ctx.user, ctx.now_wall)
    st.dispatch(state, ctx)
    return {"gpu": index, "was_withheld": was is not None, "reason": was.get("reason") if was else None}


def _gc(state: State, ctx: Ctx, args: Args) -> Result:
    """Nothing but the housekeeping every transaction runs first (expiry, dead waiters, grants)."""
    return {"gc": True}


# Operations that change the state whenever they succeed (poll and gc change it only through
# the housekeeping that runs before every operation).
ALWAYS_CHANGES = frozenset({"reserve", "release", "renew", "reattach", "gpu_clear", "idle_note"})
MUTATIONS: dict[str, Transition] = {"reserve": reserve, "release": release, "renew": renew, "poll": poll,
                                    "reattach": reattach, "gc": _gc, "gpu_clear": gpu_clear, "idle_note": idle_note}
