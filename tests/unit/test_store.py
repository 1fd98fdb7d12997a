"""Durable state store: atomic commits, previous version, mirror recovery, fail-closed, lock file."""

from __future__ import annotations

import errno
import io
import json
import os
from pathlib import Path
from typing import Any

import pytest

from gpuconsole.node import reservations as rs
from gpuconsole.node import state as st
from gpuconsole.node.agent import Agent
from gpuconsole.node.store import (
    CorruptState,
    StateStore,
    canonical,
    encode_file,
    filesystem_type,
    is_network_fs,
    validate_state,
)

BOOT = "boot-store-test"
NOW_BT = 1000.0
NOW_WALL = 1_700_000_000.0


def ctx(uid: int = 1001) -> st.Ctx:
    """A fixed node view: 8 GPUs, a clock far from any lease expiry."""
    return st.Ctx(uid, f"user{uid}", NOW_BT, NOW_WALL, 8)


def make_store(tmp_path: Path) -> StateStore:
    store = StateStore(str(tmp_path / "state"))
    store.ensure_dir()
    return store


def transact(store: StateStore, gpus: int | None = 1) -> dict[str, Any]:
    """One locked load → reserve → commit, as the agent does; returns the committed state."""
    store.acquire()
    try:
        state, _, _ = store.load_locked(BOOT)
        if gpus:
            rs.reserve(state, ctx(), {"gpus": gpus, "ttl_s": 3600})
        store.commit(state)
        return json.loads(json.dumps(state))
    finally:
        store.release_lock()


def read_json(path: str) -> dict[str, Any]:
    with open(path, "rb") as handle:
        data: dict[str, Any] = json.loads(handle.read())
    return data


def test_commit_then_load_roundtrip(tmp_path: Path) -> None:
    """What commit wrote is exactly what load returns, from state.json, with no warning."""
    store = make_store(tmp_path)
    transact(store, gpus=2)
    committed = transact(store, gpus=3)
    loaded, warnings, source = store.load(BOOT)
    assert (loaded, warnings, source) == (committed, [], "state.json")
    assert len(loaded["leases"]) == 2
    validate_state(loaded)
    with open(store.path, "rb") as primary, open(store.mirror, "rb") as mirror:
        assert primary.read() == mirror.read()


def test_a_file_edited_after_our_commit_is_checked_again(tmp_path: Path) -> None:
    """Bytes this process committed skip the per-record checks on the next load; any other bytes,
    such as a group member's edit with a fresh checksum, get them (a malformed lease is quarantined)."""
    store = make_store(tmp_path)
    committed = transact(store, gpus=2)
    assert store.load(BOOT)[:2] == (committed, [])
    edited = read_json(store.path)
    lease_id = next(iter(edited["leases"]))
    edited["leases"][lease_id]["gpus"] = "all"
    with open(store.path, "wb") as handle:  # in place, as a group member with write access could
        handle.write(encode_file(canonical(edited)))
    state, warnings, _ = store.load(BOOT)
    assert lease_id not in state["leases"] and warnings == [f"quarantined leases/{lease_id}: bad gpus"]


def test_gen_increments_by_exactly_one_per_commit(tmp_path: Path) -> None:
    """I7: every commit bumps gen by exactly 1, with or without a change inside."""
    store = make_store(tmp_path)
    gens = []
    for gpus in (1, None, 2, None, 1):
        transact(store, gpus=gpus)
        gens.append(store.load(BOOT)[0]["gen"])
    assert gens == [1, 2, 3, 4, 5]


def test_prev_holds_the_previous_version(tmp_path: Path) -> None:
    """state.json.prev is byte-for-byte the version before the latest commit."""
    store = make_store(tmp_path)
    first = transact(store)
    assert not os.path.exists(store.prev)
    second = transact(store)
    assert read_json(store.prev) == first
    transact(store)
    assert read_json(store.prev) == second
    validate_state(read_json(store.prev))


