"""Onset / cooldown / resolve, restarts through the state file, and the --release-idle policy."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpuconsole.errors import UsageError
from gpuconsole.model.alerts import Alert
from gpuconsole.model.detect import Judgement
from gpuconsole.model.tracker import Tracker
from gpuconsole.watch.actions import ReleasePolicy
from gpuconsole.watch.statefile import StateFile, default_state_path

T0 = 1_800_000_000.0


def idle(rid: str = "r1", node: str = "n1", kind: str = "reservation") -> Alert:
    key = f"idle_reservation:{node}:{rid}"
    return Alert(kind="idle_reservation", node=node, message=f"{rid} idle", since="2027-01-15T08:00:00Z",
                 gpus=(0, 1), owner="alice", reservation=rid, key=key,
                 extra={"reservation_kind": kind})


def judged(*alerts: Alert, undecided_nodes: frozenset[str] = frozenset()) -> Judgement:
    return Judgement({a.key: a for a in alerts}, frozenset(), undecided_nodes)


def test_onset_once_then_repeat_after_cooldown_then_resolved() -> None:
    tracker = Tracker(cooldown_s=600)
    assert [a.kind for a in tracker.update(T0, judged(idle()))] == ["idle_reservation"]
    assert tracker.update(T0 + 599, judged(idle())) == []
    repeat = tracker.update(T0 + 600, judged(idle()))
    assert [a.extra.get("repeat") for a in repeat] == [1]
    (resolved,) = tracker.update(T0 + 700, judged())
    doc = resolved.to_json()
    assert (doc["kind"], doc["resolves"], doc["node"], doc["gpus"], doc["owner"], doc["reservation"], doc["since"]) == (
        "resolved", "idle_reservation", "n1", [0, 1], "alice", "r1", "2027-01-15T08:00:00Z")
    assert doc["resolved_at"] == "2027-01-15T08:11:40Z" and tracker.active == {}


def test_cooldown_zero_never_repeats() -> None:
    tracker = Tracker(cooldown_s=0)
    tracker.update(T0, judged(idle()))
    assert all(tracker.update(T0 + step, judged(idle())) == [] for step in (1, 1000, 100000))


def test_a_condition_on_an_undecided_node_is_held() -> None:
    tracker = Tracker(cooldown_s=600)
    tracker.update(T0, judged(idle()))
    assert tracker.update(T0 + 5, judged(undecided_nodes=frozenset({"n1"}))) == []
    assert "idle_reservation:n1:r1" in tracker.active


def test_restart_from_the_state_file_does_not_realert_within_cooldown(tmp_path: Path) -> None:
    state = StateFile(tmp_path / "w.json")
    first = Tracker(cooldown_s=600)
    first.update(T0, judged(idle("r1"), idle("r2")))
    state.save({"alerts": first.to_json()})
    data, problem = StateFile(tmp_path / "w.json").load()
    assert problem is None and data["version"] == 1
    second = Tracker(cooldown_s=600)
    assert second.load_json(data["alerts"]) == []
    sent = second.update(T0 + 30, judged(idle("r1")))  # r1 still idle, r2 ended while we were away
    assert [(a.kind, a.reservation) for a in sent] == [("resolved", "r2")]
    assert [a.extra["repeat"] for a in second.update(T0 + 600, judged(idle("r1")))] == [1]


def test_state_file_is_replaced_atomically_and_a_corrupt_one_is_set_aside(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "w.json"
    state = StateFile(path)
    state.lock()
    state.save({"alerts": {}})
    assert sorted(p.name for p in path.parent.iterdir()) == ["w.json", "w.json.lock"]  # no temp file left
    path.write_text("{not json")
    data, problem = state.load()
    assert data == {} and problem is not None and "corrupt" in problem
    assert (path.parent / "w.json.corrupt").read_text() == "{not json"


def test_a_second_watcher_on_the_same_state_file_is_refused(tmp_path: Path) -> None:
    first = StateFile(tmp_path / "w.json")
    first.lock()
    with pytest.raises(UsageError, match="another watcher"):
        StateFile(tmp_path / "w.json").lock()
    first.unlock()
    StateFile(tmp_path / "w.json").lock()


def test_default_state_path_is_per_config_under_xdg_state_home(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    one, two = default_state_path(tmp_path / "a.toml"), default_state_path(tmp_path / "b.toml")
    assert one.parent == tmp_path / "gpuconsole" and one != two and one.name.startswith("watch-")


def test_release_policy_announces_at_onset_and_releases_after_grace_if_still_idle() -> None:
    policy, tracker = ReleasePolicy(grace_s=900), Tracker(cooldown_s=3600)
    sent = tracker.update(T0, judged(idle()))
    out, due = policy.plan(T0, judged(idle()), set(tracker.active), sent)
    assert due == [] and len(out) == 1
    assert out[0].extra["action"] == "will_release" and out[0].extra["release_at"] == "2027-01-15T08:15:00Z"
    assert "will release it at 2027-01-15T08:15:00Z" in out[0].message
    assert policy.plan(T0 + 899, judged(idle()), set(tracker.active), []) == ([], [])
    out, due = policy.plan(T0 + 900, judged(idle()), set(tracker.active), [])
    assert out == [] and [(key, p.reservation, p.node) for key, p in due] == [("idle_reservation:n1:r1", "r1", "n1")]


def test_release_policy_work_cancels_the_countdown_and_refusals_are_not_retried() -> None:
    policy, tracker = ReleasePolicy(grace_s=60), Tracker(cooldown_s=3600)
    policy.plan(T0, judged(idle()), set(tracker.active) | {"idle_reservation:n1:r1"}, [])
    tracker.update(T0 + 30, judged())  # work started: nothing raised any more
    assert policy.plan(T0 + 30, judged(), set(), []) == ([], []) and policy.pending == {}
    raised = {"idle_reservation:n1:r1"}
    policy.plan(T0 + 40, judged(idle()), raised, [])
    (key, _), = policy.plan(T0 + 100, judged(idle()), raised, [])[1]
    policy.refuse(key, "n1: permission denied")
    assert all(policy.plan(T0 + t, judged(idle()), raised, []) == ([], []) for t in (101, 500, 5000))


def test_release_policy_never_releases_a_jobs_lease_and_warns_separately_after_a_restart() -> None:
    policy = ReleasePolicy(grace_s=60)
    job = idle("j1", kind="job")
    assert policy.plan(T0, judged(job), {job.key}, []) == ([], [])
    assert policy.plan(T0 + 1000, judged(job), {job.key}, []) == ([], [])
    # Raised earlier (e.g. before --release-idle was turned on): a separate warning goes out first.
    out, due = policy.plan(T0, judged(idle()), {idle().key}, [])
    assert due == [] and [a.extra["action"] for a in out] == ["will_release"]
    again = ReleasePolicy(grace_s=60)
    again.load_json(policy.to_json())
    assert [p.reservation for _, p in again.plan(T0 + 60, judged(idle()), {idle().key}, [])[1]] == ["r1"]
