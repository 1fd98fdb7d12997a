"""`usage` figures (core/usage.py) from a scripted day of ledger records equal the hand-computed ones:
GPU-hours held (released, expired after a renew, still held, a job), job GPU-hours by outcome, the
queue wait, a grant across midnight split by day, and the window clipping what started before it."""

from __future__ import annotations

from typing import Any

import pytest

from gpuconsole.core.usage import usage
from gpuconsole.format import epoch_s
from gpuconsole.model.cloud import Instance

DAY = "2026-11-23"


def _t(clock: str, day: str = DAY) -> str:
    return f"{day}T{clock}:00Z"


def _s(clock: str, day: str = DAY) -> float:
    value = epoch_s(_t(clock, day))
    assert value is not None
    return value


def _rec(event: str, rid: str, owner: str, at: str, **more: Any) -> dict[str, Any]:
    return {"event": event, "id": rid, "owner": owner, "at": at, **more}


LEDGERS = {
    "node-01": [
        _rec("grant", "r-a", "alice", _t("09:00"), gpus=[0, 1], expires_at=_t("13:00")),
        _rec("grant", "r-b", "bob", _t("10:00"), gpus=[2], expires_at=_t("12:00")),
        _rec("end", "r-a", "alice", _t("11:00"), gpus=[0, 1], reason="released", ended_at=_t("11:00")),
        _rec("renew", "r-b", "bob", _t("11:30"), gpus=[2], expires_at=_t("14:00")),
        _rec("grant", "r-c", "carol", _t("12:30"), gpus=[4, 5, 6, 7], expires_at=_t("16:00"), queued_at=_t("12:00")),
        _rec("grant", "j-d", "dave", _t("13:00"), gpus=[3], kind="job", expires_at=_t("13:01")),
        _rec("job_start", "j-d", "dave", _t("13:00"), gpus=[3]),
        # noticed at 14:10, ended at its expiry 14:00
        _rec("end", "r-b", "bob", _t("14:10"), gpus=[2], reason="expired", ended_at=_t("14:00")),
        _rec("job_end", "j-d", "dave", _t("14:30"), state="succeeded", exit_code=0),
        _rec("end", "j-d", "dave", _t("14:30"), gpus=[3], reason="job", ended_at=_t("14:30")),
    ],
    "node-02": [
        _rec("grant", "r-e", "erin", _t("23:00"), gpus=[0], expires_at=_t("03:00", "2026-11-24")),
        _rec("end", "r-e", "erin", _t("01:00", "2026-11-24"), gpus=[0], reason="released",
             ended_at=_t("01:00", "2026-11-24")),
    ],
}
UNTIL = _s("15:00", "2026-11-24")


def _by(by: str, since: float = _s("00:00")) -> dict[str, dict[str, Any]]:
    return {row.key: row.to_json() for row in usage(LEDGERS, since, UNTIL, by)}


def test_gpu_hours_by_user_match_the_hand_computed_day() -> None:
    rows = _by("user")
    expected = {"alice": 2 * 2.0, "bob": 1 * 4.0, "carol": 4 * 3.5, "dave": 1 * 1.5, "erin": 1 * 2.0}
    assert {k: v["gpu_hours_held"] for k, v in rows.items()} == pytest.approx(expected, rel=0.01)
    assert rows["dave"]["job_gpu_hours"] == pytest.approx({"succeeded": 1.5}, rel=0.01)
    assert rows["carol"]["queue_wait_s"] == {"n": 1, "p50": 1800.0, "p95": 1800.0}


def test_by_node_and_by_day_and_the_window() -> None:
    assert {k: v["gpu_hours_held"] for k, v in _by("node").items()} == pytest.approx(
        {"node-01": 4.0 + 4.0 + 14.0 + 1.5, "node-02": 2.0}, rel=0.01)
    days = _by("day")
    assert days["2026-11-23"]["gpu_hours_held"] == pytest.approx(4.0 + 4.0 + 14.0 + 1.5 + 1.0, rel=0.01)
    assert days["2026-11-24"]["gpu_hours_held"] == pytest.approx(1.0, rel=0.01)
    # From 10:00 on: alice's first hour falls outside the window.
    assert _by("user", _s("10:00"))["alice"]["gpu_hours_held"] == pytest.approx(2.0, rel=0.01)


def test_idle_unreserved_and_cloud_hours_match_the_hand_computed_day() -> None:
    """The same day with the watcher's idle stretches (one closed by the watcher's word, one by the
    grant's end, one still open), unreserved use shared by two users, and two cloud instances (one
    ended, one running) at their list price."""
    ledgers = {"node-03": [
        _rec("grant", "r-f", "frank", _t("08:00"), gpus=[0, 1], expires_at=_t("20:00")),
        _rec("idle_start", "r-f", "frank", _t("09:10"), gpus=[0, 1], idle_since=_t("09:00")),
        _rec("idle_end", "r-f", "frank", _t("10:30"), gpus=[0, 1]),
        _rec("idle_start", "r-f", "frank", _t("11:05"), gpus=[0, 1], idle_since=_t("11:00")),
        _rec("end", "r-f", "frank", _t("12:00"), gpus=[0, 1], reason="idle_release", ended_at=_t("12:00")),
        _rec("grant", "r-g", "gina", _t("13:00"), gpus=[2], expires_at=_t("20:00")),
        _rec("idle_start", "r-g", "gina", _t("13:40"), gpus=[2], idle_since=_t("13:30")),
        {"event": "unreserved_start", "gpu": 5, "gpus": [5], "users": ["hank", "ivan"], "owner": "hank,ivan",
         "at": _t("10:00")},
        {"event": "unreserved_end", "gpu": 5, "gpus": [5], "users": ["hank", "ivan"], "owner": "hank,ivan",
         "at": _t("12:00")},
        {"event": "unreserved_start", "gpu": 6, "gpus": [6], "users": ["hank"], "owner": "hank", "at": _t("14:00")},
    ]}
    instances = [
        Instance("i-1", "g6.xlarge", "terminated", False, 1, 0.80, _s("09:00"), True, owner="frank",
                 ended_at_s=_s("11:30")),
        Instance("i-2", "p4d.24xlarge", "running", False, 8, 32.77, _s("14:30"), True, owner="gina"),
    ]
    until = _s("15:00")
    rows = {r.key: r.to_json() for r in usage(ledgers, _s("00:00"), until, "user", instances)}
    assert rows["frank"]["gpu_hours_held"] == pytest.approx(2 * 4.0, rel=0.01)
    assert rows["frank"]["gpu_hours_idle"] == pytest.approx(2 * 1.5 + 2 * 1.0, rel=0.01)
    assert rows["gina"]["gpu_hours_idle"] == pytest.approx(1 * 1.5, rel=0.01)  # still idle at 15:00
    assert rows["hank"]["gpu_hours_unreserved"] == pytest.approx(1.0 + 1.0, rel=0.01)  # half of 2 h, then 1 h
    assert rows["ivan"]["gpu_hours_unreserved"] == pytest.approx(1.0, rel=0.01)
    assert rows["frank"]["cloud_hours"] == pytest.approx(2.5, rel=0.01)
    assert rows["frank"]["cloud_usd"] == pytest.approx(2.5 * 0.80, rel=0.01)
    assert rows["gina"]["cloud_usd"] == pytest.approx(0.5 * 32.77, rel=0.01)
    by_day = {r.key: r.to_json() for r in usage(ledgers, _s("00:00"), until, "day", instances)}
    assert by_day[DAY]["cloud_usd"] == pytest.approx(2.0 + 0.5 * 32.77, rel=0.01)
