"""The state fields fair share, health and unreserved-use tracking added are anyone's to write (a
group member can rewrite state.json with a valid checksum): a planted value is quarantined or
ignored, and never stops a transaction or a view for the rest of the node. Each case here once
did (an adversarial review found them)."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from gpuconsole.core.usage import usage
from gpuconsole.node import health, pending
from gpuconsole.node import state as st
from gpuconsole.node.store import StateStore
from gpuconsole.node.txn import Critical, Transactions
from tests.helpers import edit_state

BOOT = "boot-hostile-fields"
NOW_WALL = 1_700_000_000.0


class Node:
    def __init__(self, tmp_path: Path, uid: int = 1001) -> None:
        self.uid = uid
        self.dir = tmp_path / "state"
        self.txn = Transactions(StateStore(str(self.dir)), BOOT, self.ctx, set, Critical(), None)

    def ctx(self) -> st.Ctx:
        return st.Ctx(self.uid, f"user{self.uid}", 1000.0, NOW_WALL, 4,
                      policy={"fair_share_half_life_s": 86400.0, "fair_share_weight": 1.0})

    def run(self, op: str, **args: Any) -> dict[str, Any]:
        result: dict[str, Any] = self.txn.run(op, args)[0]
        return result


PLANTS = {
    "a GPU key int() cannot read": lambda s: s.update(gpu_health={"²": {"withheld": {"reason": "x", "since_wall": 0}}}),
    "a GPU key with a leading zero": lambda s: s.update(gpu_health={"03": {"withheld": {"reason": "x",
                                                                                        "since_wall": 0}}}),
    "a time no clock can show": lambda s: s.update(unreserved={"1": {"since_wall": 1e20, "users": []}}),
    "an idle time no clock can show": lambda s: next(iter(s["leases"].values())).update(idle_since_wall=1e20),
    "a null fair-share weight": lambda s: s.update(fair_share_weight=None),
}


@pytest.mark.parametrize("plant", sorted(PLANTS))
def test_a_planted_field_stops_neither_changes_nor_views(tmp_path: Path, plant: str) -> None:
    node = Node(tmp_path)
    first = node.run("reserve", gpus=1, ttl_s=600)
    node.run("reserve", gpus=4, ttl_s=600, wait=True)  # a queue, so views order and explain it
    edit_state(node.dir, PLANTS[plant])
    state, _, _ = node.txn.read()
    ctx = node.ctx()
    st.queue_order(state, ctx.now_bt)
    st.listing(state, ctx, pending.explain(state, ctx))
    assert node.run("gc") == {"gc": True}  # every transaction's housekeeping runs
    if first["id"] in node.txn.read()[0]["leases"]:  # (a lease with a planted field is quarantined whole)
        assert node.run("release", id=first["id"])["released"]
    assert health.withheld(node.txn.read()[0]) == set()  # "03" never aliases GPU 3, "²" never withholds


def test_only_the_owner_or_an_admin_says_a_reservation_is_idle(tmp_path: Path) -> None:
    node = Node(tmp_path)
    lease = node.run("reserve", gpus=1, ttl_s=600)
    node.uid = 1002
    with pytest.raises(st.OpError) as other:
        node.run("idle_note", id=lease["id"], since=NOW_WALL - 60, release_at=NOW_WALL)
    assert other.value.code == "permission"
    node.uid = 1001
    node.run("idle_note", id=lease["id"], since=0, release_at=0)
    held = node.txn.read()[0]["leases"][lease["id"]]
    assert held["idle_since_wall"] == held["created_wall"] and held["idle_release_wall"] == NOW_WALL


def test_a_fifo_or_a_huge_number_as_the_simulations_fault_file_costs_nothing(tmp_path: Path) -> None:
    from gpuconsole.node.gpus import SimulatedGpus
    from gpuconsole.node.telemetry import sim_faults

    gpus = SimulatedGpus(2, "node-x")
    os.mkfifo(tmp_path / health.SIM_FILE)
    done: list[Any] = []
    reader = threading.Thread(target=lambda: done.append(sim_faults(gpus, str(tmp_path))), daemon=True)
    reader.start()
    reader.join(10)
    assert done == [None]  # refused at once, never waited on
    (tmp_path / health.SIM_FILE).unlink()
    (tmp_path / health.SIM_FILE).write_text(json.dumps({"0": {"xid": 79, "at_wall": 10 ** 400}}))
    readings = gpus.health(sim_faults(gpus, str(tmp_path)))
    assert readings[0]["xid"] == 79 and readings[0]["xid_at_wall"] < 2 ** 33  # the file's time instead


def test_hostile_ledger_records_do_not_stop_usage() -> None:
    at = "2026-11-23T10:00:00Z"
    ledgers = {"node-01": [
        {"event": "unreserved_start", "gpu": 1, "users": 5, "at": at},
        {"event": "grant", "id": "r-1", "owner": "a", "gpus": 5, "at": at, "expires_at": at},
        {"event": "unreserved_end", "gpu": 1, "at": "2026-11-23T11:00:00Z"},
    ]}
    rows = {r.key: r.to_json() for r in usage(ledgers, 0.0, 1.8e9, "user")}
    assert rows["?"]["gpu_hours_unreserved"] == pytest.approx(1.0)
