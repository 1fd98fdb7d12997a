"""The history checker on hand-written histories: each rule fires on its violation and stays quiet
when an indeterminate operation could explain what was seen (no false positives)."""

from __future__ import annotations

from typing import Any

from tests.history.checker import Report, check
from tests.history.history import FAIL, INFO, OK, JobRun, Op

NODE = "node-01"


class History:
    """Builds ops with explicit times (seconds) for the checker."""

    def __init__(self) -> None:
        self.ops: list[Op] = []
        self.runs: list[JobRun] = []

    def op(self, f: str, args: dict[str, Any], start: float, end: float | None, outcome: str = OK,
           result: Any = None, exit_code: int | None = None, process: str = "cli-0") -> Op:
        if exit_code is None:
            exit_code = 0 if outcome == OK else 1
        op = Op(len(self.ops), process, f, args, start, start, end, end, outcome,
                "crash" if outcome == INFO else None, exit_code, result)
        self.ops.append(op)
        return op

    def reserve(self, lease_id: str, gpus: list[int], start: float, end: float, *, ttl_s: float = 10.0,
                token: int = 1, outcome: str = OK) -> Op:
        result = {"id": lease_id, "node": NODE, "gpus": gpus, "token": token} if outcome == OK else None
        return self.op("reserve", {"gpus": len(gpus), "ttl_s": ttl_s, "priority": "normal"}, start, end, outcome,
                       result, None if outcome == OK else 1)

    def release(self, lease_id: str, start: float, end: float | None, outcome: str = OK, exit_code: int = 0) -> Op:
        result = {"released": [{"id": lease_id, "node": NODE, "was": "active"}], "errors": []} \
            if outcome == OK else None
        return self.op("release", {"id": lease_id}, start, end, outcome, result, exit_code)

    def listing(self, start: float, end: float, leases: list[dict[str, Any]] | None = None,
                jobs: list[dict[str, Any]] | None = None) -> None:
        if leases is not None:
            self.op("reservations", {}, start, end, OK, {"reservations": leases, "queue": []}, 0, "observer")
            self.ops[-1].node = NODE
        if jobs is not None:
            self.op("jobs", {}, start, end, OK, {"jobs": jobs}, 0, "observer")
            self.ops[-1].node = NODE

    def check(self) -> Report:
        return check(self.ops, self.runs, [NODE])


def lease(lease_id: str, gpus: list[int], expires_in_s: float, token: int = 1,
          kind: str = "reservation") -> dict[str, Any]:
    return {"id": lease_id, "gpus": gpus, "token": token, "expires_in_s": expires_in_s, "kind": kind}


def rules(report: Report) -> dict[str, int]:
    return report.by_rule()


def test_two_acknowledged_holders_of_one_gpu_are_a_double_hold() -> None:
    h = History()
    h.reserve("r-aaaaaa", [0], 0.0, 1.0, token=1)
    h.reserve("r-bbbbbb", [0, 1], 2.0, 3.0, token=2)
    assert rules(h.check()) == {"double_hold": 1}


def test_release_before_the_next_grant_is_no_double_hold() -> None:
    h = History()
    h.reserve("r-aaaaaa", [0], 0.0, 1.0, token=1)
    h.release("r-aaaaaa", 1.5, 1.8)
    h.reserve("r-bbbbbb", [0], 2.0, 3.0, token=2)
    assert h.check().violations == []


def test_an_expired_lease_is_no_double_hold() -> None:
    h = History()
    h.reserve("r-aaaaaa", [0], 0.0, 1.0, ttl_s=2.0, token=1)
    h.reserve("r-bbbbbb", [0], 2.5, 3.0, token=2)
    assert h.check().violations == []


