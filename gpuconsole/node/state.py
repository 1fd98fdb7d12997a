"""The shared rules of the node protocol: errors, the caller's context, the queue, grants and gc.

Every function takes the state dict and explicit clock values and never does I/O, so the same
code runs under the node's flock and in property tests against a reference model. The
operations built on these rules are in reservations.py and jobs.py; the file format in store.py.
Times: `*_bt` are CLOCK_BOOTTIME seconds of the boot named by `boot_id`; `*_wall` are Unix
seconds, kept only for display and for the reboot rule.
"""

from __future__ import annotations

import time

from . import fairshare, health

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, Iterable, List, Tuple

    from .typedefs import Alive, Args, Ident, Job, Lease, Result, State, Ticket

    # (granted [(ticket, gpus)], blocked tickets, {backfilled ticket id: (the head it goes before, the
    # head's latest start in boot time)})
    Plan = Tuple[List[Tuple[Ticket, List[int]]], List[Ticket], Dict[str, Tuple[str, float]]]

SCHEMA = 1
PRIORITIES = {"low": 0, "normal": 1, "high": 2}
PRIORITY_NAMES = {v: k for k, v in PRIORITIES.items()}
AGING_S_PER_LEVEL = 900.0  # a queued request gains one priority level per 15 min of waiting
REBOOT_GRACE_S = 300.0
# The replay window must outlast any client's retries (seconds), not hours: every entry is
# rewritten on every commit, so a big window makes every operation slower.
APPLIED_KEEP_S = 600.0
APPLIED_KEEP_MAX = 256
TOKEN_JUMP_ON_RECOVERY = 1 << 20
REATTACH_GRACE_S = 120.0  # how long a waiter that lost its connection may come back for its place
MAX_TTL_S = 366 * 86400.0
ID_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"


class OpError(Exception):
    """A refused operation: `code` is one of invalid, insufficient, permission, not_found,
    stale_token, busy, corrupt."""

    def __init__(self, code: str, message: str, **extra: Any) -> None:
        Exception.__init__(self, message)
        self.code = code
        self.message = message
        self.extra = extra

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"code": self.code, "message": self.message}
        data.update(self.extra)
        return data


# ---- request numbers: the one check every numeric argument of a request goes through --------


def _in_range(value: float, low: float | None, high: float | None, low_open: bool) -> bool:
    if low is not None and not (low < value if low_open else low <= value):
        return False
    return high is None or value <= high


