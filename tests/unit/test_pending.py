"""Why a queued request waits and until when (node/pending.py): the reason, the requests ahead, the
grants it waits for, and an ETA that is exactly when strict in-order granting starts it if no lease
is renewed and nothing else arrives."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from gpuconsole.model.pending import Pending
from gpuconsole.node import pending
from gpuconsole.node import reservations as rs
from gpuconsole.node import state as st

NOW_BT = 1000.0
NOW_WALL = 1_700_000_000.0


def _ctx(user: str, uid: int, at_bt: float = NOW_BT, gpus: int = 4) -> st.Ctx:
    return st.Ctx(uid, user, at_bt, NOW_WALL + (at_bt - NOW_BT), gpus, agent={"pid": uid}, alive=lambda _i: True)


def _reserve(state: Any, user: str, uid: int, n: int, ttl_s: float, *, wait: bool = False,
             priority: str = "normal", at_bt: float = NOW_BT) -> dict[str, Any]:
    result: dict[str, Any] = rs.reserve(state, _ctx(user, uid, at_bt),
                                        {"gpus": n, "ttl_s": ttl_s, "wait": wait, "priority": priority})
    return result


def test_the_head_names_the_grant_it_waits_for_and_starts_when_it_ends() -> None:
    state = st.new_state("boot")
    alice = _reserve(state, "alice", 1001, 4, 600)
    bob = _reserve(state, "bob", 1002, 4, 3600, wait=True)
    carol = _reserve(state, "carol", 1003, 2, 60, wait=True, priority="low")
    why = pending.explain(state, _ctx("x", 1))
    head = why[bob["id"]]
    assert head["pending_reason"] == "resources" and head["ahead"] == []
    assert [(b["id"], b["owner"], b["gpus"], b["ends_in_s"]) for b in head["blockers"]] == \
        [(alice["id"], "alice", [0, 1, 2, 3], 600.0)]
    assert head["eta_in_s"] == 600.0 and head["eta"] == st.iso_utc(NOW_WALL + 600)
    # Behind bob: bob's whole lease comes first (strict order), so carol starts when it ends.
    behind = why[carol["id"]]
    assert behind["pending_reason"] == "priority"
    assert [(a["id"], a["owner"], a["gpus_requested"], a["priority"]) for a in behind["ahead"]] == \
        [(bob["id"], "bob", 4, "normal")]
    assert behind["eta_in_s"] == 600.0 + 3600.0
    # What the CLI prints of it.
    text = Pending.of(behind).describe(2, NOW_WALL)  # type: ignore[union-attr]
    assert text.startswith(f"behind 1 request: bob's {bob['id']} (4 GPUs, normal); GPUs 0-3 held by alice ")
    assert text.endswith("starts by 23:23 UTC (in 1h10m)")


def test_a_running_job_has_no_promised_end_so_the_eta_is_unknown() -> None:
    state = st.new_state("boot")
    job_lease = _reserve(state, "alice", 1001, 2, 60)
    state["leases"][job_lease["id"]]["job"] = True  # a job's lease: renewed while the job runs
    _reserve(state, "bob", 1002, 1, 60)
    waiting = _reserve(state, "carol", 1003, 3, 60, wait=True)
    why = pending.explain(state, _ctx("x", 1))[waiting["id"]]
    assert why["eta"] is None and why["eta_in_s"] is None
    assert {b["id"] for b in why["blockers"]} == set(state["leases"])  # the job's and bob's
    assert next(b for b in why["blockers"] if b["id"] == job_lease["id"])["ends_at"] is None
    text = Pending.of(why).describe(1, NOW_WALL)  # type: ignore[union-attr]
    assert "held by alice" in text and "with the job" in text and text.endswith("start time unknown "
                                                                                "(it waits on a running job)")


LEASES = hs.lists(hs.tuples(hs.integers(1, 4), hs.integers(1, 3000)), max_size=4)
TICKETS = hs.lists(hs.tuples(hs.integers(1, 4), hs.integers(1, 3000), hs.sampled_from(["low", "normal", "high"])),
                   min_size=1, max_size=6)


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(leases=LEASES, tickets=TICKETS)
def test_the_eta_is_when_granting_in_order_starts_it(leases: list[tuple[int, int]],
                                                      tickets: list[tuple[int, int, str]]) -> None:
    """Replay the node: at every lease end, expire and dispatch. The head starts exactly at its ETA (no
    renewals, no new arrivals: backfill never delays it); every other request no later than its ETA
    (backfill may start it sooner)."""
    state = st.new_state("boot")
    for i, (n, ttl_s) in enumerate(leases):
        try:
            _reserve(state, f"u{i}", 2000 + i, n, ttl_s)
        except st.OpError:
            pass  # the node was full
    queued = [_reserve(state, f"w{i}", 3000 + i, n, ttl_s, wait=True, priority=prio)
              for i, (n, ttl_s, prio) in enumerate(tickets)]
    queued = [q for q in queued if q["state"] == "queued"]
    why = pending.explain(state, _ctx("x", 1))
    state_at_start = json.loads(json.dumps(state))
    started: dict[str, float] = {}
    now = NOW_BT
    for _ in range(100):
        ctx = _ctx("x", 1, now)
        st.gc(state, ctx)
        for ticket_id in st.dispatch(state, ctx):
            started[ticket_id] = now - NOW_BT
        ends = [lease["exp_bt"] for lease in state["leases"].values() if lease["exp_bt"] > now]
        if not state["queue"] or not ends:
            break
        now = min(ends)
    head = st.queue_order(state_at_start, NOW_BT)[0]["id"] if state_at_start["queue"] else None
    for q in queued:
        if q["id"] == head:
            assert why[q["id"]]["eta_in_s"] == started[q["id"]], (q["id"], why, started)
        else:
            assert started[q["id"]] <= why[q["id"]]["eta_in_s"], (q["id"], why, started)


def test_a_declared_runtime_bounds_a_jobs_grant_and_so_the_eta() -> None:
    """`submit --time`: a running job's grant ends by its limit plus its kill grace, and a queued job
    ahead holds its GPUs that long in the replay."""
    from gpuconsole.node import jobs

    state = st.new_state("boot")
    ctx = _ctx("alice", 1001)
    running = jobs.submit(state, ctx, {"gpus": 4, "supervisor": {"pid": 1001}, "time_limit_s": 600, "grace_s": 30})
    assert state["leases"][running["id"]]["ends_by_bt"] == NOW_BT + 630
    queued = jobs.submit(state, _ctx("bob", 1002), {"gpus": 4, "supervisor": {"pid": 1002},
                                                    "time_limit_s": 60, "grace_s": 5})
    waiting = _reserve(state, "carol", 1003, 4, 60, wait=True, priority="low")
    why = pending.explain(state, _ctx("x", 1))
    assert why[queued["id"]]["eta_in_s"] == 630.0
    assert [b["ends_in_s"] for b in why[queued["id"]]["blockers"]] == [630.0]
    assert why[waiting["id"]]["eta_in_s"] == 630.0 + 65.0


def test_backfill_runs_a_short_request_in_the_gap_and_never_delays_the_head() -> None:
    """EASY backfill, as a timeline on a 4-GPU node: alice holds 2 GPUs until t=600, bob 2 until
    t=300; the head wants all 4 (latest start 600). Behind it: a 60 s job (`--time`) and a 100 s
    reservation fit the gap after t=300 and run in it; a 1,000 s reservation and a job without
    `--time` do not (they would delay the head); the head starts at 600, as without backfill; a
    backfilled reservation cannot be renewed past the head's start while the head waits."""
    from gpuconsole.node import jobs

    state = st.new_state("boot")
    _reserve(state, "alice", 1001, 2, 600)
    _reserve(state, "bob", 1002, 2, 300)
    head = _reserve(state, "hank", 1003, 4, 3600, wait=True, priority="high")
    short_job = jobs.submit(state, _ctx("jo", 1004), {"gpus": 1, "supervisor": {"pid": 1004}, "time_limit_s": 55,
                                                      "grace_s": 5})
    short_res = _reserve(state, "rita", 1005, 1, 100, wait=True)
    long_res = _reserve(state, "lou", 1006, 1, 1000, wait=True)
    open_job = jobs.submit(state, _ctx("ned", 1007), {"gpus": 1, "supervisor": {"pid": 1007}})
    assert pending.explain(state, _ctx("x", 1))[head["id"]]["eta_in_s"] == 600.0
    started: dict[str, float] = {}
    for t in (0.0, 300.0, 360.0, 400.0, 600.0):
        ctx = _ctx("x", 1, NOW_BT + t)
        st.gc(state, ctx)
        for ticket_id in st.dispatch(state, ctx):
            started[ticket_id] = t
        if t == 300.0:  # backfilled at once: both end (t=360, t=400) before the head's start
            lease = state["leases"][short_res["id"]]
            assert (lease["backfill_for"], lease["backfill_until_bt"]) == (head["id"], NOW_BT + 600)
            assert state["leases"][short_job["id"]]["ends_by_bt"] == NOW_BT + 360
            with pytest.raises(st.OpError, match=head["id"]) as refused:  # past the head's start: no
                rs.renew(state, _ctx("rita", 1005, NOW_BT + t), {"id": short_res["id"], "ttl_s": 400})
            assert refused.value.code == "invalid"
            state["leases"][short_job["id"]]["exp_bt"] = NOW_BT + 360  # the job ends at its limit
    assert started == {short_job["id"]: 300.0, short_res["id"]: 300.0, head["id"]: 600.0}
    assert long_res["id"] in state["queue"] and open_job["id"] in state["queue"]