def test_an_indeterminate_release_is_not_a_false_positive() -> None:
    h = History()
    h.reserve("r-aaaaaa", [0], 0.0, 1.0, token=1)
    h.release("r-aaaaaa", 1.5, None, outcome=INFO)  # killed: it may have released
    h.reserve("r-bbbbbb", [0], 2.0, 3.0, token=2)
    h.listing(4.0, 4.1, [lease("r-bbbbbb", [0], 8.0, token=2)])
    assert h.check().violations == []


def test_a_failed_release_must_not_end_the_reservation() -> None:
    h = History()
    h.reserve("r-aaaaaa", [0], 0.0, 1.0, token=1)
    h.release("r-aaaaaa", 1.5, 1.6, outcome=FAIL, exit_code=5)
    h.reserve("r-bbbbbb", [0], 2.0, 3.0, token=2)
    report = h.check()
    assert rules(report) == {"double_hold": 1}
    h.listing(3.5, 3.6, [lease("r-bbbbbb", [0], 8.0, token=2)])
    assert rules(h.check()) == {"double_hold": 1, "failed_took_effect": 1}


def test_an_indeterminate_reserve_may_explain_a_lease_nobody_acknowledged() -> None:
    h = History()
    h.reserve("r-xxxxxx", [0], 0.0, 0.5, ttl_s=6.0, outcome=INFO)
    h.listing(1.0, 1.1, [lease("r-cccccc", [0], 5.2)])
    assert h.check().violations == []


def test_a_failed_reserve_that_took_effect_is_caught() -> None:
    h = History()
    h.reserve("r-xxxxxx", [0], 0.0, 0.5, ttl_s=6.0, outcome=FAIL)
    h.listing(1.0, 1.1, [lease("r-cccccc", [0], 5.2)])
    assert rules(h.check()) == {"failed_took_effect": 1}


def test_a_failed_reserve_undone_before_it_answered_is_fine() -> None:
    """`reserve --wait --timeout` withdraws a grant that came too late, then exits 3."""
    h = History()
    h.reserve("r-xxxxxx", [0], 0.0, 2.0, ttl_s=6.0, outcome=FAIL)
    h.listing(1.0, 1.1, [lease("r-cccccc", [0], 5.2)])
    h.listing(2.5, 2.6, [])
    assert h.check().violations == []


def test_a_lease_no_reserve_can_explain_is_a_phantom() -> None:
    h = History()
    h.reserve("r-xxxxxx", [0, 1], 0.0, 0.5, ttl_s=6.0, outcome=INFO)  # two GPUs: not this one
    h.listing(1.0, 1.1, [lease("r-cccccc", [0], 5.2)])
    assert rules(h.check()) == {"phantom": 1}


def test_an_acknowledged_reservation_missing_from_a_listing_is_a_lost_ack() -> None:
    h = History()
    h.reserve("r-aaaaaa", [0], 0.0, 1.0)
    h.listing(2.0, 2.1, [])
    assert rules(h.check()) == {"lost_ack": 1}


def test_a_token_that_goes_back_is_caught() -> None:
    h = History()
    h.reserve("r-aaaaaa", [0], 0.0, 1.0, ttl_s=1.0, token=5)
    h.reserve("r-bbbbbb", [1], 2.0, 3.0, token=4)
    assert rules(h.check()) == {"token": 1}


def test_overlapping_grants_may_carry_tokens_in_any_order() -> None:
    h = History()
    h.reserve("r-aaaaaa", [0], 0.0, 1.0, token=5)
    h.reserve("r-bbbbbb", [1], 0.5, 1.5, token=4)  # concurrent: either may have been first
    assert h.check().violations == []


def test_a_job_process_running_on_a_regranted_gpu_is_a_double_hold() -> None:
    h = History()
    h.op("submit", {"gpus": 1, "name": "cli-0-1", "priority": "normal"}, 0.0, 0.5, OK,
         {"id": "j-jjjjjj", "node": NODE})
    h.runs.append(JobRun("cli-0-1", "j-jjjjjj", NODE, (0,), 4242, 1.0, 9.0, False, [1.0, 9.0]))
    h.reserve("r-bbbbbb", [0], 4.0, 5.0, token=9)
    report = h.check()
    assert rules(report) == {"double_hold": 1}
    assert "process" in report.violations[0].message


