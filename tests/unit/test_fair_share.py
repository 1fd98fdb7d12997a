"""Fair share and per-user caps on one node (node/fairshare.py, node/policy.py), through the agent's
transactions on a real state dir: a lighter user goes before a heavier one of equal priority, usage
decays with the half-life, a cap holds a request and says why without blocking anyone behind it, and
the longest reservation bounds reserve and renew."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pytest

from gpuconsole.node import fairshare, pending
from gpuconsole.node import policy as node_policy
from gpuconsole.node import state as st
from gpuconsole.node.store import StateStore
from gpuconsole.node.txn import Critical, Transactions

BOOT = "boot-fair-share"
DAY_S = 86400.0
USERS = {"alice": 1001, "bob": 1002, "carol": 1003}


class Node:
    """One node's transactions, each as a chosen user at a chosen time, under a chosen policy."""

    def __init__(self, tmp_path: Path, policy: dict[str, Any] | None = None, gpus: int = 4) -> None:
        self.bt = 1000.0
        self.user = "alice"
        self.gpus = gpus
        self.policy = dict(node_policy.DEFAULTS, **(policy or {}))
        self.txn = Transactions(StateStore(str(tmp_path / "state")), BOOT, self.ctx, set, Critical(), None)

    def ctx(self) -> st.Ctx:
        return st.Ctx(USERS[self.user], self.user, self.bt, 1_700_000_000.0 + self.bt, self.gpus,
                      policy=self.policy)

    def as_(self, user: str, op: str, **args: Any) -> dict[str, Any]:
        self.user = user
        result: dict[str, Any] = self.txn.run(op, args)[0]
        return result

    def hold(self, user: str, gpus: int, seconds: float) -> None:
        lease = self.as_(user, "reserve", gpus=gpus, ttl_s=seconds + 60)
        self.bt += seconds
        self.as_(user, "release", id=lease["id"])

    def state(self) -> Any:
        return self.txn.read()[0]


def test_the_lighter_user_is_granted_first_at_equal_priority(tmp_path: Path) -> None:
    node = Node(tmp_path)
    node.hold("bob", 4, 1000.0)  # bob: 4,000 GPU-seconds, alice: 400 (10x less)
    node.hold("alice", 1, 400.0)
    busy = node.as_("carol", "reserve", gpus=4, ttl_s=3600)
    bob_t = node.as_("bob", "reserve", gpus=4, ttl_s=600, wait=True)
    node.bt += 60.0  # alice asks a minute after bob
    alice_t = node.as_("alice", "reserve", gpus=4, ttl_s=600, wait=True)
    state = node.state()
    assert fairshare.factor(state, "alice") > fairshare.factor(state, "bob")  # type: ignore[operator]
    assert [t["id"] for t in st.queue_order(state, node.bt)] == [alice_t["id"], bob_t["id"]]
    node.as_("carol", "release", id=busy["id"])
    assert node.as_("alice", "poll", id=alice_t["id"])["state"] == "granted"
    assert node.as_("bob", "poll", id=bob_t["id"])["state"] == "queued"
    # The queue shows each owner's factor.
    why = pending.explain(node.state(), node.ctx())
    assert 0 < why[bob_t["id"]]["fair_share"] < 0.5


def test_without_fair_share_the_earlier_request_goes_first(tmp_path: Path) -> None:
    """The negative control of the test above: the same history with fair share off is plain FIFO."""
    node = Node(tmp_path, {"fair_share_half_life_s": 0})
    node.hold("bob", 4, 1000.0)
    node.hold("alice", 1, 400.0)
    busy = node.as_("carol", "reserve", gpus=4, ttl_s=3600)
    bob_t = node.as_("bob", "reserve", gpus=4, ttl_s=600, wait=True)
    node.bt += 60.0
    node.as_("alice", "reserve", gpus=4, ttl_s=600, wait=True)
    node.as_("carol", "release", id=busy["id"])
    assert node.as_("bob", "poll", id=bob_t["id"])["state"] == "granted"
    assert "fair_share" not in node.state() and "usage" not in node.state()


def test_waiting_still_wins_over_fair_share(tmp_path: Path) -> None:
    """Fair share is worth fair_share_weight levels (15 min of aging each): a heavy user who has
    waited an hour longer still goes first."""
    node = Node(tmp_path)
    node.hold("bob", 4, 1000.0)
    busy = node.as_("carol", "reserve", gpus=4, ttl_s=7200)
    bob_t = node.as_("bob", "reserve", gpus=4, ttl_s=600, wait=True)
    node.bt += 3600.0
    alice_t = node.as_("alice", "reserve", gpus=4, ttl_s=600, wait=True)
    assert [t["id"] for t in st.queue_order(node.state(), node.bt)] == [bob_t["id"], alice_t["id"]]
    node.as_("carol", "release", id=busy["id"])