def number(value: object, message: str, low: float | None = None, high: float | None = None,
           low_open: bool = False) -> float:
    """`value` unchanged when it is an int or float (never a bool) in [low, high] (low excluded when
    `low_open`); else OpError("invalid", message). NaN fails any bound; JSON may carry one."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not _in_range(value, low, high, low_open):
        raise OpError("invalid", message)
    return value


def integer(value: object, message: str, low: int | None = None, high: int | None = None) -> int:
    """Like number(), for arguments that must be whole: a float (even 2.0) is refused."""
    if isinstance(value, bool) or not isinstance(value, int) or not _in_range(value, low, high, False):
        raise OpError("invalid", message)
    return value


def duration_s(value: object, name: str) -> float:
    """A TTL or wait in (0, MAX_TTL_S] seconds."""
    return number(value, "%s must be a duration in (0, %d] seconds" % (name, MAX_TTL_S), 0, MAX_TTL_S,
                  low_open=True)


def new_state(boot_id: str) -> State:
    """An empty state for a node that has never had one."""
    return {"schema": SCHEMA, "gen": 0, "next_token": 1, "seq": 0, "boot_id": boot_id,
            "leases": {}, "queue": {}, "applied": {}, "jobs": {}}


def iso_utc(wall_s: float) -> str:
    """ISO 8601 UTC with seconds, as the JSON contract requires; a time no clock can show (a
    planted 1e20) is the epoch rather than an error that would stop every view."""
    try:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(wall_s))
    except (OverflowError, ValueError, OSError, TypeError):
        return "1970-01-01T00:00:00Z"



def new_id(state: State | None, prefix: str = "r") -> str:
    """A short id that is unused on this node (random, so ids are unique across the fleet)."""
    import random  # not imported at start: a snapshot never needs it

    rng = random.SystemRandom()
    while True:
        candidate = prefix + "-" + "".join(rng.choice(ID_ALPHABET) for _ in range(6))
        if state is None or (candidate not in state["leases"] and candidate not in state["queue"]):
            return candidate


class Ctx:
    """Who asks and what the node sees right now (uid from the OS, never from the client)."""

    def __init__(self, uid: int, user: str, now_bt: float, now_wall: float, gpu_count: int,
                 gpus_in_use: Iterable[int] = (), admin: bool = False, agent: Ident | None = None,
                 alive: Alive | None = None, policy: dict[str, Any] | None = None) -> None:
        self.uid = uid
        self.user = user
        self.now_bt = now_bt
        self.now_wall = now_wall
        self.gpu_count = gpu_count
        self.gpus_in_use = set(gpus_in_use)  # GPUs with processes on them (NVML), any owner
        self.admin = admin
        self.agent = agent
        self.alive: Alive = alive or (lambda ident: True)
        self.policy: dict[str, Any] = policy or {}  # the node's policy file (policy.py); {}: none
        self.health: dict[int, dict[str, Any]] = {}  # GPU health readings taken before the lock (health.py)
        self.gpu_users: dict[int, list[str]] = {}  # who runs processes on each GPU in use (occupancy.py)

    def wall_at(self, bt: float) -> float:
        return self.now_wall + (bt - self.now_bt)


# ---- views -------------------------------------------------------------------------------


def held_gpus(state: State, now_bt: float) -> dict[int, str]:
    """{gpu index: lease id} for every live lease."""
    held = {}
    for lease in state["leases"].values():
        if lease["exp_bt"] > now_bt:
            for gpu in lease["gpus"]:
                held[gpu] = lease["id"]
    return held


def unreserved_gpus(state: State, ctx: Ctx) -> list[int]:
    """GPUs with processes on them that no live reservation covers ("unreserved use")."""
    held = held_gpus(state, ctx.now_bt)
    return sorted(g for g in ctx.gpus_in_use if g not in held and g < ctx.gpu_count)


def free_gpus(state: State, ctx: Ctx) -> list[int]:
    """GPUs that may be granted: in the inventory, not held, not used without a reservation, not
    withheld for their health (health.py)."""
    held = held_gpus(state, ctx.now_bt)
    withheld = health.withheld(state) if "gpu_health" in state else ()
    return [g for g in range(ctx.gpu_count) if g not in held and g not in ctx.gpus_in_use and g not in withheld]


def effective_priority(ticket: Ticket, now_bt: float) -> float:
    waited_s = max(0.0, now_bt - ticket["created_bt"])
    return ticket["priority"] + waited_s / AGING_S_PER_LEVEL


def queue_key(ticket: Ticket) -> tuple[float, int]:
    """Sort key equal to (-effective_priority, seq) at any instant, but independent of `now`.

    Every waiting ticket ages at the same rate, so `p + (now - created) / AGING` orders tickets
    exactly like `created - p * AGING`. Computing the aged float at each `now` let rounding flip
    two exactly tied tickets back and forth over time (the later one overtaking the earlier).
    """
    return (ticket["created_bt"] - ticket["priority"] * AGING_S_PER_LEVEL, ticket["seq"])


def queue_key_for(state: State) -> Callable[[Ticket], tuple[float, int]]:
    """queue_key with each owner's fair-share levels (fairshare.py) added to the priority."""
    if not isinstance(state.get("fair_share_weight"), (int, float)):
        return queue_key
    bonus = fairshare.levels(state)
    return lambda ticket: (ticket["created_bt"] - (ticket["priority"] + bonus(ticket["owner"])) * AGING_S_PER_LEVEL,
                           ticket["seq"])


def queue_order(state: State, now_bt: float) -> list[Ticket]:
    """Queued tickets in grant order: effective priority (aged, plus fair share) desc, then submit order."""
    return sorted(state["queue"].values(), key=queue_key_for(state))


def lease_view(lease: Lease, ctx: Ctx, with_token: bool = False) -> Result:
    view = {
        "id": lease["id"], "gpus": list(lease["gpus"]), "owner": lease["owner"],
        "uid": lease["uid"], "priority": PRIORITY_NAMES.get(lease["priority"], "normal"),
        "preemptible": lease.get("preemptible", False), "state": "active",
        "kind": "job" if lease.get("job") else "reservation",
        "created_at": iso_utc(lease["created_wall"]),
        "expires_at": iso_utc(ctx.wall_at(lease["exp_bt"])),
        "expires_in_s": round(lease["exp_bt"] - ctx.now_bt, 1),
    }
    if with_token:
        view["token"] = lease["token"]
    return view


