"""One atomic step on a node's state: lock, load, housekeeping, the operation, commit.

Also the lock-free reads every view uses, shown as the next transaction would find the state.
The agent holds one Transactions per connection (after hello) and the job operations use it
through the agent; nothing here knows about requests, telemetry or service links.
"""

from __future__ import annotations

import json
import os

from . import fairshare, faults, health, jobs, ledger, occupancy, reservations
from . import state as st
from .fileio import DIR_MODE, io_error
from .store import SERVICE_DIR_MODE, CorruptState, no_dir_error

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Tuple

    from .health import Readings
    from .reservations import Transition
    from .state import Ctx
    from .store import StateStore
    from .typedefs import Alive, Args, Ident, Result, State, Warnings

    Reply = Tuple[Result, Warnings]

MUTATIONS: dict[str, Transition] = dict(reservations.MUTATIONS, **jobs.MUTATIONS)
ALWAYS_CHANGES = reservations.ALWAYS_CHANGES | frozenset(jobs.MUTATIONS)
SETTLE_TIMEOUT_S = 2.0


def remembered(alive: Alive) -> Alive:
    """`alive` asked once per process identity: one transaction checks the same waiter for every
    queued job it names (1,000 /proc reads per submit behind 1,000 queued jobs otherwise)."""
    seen: dict[tuple[object, object, object], bool] = {}

    def check(ident: Ident | None) -> bool:
        try:
            key = (ident.get("pid"), ident.get("start"), ident.get("boot_id")) if isinstance(ident, dict) else None
            if key is None:
                return alive(ident)
            if key not in seen:
                seen[key] = alive(ident)
            return seen[key]
        except TypeError:  # an unhashable field: ask each time
            return alive(ident)

    return check


class Critical:
    """Set while a change is in flight: a signal then waits, so the change happens whole or not at all."""

    def __init__(self) -> None:
        self.active = False


