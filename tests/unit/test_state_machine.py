"""Model-based test of the node's pure transitions (state.py) against an independent reference model.

Time is explicit and integral: one tick is 2**-10 s (a "binary millisecond"), so every sum of
times the product computes in floats is exact and boundary instants (now == exp) are reachable.
Each step applies one operation the way the agent does (optional gc + dispatch, the op, roll back
on a refusal), round-trips the state through JSON and checks invariants I1-I5 and queue order.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, event, settings
from hypothesis import strategies as hs
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from gpuconsole.node import reservations as rs
from gpuconsole.node import state as st
from gpuconsole.node.store import checksum, validate_state

TICKS_PER_S = 1024
AGING_TICKS = 900 * TICKS_PER_S  # one priority level per 15 min of waiting
GRACE_TICKS = 300 * TICKS_PER_S  # reboot grace for leases
MAX_TTL_TICKS = 366 * 86400 * TICKS_PER_S
WALL0_TICKS = 1_700_000_000 * TICKS_PER_S
BACKFILL_SLACK_TICKS = 5 * TICKS_PER_S  # state.BACKFILL_SLACK_S
PRIORITY = {"low": 0, "normal": 1, "high": 2}
UIDS = (1001, 1002)
ADMIN_UID = 1900
INF = float("inf")

TTLS = hs.one_of(
    hs.sampled_from([TICKS_PER_S, 1, 2, 3 * TICKS_PER_S, 60 * TICKS_PER_S, AGING_TICKS]),
    hs.integers(1, 10**6),
)
WHO = hs.sampled_from(["owner", "other", "admin"])
TOKEN_KIND = hs.sampled_from(["right", "none", "stale"])
PRIO = hs.sampled_from(["normal", "low", "high"])
AGENT_SLOTS = 6  # waiting processes; killing one drops only its own tickets
SLOT = hs.integers(0, AGENT_SLOTS - 1)
DELTAS = hs.one_of(
    hs.sampled_from([0, 1, 2, TICKS_PER_S, 60 * TICKS_PER_S, AGING_TICKS]),
    hs.integers(0, 10 * TICKS_PER_S),
)


class RefusedError(Exception):
    """The model's prediction that the product refuses an operation with ``code``."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


@dataclass
class MLease:
    """A lease in the reference model; times are integer ticks."""

    id: str
    uid: int
    gpus: frozenset[int]
    token: int
    exp: int
    exp_wall: int
    priority: int
    backfill_for: str | None = None  # granted by backfill ahead of this waiting request…
    backfill_until: int = 0  # …and may not be renewed past this while it waits


@dataclass
class MTicket:
    """A queued request in the reference model."""

    id: str
    uid: int
    n: int
    ttl: int
    priority: int
    seq: int
    created: int
    agent: int


Pick = Callable[[str], frozenset[int]]