def ticket_view(ticket: Ticket, position: int) -> Result:
    return {
        "id": ticket["id"], "gpus_requested": ticket["n"], "owner": ticket["owner"],
        "uid": ticket["uid"], "priority": PRIORITY_NAMES.get(ticket["priority"], "normal"),
        "position": position, "created_at": iso_utc(ticket["created_wall"]),
        "kind": "job" if ticket.get("job") else "reservation",
    }


def listing(state: State, ctx: Ctx, reasons: dict[str, Result] | None = None) -> Result:
    """Live reservations and the queue, as the `reservations` command shows them (with why each
    queued request waits, when `reasons` (pending.explain) has it)."""
    leases = [lease_view(lease, ctx, with_token=(lease["uid"] == ctx.uid))
              for lease in sorted(state["leases"].values(), key=lambda item: item["created_wall"])
              if lease["exp_bt"] > ctx.now_bt]
    withheld = health.withheld(state) if "gpu_health" in state else ()
    for view in leases if withheld else ():
        bad = sorted(set(view["gpus"]) & set(withheld))
        if bad:
            view["withheld_gpus"] = bad  # its owner is told: those GPUs showed errors (health.py)
    queue = [dict(ticket_view(t, i + 1), **(reasons or {}).get(t["id"], {}))
             for i, t in enumerate(queue_order(state, ctx.now_bt))]
    return {"reservations": leases, "queue": queue}


# ---- housekeeping ------------------------------------------------------------------------


def reboot_recovery(state: State, boot_id: str, ctx: Ctx) -> None:
    """A new boot: rebase live leases onto the new boot clock; queued waiters died with the boot."""
    for lease_id, lease in list(state["leases"].items()):
        remaining_s = lease["exp_wall"] - ctx.now_wall
        if remaining_s <= 0:
            del state["leases"][lease_id]
        else:
            lease["exp_bt"] = ctx.now_bt + min(remaining_s, REBOOT_GRACE_S)
            lease["exp_wall"] = ctx.wall_at(lease["exp_bt"])
    state["queue"] = {}
    state.pop("dropped", None)  # their waiters died with the boot, and their clock is gone
    for entry in state["applied"].values():
        entry["bt"] = ctx.now_bt
    state["boot_id"] = boot_id


def wait_expired(ticket: Ticket, ctx: Ctx) -> bool:
    """The ticket's waiter said how long it would wait (`wait_s`) and that time is over."""
    deadline_bt = ticket.get("deadline_bt")
    return deadline_bt is not None and deadline_bt <= ctx.now_bt


def gc(state: State, ctx: Ctx) -> bool:
    """Expire leases, drop tickets whose waiting process died, prune the replay window.

    Returns True when a lease or ticket went away (pruning alone is not worth a commit).
    """
    changed = False
    for lease_id, lease in list(state["leases"].items()):
        if lease["exp_bt"] <= ctx.now_bt:
            del state["leases"][lease_id]
            changed = True
    dropped = state.setdefault("dropped", {})
    for ticket_id, ticket in list(state["queue"].items()):
        if wait_expired(ticket, ctx):
            del state["queue"][ticket_id]  # its waiter gave up (`--timeout`): never grant it after
            changed = True
        elif not ctx.alive(ticket.get("agent")):
            del state["queue"][ticket_id]
            if not ticket.get("job"):  # kept a while so a reconnecting waiter regains its place
                dropped[ticket_id] = {**ticket, "dropped_bt": ctx.now_bt}
            changed = True
    for ticket_id in [t for t, d in dropped.items() if ctx.now_bt - d["dropped_bt"] > REATTACH_GRACE_S]:
        del dropped[ticket_id]
    for ticket_id in sorted(dropped, key=lambda t: dropped[t]["dropped_bt"])[: max(0, len(dropped) - 256)]:
        del dropped[ticket_id]
    if not dropped:
        del state["dropped"]
    applied = state["applied"]
    for req_id in [r for r, e in applied.items() if ctx.now_bt - e["bt"] > APPLIED_KEEP_S]:
        del applied[req_id]
    if len(applied) > APPLIED_KEEP_MAX:
        for req_id in sorted(applied, key=lambda r: applied[r]["bt"])[: len(applied) - APPLIED_KEEP_MAX]:
            del applied[req_id]
    return changed


# ---- queue and grants --------------------------------------------------------------------