def _truncate(path: str) -> None:
    with open(path, "r+b") as handle:
        handle.truncate(10)


def _garbage(path: str) -> None:
    with open(path, "wb") as handle:
        handle.write(os.urandom(64) + b"\xff\xfe not json")


def _empty(path: str) -> None:
    open(path, "wb").close()


def _bitflip(path: str) -> None:
    """Still valid JSON, but one lease's GPU changed: only the checksum can notice."""
    data = read_json(path)
    lease = next(iter(data["leases"].values()))
    lease["gpus"] = [7 - g for g in lease["gpus"]]
    with open(path, "w") as handle:
        json.dump(data, handle)


CORRUPTIONS = {"truncated": _truncate, "garbage": _garbage, "empty": _empty,
               "bitflip": _bitflip, "deleted": os.unlink}


@pytest.mark.parametrize("damage", sorted(CORRUPTIONS))
def test_damaged_state_recovers_latest_generation_from_mirror(tmp_path: Path, damage: str) -> None:
    """A damaged or missing state.json loses nothing: mirror wins, tokens are fenced, file quarantined."""
    store = make_store(tmp_path)
    for gpus in (1, 2, 3):
        latest = transact(store, gpus=gpus)
    bad_bytes = b""
    CORRUPTIONS[damage](store.path)
    if damage != "deleted":
        with open(store.path, "rb") as handle:
            bad_bytes = handle.read()

    state, warnings, source = store.load(BOOT)  # a lock-free reader
    assert source == "state.json.mirror"
    assert state == latest, "recovery lost a committed change"
    assert len(warnings) == 1
    assert f"recovered generation {latest['gen']}" in warnings[0]

    store.acquire()
    try:
        state, warnings, recovered = store.load_locked(BOOT)
        assert recovered and warnings
        assert state["leases"] == latest["leases"], "a reservation was lost"
        assert state["next_token"] == latest["next_token"] + 2**20, "old tokens not fenced"
        assert state["recoveries"] == 1
        lease = rs.reserve(state, ctx(), {"gpus": 1, "ttl_s": 60})
        assert lease["token"] == latest["next_token"] + 2**20
        store.commit(state)
    finally:
        store.release_lock()

    corrupt_dir = Path(store.dir) / "corrupt"
    quarantined = sorted(corrupt_dir.iterdir()) if corrupt_dir.exists() else []
    if damage == "deleted":
        assert quarantined == []
    else:
        assert [p.read_bytes() for p in quarantined] == [bad_bytes], "bad file not quarantined"
    healed, warnings, source = store.load(BOOT)
    assert (warnings, source) == ([], "state.json")
    assert healed["gen"] == latest["gen"] + 1
    assert set(latest["leases"]) < set(healed["leases"])


def test_primary_and_mirror_damaged_fall_back_to_prev(tmp_path: Path) -> None:
    """With state.json and its mirror both bad, the previous generation is used, loudly."""
    store = make_store(tmp_path)
    before = transact(store)
    transact(store)
    _garbage(store.path)
    _truncate(store.mirror)
    state, warnings, source = store.load(BOOT)
    assert (state, source) == (before, "state.json.prev")
    assert len(warnings) == 1
    assert warnings[0].endswith(f"recovered generation {before['gen']} from state.json.prev")


