"""Queue fairness on the pure transitions, with explicit time: no request starves."""

from __future__ import annotations

from typing import Any

from gpuconsole.node import reservations as rs
from gpuconsole.node import state as st

GPUS = 4


def _ctx(now_bt: float, uid: int = 1) -> st.Ctx:
    return st.Ctx(uid, f"u{uid}", now_bt, 1.7e9 + now_bt, GPUS, alive=lambda ident: True)


def test_stream_of_small_high_priority_requests_cannot_starve_a_large_one() -> None:
    """A 4-GPU normal request waits behind 1-GPU high ones arriving every second; aging bounds its wait."""
    state: dict[str, Any] = st.new_state("boot")
    first = rs.reserve(state, _ctx(0.0), {"gpus": 1, "ttl_s": 60, "priority": "high"})
    big = rs.reserve(state, _ctx(0.0, uid=2), {"gpus": GPUS, "ttl_s": 60, "priority": "normal", "wait": True})
    assert big["state"] == "queued"
    now, granted_at = 0.0, None
    holders: list[tuple[float, str]] = [(3.0, first["id"])]
    while now < 3 * st.AGING_S_PER_LEVEL:
        now += 1.0
        ctx = _ctx(now)
        for until, lease_id in [h for h in holders if h[0] <= now]:
            rs.release(state, ctx, {"id": lease_id})
            holders.remove((until, lease_id))
        st.gc(state, ctx)
        st.dispatch(state, ctx)
        if big["id"] in state["leases"]:
            granted_at = now
            break
        try:  # a new small high-priority request each second, holding its GPU for 3 s
            grant = rs.reserve(state, ctx, {"gpus": 1, "ttl_s": 60, "priority": "high"})
            holders.append((now + 3.0, grant["id"]))
        except st.OpError as exc:  # refused once the aged large request heads the queue
            if exc.code != "insufficient":
                raise
    assert granted_at is not None, "the large request starved"
    # Bounded: one priority level of aging, plus draining the holders already running.
    assert granted_at <= st.AGING_S_PER_LEVEL + 5.0
    assert granted_at > 60  # and it really had to wait for aging, not just luck


def test_equal_priority_is_fifo_and_a_blocked_head_is_not_overtaken() -> None:
    state: dict[str, Any] = st.new_state("boot")
    hold = rs.reserve(state, _ctx(0.0), {"gpus": 3, "ttl_s": 60})
    head = rs.reserve(state, _ctx(1.0), {"gpus": 2, "ttl_s": 60, "wait": True})
    small = rs.reserve(state, _ctx(2.0), {"gpus": 1, "ttl_s": 60, "wait": True})
    assert head["state"] == small["state"] == "queued"  # 1 GPU is free but earmarked for the head
    rs.release(state, _ctx(3.0), {"id": hold["id"]})
    assert head["id"] in state["leases"] and small["id"] in state["leases"]
    assert [t["id"] for t in st.queue_order(state, 3.0)] == []