def grant(state: State, ctx: Ctx, lease_id: str, uid: int, owner: str, gpus: list[int], ttl_s: float,
          priority: int, preemptible: object, ticket: Ticket | None = None) -> Lease:
    token = state["next_token"]
    state["next_token"] = token + 1
    lease: Lease = {
        "id": lease_id, "uid": uid, "owner": owner, "gpus": list(gpus), "token": token,
        "priority": priority, "preemptible": bool(preemptible),
        "exp_bt": ctx.now_bt + ttl_s, "exp_wall": ctx.now_wall + ttl_s,
        "created_wall": ctx.now_wall, "ttl_s": ttl_s,
    }
    if ticket is not None:
        lease["from_queue"] = True
        lease["queued_wall"] = ticket["created_wall"]
        if ticket.get("job"):
            lease["job"] = True
            if ticket.get("ends_after_s"):
                lease["ends_by_bt"] = ctx.now_bt + float(ticket.get("ends_after_s") or 0)
    state["leases"][lease_id] = lease
    return lease


def grant_result(lease: Lease, ctx: Ctx) -> Result:
    gpus = lease["gpus"]
    return {
        "id": lease["id"], "gpus": list(gpus), "owner": lease["owner"],
        "expires_at": iso_utc(ctx.wall_at(lease["exp_bt"])), "token": lease["token"],
        "cuda_visible_devices": ",".join(str(g) for g in gpus),
        "priority": PRIORITY_NAMES.get(lease["priority"], "normal"),
    }


NEVER = float("inf")
BACKFILL_SLACK_S = 5.0  # a backfilled grant must end this long before the head's latest start


def sure_end(lease: Lease) -> float:
    """When a lease's GPUs come back at the latest if it is not renewed: a reservation's expiry; a
    job's lease is renewed while the job runs, so its time limit's end (`submit --time`, plus its
    kill grace), or never without one."""
    if lease.get("job"):
        return float(lease.get("ends_by_bt") or NEVER)
    return lease["exp_bt"]


def held_for_s(ticket: Ticket) -> float | None:
    """How long a grant of this ticket lasts at most: a reservation's TTL, a job's time limit plus
    grace; None for a job without `--time` (it runs as long as it runs)."""
    if ticket.get("job"):
        return float(ticket.get("ends_after_s") or 0) or None
    return float(ticket["ttl_s"])


def head_start(state: State, ctx: Ctx, head: Ticket, free_n: int,
               granted: Iterable[tuple[Ticket, list[int]]] = ()) -> float | None:
    """The latest time the blocked `head` fits (no lease renewed): leases and the grants just made
    give their GPUs back at their sure ends, `free_n` are free now. None: it waits on a grant with
    no sure end (a job without `--time`, GPUs in use outside any grant)."""
    ends = sorted([(sure_end(lease), len(lease["gpus"])) for lease in state["leases"].values()
                   if lease["exp_bt"] > ctx.now_bt]
                  + [(ctx.now_bt + (held_for_s(t) or NEVER), len(g)) for t, g in granted])
    free, at = free_n, ctx.now_bt
    for end, count in ends:
        if free >= head["n"] or end == NEVER:
            break
        free, at = free + count, end
    return at if free >= head["n"] else None


def plan(state: State, ctx: Ctx, extra: Ticket | None = None) -> Plan:
    """Simulate granting; return ([(ticket, gpus)] granted, blocked tickets, backfilled ones).

    In order: the first ticket that does not fit blocks every ticket after it (head-of-line
    earmark), so a big request is never overtaken forever; aging lifts old low-priority requests
    over time. EASY backfill: a later ticket that fits now and whose grant surely ends before the
    head's latest start (`head_start`, less BACKFILL_SLACK_S) goes first, so the head never starts
    later for it; never while the head's start is unknown.
    """
    order = queue_order(state, ctx.now_bt)
    if extra is not None:
        order = sorted([*order, extra], key=queue_key_for(state))
    free = free_gpus(state, ctx)
    granted: list[tuple[Ticket, list[int]]] = []
    blocked: list[Ticket] = []
    backfilled: dict[str, tuple[str, float]] = {}
    latest: float | None = None
    held = held_by_user(state, ctx)
    cap = ctx.policy.get("max_gpus_per_user")
    over_cap: list[Ticket] = []
    for ticket in order:
        n = ticket["n"]
        if cap is not None and held.get(ticket["uid"], 0) + n > cap:
            over_cap.append(ticket)  # held by its owner's quota: it blocks no one behind it
            continue
        if not blocked and n <= len(free):
            granted.append((ticket, free[:n]))
            free = free[n:]
            held[ticket["uid"]] = held.get(ticket["uid"], 0) + n
            continue
        if not blocked:
            latest = head_start(state, ctx, ticket, len(free), granted)
            blocked.append(ticket)
            continue
        held_s = held_for_s(ticket)
        if latest is not None and held_s is not None and n <= len(free) \
                and ctx.now_bt + held_s + BACKFILL_SLACK_S <= latest:
            granted.append((ticket, free[:n]))
            free = free[n:]
            held[ticket["uid"]] = held.get(ticket["uid"], 0) + n
            backfilled[ticket["id"]] = (blocked[0]["id"], latest)
            continue
        blocked.append(ticket)
    return granted, blocked + over_cap, backfilled