class Model:
    """The simplest sequential specification of reserve/release/renew/poll/queue/gc."""

    def __init__(self, gpu_count: int) -> None:
        self.gpu_count = gpu_count
        self.now = 0
        self.wall = WALL0_TICKS
        self.next_token = 1
        self.seq = 0
        self.leases: dict[str, MLease] = {}
        self.queue: dict[str, MTicket] = {}
        self.dead: set[int] = set()

    def live(self, lease: MLease) -> bool:
        return self.now < lease.exp

    def held(self) -> dict[int, str]:
        return {g: lease.id for lease in self.leases.values() if self.live(lease) for g in lease.gpus}

    def key(self, ticket: MTicket, seq: float | None = None) -> tuple[Fraction, float]:
        waited = max(0, self.now - ticket.created)
        return (-(ticket.priority + Fraction(waited, AGING_TICKS)), ticket.seq if seq is None else seq)

    def order(self, extra: MTicket | None = None) -> list[MTicket]:
        tickets = list(self.queue.values()) + ([extra] if extra else [])
        return sorted(tickets, key=self.key)

    def position(self, ticket_id: str) -> int:
        return [t.id for t in self.order()].index(ticket_id) + 1

    def head_start(self, head: MTicket, free: int, granted: list[MTicket]) -> int | None:
        """The latest time the blocked head fits if no lease is renewed."""
        ends = sorted([(lease.exp, len(lease.gpus)) for lease in self.leases.values() if self.live(lease)]
                      + [(self.now + t.ttl, t.n) for t in granted])
        at = self.now
        for end, count in ends:
            if free >= head.n:
                break
            free, at = free + count, end
        return at if free >= head.n else None

    def plan(self, extra: MTicket | None = None) -> tuple[list[MTicket], dict[int, tuple[str, int]]]:
        """In-order granting: the first request that does not fit blocks the rest, except one that fits
        now and surely ends (its TTL) a slack before the head's latest start (EASY backfill)."""
        free = self.gpu_count - len(self.held())
        granted: list[MTicket] = []
        backfilled: dict[int, tuple[str, int]] = {}
        head: MTicket | None = None
        latest: int | None = None
        for ticket in self.order(extra):
            if head is None and ticket.n <= free:
                granted.append(ticket)
                free -= ticket.n
            elif head is None:
                head, latest = ticket, self.head_start(ticket, free, granted)
            elif latest is not None and ticket.n <= free and self.now + ticket.ttl + BACKFILL_SLACK_TICKS <= latest:
                granted.append(ticket)
                free -= ticket.n
                backfilled[id(ticket)] = (head.id, latest)
        return granted, backfilled

    def grant(self, ticket: MTicket, pick: Pick) -> MLease:
        gpus = pick(ticket.id)
        held = self.held()
        assert len(gpus) == ticket.n, f"{ticket.id}: granted {sorted(gpus)} for {ticket.n} GPUs"
        assert all(0 <= g < self.gpu_count for g in gpus), f"{ticket.id}: {sorted(gpus)} not in inventory"
        assert not gpus & held.keys(), f"{ticket.id}: granted held GPUs {sorted(gpus & held.keys())}"
        lease = MLease(ticket.id, ticket.uid, gpus, self.next_token, self.now + ticket.ttl,
                       self.wall + ticket.ttl, ticket.priority)
        self.next_token += 1
        self.leases[ticket.id] = lease
        self.queue.pop(ticket.id, None)
        return lease

    def dispatch(self, pick: Pick) -> None:
        granted, backfilled = self.plan()
        for ticket in granted:
            lease = self.grant(ticket, pick)
            lease.backfill_for, lease.backfill_until = backfilled.get(id(ticket), (None, 0))

    def gc(self) -> None:
        self.leases = {i: lease for i, lease in self.leases.items() if self.live(lease)}
        self.queue = {i: t for i, t in self.queue.items() if t.agent not in self.dead}

    def reboot(self, down: int, boot_now: int) -> None:
        self.wall += down
        self.now = boot_now
        for lease_id, lease in list(self.leases.items()):
            remaining = lease.exp_wall - self.wall
            if remaining <= 0:
                del self.leases[lease_id]
            else:
                lease.exp = self.now + min(remaining, GRACE_TICKS)
                lease.exp_wall = self.wall + (lease.exp - self.now)
        self.queue.clear()

    # -- operations: return the expected result fields, or raise RefusedError ------------------

    def reserve(self, pick: Pick, new_id: Callable[[], str], uid: int, n: int, ttl: int,
                priority: str, wait: bool, agent: int) -> dict[str, Any]:
        if n < 1:
            raise RefusedError("invalid")
        if n > self.gpu_count:
            raise RefusedError("insufficient")
        if not 0 < ttl <= MAX_TTL_TICKS or priority not in PRIORITY:
            raise RefusedError("invalid")
        self.dispatch(pick)
        self.seq += 1
        ticket = MTicket("(new)", uid, n, ttl, PRIORITY[priority], self.seq, self.now, agent)
        granted, backfilled = self.plan(extra=ticket)
        if any(t is ticket for t in granted):
            ticket.id = new_id()
            lease = self.grant(ticket, pick)
            lease.backfill_for, lease.backfill_until = backfilled.get(id(ticket), (None, 0))
            return {"state": "granted", "token": lease.token, "gpus": sorted(lease.gpus)}
        if wait:
            ticket.id = new_id()
            self.queue[ticket.id] = ticket
            return {"state": "queued", "position": self.position(ticket.id)}
        raise RefusedError("insufficient")

    def _live_owned(self, lease_id: str, uid: int, admin: bool, token: int | None) -> MLease:
        lease = self.leases.get(lease_id)
        if lease is None or not self.live(lease):
            raise RefusedError("not_found")
        if lease.uid != uid and not admin:
            raise RefusedError("permission")
        if token is not None and token != lease.token:
            raise RefusedError("stale_token")
        return lease

    def release(self, pick: Pick, uid: int, admin: bool, lease_id: str,
                token: int | None) -> dict[str, Any]:
        ticket = self.queue.get(lease_id)
        if ticket is not None:
            if ticket.uid != uid and not admin:
                raise RefusedError("permission")
            del self.queue[lease_id]
            return {"was": "queued", "gpus": []}
        lease = self._live_owned(lease_id, uid, admin, token)
        del self.leases[lease_id]
        self.dispatch(pick)
        return {"was": "active", "gpus": sorted(lease.gpus)}

    def renew(self, uid: int, admin: bool, lease_id: str, token: int | None,
              ttl: int) -> dict[str, Any]:
        lease = self._live_owned(lease_id, uid, admin, token)
        if not 0 < ttl <= MAX_TTL_TICKS:
            raise RefusedError("invalid")
        if lease.backfill_for in self.queue and self.now + ttl > lease.backfill_until:
            raise RefusedError("invalid")  # a backfilled grant may not come to delay the head it went before
        lease.exp = max(lease.exp, self.now + ttl)
        lease.exp_wall = self.wall + (lease.exp - self.now)
        return {"token": lease.token, "gpus": sorted(lease.gpus)}

    def poll(self, uid: int, ticket_id: str) -> dict[str, Any]:
        lease = self.leases.get(ticket_id)
        if lease is not None and self.live(lease):
            if lease.uid != uid:
                raise RefusedError("permission")
            return {"state": "granted", "token": lease.token}
        if ticket_id in self.queue:
            return {"state": "queued", "position": self.position(ticket_id)}
        raise RefusedError("not_found")