def _serve(agent: Agent, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Feed JSON lines to an in-process agent and return its JSON-line replies."""
    agent.out = io.BytesIO()
    agent.serve(io.BytesIO(b"".join(json.dumps(r).encode() + b"\n" for r in requests)))
    return [json.loads(line) for line in agent.out.getvalue().splitlines()]


def test_all_copies_corrupt_fails_closed(tmp_path: Path) -> None:
    """Every copy unreadable → CorruptState; the agent refuses grants and never starts afresh."""
    store = make_store(tmp_path)
    transact(store)
    transact(store)
    for path in (store.path, store.mirror, store.prev):
        _garbage(path)
    snapshot = {p: Path(p).read_bytes() for p in (store.path, store.mirror, store.prev)}
    with pytest.raises(CorruptState):
        store.load(BOOT)
    store.acquire()
    try:
        with pytest.raises(CorruptState):
            store.load_locked(BOOT)
    finally:
        store.release_lock()

    agent = Agent(io.BytesIO())
    replies = _serve(agent, [
        {"id": 1, "op": "hello", "args": {"state_dir": store.dir, "simulate_gpus": 4,
                                          "node": "store-test-node"}},
        {"id": 2, "op": "reserve", "args": {"gpus": 1, "ttl_s": 60, "req_id": "r1"}},
        {"id": 3, "op": "reservations", "args": {}},
        {"id": 4, "op": "capacity", "args": {}},
        {"id": 5, "op": "gc", "args": {}},
    ])
    assert replies[0]["ok"], replies[0]
    for reply in replies[1:]:
        assert reply["ok"] is False, reply
        assert reply["error"]["code"] == "corrupt", reply
    assert {p: Path(p).read_bytes() for p in snapshot} == snapshot, "a corrupt state was overwritten"


def test_stale_temp_file_is_removed_by_the_next_lock_holder(tmp_path: Path) -> None:
    """A temp left by a killed writer is garbage once we hold the lock; readers never touch it."""
    store = make_store(tmp_path)
    committed = transact(store)
    stale = [Path(store.dir) / "state.json.tmp.123.abcd", Path(store.dir) / "state.json.tmp.prev.beef"]
    for path in stale:
        path.write_bytes(b'{"half": ')
    assert store.load(BOOT)[0] == committed
    assert all(p.exists() for p in stale), "a lock-free reader removed a writer's temp file"
    store.acquire()
    try:
        state, warnings, recovered = store.load_locked(BOOT)
    finally:
        store.release_lock()
    assert not any(p.exists() for p in stale)
    assert (state, warnings, recovered) == (committed, [], False)


def test_lock_file_is_never_deleted_or_replaced(tmp_path: Path) -> None:
    """The flock target keeps its inode through commits, recovery and temp cleanup."""
    store = make_store(tmp_path)
    transact(store)
    inode = os.stat(store.lock_path).st_ino
    other = StateStore(store.dir)
    store.acquire()
    with pytest.raises(st.OpError) as busy:
        other.acquire(timeout_s=0.05)
    assert busy.value.code == "busy"
    store.release_lock()
    other.acquire(timeout_s=0.05)
    other.release_lock()
    _garbage(store.path)
    (Path(store.dir) / "state.json.tmp.9.dead").write_bytes(b"")
    for _ in range(3):
        transact(store)
    assert os.stat(store.lock_path).st_ino == inode
    assert os.path.exists(store.lock_path)


def test_commit_without_the_lock_is_refused(tmp_path: Path) -> None:
    """Only the lock holder may write."""
    store = make_store(tmp_path)
    with pytest.raises(RuntimeError):
        store.commit(st.new_state(BOOT))
    assert not os.path.exists(store.path)


def test_network_filesystems_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """flock is unreliable on NFS/CIFS/FUSE, so the state dir must be local."""
    for fstype in ("nfs", "nfs4", "cifs", "smb3", "fuse.sshfs", "fuseblk", "ceph", "lustre"):
        assert is_network_fs(fstype), fstype
    for fstype in ("ext4", "xfs", "btrfs", "tmpfs", "overlay", "", None):
        assert not is_network_fs(fstype), fstype
    assert filesystem_type(str(tmp_path)) not in (None, "")

    monkeypatch.setattr("gpuconsole.node.store.filesystem_type", lambda path: "nfs4")
    store = StateStore(str(tmp_path / "on-nfs"))
    with pytest.raises(OSError) as refused:
        store.ensure_dir()
    assert refused.value.errno == errno.EREMOTE
    monkeypatch.setenv("GPUCONSOLE_ALLOW_NETFS", "1")
    store.ensure_dir()