class Transactions:
    """The state operations of one caller on one state dir."""

    def __init__(self, store: StateStore, boot_id: str, new_ctx: Callable[[], Ctx],
                 gpus_in_use: Callable[[], set[int]], critical: Critical, service_user: str | None,
                 health: Callable[[], Readings] | None = None,
                 gpu_users: Callable[[], dict[int, list[str]]] | None = None) -> None:
        """`new_ctx`: the caller's context now; `gpus_in_use`: GPUs with processes, and `health`: the
        GPUs' health readings, both sampled outside the lock; `service_user`: the service account
        when the node is in service mode."""
        self.health = health
        self.gpu_users = gpu_users
        self.store = store
        self.boot_id = boot_id
        self.new_ctx = new_ctx
        self.gpus_in_use = gpus_in_use
        self.critical = critical
        self.service_user = service_user

    def io_error(self, what: str, exc: OSError) -> st.OpError:
        return io_error(what, exc, self.store.dir, self.service_user)

    def ensure_dir(self) -> None:
        """Before a change: the state dir exists (a cooperative node's first change creates it;
        reads never do), or OpError("io") naming the path and the fix."""
        if self.store.ready:
            return
        try:
            self.store.ensure_dir(create=self.service_user is None)
        except OSError as exc:
            raise no_dir_error(exc, self.store.dir, self.service_user) from None

    def read(self) -> tuple[State, Warnings, str]:
        """Lock-free load; a state no copy of which is readable is OpError("corrupt")."""
        try:
            return self.store.load(self.boot_id)
        except CorruptState as exc:
            raise st.OpError("corrupt", "node state unreadable: %s" % exc) from None

    def settled_read(self, new_ctx: Callable[[], Ctx]) -> tuple[State, Warnings, Ctx]:
        """A lock-free read and the context to view it in, unless a lease in it has run out: then
        both again under a shared lock (up to SETTLE_TIMEOUT_S), since a renew of it may be deciding
        now and commit after the expiry, and the view must not show it gone and then back."""
        state, warnings, _ = self.read()
        ctx = new_ctx()
        if not any(not lease.get("job") and lease["exp_bt"] <= ctx.now_bt for lease in state["leases"].values()):
            return state, warnings, ctx
        fd = self.store.await_writer(SETTLE_TIMEOUT_S)
        if fd is None:
            return state, warnings, ctx  # a stalled writer must not stall every view
        try:
            state, warnings, _ = self.read()
            return state, warnings, new_ctx()
        finally:
            os.close(fd)

    def view(self, state: State, ctx: Ctx) -> State:
        """The state as the next transaction's housekeeping would find it, for lock-free views.

        A reboot, a job lease kept by its live supervisor, and a waiter that died are shown as
        they will be, so no view calls a dead waiter queued or a held GPU free. Copies only
        when something differs (the read cache's object is shared).
        """
        reboot = state.get("boot_id") != self.boot_id
        dead = [ticket_id for ticket_id, ticket in state["queue"].items()
                if not ticket.get("job") and (st.wait_expired(ticket, ctx) or not ctx.alive(ticket.get("agent")))]
        if not (reboot or dead or jobs.lapsing_supervised(state, ctx)):
            return state
        state = json.loads(json.dumps(state))
        if reboot:
            st.reboot_recovery(state, self.boot_id, ctx)
        for ticket_id in dead:
            state["queue"].pop(ticket_id, None)
        jobs.hold_while_supervised(state, ctx)
        return state

    def run(self, op: str, args: Args) -> Reply:
        """One atomic step: lock, load, replay or gc → op → dispatch, commit only on change.

        The rename inside commit() is the commit point: an error before it is a refusal (nothing
        changed), anything that goes wrong after it is a warning on a successful reply.
        """
        func = MUTATIONS[op]
        # Every transaction's housekeeping may dispatch, so every one needs the GPUs in use.
        in_use = self.gpus_in_use()
        readings = self.health() if self.health is not None else {}
        users = self.gpu_users() if self.gpu_users is not None else {}
        req_id = args.get("req_id")
        self.ensure_dir()
        self.critical.active = True
        try:
            self.store.acquire()
        except OSError as exc:
            self.critical.active = False
            raise self.io_error("cannot open the state lock", exc) from None
        try:
            ctx = self.new_ctx()
            ctx.gpus_in_use = in_use
            ctx.health = readings
            ctx.gpu_users = users
            ctx.alive = remembered(ctx.alive)
            try:
                state, warnings, _, loaded = self.store.load_locked_with_body(self.boot_id)
            except CorruptState as exc:
                raise st.OpError("corrupt", "node state unreadable, refusing changes until an admin "
                                 "repairs %s: %s" % (self.store.dir, exc)) from None
            except OSError as exc:
                raise self.io_error("cannot read the state", exc) from None
            if req_id and req_id in state["applied"]:
                result = dict(state["applied"][req_id]["res"], replayed=True)
                return result, warnings
            state.pop("checksum", None)
            must_write = loaded is None  # a new node, a recovery or a quarantine that must be persisted
            baseline = loaded if loaded is not None else json.dumps(state)
            before = ledger.summary(state)
            try:
                changed = self._housekeep(state, ctx)
                result = func(state, ctx, args)
            except st.OpError:
                # Refused: keep only what housekeeping changed, re-derived from what was read.
                state = json.loads(baseline)
                if self._housekeep(state, ctx) or must_write:
                    warnings = warnings + self._commit(state, self._records(before, state, ctx, "gc", {}))
                raise
            if op in ALWAYS_CHANGES:
                if req_id:
                    state["applied"][req_id] = {"bt": ctx.now_bt, "res": result}
                changed = True
            if changed or must_write:
                warnings = warnings + self._commit(state, self._records(before, state, ctx, op, args))
                # The committed state object is the store's now (the next locked load reuses it):
                # the answer must not share a record with it.
                result = json.loads(json.dumps(result))
            return result, warnings
        finally:
            self.store.release_lock()
            self.critical.active = False

    @staticmethod
    def _records(before: ledger.Summary, state: State, ctx: Ctx, op: str, args: Args) -> list[Result]:
        """The change's ledger records; the grants it ended are charged to their owners' usage."""
        ended = ledger.ended_grants(before, state, ctx, op, args)
        fairshare.charge(state, [(owner, len(gpus), granted, end) for _, owner, gpus, _, _, end, granted in ended],
                         ctx.now_wall, ctx.policy.get("fair_share_half_life_s"))
        return ledger.events(before, state, ctx, op, ended)

    def _commit(self, state: State, records: list[Result]) -> Warnings:
        """Append the change's ledger records, then commit the state naming the ledger's new head; or
        raise OpError("io") when nothing was committed; returns post-commit warnings."""
        if faults.active("ack_before_commit"):  # negative control for the history checker only
            return []
        try:
            # The unlocked negative control shows the state's lost updates; unlocked appends would
            # only make most of its changes fail on the ledger's committed length instead.
            if records and not faults.active("no_lock"):
                state["ledger"] = ledger.append(
                    self.store.dir, ledger.head_of(state, self.store.dir), records, self.store.file_mode,
                    SERVICE_DIR_MODE if self.store.service else DIR_MODE)
            return self.store.commit(state)
        except OSError as exc:
            raise self.io_error("not changed: cannot write the state", exc) from None

    def _housekeep(self, state: State, ctx: Ctx) -> bool:
        """Reboot rule, expiry, dead waiters, then queued grants; True when anything changed."""
        changed = False
        if state.get("boot_id") != self.boot_id:
            st.reboot_recovery(state, self.boot_id, ctx)
            changed = True
        changed = jobs.hold_while_supervised(state, ctx) or changed
        changed = st.gc(state, ctx) or changed
        changed = jobs.reap(state, ctx) or changed
        changed = health.mark(state, ctx.health, ctx.user, ctx.now_wall) or changed  # before any grant
        changed = occupancy.track(state, ctx) or changed
        # The factors this change's grants use (a change of them alone is not worth a commit).
        fairshare.refresh(state, ctx.now_bt, ctx.now_wall, ctx.policy)
        changed = bool(st.dispatch(state, ctx)) or changed
        if jobs.preempt_for_head(state, ctx):
            st.dispatch(state, ctx)  # revoked reservations free GPUs at once
            changed = True
        return changed
