"""The watcher's detector: the windowed idle rule, unreserved use, node_down, persistence, scale."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from gpuconsole.model.detect import Detector
from gpuconsole.model.telemetry import GpuSample
from gpuconsole.model.tracker import Tracker
from tests.unit.watch_fixtures import gpu, snap

T0 = 1_800_000_000.0


def detector(**kw: float) -> Detector:
    return Detector(**{"idle_s": 60.0, "util_below_pct": 5.0, "max_gap_s": 30.0, "node_down_after_s": 10.0, **kw})


Samples = list[tuple[float, list[GpuSample]]]


def feed(det: Detector, samples: Samples, node: str = "n1") -> None:
    """(seconds after T0, GPU samples) of one node."""
    for at_s, gpus in samples:
        det.observe(snap(node, *gpus), T0 + at_s)


def every_10s(start_s: int, until_s: int, **g: Any) -> Samples:
    """GPU 0 reserved as r1, sampled every 10 s from `start_s` to `until_s` inclusive."""
    return [(float(t), [gpu(0, res="r1", **g)]) for t in range(start_s, until_s + 1, 10)]


def test_idle_needs_a_full_window_then_names_owner_node_gpus_and_reservation() -> None:
    det = detector()
    feed(det, every_10s(0, 50))
    early = det.judge(T0 + 50)
    assert early.conditions == {} and "idle_reservation:n1:r1" in early.undecided_keys
    feed(det, [(60.0, [gpu(0, res="r1")])])
    alert = det.judge(T0 + 60).conditions["idle_reservation:n1:r1"]
    assert (alert.kind, alert.node, alert.gpus, alert.owner, alert.reservation) == (
        "idle_reservation", "n1", (0,), "alice", "r1")
    assert alert.since == "2027-01-15T08:00:00Z" and alert.to_json()["key"] == alert.key


def test_utilization_at_threshold_restarts_the_window() -> None:
    det = detector()
    feed(det, [*every_10s(0, 50), (60.0, [gpu(0, res="r1", util=5.0)]), *every_10s(70, 110)])
    assert det.judge(T0 + 110).conditions == {}  # quiet only since t=70
    assert "idle_reservation:n1:r1" not in det.judge(T0 + 110).undecided_keys  # activity seen: decided
    feed(det, [(130.0, [gpu(0, res="r1")])])
    assert "idle_reservation:n1:r1" in det.judge(T0 + 130).conditions


def test_growing_memory_is_work_loading_data_not_idle() -> None:
    """0% utilization while memory climbs (a job loading its data): not idle until memory settles."""
    det = detector()
    feed(det, [(float(t), [gpu(0, res="r1", mem=1000 + t * 100, procs=((7, "alice"),))])
               for t in range(0, 61, 10)])
    assert det.judge(T0 + 60).conditions == {}
    feed(det, every_10s(70, 110, mem=7000, procs=((7, "alice"),)))
    assert det.judge(T0 + 110).conditions == {}  # memory last moved at t=60
    feed(det, every_10s(120, 120, mem=7000, procs=((7, "alice"),)))
    assert det.judge(T0 + 120).conditions["idle_reservation:n1:r1"].since == "2027-01-15T08:01:00Z"


def test_memory_held_but_constant_is_idle() -> None:
    """A notebook keeping 20 GB of tensors and doing nothing is exactly what the watcher is for."""
    det = detector()
    feed(det, every_10s(0, 60, mem=20000, procs=((7, "alice"),)))
    assert "idle_reservation:n1:r1" in det.judge(T0 + 60).conditions


def test_rising_power_is_work() -> None:
    det = detector()
    feed(det, [(float(t), [gpu(0, res="r1", power=70.0 + (40.0 if t == 30 else 0.0))])
               for t in range(0, 61, 10)])
    assert det.judge(T0 + 60).conditions == {}


def test_a_new_process_restarts_the_window() -> None:
    det = detector()
    feed(det, [*every_10s(0, 40), *every_10s(50, 60, procs=((9, "alice"),))])
    assert det.judge(T0 + 60).conditions == {}


def test_unknown_utilization_is_never_idle() -> None:
    det = detector()
    feed(det, every_10s(0, 120, util=None))
    assert det.judge(T0 + 120).conditions == {}


def test_a_reservation_is_idle_only_when_every_gpu_is() -> None:
    det = detector()
    feed(det, [(float(t), [gpu(0, res="r1"), gpu(1, res="r1", util=90.0)]) for t in range(0, 61, 10)])
    assert det.judge(T0 + 60).conditions == {}
    feed(det, [(float(t), [gpu(0, res="r1"), gpu(1, res="r1")]) for t in range(70, 131, 10)])
    alert = det.judge(T0 + 130).conditions["idle_reservation:n1:r1"]
    assert alert.gpus == (0, 1) and alert.since == "2027-01-15T08:01:10Z"  # when the busy GPU went quiet


def test_a_gap_restarts_the_window_and_leaves_a_raised_alert_undecided() -> None:
    det, tracker = detector(), Tracker(cooldown_s=3600)
    feed(det, every_10s(0, 60))
    assert [a.kind for a in tracker.update(T0 + 60, det.judge(T0 + 60))] == ["idle_reservation"]
    feed(det, [(200.0, [gpu(0, res="r1")])])  # 140 s without samples (> max_gap_s)
    judgement = det.judge(T0 + 200)
    assert judgement.conditions == {} and tracker.update(T0 + 200, judgement) == []  # neither resolved…
    feed(det, [(260.0, [gpu(0, res="r1")])])
    assert tracker.update(T0 + 260, det.judge(T0 + 260)) == []  # …nor raised again


def test_unreserved_use_groups_processes_by_user_with_pids() -> None:
    det = detector()
    det.observe(snap("n1", gpu(0, procs=((11, "bob"), (12, "bob"))), gpu(1, procs=((13, "bob"),)),
                     gpu(2, res="r1", procs=((14, "carol"),)), gpu(3, procs=((15, "dave"),))), T0)
    conditions = det.judge(T0).conditions
    bob = conditions["unreserved_use:n1:bob"]
    assert (bob.gpus, bob.owner, bob.reservation, bob.extra["pids"]) == ((0, 1), "bob", None, [11, 12, 13])
    assert "unreserved_use:n1:dave" in conditions and "unreserved_use:n1:carol" not in conditions


def test_node_down_after_the_threshold_once_per_node_and_final_at_once() -> None:
    det, tracker = detector(), Tracker(cooldown_s=3600)
    det.expected_nodes = {"n1", "n2", "n3"}
    for node in ("n1", "n2", "n3"):
        det.observe(snap(node, gpu(0)), T0)
    det.node_failed("n2", "n2: connection refused", False, T0 + 1)
    det.node_failed("n3", "n3: host key not trusted", True, T0 + 1)
    assert [a.key for a in tracker.update(T0 + 2, det.judge(T0 + 2))] == ["node_down:n3"]  # a blip is not down
    sent = []
    for step in range(3, 40):  # the poller keeps failing and retrying
        det.node_failed("n2", "n2: connection refused", False, T0 + step)
        sent += tracker.update(T0 + step, det.judge(T0 + step))
    assert [a.key for a in sent] == ["node_down:n2"] and sent[0].since == "2027-01-15T08:00:01Z"
    det.observe(snap("n2", gpu(0)), T0 + 40)
    back = tracker.update(T0 + 40, det.judge(T0 + 40))
    assert [(a.kind, a.resolves, a.node) for a in back] == [("resolved", "node_down", "n2")]


def test_a_down_nodes_other_alerts_are_kept_not_resolved() -> None:
    det, tracker = detector(), Tracker(cooldown_s=3600)
    feed(det, every_10s(0, 60))
    tracker.update(T0 + 60, det.judge(T0 + 60))
    det.node_failed("n1", "n1: connection lost", False, T0 + 61)
    sent = tracker.update(T0 + 80, det.judge(T0 + 80))
    assert [a.kind for a in sent] == ["node_down"]
    assert "idle_reservation:n1:r1" in tracker.active


def test_windows_survive_a_round_trip_through_json() -> None:
    det = detector()
    feed(det, every_10s(0, 40))
    det.observe(snap("n2", gpu(0, procs=((5, "bob"),))), T0 + 40)
    again = detector()
    again.load_json(det.to_json())
    feed(again, [(50.0, [gpu(0, res="r1")]), (60.0, [gpu(0, res="r1")])])
    again.observe(snap("n2", gpu(0, procs=((5, "bob"),))), T0 + 60)
    conditions = again.judge(T0 + 60).conditions
    assert "idle_reservation:n1:r1" in conditions
    assert conditions["unreserved_use:n2:bob"].since == "2027-01-15T08:00:40Z"


def test_hundreds_of_nodes_judge_fast_and_a_dead_node_is_one_alert() -> None:
    """500 nodes × 8 GPUs: folding a round and judging stay well under a poll interval."""
    det, tracker = detector(idle_s=20.0, node_down_after_s=5.0), Tracker(cooldown_s=3600)
    names = [f"node-{i:03d}" for i in range(500)]
    det.expected_nodes = set(names)
    started = time.perf_counter()
    for step in range(0, 31, 10):
        for i, name in enumerate(names):
            if name == "node-042" and step > 0:
                det.node_failed(name, f"{name}: connection refused", False, T0 + step)
                continue
            det.observe(snap(name, *(gpu(g, res=f"r{i}" if g == 0 else None) for g in range(8))), T0 + step)
        sent = tracker.update(T0 + step, det.judge(T0 + step))
    per_round_s = (time.perf_counter() - started) / 4
    assert per_round_s < 0.5, per_round_s
    kinds = [a.kind for a in tracker.update(T0 + 31, det.judge(T0 + 31))] + [a.kind for a in sent]
    assert sum(1 for k in kinds if k == "node_down") <= 1
    down = [t.alert for t in tracker.active.values() if t.alert.kind == "node_down"]
    assert [a.node for a in down] == ["node-042"]
    assert sum(1 for t in tracker.active.values() if t.alert.kind == "idle_reservation") == 499


def test_a_node_whose_reservations_are_unreadable_is_not_judged() -> None:
    """state_error: the node lists no reservations, so judging would call every process unreserved."""
    det, tracker = detector(), Tracker(cooldown_s=3600)
    feed(det, every_10s(0, 60))
    tracker.update(T0 + 60, det.judge(T0 + 60))
    det.observe(dataclasses.replace(snap("n1", gpu(0, procs=((5, "bob"),))), state_error="state unreadable"), T0 + 70)
    judgement = det.judge(T0 + 70)
    assert judgement.conditions == {} and "n1" in judgement.undecided_nodes
    assert tracker.update(T0 + 70, judgement) == []
    feed(det, every_10s(80, 80))  # readable again: the idle window went on
    assert "idle_reservation:n1:r1" in det.judge(T0 + 80).conditions
