"""A node's tamper-evident ledger (node/ledger.py), through the agent's own transactions: every
grant and its end is there in order and the chain verifies; a flipped byte or a deleted record is
reported where it is; a crashed commit leaves no record behind and no gap; segments rotate and the
chain runs on; a head that is not one never makes the node cut what was written."""

from __future__ import annotations

import io
import os
import random
from pathlib import Path
from typing import Any

import pytest

from gpuconsole.node import faults, ledger
from gpuconsole.node.agent import Agent


def _agent(tmp_path: Path) -> Agent:
    agent = Agent(io.BytesIO())
    agent.op_hello({"state_dir": str(tmp_path / "state"), "simulate_gpus": 4, "node": "ledger-test"})
    return agent


def _op(agent: Agent, op: str, **args: Any) -> dict[str, Any] | None:
    try:
        result, _ = agent.handle({"id": 1, "op": op, "args": args})
    except Exception as exc:  # a refusal (OpError): part of a random run
        if type(exc).__name__ != "OpError":
            raise
        return None
    return result


def _ledger(agent: Agent) -> dict[str, Any]:
    result = _op(agent, "ledger")
    assert result is not None
    return result


def _segment(agent: Agent, number: int = 1) -> Path:
    assert agent.txn is not None
    return Path(ledger.segment_path(agent.txn.store.dir, number))


def test_a_thousand_operations_leave_a_whole_chain_of_every_grant_and_its_end(tmp_path: Path) -> None:
    agent, rng = _agent(tmp_path), random.Random(14)
    granted: list[str] = []
    held: list[str] = []
    for _ in range(1000):
        if held and rng.random() < 0.45:
            lease_id = held.pop(rng.randrange(len(held)))
            assert _op(agent, "release", id=lease_id) is not None
        elif held and rng.random() < 0.2:
            _op(agent, "renew", id=rng.choice(held), ttl_s=120)
        else:
            result = _op(agent, "reserve", gpus=rng.randint(1, 3), ttl_s=600)
            if result is not None:
                granted.append(result["id"])
                held.append(result["id"])
    answer = _ledger(agent)
    assert answer["breaks"] == [] and answer["count"] == len(answer["records"]) == answer["head"]["seq"]
    grants = [r["id"] for r in answer["records"] if r["event"] == "grant"]
    ends = [r["id"] for r in answer["records"] if r["event"] == "end"]
    assert grants == granted and sorted(ends) == sorted(set(granted) - set(held))
    assert [r["seq"] for r in answer["records"]] == list(range(1, answer["count"] + 1))
    assert all(r["reason"] == "released" for r in answer["records"] if r["event"] == "end")


def _reserve_and_release(agent: Agent, times: int) -> None:
    """`times` grants of one GPU, each released: two ledger records each."""
    for _ in range(times):
        result = _op(agent, "reserve", gpus=1, ttl_s=600)
        assert result is not None
        _op(agent, "release", id=result["id"])


def test_a_flipped_byte_or_a_deleted_record_is_reported_where_it_is(tmp_path: Path) -> None:
    agent = _agent(tmp_path)
    _reserve_and_release(agent, 6)
    path = _segment(agent)
    original = path.read_bytes()
    lines = original.splitlines(keepends=True)
    # A byte of record 5 changed (its GPU index): record 6 no longer follows it.
    flipped = bytearray(lines[4])
    flipped[flipped.index(b'"gpus":[') + 8] ^= 0x01
    path.write_bytes(b"".join([*lines[:4], bytes(flipped), *lines[5:]]))
    breaks = _ledger(agent)["breaks"]
    assert [(b["segment"], b["line"], b["seq"]) for b in breaks] == [(1, 6, 6)]
    # Record 5 deleted instead: the record now at line 5 (seq 6) does not follow seq 4.
    path.write_bytes(b"".join([*lines[:4], *lines[5:]]))
    breaks = _ledger(agent)["breaks"]
    assert (breaks[0]["segment"], breaks[0]["line"], breaks[0]["seq"]) == (1, 5, 6)
    path.write_bytes(original)
    assert _ledger(agent)["breaks"] == []


def test_a_commit_that_fails_after_the_append_leaves_no_record_and_no_gap(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    agent = _agent(tmp_path)
    first = _op(agent, "reserve", gpus=1, ttl_s=600)
    assert first is not None
    real_step = faults.commit_step

    def fail_at_rename(step: str) -> None:
        if step == "rename":
            raise OSError(28, "No space left on device")
        real_step(step)

    monkeypatch.setattr(faults, "commit_step", fail_at_rename)
    assert _op(agent, "reserve", gpus=1, ttl_s=600) is None  # refused: nothing committed
    monkeypatch.setattr(faults, "commit_step", real_step)
    size_with_tail = _segment(agent).stat().st_size
    answer = _ledger(agent)
    assert answer["breaks"] == [] and [r["id"] for r in answer["records"]] == [first["id"]]
    second = _op(agent, "reserve", gpus=1, ttl_s=600)  # cuts the dead tail off, then appends
    assert second is not None
    answer = _ledger(agent)
    assert answer["breaks"] == [] and [r["id"] for r in answer["records"]] == [first["id"], second["id"]]
    assert [r["seq"] for r in answer["records"]] == [1, 2] and _segment(agent).stat().st_size < size_with_tail + 400


def test_segments_rotate_and_the_chain_runs_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ledger, "SEGMENT_MAX_BYTES", 1500)
    agent = _agent(tmp_path)
    _reserve_and_release(agent, 20)
    answer = _ledger(agent)
    segments = {r["segment"] for r in answer["records"]}
    assert len(segments) >= 4 and answer["breaks"] == [] and answer["count"] == 40
    assert all(os.path.getsize(_segment(agent, n)) <= 1500 for n in segments)


def test_a_head_that_is_not_one_starts_a_new_chain_and_cuts_nothing(tmp_path: Path) -> None:
    agent = _agent(tmp_path)
    for _ in range(3):
        assert _op(agent, "reserve", gpus=1, ttl_s=600) is not None
    written = _segment(agent).read_bytes()
    assert agent.txn is not None
    store = agent.txn.store
    store.acquire()
    try:
        state, _, _ = store.load_locked(agent.boot_id)
        state["ledger"] = {"seq": "many", "hash": 7}  # a group member's edit
        store.commit(state)
    finally:
        store.release_lock()
    assert _op(agent, "reserve", gpus=1, ttl_s=600) is not None
    assert _segment(agent).read_bytes() == written  # nothing cut
    answer = _ledger(agent)
    assert _segment(agent, 2).exists() and answer["records"][-1]["segment"] == 2
    assert answer["breaks"]  # the restart is there to be seen
