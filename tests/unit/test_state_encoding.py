"""A commit encodes only the records that changed (node/canon.py) and the next locked load reuses the
committed state object (node/store.py): neither may ever write or hand out anything but what a full
encode and a fresh parse of state.json would."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from gpuconsole.node import reservations as rs
from gpuconsole.node import state as st
from gpuconsole.node.canon import RecordEncoder
from gpuconsole.node.store import StateStore, canonical

BOOT = "boot-encoding-test"


def ctx(uid: int = 1001) -> st.Ctx:
    return st.Ctx(uid, f"user{uid}", 1000.0, 1_700_000_000.0, 8)


def make_store(tmp_path: Path) -> StateStore:
    store = StateStore(str(tmp_path / "state"))
    store.ensure_dir()
    return store


def read_json(path: str) -> dict[str, Any]:
    with open(path, "rb") as handle:
        data: dict[str, Any] = json.loads(handle.read())
    return data

LEAVES = hs.one_of(hs.none(), hs.booleans(), hs.integers(-5, 5), hs.floats(allow_nan=False, width=32),
                   hs.text(max_size=4))
VALUES = hs.recursive(LEAVES, lambda inner: hs.one_of(hs.lists(inner, max_size=3),
                                                      hs.dictionaries(hs.text(max_size=3), inner, max_size=3)),
                      max_leaves=8)
IDS = hs.sampled_from(["j-a", "j-b", "r-\u00e9", 'q"x', "l:1"])
# One step on a state: a record added or replaced, removed, or changed in place (a field, or deep).
STEPS = hs.lists(hs.tuples(hs.sampled_from(["jobs", "queue", "leases", "applied", "gen"]), IDS,
                           hs.sampled_from(["put", "drop", "field", "deep"]), hs.text(max_size=2), VALUES),
                 min_size=1, max_size=25)


def _apply(state: dict[str, Any], step: tuple[str, str, str, str, Any]) -> None:
    key, record_id, action, field, value = step
    if key == "gen":
        state["gen"] = value
        return
    records = state[key]
    if action == "put" or record_id not in records:
        records[record_id] = {"v": value, "nest": {"list": [value]}}
    elif action == "drop":
        del records[record_id]
    elif action == "field":
        records[record_id][field] = value
    else:
        nest = records[record_id].setdefault("nest", {})
        nest.setdefault("list", []).append(value) if isinstance(nest, dict) else None


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(steps=STEPS)
def test_the_record_by_record_body_is_the_canonical_body(steps: list[tuple[str, str, str, str, Any]]) -> None:
    encoder = RecordEncoder()
    state: dict[str, Any] = {"schema": 3, "gen": 0, "jobs": {}, "queue": {}, "leases": {}, "applied": {},
                             "checksum": "sha256:x"}
    for step in steps:
        _apply(state, step)
        assert encoder.body(state) == canonical(state)


def test_a_load_after_another_writer_sees_its_commit(tmp_path: Path) -> None:
    """A's committed object is reused only while state.json holds A's bytes: B's commit in between is
    read, not overwritten with A's stale view."""
    a = make_store(tmp_path)
    b = StateStore(a.dir)
    _reserve(a, 1)
    _reserve(b, 2)
    state = _reserve(a, 1)
    assert sorted(len(t["gpus"]) for t in state["leases"].values()) == [1, 1, 2]
    assert read_json(a.path)["gen"] == 3


def test_a_load_whose_changes_were_not_committed_is_not_reused(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    _reserve(store, 1)
    store.acquire()
    try:
        state, _, _ = store.load_locked(BOOT)
        rs.reserve(state, ctx(), {"gpus": 4, "ttl_s": 60})  # changed in place, then given up
    finally:
        store.release_lock()
    after = _reserve(store, 1)
    assert sorted(len(t["gpus"]) for t in after["leases"].values()) == [1, 1]
    assert after == _fresh(store)


def test_an_answer_never_shares_a_record_with_the_reused_state(tmp_path: Path) -> None:
    import io

    from gpuconsole.node.agent import Agent

    agent = Agent(io.BytesIO())
    agent.op_hello({"state_dir": str(tmp_path / "s"), "simulate_gpus": 4, "node": "enc"})
    granted, _ = agent.handle({"id": 1, "op": "reserve", "args": {"gpus": 1, "ttl_s": 60, "req_id": "q1"}})
    granted["gpus"].append(3)  # what a caller does with its answer is its own business
    granted["owner"] = "mallory"
    agent.handle({"id": 2, "op": "reserve", "args": {"gpus": 1, "ttl_s": 60, "req_id": "q2"}})
    assert agent.txn is not None
    on_disk = read_json(agent.txn.store.path)
    assert on_disk["applied"]["q1"]["res"]["owner"] != "mallory"
    assert [len(t["gpus"]) for t in on_disk["leases"].values()] == [1, 1]


def _reserve(store: StateStore, gpus: int) -> dict[str, Any]:
    store.acquire()
    try:
        state, _, _ = store.load_locked(BOOT)
        rs.reserve(state, ctx(), {"gpus": gpus, "ttl_s": 3600})
        store.commit(state)
        committed: dict[str, Any] = json.loads(json.dumps(state))
        return committed
    finally:
        store.release_lock()


def _fresh(store: StateStore) -> dict[str, Any]:
    """state.json as a process that never committed reads it."""
    state, _, _ = StateStore(store.dir).load(BOOT)
    fresh: dict[str, Any] = json.loads(json.dumps(state))
    return fresh