Expect = Callable[[Model, "dict[str, Any] | None"], dict[str, Any]]


def exact_ticks(seconds: float) -> int:
    """Seconds (a float the product computed) as whole ticks; fails if not exactly a tick."""
    ticks = Fraction(seconds) * TICKS_PER_S
    assert ticks.denominator == 1, f"{seconds!r} s is not a whole number of ticks"
    return int(ticks)


class NodeMachine(RuleBasedStateMachine):
    """Drives the real pure functions and the model side by side; invariants after every step."""

    def __init__(self) -> None:
        super().__init__()
        self.state: dict[str, Any] = {}
        self.picks_from: dict[str, Any] = {}
        self.model = Model(1)
        self.boot = 0
        self.agents = list(range(1, AGENT_SLOTS + 1))
        self.known_ids: list[str] = []
        self.tokens_seen: set[int] = set()
        self.tokens_by_id: dict[str, int] = {}
        self.prev_leases: dict[str, dict[str, Any]] = {}
        self.prev_queue: dict[str, dict[str, Any]] = {}
        self.prev_next_token = 1

    # -- plumbing ---------------------------------------------------------------------------

    def ctx(self, uid: int = UIDS[0], admin: bool = False, agent: int = 1) -> st.Ctx:
        """The node's view now, with explicit clocks and the model's agent liveness."""
        dead = self.model.dead
        return st.Ctx(uid, str(uid), self.model.now / TICKS_PER_S, self.model.wall / TICKS_PER_S,
                      self.model.gpu_count, admin=admin,
                      agent={"pid": agent, "start": 1, "boot_id": f"boot-{self.boot}"},
                      alive=lambda ident: bool(ident) and ident["pid"] not in dead)

    def pick(self, lease_id: str) -> frozenset[int]:
        """The GPUs the product chose for a grant the model expects (the model validates them)."""
        lease = self.picks_from["leases"].get(lease_id)
        assert lease is not None, f"model granted {lease_id}, the product did not"
        assert len(set(lease["gpus"])) == len(lease["gpus"]), f"{lease_id}: duplicate GPUs"
        return frozenset(lease["gpus"])

    def roundtrip(self) -> None:
        self.state = json.loads(json.dumps(self.state))

    def housekeeping(self, uid: int) -> None:
        """What the agent does before every op: gc, then dispatch."""
        ctx = self.ctx(uid)
        st.gc(self.state, ctx)
        st.dispatch(self.state, ctx)
        self.roundtrip()
        self.model.gc()
        self.picks_from = self.state
        self.model.dispatch(self.pick)

    def apply(self, name: str, uid: int, args: dict[str, Any], expect: Expect,
              admin: bool = False, agent: int = 1, housekeep: bool = True) -> dict[str, Any] | None:
        """Run ``reservations.<name>`` like one agent transaction and compare with the model's prediction."""
        if housekeep:
            self.housekeeping(uid)
        before = json.dumps(self.state, sort_keys=True)
        func = getattr(rs, name)  # looked up per call so negative controls can patch it
        try:
            result, code = func(self.state, self.ctx(uid, admin, agent), args), None
        except st.OpError as exc:
            result, code = None, exc.code
            self.picks_from = json.loads(json.dumps(self.state))  # grants made before refusing
            if name in ("release", "renew", "poll"):
                after = json.dumps(self.state, sort_keys=True)
                assert after == before, f"refused {name} changed the state"
            self.state = json.loads(before)  # the agent commits nothing from a refused op
        if name == "poll" and code is None:
            assert json.dumps(self.state, sort_keys=True) == before, "poll changed the state"
        self.roundtrip()
        if code is None:
            self.picks_from = self.state
        model = copy.deepcopy(self.model)
        try:
            expected, expected_code = expect(model, result), None
        except RefusedError as refused:
            expected, expected_code = {}, refused.code
        event(f"{name}: {code or (result or {}).get('state') or 'ok'}")
        assert code == expected_code, (
            f"{name}({args}) by uid {uid}: product {code or result}, model {expected_code or expected}")
        if code is None:
            self.model = model
            assert result is not None
            for field, value in expected.items():
                got = sorted(result[field]) if field == "gpus" else result[field]
                assert got == value, f"{name}({args}): {field} {got!r}, model says {value!r}"
            if "id" in result and result["id"] not in self.known_ids:
                self.known_ids.append(result["id"])
        return result

    def token_for(self, lease_id: str, kind: str) -> int | None:
        """No token, the lease's own token, or a stale one (another grant's, or never issued)."""
        lease = self.model.leases.get(lease_id)
        right = lease.token if lease is not None else self.tokens_by_id.get(lease_id, 10**6)
        if kind == "none":
            return None
        if kind == "right":
            return right
        others = sorted(self.tokens_seen - {right})
        return others[-1] if others else right + 1

    def uid_for(self, item_id: str, who: str) -> int:
        """The owner of a lease or ticket, the other user, or the admin."""
        item = self.model.leases.get(item_id) or self.model.queue.get(item_id)
        owner = item.uid if item is not None else UIDS[0]
        if who == "owner":
            return owner
        return ADMIN_UID if who == "admin" else UIDS[1 - UIDS.index(owner)]

    def draw_id(self, data: hs.DataObject) -> str:
        """Mostly a current lease or ticket; sometimes an old id or one never issued."""
        current = [*self.model.leases, *self.model.queue]
        choices = [hs.sampled_from(current)] if current else []
        choices += [hs.sampled_from(self.known_ids), hs.just("r-absent")]
        return data.draw(hs.one_of(*choices), label="id")

    # -- rules ------------------------------------------------------------------------------

    @initialize(gpu_count=hs.sampled_from([1, 2, 4, 8]))
    def setup(self, gpu_count: int) -> None:
        self.state = st.new_state("boot-0")
        self.model = Model(gpu_count)

    def do_reserve(self, uid: int, n: int, ttl: int, priority: str, preemptible: bool, wait: bool,
                   slot: int, housekeep: bool) -> None:
        agent = self.agents[slot]
        args = {"gpus": n, "ttl_s": ttl / TICKS_PER_S, "priority": priority,
                "preemptible": preemptible, "wait": wait}

        def expect(model: Model, result: dict[str, Any] | None) -> dict[str, Any]:
            def new_id() -> str:
                assert result is not None, "the model accepts a reserve that the product refused"
                return str(result["id"])

            return model.reserve(self.pick, new_id, uid, n, ttl, priority, wait, agent)

        self.apply("reserve", uid, args, expect, agent=agent, housekeep=housekeep)

    def do_release(self, lease_id: str, who: str, token_kind: str, housekeep: bool) -> None:
        uid = self.uid_for(lease_id, who)
        token = self.token_for(lease_id, token_kind)
        admin = uid == ADMIN_UID
        args = {"id": lease_id} if token is None else {"id": lease_id, "token": token}
        self.apply("release", uid, args,
                   lambda m, _: m.release(self.pick, uid, admin, lease_id, token),
                   admin=admin, housekeep=housekeep)

    def do_renew(self, lease_id: str, who: str, token_kind: str, ttl: int, housekeep: bool) -> None:
        uid = self.uid_for(lease_id, who)
        token = self.token_for(lease_id, token_kind)
        admin = uid == ADMIN_UID
        args: dict[str, Any] = {"id": lease_id, "ttl_s": ttl / TICKS_PER_S}
        if token is not None:
            args["token"] = token
        self.apply("renew", uid, args, lambda m, _: m.renew(uid, admin, lease_id, token, ttl),
                   admin=admin, housekeep=housekeep)

    @rule(uid=hs.sampled_from(UIDS), n=hs.integers(1, 4), ttl=TTLS, priority=PRIO,
          preemptible=hs.booleans(), wait=hs.booleans(), slot=SLOT,
          housekeep=hs.booleans())
    def reserve(self, uid: int, n: int, ttl: int, priority: str, preemptible: bool, wait: bool,
                slot: int, housekeep: bool) -> None:
        self.do_reserve(uid, n, ttl, priority, preemptible, wait, slot, housekeep)

    @rule(uid=hs.sampled_from(UIDS), n=hs.integers(1, 2), slot=SLOT)
    def long_hold(self, uid: int, n: int, slot: int) -> None:
        """A grant for most of an hour: what makes a big request wait long enough for a gap."""
        self.do_reserve(uid, n, 3000 * TICKS_PER_S, "normal", False, False, slot, True)

    @precondition(lambda self: bool(self.model.queue))
    @rule(uid=hs.sampled_from(UIDS), ttl=hs.sampled_from([TICKS_PER_S, 2 * TICKS_PER_S, 30 * TICKS_PER_S]),
          wait=hs.booleans(), slot=SLOT)
    def short_request_behind_a_queue(self, uid: int, ttl: int, wait: bool, slot: int) -> None:
        """A one-GPU request of seconds while others wait: what EASY backfill may run in a gap."""
        self.do_reserve(uid, 1, ttl, "low", False, wait, slot, True)

    @rule(uid=hs.sampled_from(UIDS), n=hs.integers(1, 4), ttl=TTLS, priority=PRIO,
          slot=SLOT, housekeep=hs.booleans())
    def reserve_or_queue(self, uid: int, n: int, ttl: int, priority: str, slot: int,
                         housekeep: bool) -> None:
        self.do_reserve(uid, n, ttl, priority, False, True, slot, housekeep)

    @rule(uid=hs.sampled_from(UIDS),
          bad=hs.sampled_from([{"gpus": 0}, {"gpus": 9}, {"ttl_s": 0}, {"ttl_s": -1.0},
                               {"priority": "urgent"}, {"gpus": True}, {"ttl_s": 10.0**9}]))
    def reserve_invalid(self, uid: int, bad: dict[str, Any]) -> None:
        args: dict[str, Any] = {"gpus": 1, "ttl_s": 1.0, "priority": "normal", **bad}
        n, ttl_s, priority = args["gpus"], args["ttl_s"], args["priority"]
        ttl = round(ttl_s * TICKS_PER_S)

        def expect(model: Model, result: dict[str, Any] | None) -> dict[str, Any]:
            if isinstance(n, bool):
                raise RefusedError("invalid")
            return model.reserve(self.pick, lambda: str(result and result["id"]), uid, n, ttl,
                                 priority, False, self.agents[0])

        self.apply("reserve", uid, args, expect, agent=self.agents[0])

    @rule(data=hs.data(), who=WHO, token_kind=TOKEN_KIND, housekeep=hs.booleans())
    def release(self, data: hs.DataObject, who: str, token_kind: str, housekeep: bool) -> None:
        if self.known_ids:
            self.do_release(self.draw_id(data), who, token_kind, housekeep)

    @rule(data=hs.data(), housekeep=hs.booleans())
    def release_own(self, data: hs.DataObject, housekeep: bool) -> None:
        items = [*self.model.leases, *self.model.queue]
        if not items:
            return
        self.do_release(data.draw(hs.sampled_from(items), label="id"), "owner", "right", housekeep)

    @rule(data=hs.data(), housekeep=hs.booleans())
    def release_stale_token(self, data: hs.DataObject, housekeep: bool) -> None:
        live = [i for i, lease in self.model.leases.items() if self.model.live(lease)]
        if not live:
            return
        lease_id = data.draw(hs.sampled_from(live), label="lease")
        self.do_release(lease_id, "owner", "stale", housekeep)

    @rule(data=hs.data(), who=WHO, token_kind=TOKEN_KIND, ttl=TTLS, housekeep=hs.booleans())
    def renew(self, data: hs.DataObject, who: str, token_kind: str, ttl: int, housekeep: bool) -> None:
        if self.known_ids:
            self.do_renew(self.draw_id(data), who, token_kind, ttl, housekeep)

    @rule(data=hs.data(), ttl=TTLS, housekeep=hs.booleans())
    def renew_own(self, data: hs.DataObject, ttl: int, housekeep: bool) -> None:
        if not self.model.leases:
            return
        lease_id = data.draw(hs.sampled_from(list(self.model.leases)), label="lease")
        self.do_renew(lease_id, "owner", "right", ttl, housekeep)

    @rule(data=hs.data(), who=hs.sampled_from(["owner", "other"]), housekeep=hs.booleans())
    def poll(self, data: hs.DataObject, who: str, housekeep: bool) -> None:
        if not self.known_ids:
            return
        ticket_id = self.draw_id(data)
        uid = self.uid_for(ticket_id, who)
        self.apply("poll", uid, {"id": ticket_id}, lambda m, _: m.poll(uid, ticket_id),
                   housekeep=housekeep)

    @rule(delta=DELTAS)
    def advance(self, delta: int) -> None:
        self.model.now += delta
        self.model.wall += delta

    @rule(data=hs.data(), offset=hs.sampled_from([0, 0, -1, 1]))
    def advance_to_expiry(self, data: hs.DataObject, offset: int) -> None:
        if not self.model.leases:
            return
        lease = self.model.leases[data.draw(hs.sampled_from(list(self.model.leases)), label="lease")]
        delta = max(0, lease.exp + offset - self.model.now)
        self.model.now += delta
        self.model.wall += delta

    @rule(what=hs.sampled_from(["gc", "dispatch", "both"]))
    def gc(self, what: str) -> None:
        if what in ("gc", "both"):
            st.gc(self.state, self.ctx())
            self.roundtrip()
            self.model.gc()
        if what in ("dispatch", "both"):
            st.dispatch(self.state, self.ctx())
            self.roundtrip()
            self.picks_from = self.state
            self.model.dispatch(self.pick)

    @rule(slot=SLOT)
    def kill_agent(self, slot: int) -> None:
        self.model.dead.add(self.agents[slot])
        self.agents[slot] = max(self.agents) + 1

    @rule(down=hs.one_of(hs.sampled_from([0, 1, GRACE_TICKS]), hs.integers(0, 2 * GRACE_TICKS)),
          boot_now=hs.integers(0, 100 * TICKS_PER_S))
    def reboot(self, down: int, boot_now: int) -> None:
        self.boot += 1
        self.model.reboot(down, boot_now)
        st.reboot_recovery(self.state, f"boot-{self.boot}", self.ctx())
        self.roundtrip()
        self.prev_leases = {}  # a reboot may rebase (shorten) leases to the grace period

    # -- invariants -------------------------------------------------------------------------

    @invariant()
    def invariants(self) -> None:
        """After every step: model agreement, I1/I2/I4, I3 and order, the file format."""
        if not self.state:
            return
        self.matches_model()
        self.exclusivity_and_conservation()
        self.fencing_and_order()
        self.file_format_roundtrip()

    def matches_model(self) -> None:
        """Exact agreement with the model: leases, tokens, expiry instants, queue, counter."""
        model = self.model
        assert set(self.state["leases"]) == set(model.leases), "lease sets differ"
        for lease_id, lease in self.state["leases"].items():
            expected = model.leases[lease_id]
            assert lease["uid"] == expected.uid
            assert frozenset(lease["gpus"]) == expected.gpus
            assert lease["token"] == expected.token, f"{lease_id}: token"
            assert exact_ticks(lease["exp_bt"]) == expected.exp, f"{lease_id}: exp_bt"
            assert exact_ticks(lease["exp_wall"]) == expected.exp_wall, f"{lease_id}: exp_wall"
        assert set(self.state["queue"]) == set(model.queue), "queues differ"
        for ticket_id, ticket in self.state["queue"].items():
            assert ticket["n"] == model.queue[ticket_id].n
            assert ticket["uid"] == model.queue[ticket_id].uid
        assert self.state["next_token"] == model.next_token

    def exclusivity_and_conservation(self) -> None:
        """I1 no GPU in two live leases; I2 held GPUs = union of live leases, all in inventory;
        I4 liveness is exactly now < exp (expiry at exp_bt means expired)."""
        now = self.model.now
        live = {i: lease for i, lease in self.state["leases"].items()
                if now < exact_ticks(lease["exp_bt"])}
        owner: dict[int, str] = {}
        for lease_id, lease in live.items():
            for gpu in lease["gpus"]:
                assert gpu not in owner, f"I1: GPU {gpu} in live leases {owner[gpu]} and {lease_id}"
                assert 0 <= gpu < self.model.gpu_count, f"I2: GPU {gpu} not in inventory"
                owner[gpu] = lease_id
        ctx = self.ctx()
        assert st.held_gpus(self.state, ctx.now_bt) == owner, "I2/I4: held_gpus"
        assert owner == self.model.held(), "I2: held GPUs differ from the model"
        free = set(range(self.model.gpu_count)) - owner.keys()
        assert set(st.free_gpus(self.state, ctx)) == free, "I2: free_gpus"
        view = st.listing(self.state, ctx)
        assert {r["id"] for r in view["reservations"]} == set(live), "I4: listing shows dead leases"
        for item in view["reservations"]:
            assert ("token" in item) == (item["uid"] == ctx.uid), "token shown to a non-owner"
        assert [t["id"] for t in view["queue"]] == [t.id for t in self.model.order()], "queue order"

    def fencing_and_order(self) -> None:
        """I3 tokens unique and increasing; renew is monotone; grants follow queue order."""
        next_token = self.state["next_token"]
        assert next_token >= self.prev_next_token, "I3: next_token went down"
        fresh = {i: lease for i, lease in self.state["leases"].items() if i not in self.prev_leases}
        for lease_id, lease in sorted(fresh.items(), key=lambda item: item[1]["token"]):
            token = lease["token"]
            if lease_id in self.tokens_by_id:
                assert self.tokens_by_id[lease_id] == token, f"I3: {lease_id} changed token"
                continue
            assert token not in self.tokens_seen, f"I3: token {token} reused by {lease_id}"
            assert token > max(self.tokens_seen, default=0), f"I3: token {token} not increasing"
            assert token < next_token, "I3: token not below next_token"
            self.tokens_seen.add(token)
            self.tokens_by_id[lease_id] = token
        for lease_id, lease in self.state["leases"].items():
            old = self.prev_leases.get(lease_id)
            if old is not None:
                assert lease["token"] == old["token"], f"I3: {lease_id} token changed"
                assert lease["exp_bt"] >= old["exp_bt"], f"{lease_id}: lease shortened"
        self.check_queue_order(fresh)
        if any(exact_ticks(lease["exp_bt"]) == self.model.now for lease in self.state["leases"].values()):
            event("a lease is at its exact expiry instant")
        self.prev_leases = copy.deepcopy(self.state["leases"])
        self.prev_queue = copy.deepcopy(self.state["queue"])
        self.prev_next_token = next_token

    def check_queue_order(self, fresh: dict[str, dict[str, Any]]) -> None:
        """Head-of-line: no grant while an earlier-keyed request stays queued; FIFO within a key."""
        now = Fraction(self.model.now, TICKS_PER_S)

        def key(ticket: dict[str, Any] | None, priority: int = 0) -> tuple[Fraction, float]:
            if ticket is None:  # granted at once: a brand-new request, last among equals
                return (-Fraction(priority), INF)
            waited = max(Fraction(0), now - Fraction(ticket["created_bt"]))
            return (-(ticket["priority"] + waited / 900), ticket["seq"])

        waiting = [t for i, t in self.state["queue"].items() if i in self.prev_queue]
        from_queue = []
        for lease_id, lease in fresh.items():
            ticket = self.prev_queue.get(lease_id)
            if lease.get("backfill_for") is not None:  # may go first: it ends before the head can start
                assert lease["exp_bt"] + st.BACKFILL_SLACK_S <= lease["backfill_until_bt"], (
                    f"backfill: {lease_id} ends after the start of {lease['backfill_for']} it went before")
                event("granted by backfill")
                continue
            granted_key = key(ticket, lease["priority"])
            for other in waiting:
                assert key(other) > granted_key, (
                    f"order: {lease_id} granted while {other['id']} (earlier key) still waits")
            if ticket is not None:
                from_queue.append((granted_key, lease["token"], lease_id))
                event("granted from the queue")
        tokens = [token for _, token, _ in sorted(from_queue)]
        assert tokens == sorted(tokens), f"order: queued grants out of key order {sorted(from_queue)}"

    def file_format_roundtrip(self) -> None:
        """The state, checksummed as the store writes it, survives JSON and validates."""
        body = dict(self.state, checksum=checksum(self.state))
        parsed = json.loads(json.dumps(body, sort_keys=True))
        validate_state(parsed)
        assert parsed == body