def test_a_snapshot_explains_only_the_first_queued_requests(tmp_path: Any) -> None:
    """The console's telemetry carries the reasons of a node's first 20 queued requests, not of a
    deep queue's every one (which would grow each snapshot by hundreds of KB)."""
    import io

    from gpuconsole.node.agent import Agent
    from gpuconsole.node.telemetry import SNAPSHOT_PENDING_MAX

    agent = Agent(io.BytesIO())
    agent.op_hello({"state_dir": str(tmp_path / "s"), "simulate_gpus": 2, "node": "snap"})
    agent.transaction("reserve", {"gpus": 2, "ttl_s": 600})
    for _ in range(SNAPSHOT_PENDING_MAX + 5):
        agent.transaction("reserve", {"gpus": 1, "ttl_s": 60, "wait": True})
    queue = agent.snapshot(rates=False)["queue"]
    assert len(queue) == SNAPSHOT_PENDING_MAX + 5
    assert [("pending_reason" in q) for q in queue] == [True] * SNAPSHOT_PENDING_MAX + [False] * 5
    # two 1-GPU requests start together when the 2-GPU lease ends (the real clock moved meanwhile)
    assert 590 < queue[0]["eta_in_s"] <= 600 and queue[1]["eta_in_s"] == queue[0]["eta_in_s"]
