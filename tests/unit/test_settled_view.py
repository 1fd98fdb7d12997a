"""A lock-free view never shows a lease gone and then back: when a lease in the file has run out, the
view waits (shared lock) for a change in flight, since that change may be a renew decided before the
expiry and committed after it (the history checker's lost_ack under a slow disk)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from gpuconsole.node import state as st
from gpuconsole.node.store import StateStore
from gpuconsole.node.txn import Critical, Transactions

BOOT = "boot-settled-view"
DEADLINE_S = 20.0


class Clock:
    def __init__(self) -> None:
        self.bt = 1000.0

    def ctx(self) -> st.Ctx:
        return st.Ctx(1001, "alice", self.bt, 1_700_000_000.0 + self.bt, 8)


class SlowCommit(StateStore):
    """A store whose next commit waits, after its decision and before its rename, until released."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.hold = False
        self.deciding = threading.Event()
        self.go = threading.Event()

    def commit(self, state: Any) -> list[str]:
        if self.hold:
            self.deciding.set()
            assert self.go.wait(DEADLINE_S)
        return super().commit(state)


def _setup(tmp_path: Path) -> tuple[Clock, SlowCommit, Transactions, Transactions]:
    clock = Clock()
    writer_store = SlowCommit(str(tmp_path / "state"))
    writer = Transactions(writer_store, BOOT, clock.ctx, set, Critical(), None)
    reader = Transactions(StateStore(str(tmp_path / "state")), BOOT, clock.ctx, set, Critical(), None)
    lease = writer.run("reserve", {"gpus": 2, "ttl_s": 10})[0]
    assert lease["id"]
    return clock, writer_store, writer, reader


def _listed(state: Any, ctx: st.Ctx) -> list[str]:
    return [lease["id"] for lease in state["leases"].values() if lease["exp_bt"] > ctx.now_bt]


def test_a_view_during_a_late_committing_renew_waits_for_it(tmp_path: Path) -> None:
    clock, store, writer, reader = _setup(tmp_path)
    lease_id = next(iter(reader.read()[0]["leases"]))
    clock.bt = 1009.0  # one second before the lease runs out the renew decides ...
    store.hold = True
    renewed: list[Any] = []
    renew = threading.Thread(target=lambda: renewed.append(writer.run("renew", {"id": lease_id, "ttl_s": 60})))
    renew.start()
    assert store.deciding.wait(DEADLINE_S)
    clock.bt = 1011.0  # ... and its commit is slow: a view now sees the old file, the lease run out

    # The negative control: the plain lock-free read shows the lease gone, which the renew then undoes.
    plain = reader.read()[0]
    assert lease_id not in _listed(plain, clock.ctx())

    views: list[list[str]] = []

    def settled() -> None:
        state, _, ctx = reader.settled_read(clock.ctx)
        views.append(_listed(state, ctx))

    viewer = threading.Thread(target=settled)
    viewer.start()
    viewer.join(0.3)
    assert viewer.is_alive(), "the view did not wait for the change in flight"
    store.go.set()
    renew.join(DEADLINE_S)
    viewer.join(DEADLINE_S)
    assert renewed and renewed[0][0]["id"] == lease_id
    assert views == [[lease_id]]


def test_a_stalled_writer_delays_a_view_by_the_bound_only(tmp_path: Path, monkeypatch: Any) -> None:
    clock, _, _, reader = _setup(tmp_path)
    clock.bt = 1011.0
    monkeypatch.setattr("gpuconsole.node.txn.SETTLE_TIMEOUT_S", 0.2)
    stalled = StateStore(str(tmp_path / "state"))
    stalled.acquire()
    try:
        state, _, ctx = reader.settled_read(clock.ctx)
        assert _listed(state, ctx) == []  # the run-out lease, as the lock-free read saw it
    finally:
        stalled.release_lock()


def test_a_view_with_no_lease_run_out_takes_no_lock(tmp_path: Path, monkeypatch: Any) -> None:
    clock, _, _, reader = _setup(tmp_path)
    monkeypatch.setattr("gpuconsole.node.txn.SETTLE_TIMEOUT_S", 600.0)  # waiting would hang the test
    stalled = StateStore(str(tmp_path / "state"))
    stalled.acquire()
    views: list[int] = []
    viewer = threading.Thread(target=lambda: views.append(len(_listed(*_state_ctx(reader, clock)))), daemon=True)
    try:
        viewer.start()
        viewer.join(DEADLINE_S)
        assert views == [1]
    finally:
        stalled.release_lock()
        viewer.join(DEADLINE_S)


def _state_ctx(reader: Transactions, clock: Clock) -> tuple[Any, st.Ctx]:
    state, _, ctx = reader.settled_read(clock.ctx)
    return state, ctx
