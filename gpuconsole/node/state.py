"""The pure transition functions of the node protocol: reserve, release, renew, queue, gc.

Every function takes the state dict and explicit clock values and never does I/O, so the same
code runs under the node's flock and in property tests against a reference model.
Times: `*_bt` are CLOCK_BOOTTIME seconds of the boot named by `boot_id`; `*_wall` are Unix
seconds, kept only for display and for the reboot rule.
"""

from __future__ import annotations

import hashlib
import json
import random
import time

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

    def __init__(self, code, message, **extra):
        Exception.__init__(self, message)
        self.code = code
        self.message = message
        self.extra = extra

    def to_dict(self):
        data = {"code": self.code, "message": self.message}
        data.update(self.extra)
        return data


def new_state(boot_id):
    """An empty state for a node that has never had one."""
    return {"schema": SCHEMA, "gen": 0, "next_token": 1, "seq": 0, "boot_id": boot_id,
            "leases": {}, "queue": {}, "applied": {}, "jobs": {}}


def canonical(state):
    """The canonical JSON body that the checksum covers (everything but the checksum)."""
    body = {k: v for k, v in state.items() if k != "checksum"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"))


def checksum(state):
    return "sha256:" + hashlib.sha256(canonical(state).encode()).hexdigest()


CHECKSUM_PREFIX = b'{"checksum":"sha256:'
_HEADER_LEN = len(CHECKSUM_PREFIX) + 64 + 2  # prefix, hex digest, '",'


def encode_file(body):
    """File bytes for a canonical body: the checksum first, then the body's own keys.

    Readers verify the digest over the bytes as stored (no re-serialization), and the file is
    still one plain JSON object whose `checksum` equals checksum(parsed).
    """
    raw = body.encode()
    digest = hashlib.sha256(raw).hexdigest().encode()
    return CHECKSUM_PREFIX + digest + b'",' + raw[1:] if len(raw) > 2 else CHECKSUM_PREFIX + digest + b'"}'


def decode_file(raw):
    """(state, canonical body) from file bytes; ValueError when damaged or not ours."""
    if raw.startswith(CHECKSUM_PREFIX) and len(raw) > _HEADER_LEN:
        digest = raw[len(CHECKSUM_PREFIX):len(CHECKSUM_PREFIX) + 64].decode("ascii", "replace")
        body = b"{" + raw[_HEADER_LEN:]
        if hashlib.sha256(body).hexdigest() != digest:
            raise ValueError("checksum mismatch")
        state = json.loads(body.decode("utf-8"))
        state["checksum"] = "sha256:" + digest
        validate_state(state, checked=True)
        return state, body.decode("utf-8")
    state = json.loads(raw.decode("utf-8"))
    validate_state(state)
    return state, canonical(state)


def iso_utc(wall_s):
    """ISO 8601 UTC with seconds, as the JSON contract requires."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(wall_s))


def new_id(state, prefix="r"):
    """A short id that is unused on this node (random, so ids are unique across the fleet)."""
    rng = random.SystemRandom()
    while True:
        candidate = prefix + "-" + "".join(rng.choice(ID_ALPHABET) for _ in range(6))
        if candidate not in state["leases"] and candidate not in state["queue"]:
            return candidate


def validate_state(state, checked=False):
    """Raise ValueError when a parsed file is not a usable state of our schema."""
    if not isinstance(state, dict) or state.get("schema") != SCHEMA:
        raise ValueError("unknown schema %r" % (state.get("schema") if isinstance(state, dict) else None))
    if not checked and state.get("checksum") != checksum(state):
        raise ValueError("checksum mismatch")
    for key in ("leases", "queue", "applied"):
        if not isinstance(state.get(key), dict):
            raise ValueError("missing %s" % key)
    if not isinstance(state.get("next_token"), int) or not isinstance(state.get("gen"), int):
        raise ValueError("bad counters")


class Ctx:
    """Who asks and what the node sees right now (uid from the OS, never from the client)."""

    def __init__(self, uid, user, now_bt, now_wall, gpu_count, gpus_in_use=(), admin=False,
                 agent=None, alive=None):
        self.uid = uid
        self.user = user
        self.now_bt = now_bt
        self.now_wall = now_wall
        self.gpu_count = gpu_count
        self.gpus_in_use = set(gpus_in_use)  # GPUs with processes on them (NVML), any owner
        self.admin = admin
        self.agent = agent
        self.alive = alive or (lambda ident: True)

    def wall_at(self, bt):
        return self.now_wall + (bt - self.now_bt)


# ---- views -------------------------------------------------------------------------------


def held_gpus(state, now_bt):
    """{gpu index: lease id} for every live lease."""
    held = {}
    for lease in state["leases"].values():
        if lease["exp_bt"] > now_bt:
            for gpu in lease["gpus"]:
                held[gpu] = lease["id"]
    return held


def unreserved_gpus(state, ctx):
    """GPUs with processes on them that no live reservation covers ("unreserved use")."""
    held = held_gpus(state, ctx.now_bt)
    return sorted(g for g in ctx.gpus_in_use if g not in held and g < ctx.gpu_count)


def free_gpus(state, ctx):
    """GPUs that may be granted: in the inventory, not held, not used without a reservation."""
    held = held_gpus(state, ctx.now_bt)
    return [g for g in range(ctx.gpu_count) if g not in held and g not in ctx.gpus_in_use]


def effective_priority(ticket, now_bt):
    waited_s = max(0.0, now_bt - ticket["created_bt"])
    return ticket["priority"] + waited_s / AGING_S_PER_LEVEL


def queue_key(ticket):
    """Sort key equal to (-effective_priority, seq) at any instant, but independent of `now`.

    Every waiting ticket ages at the same rate, so `p + (now - created) / AGING` orders tickets
    exactly like `created - p * AGING`. Computing the aged float at each `now` let rounding flip
    two exactly tied tickets back and forth over time (the later one overtaking the earlier).
    """
    return (ticket["created_bt"] - ticket["priority"] * AGING_S_PER_LEVEL, ticket["seq"])


def queue_order(state, now_bt):
    """Queued tickets in grant order: effective priority (aged) desc, then submit order."""
    return sorted(state["queue"].values(), key=queue_key)


def lease_view(lease, ctx, with_token=False):
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


def ticket_view(ticket, position):
    return {
        "id": ticket["id"], "gpus_requested": ticket["n"], "owner": ticket["owner"],
        "uid": ticket["uid"], "priority": PRIORITY_NAMES.get(ticket["priority"], "normal"),
        "position": position, "created_at": iso_utc(ticket["created_wall"]),
        "kind": "job" if ticket.get("job") else "reservation",
    }


def listing(state, ctx):
    """Live reservations and the queue, as the `reservations` command shows them."""
    leases = [lease_view(lease, ctx, with_token=(lease["uid"] == ctx.uid))
              for lease in sorted(state["leases"].values(), key=lambda item: item["created_wall"])
              if lease["exp_bt"] > ctx.now_bt]
    queue = [ticket_view(t, i + 1) for i, t in enumerate(queue_order(state, ctx.now_bt))]
    return {"reservations": leases, "queue": queue}


# ---- transitions -------------------------------------------------------------------------


def reboot_recovery(state, boot_id, ctx):
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


def wait_expired(ticket, ctx):
    """The ticket's waiter said how long it would wait (`wait_s`) and that time is over."""
    return ticket.get("deadline_bt") is not None and ticket["deadline_bt"] <= ctx.now_bt


def gc(state, ctx):
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
                dropped[ticket_id] = dict(ticket, dropped_bt=ctx.now_bt)
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


def _grant(state, ctx, lease_id, uid, owner, gpus, ttl_s, priority, preemptible, ticket=None):
    token = state["next_token"]
    state["next_token"] = token + 1
    lease = {
        "id": lease_id, "uid": uid, "owner": owner, "gpus": list(gpus), "token": token,
        "priority": priority, "preemptible": bool(preemptible),
        "exp_bt": ctx.now_bt + ttl_s, "exp_wall": ctx.now_wall + ttl_s,
        "created_wall": ctx.now_wall, "ttl_s": ttl_s,
    }
    if ticket is not None:
        lease["from_queue"] = True
        if ticket.get("job"):
            lease["job"] = True
    state["leases"][lease_id] = lease
    return lease


def grant_result(lease, ctx):
    gpus = lease["gpus"]
    return {
        "id": lease["id"], "gpus": list(gpus), "owner": lease["owner"],
        "expires_at": iso_utc(ctx.wall_at(lease["exp_bt"])), "token": lease["token"],
        "cuda_visible_devices": ",".join(str(g) for g in gpus),
        "priority": PRIORITY_NAMES.get(lease["priority"], "normal"),
    }


def _plan(state, ctx, extra=None):
    """Simulate strict in-order granting; return ([(ticket, gpus)] granted, blocked tickets).

    The first ticket that does not fit blocks every ticket after it (head-of-line earmark), so
    a big request is never overtaken forever; aging lifts old low-priority requests over time.
    """
    order = queue_order(state, ctx.now_bt)
    if extra is not None:
        order = sorted([*order, extra], key=queue_key)
    free = free_gpus(state, ctx)
    granted, blocked = [], []
    for ticket in order:
        if blocked or ticket["n"] > len(free):
            blocked.append(ticket)
            continue
        granted.append((ticket, free[: ticket["n"]]))
        free = free[ticket["n"]:]
    return granted, blocked


def dispatch(state, ctx):
    """Grant queued requests by priority then FIFO while they fit; returns granted ids."""
    granted, _ = _plan(state, ctx)
    for ticket, gpus in granted:
        del state["queue"][ticket["id"]]
        _grant(state, ctx, ticket["id"], ticket["uid"], ticket["owner"], gpus, ticket["ttl_s"],
               ticket["priority"], ticket.get("preemptible"), ticket=ticket)
    return [t["id"] for t, _ in granted]


def _validate_request(args, ctx):
    n = args.get("gpus")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise OpError("invalid", "gpus must be a positive integer")
    if n > ctx.gpu_count:
        raise OpError("insufficient", "%d GPUs requested but this node has %d" % (n, ctx.gpu_count),
                      gpu_count=ctx.gpu_count, free=0, too_big=True)
    ttl_s = _ttl_s(args)
    priority = args.get("priority", "normal")
    if not isinstance(priority, str) or priority not in PRIORITIES:
        raise OpError("invalid", "priority must be one of low, normal, high")
    return n, ttl_s, PRIORITIES[priority]


def _ticket(state, ctx, n, ttl_s, priority, preemptible, ticket_id=None):
    state["seq"] = state.get("seq", 0) + 1
    return {
        "id": ticket_id or new_id(state), "uid": ctx.uid, "owner": ctx.user, "n": n,
        "ttl_s": ttl_s, "priority": priority, "preemptible": bool(preemptible),
        "created_bt": ctx.now_bt, "created_wall": ctx.now_wall, "seq": state["seq"],
        "agent": ctx.agent,
    }


def reserve(state, ctx, args):
    """Grant n GPUs now, or (wait=True) queue the request; never overtakes a blocked queue head."""
    n, ttl_s, priority = _validate_request(args, ctx)
    preemptible = bool(args.get("preemptible", False))
    dispatch(state, ctx)
    ticket = _ticket(state, ctx, n, ttl_s, priority, preemptible)
    granted, _ = _plan(state, ctx, extra=ticket)
    for candidate, gpus in granted:
        if candidate is ticket:
            lease = _grant(state, ctx, ticket["id"], ctx.uid, ctx.user, gpus, ttl_s, priority,
                           preemptible)
            return dict(grant_result(lease, ctx), state="granted")
    if args.get("wait"):
        wait_s = args.get("wait_s")
        if wait_s is not None:
            if isinstance(wait_s, bool) or not isinstance(wait_s, (int, float)) or not 0 < wait_s <= MAX_TTL_S:
                raise OpError("invalid", "wait_s must be a duration in (0, %d] seconds" % MAX_TTL_S)
            ticket["deadline_bt"] = ctx.now_bt + wait_s
        state["queue"][ticket["id"]] = ticket
        position = [t["id"] for t in queue_order(state, ctx.now_bt)].index(ticket["id"]) + 1
        return {"id": ticket["id"], "state": "queued", "position": position,
                "owner": ctx.user, "gpus_requested": n}
    free = len(free_gpus(state, ctx))
    raise OpError("insufficient", "%d GPUs requested, %d free of %d" % (n, free, ctx.gpu_count),
                  gpu_count=ctx.gpu_count, free=free, queued=len(state["queue"]))


def poll(state, ctx, args):
    """Where a queued request stands: granted (with the grant), queued (position) or gone."""
    ticket_id = args.get("id")
    lease = state["leases"].get(ticket_id)
    if lease is not None and lease["exp_bt"] > ctx.now_bt:
        if lease["uid"] != ctx.uid:
            raise OpError("permission", "%s belongs to %s" % (ticket_id, lease["owner"]))
        return dict(grant_result(lease, ctx), state="granted")
    if ticket_id in state["queue"]:
        position = [t["id"] for t in queue_order(state, ctx.now_bt)].index(ticket_id) + 1
        return {"id": ticket_id, "state": "queued", "position": position}
    raise OpError("not_found", "no queued or active reservation %s" % ticket_id)


def reattach(state, ctx, args):
    """A waiter back after a dropped connection takes its ticket over, keeping its place.

    The ticket is still queued (its old agent not yet reaped) or was dropped less than
    REATTACH_GRACE_S ago: then it returns with its original submit time and sequence, so it is
    ahead of everyone who queued after it. A grant made meanwhile is returned as by poll().
    """
    ticket_id = args.get("id")
    lease = state["leases"].get(ticket_id)
    if lease is not None and lease["exp_bt"] > ctx.now_bt:
        return poll(state, ctx, args)
    ticket = state["queue"].get(ticket_id)
    if ticket is None:
        tombstone = state.get("dropped", {}).get(ticket_id)
        if tombstone is None:
            raise OpError("not_found", "no queued request %s (dropped more than %ds ago, or granted and ended)"
                          % (ticket_id, REATTACH_GRACE_S))
        _check_waiter(tombstone, ctx)
        ticket = {k: v for k, v in tombstone.items() if k != "dropped_bt"}
        del state["dropped"][ticket_id]
        state["queue"][ticket_id] = ticket
    _check_waiter(ticket, ctx)
    ticket["agent"] = ctx.agent
    dispatch(state, ctx)
    return poll(state, ctx, args)


def _check_waiter(ticket, ctx):
    """Only the user who queued a request may wait on it (an admin may withdraw it, not take it)."""
    if ticket["uid"] != ctx.uid:
        raise OpError("permission", "queued request %s belongs to %s" % (ticket["id"], ticket["owner"]))


def _check_owner(obj, ctx, what):
    if obj["uid"] != ctx.uid and not ctx.admin:
        raise OpError("permission", "%s %s belongs to %s; only its owner or an admin may change it"
                      % (what, obj["id"], obj["owner"]))


def _held_lease(state, ctx, args):
    """The live lease named by args["id"], checked for ownership and (if given) its token."""
    target = args.get("id")
    lease = state["leases"].get(target)
    if lease is None or lease["exp_bt"] <= ctx.now_bt:
        raise OpError("not_found", "no active reservation %s (released or expired)" % target)
    _check_owner(lease, ctx, "reservation")
    token = args.get("token")
    if token is not None and token != lease["token"]:
        raise OpError("stale_token", "token %s is stale for %s: the grant it named is over"
                      % (token, target))
    return lease


def _ttl_s(args):
    ttl_s = args.get("ttl_s")
    if isinstance(ttl_s, bool) or not isinstance(ttl_s, (int, float)) or not 0 < ttl_s <= MAX_TTL_S:
        raise OpError("invalid", "ttl_s must be a duration in (0, %d] seconds" % MAX_TTL_S)
    return float(ttl_s)


def release(state, ctx, args):
    """End a reservation (or withdraw a queued request); the owner or an admin only."""
    target = args.get("id")
    if target in state["queue"]:
        ticket = state["queue"][target]
        _check_owner(ticket, ctx, "queued request")
        if ticket.get("job"):
            raise OpError("invalid", "%s is a queued job; use `gpuconsole cancel %s`" % (target, target))
        del state["queue"][target]
        return {"id": target, "released": True, "was": "queued", "gpus": []}
    lease = _held_lease(state, ctx, args)
    if lease.get("job"):
        raise OpError("invalid", "%s holds GPUs for a running job; use `gpuconsole cancel %s`" % (target, target))
    del state["leases"][target]
    dispatch(state, ctx)
    return {"id": target, "released": True, "was": "active", "gpus": list(lease["gpus"])}


def renew(state, ctx, args):
    """Extend a live lease to at least now + ttl; a late renew never shortens it."""
    lease = _held_lease(state, ctx, args)
    ttl_s = _ttl_s(args)
    lease["exp_bt"] = max(lease["exp_bt"], ctx.now_bt + ttl_s)
    lease["exp_wall"] = ctx.wall_at(lease["exp_bt"])
    return grant_result(lease, ctx)


# Operations that change the state whenever they succeed (poll and gc change it only through
# the housekeeping that runs before every operation).
ALWAYS_CHANGES = frozenset({"reserve", "release", "renew", "reattach"})
MUTATIONS = {"reserve": reserve, "release": release, "renew": renew, "poll": poll, "reattach": reattach,
             "gc": lambda state, ctx, args: {"gc": True}}