def test_usage_is_the_decayed_integral_of_what_each_user_held(tmp_path: Path) -> None:
    node = Node(tmp_path, {"fair_share_half_life_s": DAY_S})
    node.hold("bob", 2, DAY_S)  # two GPUs for one half-life
    entry = node.state()["usage"]["bob"]
    expected = 2 * DAY_S / math.log(2) * 0.5  # ∫ 2^-(t/H) over one half-life, times 2 GPUs
    assert entry["gpu_s"] == pytest.approx(expected, rel=1e-6)
    node.bt += DAY_S  # a half-life later, half of it counts
    node.as_("alice", "reserve", gpus=1, ttl_s=60)
    assert fairshare.usage_now(node.state(), node.bt, node.ctx().now_wall, DAY_S)["bob"] == \
        pytest.approx(expected / 2, rel=1e-6)
    node.bt += 40 * DAY_S  # long forgotten: bob leaves the table
    node.as_("alice", "reserve", gpus=1, ttl_s=60)
    assert "bob" not in node.state().get("usage", {})


def test_a_cap_holds_a_request_says_why_and_blocks_no_one(tmp_path: Path) -> None:
    node = Node(tmp_path, {"max_gpus_per_user": 2}, gpus=8)
    held = node.as_("alice", "reserve", gpus=2, ttl_s=600)
    over = node.as_("alice", "reserve", gpus=1, ttl_s=600, wait=True)
    assert over["state"] == "queued" and over["pending_reason"] == "quota"
    assert over["quota"] == {"max_gpus_per_user": 2, "held": 2} and over["eta"] is None
    assert [b["id"] for b in over["blockers"]] == [held["id"]]
    # bob, behind alice's held request, is granted at once: a quota-held request earmarks nothing.
    assert node.as_("bob", "reserve", gpus=2, ttl_s=600)["state"] == "granted"
    # Without --wait the refusal says it is the cap (exit 3 on the client), and a request over the
    # cap itself is refused outright (exit 4).
    with pytest.raises(st.OpError) as now:
        node.as_("alice", "reserve", gpus=1, ttl_s=600)
    assert now.value.code == "insufficient" and "at most 2 GPUs per user" in str(now.value)
    with pytest.raises(st.OpError) as never:
        node.as_("alice", "reserve", gpus=3, ttl_s=600, wait=True)
    assert never.value.code == "permission"
    # When alice lets go, her held request is granted.
    node.as_("alice", "release", id=held["id"])
    assert node.as_("alice", "poll", id=over["id"])["state"] == "granted"


def test_the_longest_reservation_bounds_reserve_and_renew(tmp_path: Path) -> None:
    node = Node(tmp_path, {"max_reservation_s": 3600})
    with pytest.raises(st.OpError) as long:
        node.as_("alice", "reserve", gpus=1, ttl_s=7200)
    assert long.value.code == "permission" and "at most 1h" in str(long.value)
    lease = node.as_("alice", "reserve", gpus=1, ttl_s=1800)
    node.bt += 1000.0
    assert node.as_("alice", "renew", id=lease["id"], ttl_s=2600)["id"] == lease["id"]  # ends at 3600 s
    with pytest.raises(st.OpError) as past:
        node.as_("alice", "renew", id=lease["id"], ttl_s=2700)
    assert past.value.code == "permission"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to own and give away the file")
def test_a_policy_file_is_read_only_when_root_alone_can_write_it(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "policy.json"
    path.write_text(json.dumps({"max_gpus_per_user": 2, "fair_share_half_life_s": -1, "colour": "red"}))
    os.chmod(path, 0o644)
    monkeypatch.setenv("GPUCONSOLE_POLICY", str(path))
    policy, problems = node_policy.load()
    assert policy["max_gpus_per_user"] == 2 and policy["fair_share_half_life_s"] == 7 * DAY_S
    assert len(problems) == 2 and any("colour" in p for p in problems)
    os.chmod(path, 0o666)  # anyone may write it: it decides nothing
    policy, problems = node_policy.load()
    assert policy["max_gpus_per_user"] is None and problems
    os.chmod(path, 0o644)
    os.chown(path, 1, 1)  # a user's own file: it could lift the caps or name an admin group
    policy, problems = node_policy.load()
    assert policy["max_gpus_per_user"] is None and problems
    # The service agent never takes another file than /etc/gpuconsole/policy.json.
    assert node_policy.path(service=True) == node_policy.PATH


def test_planted_usage_records_are_quarantined_not_trusted(tmp_path: Path) -> None:
    node = Node(tmp_path)
    node.hold("bob", 1, 100.0)
    path = tmp_path / "state" / "state.json"
    raw = json.loads(path.read_text())
    raw.pop("checksum", None)
    raw["usage"]["mallory"] = {"gpu_s": -1e9, "at_wall": "now"}
    raw["fair_share_weight"] = "lots"
    from gpuconsole.node.store import checksum

    raw["checksum"] = checksum(raw)
    path.write_text(json.dumps(raw))
    state, warnings, _ = node.txn.read()
    assert "mallory" not in state.get("usage", {}) and "fair_share_weight" not in state
    assert any("usage/mallory" in w for w in warnings)
