"""Why a queued request waits and until when, from the node's own state: its reason, the requests
ahead of it, the grants it waits for, and an ETA.

The ETA is an upper bound as the node knows it now: the latest start if no lease is renewed and no
request of higher priority arrives. It replays strict in-order granting (state.plan's rule: the
head of the queue is never overtaken) over the leases' end times, each request ahead holding its
GPUs for its whole TTL. A grant with no end the node can promise (a running job's lease is renewed
for as long as the job runs) makes the ETA of what waits for it unknown (None). A reservation the
watcher has announced it will release as idle (`watch --release-idle`) ends then in the replay.
"""

from __future__ import annotations

import heapq

from . import fairshare
from . import state as st

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Tuple

    from .state import Ctx
    from .typedefs import Lease, Result, State, Ticket

    Holding = Tuple[float, int, str]  # (end in boot time or inf, GPU count, lease id or "")

NEVER = st.NEVER
MAX_AHEAD = 3  # requests ahead named per waiting request (the count is its position)
MAX_BLOCKERS = 4  # grants named per waiting request


def _lease_end(lease: Lease, ctx: Ctx) -> float:
    """When its GPUs come back: its sure end (state.sure_end), or sooner when the watcher has
    announced it will release it as idle (`watch --release-idle`); if its owner uses it again the
    watcher withdraws that, and the ETA goes back."""
    end = st.sure_end(lease)
    release_wall = lease.get("idle_release_wall")
    if release_wall is not None:
        end = min(end, max(ctx.now_bt, ctx.now_bt + float(release_wall) - ctx.now_wall))
    return end


def _blocker(lease: Lease, ctx: Ctx) -> Result:
    end = _lease_end(lease, ctx)
    blocker: Result = {
        "id": lease["id"], "owner": lease["owner"], "kind": "job" if lease.get("job") else "reservation",
        "gpus": list(lease["gpus"]), "priority": st.PRIORITY_NAMES.get(lease["priority"], "normal"),
        "ends_at": None if end == NEVER else st.iso_utc(ctx.wall_at(end)),
        "ends_in_s": None if end == NEVER else round(end - ctx.now_bt, 1)}
    idle_since = lease.get("idle_since_wall")
    if idle_since is not None:  # the watcher's judgement (reservations.idle_note)
        blocker["idle_since"] = st.iso_utc(float(idle_since))
        blocker["idle_for_s"] = round(max(0.0, ctx.now_wall - float(idle_since)), 1)
        release_wall = lease.get("idle_release_wall")
        blocker["idle_release_in_s"] = None if release_wall is None else round(
            max(0.0, float(release_wall) - ctx.now_wall), 1)
    return blocker


def _ahead(ticket: Ticket) -> Result:
    return {"id": ticket["id"], "owner": ticket["owner"], "kind": "job" if ticket.get("job") else "reservation",
            "gpus_requested": ticket["n"], "priority": st.PRIORITY_NAMES.get(ticket["priority"], "normal")}


def explain(state: State, ctx: Ctx, limit: int | None = None) -> dict[str, Result]:
    """For each queued ticket id: `pending_reason` ("resources": it is next and its GPUs are held;
    "priority": requests ahead of it go first; "quota": its owner holds the most the node's policy
    allows (`quota`: held and the cap), `ahead`, `blockers`, `eta` and `eta_in_s`, and the owner's
    `fair_share` factor when fair share is on; only the first `limit` in grant order when given (the
    replay needs nothing after them)."""
    order = st.queue_order(state, ctx.now_bt)[:limit]
    live = sorted((lease for lease in state["leases"].values() if lease["exp_bt"] > ctx.now_bt),
                  key=lambda lease: (_lease_end(lease, ctx), lease["id"]))
    free = len(st.free_gpus(state, ctx))
    ends: list[Holding] = [(_lease_end(lease, ctx), len(lease["gpus"]), lease["id"]) for lease in live]
    heapq.heapify(ends)
    by_id = {lease["id"]: lease for lease in live}
    released: list[str] = []  # leases whose end the replay has passed, in end order
    at: float | None = ctx.now_bt  # None once a request ahead has no known start
    out: dict[str, Result] = {}
    ahead: list[Ticket] = []  # the requests before it that the replay grants (quota-held ones wait apart)
    for ticket in order:
        quota = st.over_quota(state, ctx, ticket)
        if quota is not None:
            own = [lease for lease in live if lease["uid"] == ticket["uid"]]
            out[ticket["id"]] = {"pending_reason": "quota", "quota": quota, "ahead": [],
                                 "blockers": [_blocker(lease, ctx) for lease in own[:MAX_BLOCKERS]],
                                 "eta": None, "eta_in_s": None}
            continue
        index = len(ahead)
        while at is not None and free < ticket["n"]:
            if not ends or ends[0][0] == NEVER:
                at = None  # waits for a grant with no promised end (or for GPUs in other use)
                break
            end, count, lease_id = heapq.heappop(ends)
            free += count
            if lease_id:
                released.append(lease_id)
            at = max(at, end)
        waited = [by_id[i] for i in released]
        if at is None:
            waited += [by_id[h[2]] for h in sorted(ends) if h[2]]
        out[ticket["id"]] = {
            "pending_reason": "priority" if index else "resources",
            "ahead": [_ahead(t) for t in ahead[-MAX_AHEAD:]],
            # The grants whose ends decide its start: the last to end before it, or all it waits on.
            "blockers": [_blocker(lease, ctx) for lease in (waited[-MAX_BLOCKERS:] if at is not None
                                                            else waited[:MAX_BLOCKERS])],
            "eta": None if at is None else st.iso_utc(ctx.wall_at(at)),
            "eta_in_s": None if at is None else round(at - ctx.now_bt, 1),
        }
        ahead.append(ticket)
        if at is not None:
            free -= ticket["n"]
            heapq.heappush(ends, (at + (st.held_for_s(ticket) or NEVER), ticket["n"], ""))
    factor = fairshare.factor
    for ticket in order:
        share = factor(state, ticket["owner"])
        if share is not None:
            out[ticket["id"]]["fair_share"] = share
    return out


def queued_view(state: State, ctx: Ctx, ticket_id: str, **more: Any) -> Result:
    """A queued request's answer: id, state, position, `more`, and why it waits; the replay stops at
    the request itself (a waiter polls five times a second, behind however deep a queue)."""
    position = st.queue_position(state, ctx, ticket_id)
    reason = explain(state, ctx, position).get(ticket_id, {}) if position is not None else {}
    return dict({"id": ticket_id, "state": "queued", "position": position}, **more, **reason)