def held_by_user(state: State, ctx: Ctx) -> dict[int, int]:
    """uid → GPUs its live grants hold on this node (what `max_gpus_per_user` counts)."""
    held: dict[int, int] = {}
    for lease in state["leases"].values():
        if lease["exp_bt"] > ctx.now_bt:
            held[lease["uid"]] = held.get(lease["uid"], 0) + len(lease["gpus"])
    return held


def over_quota(state: State, ctx: Ctx, ticket: Ticket) -> Result | None:
    """Why the owner's quota holds this request now (held, cap), or None."""
    cap = ctx.policy.get("max_gpus_per_user")
    if cap is None:
        return None
    held = held_by_user(state, ctx).get(ticket["uid"], 0)
    return {"max_gpus_per_user": cap, "held": held} if held + ticket["n"] > cap else None


def dispatch(state: State, ctx: Ctx) -> list[str]:
    """Grant queued requests by priority then FIFO while they fit, and what backfills; the ids."""
    granted, _, backfilled = plan(state, ctx)
    for ticket, gpus in granted:
        del state["queue"][ticket["id"]]
        lease = grant(state, ctx, ticket["id"], ticket["uid"], ticket["owner"], gpus, ticket["ttl_s"],
                      ticket["priority"], ticket.get("preemptible"), ticket=ticket)
        mark_backfill(lease, backfilled.get(ticket["id"]))
    return [t["id"] for t, _ in granted]


def mark_backfill(lease: Lease, before: tuple[str, float] | None) -> None:
    """A backfilled grant names the head it went before and must end before that head's start
    (`renew` may not extend it past that while the head waits)."""
    if before is not None:
        lease["backfill_for"], lease["backfill_until_bt"] = before


def validate_request(args: Args, ctx: Ctx) -> tuple[int, float, int]:
    """(GPUs, TTL seconds, priority level) of a reserve or submit, each checked."""
    n = integer(args.get("gpus"), "gpus must be a positive integer", low=1)
    if n > ctx.gpu_count:
        raise OpError("insufficient", "%d GPUs requested but this node has %d" % (n, ctx.gpu_count),
                      gpu_count=ctx.gpu_count, free=0, too_big=True)
    ttl_s = float(duration_s(args.get("ttl_s"), "ttl_s"))
    priority = args.get("priority", "normal")
    if not isinstance(priority, str) or priority not in PRIORITIES:
        raise OpError("invalid", "priority must be one of low, normal, high")
    return n, ttl_s, PRIORITIES[priority]


def new_ticket(state: State, ctx: Ctx, n: int, ttl_s: float, priority: int, preemptible: bool,
               ticket_id: str | None = None) -> Ticket:
    state["seq"] = state.get("seq", 0) + 1
    return {
        "id": ticket_id or new_id(state), "uid": ctx.uid, "owner": ctx.user, "n": n,
        "ttl_s": ttl_s, "priority": priority, "preemptible": bool(preemptible),
        "created_bt": ctx.now_bt, "created_wall": ctx.now_wall, "seq": state["seq"],
        "agent": ctx.agent,
    }


def check_owner(obj: Lease | Ticket | Job, ctx: Ctx, what: str) -> None:
    """Only the owner of a record, or an admin, may change it."""
    if obj["uid"] != ctx.uid and not ctx.admin:
        raise OpError("permission", "%s %s belongs to %s; only its owner or an admin may change it"
                      % (what, obj["id"], obj["owner"]))


def queue_position(state: State, ctx: Ctx, ticket_id: str) -> int | None:
    """1-based place of a queued ticket in grant order, or None when it is not queued."""
    order = [t["id"] for t in queue_order(state, ctx.now_bt)]
    return order.index(ticket_id) + 1 if ticket_id in order else None
