"""Why a queued request waits and until when (node/pending.py): the reason, the requests ahead, the
grants it waits for, and an ETA that is exactly when strict in-order granting starts it if no lease
is renewed and nothing else arrives."""

from __future__ import annotations

from typing import Any

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
    """Replay the node: at every lease end, expire and dispatch; each request starts exactly at its
    ETA (no renewals, no new arrivals), and never before the requests ahead of it."""
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
    for q in queued:
        assert why[q["id"]]["eta_in_s"] == started[q["id"]], (q["id"], why, started)


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