def test_jobs_saying_running_on_a_granted_gpu_is_a_double_hold() -> None:
    h = History()
    running = {"id": "j-jjjjjj", "name": "x", "state": "running", "gpus": [2]}
    h.listing(1.0, 1.1, jobs=[running])
    h.reserve("r-bbbbbb", [2], 1.5, 2.0, token=9)
    h.listing(3.0, 3.1, [lease("r-bbbbbb", [2], 8.0, token=9)], jobs=[running])
    assert rules(h.check()) == {"double_hold": 1}


def test_a_failed_submit_whose_job_ran_is_caught() -> None:
    h = History()
    h.op("submit", {"gpus": 1, "name": "cli-0-7", "priority": "normal"}, 0.0, 0.5, FAIL, None, 1)
    h.runs.append(JobRun("cli-0-7", "j-kkkkkk", NODE, (0,), 4243, 1.0, 2.0, True, [1.0, 2.0]))
    assert rules(h.check()) == {"failed_took_effect": 1}


def test_a_failed_renew_that_extended_the_lease_is_caught() -> None:
    h = History()
    h.reserve("r-aaaaaa", [0], 0.0, 1.0, ttl_s=5.0)
    h.op("renew", {"id": "r-aaaaaa", "ttl_s": 30.0}, 2.0, 2.5, FAIL, None, 5)
    h.listing(3.0, 3.1, [lease("r-aaaaaa", [0], 28.0)])
    assert rules(h.check()) == {"failed_took_effect": 1}


def test_a_grant_nobody_was_told_about_may_vanish_without_a_release() -> None:
    """A failing `reserve --wait` withdraws the grant that came as it timed out: no double hold."""
    h = History()
    h.reserve("r-xxxxxx", [0], 0.0, 2.0, ttl_s=9.0, outcome=FAIL)
    h.listing(1.0, 1.1, [lease("r-cccccc", [0], 8.0)])
    h.listing(2.5, 2.6, [])
    h.reserve("r-bbbbbb", [0], 3.0, 3.5, token=2)
    assert h.check().violations == []


def test_a_renewed_lease_nobody_acknowledged_is_judged_by_its_first_expiry() -> None:
    h = History()
    h.reserve("r-xxxxxx", [0], 0.0, 0.5, ttl_s=6.0, outcome=INFO)
    h.listing(1.0, 1.1, [lease("r-cccccc", [0], 5.2)])
    h.op("renew", {"id": "r-cccccc", "ttl_s": 20.0}, 2.0, 2.2, OK, {"id": "r-cccccc", "node": NODE, "token": 1})
    h.listing(3.0, 3.1, [lease("r-cccccc", [0], 19.0)])
    assert h.check().violations == []


def test_not_found_for_a_certainly_live_reservation_is_caught() -> None:
    h = History()
    h.reserve("r-aaaaaa", [0], 0.0, 1.0, ttl_s=10.0)
    h.op("renew", {"id": "r-aaaaaa", "ttl_s": 5.0}, 2.0, 2.5, FAIL, None, 6)
    assert rules(h.check()) == {"false_not_found": 1}


def test_one_submit_that_made_two_jobs_is_caught() -> None:
    h = History()
    h.op("submit", {"gpus": 1, "name": "cli-0-3", "priority": "normal"}, 0.0, 0.5, INFO, None, -9)
    h.runs.append(JobRun("cli-0-3", "j-aaaaaa", NODE, (0,), 4244, 1.0, 2.0, True, [1.0, 2.0]))
    h.runs.append(JobRun("cli-0-3", "j-bbbbbb", NODE, (1,), 4245, 1.0, 2.0, True, [1.0, 2.0]))
    assert rules(h.check()) == {"duplicate": 1}