FAST = settings(max_examples=150, stateful_step_count=40, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

TestNodeMachine = NodeMachine.TestCase
TestNodeMachine.settings = FAST


def test_exactly_tied_requests_keep_fifo_order_over_time() -> None:
    """Regression (found by the machine): aged-priority floats let a later tied request overtake."""
    state = st.new_state("boot-0")
    # normal at t=0 and high at t=900 s have equal effective priority forever after: FIFO decides
    for ticket_id, priority, created_bt, seq in (("early", 1, 0.0, 1), ("late", 2, 900.0, 2)):
        state["queue"][ticket_id] = {"id": ticket_id, "priority": priority, "n": 1,
                                     "created_bt": created_bt, "seq": seq}
    for now_bt in (900.0, 960.0, 1000.0, 1234.5, 5000.0):
        order = [ticket["id"] for ticket in st.queue_order(state, now_bt)]
        assert order == ["early", "late"], f"at {now_bt}: {order}"


# -- negative controls: seeded bugs the machine must find ---------------------------------------


def _inclusive_expiry(original: Callable[..., Any]) -> Callable[..., Any]:
    """held_gpus that still counts a lease at exactly its expiry instant (>= instead of >)."""

    def held_gpus(state: dict[str, Any], now_bt: float) -> dict[int, str]:
        return {gpu: lease["id"] for lease in state["leases"].values()
                if lease["exp_bt"] >= now_bt for gpu in lease["gpus"]}

    return held_gpus


def _release_ignores_token(original: Callable[..., Any]) -> Callable[..., Any]:
    """release that drops the fencing token before checking it."""

    def release(state: dict[str, Any], ctx: st.Ctx, args: dict[str, Any]) -> dict[str, Any]:
        return original(state, ctx, {k: v for k, v in args.items() if k != "token"})

    return release


def _grant_reuses_token(original: Callable[..., Any]) -> Callable[..., Any]:
    """grant that hands the same token to the next grant (counter not advanced)."""

    def grant(state: dict[str, Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
        lease = original(state, *args, **kwargs)
        state["next_token"] -= 1
        return lease

    return grant


def _fifo_ignores_priority(original: Callable[..., Any]) -> Callable[..., Any]:
    """queue_order that serves pure FIFO, ignoring priority and aging."""

    def queue_order(state: dict[str, Any], now_bt: float) -> list[dict[str, Any]]:
        return sorted(state["queue"].values(), key=lambda ticket: ticket["seq"])

    return queue_order


def _backfill_past_head(original: Callable[..., Any]) -> Callable[..., Any]:
    """plan without the head-of-line earmark: later small requests overtake a blocked head."""

    def plan(state: dict[str, Any], ctx: st.Ctx, extra: dict[str, Any] | None = None) -> Any:
        order = st.queue_order(state, ctx.now_bt)
        if extra is not None:
            order = sorted([*order, extra], key=st.queue_key)
        free = st.free_gpus(state, ctx)
        granted, blocked = [], []
        for ticket in order:
            if ticket["n"] > len(free):
                blocked.append(ticket)
                continue
            granted.append((ticket, free[: ticket["n"]]))
            free = free[ticket["n"]:]
        return granted, blocked, {}

    return plan


MUTANTS: dict[str, tuple[Any, str, Callable[[Callable[..., Any]], Callable[..., Any]]]] = {
    "inclusive_expiry": (st, "held_gpus", _inclusive_expiry),
    "release_ignores_token": (rs, "release", _release_ignores_token),
    "grant_reuses_token": (st, "grant", _grant_reuses_token),
    "fifo_ignores_priority": (st, "queue_order", _fifo_ignores_priority),
    "backfill_past_head": (st, "plan", _backfill_past_head),
    # Backfill that may end after the head's start (its slack turned into a minute's overrun).
    "backfill_overruns_head": (st, "BACKFILL_SLACK_S", lambda _original: -60.0),
}

CONTROL = settings(max_examples=1000, stateful_step_count=40, deadline=None, derandomize=True,
                   database=None, phases=[Phase.generate], report_multiple_bugs=False,
                   suppress_health_check=list(HealthCheck), print_blob=False)


@pytest.mark.parametrize("mutant", sorted(MUTANTS))
def test_negative_control_finds_seeded_bug(mutant: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The checker is proven able to fail: each seeded bug in state.py or reservations.py must be caught."""
    module, attr, make = MUTANTS[mutant]
    monkeypatch.setattr(module, attr, make(getattr(module, attr)))
    with pytest.raises(AssertionError):
        run_state_machine_as_test(NodeMachine, settings=CONTROL)
