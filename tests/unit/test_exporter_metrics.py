"""The exporter's text exposition (gpuconsole/exporter/metrics.py) read back with prometheus_client's
own parser: every family, the values in base units, a node's hostile owner and reservation label
values escaped and round-tripped exactly, an unreachable node only `up 0` and its age."""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from gpuconsole.exporter.metrics import FleetView, render
from gpuconsole.model import NodeSnapshot

NOW_S = 1_800_000_000.0
HOSTILE = 'mallory"},evil="1\\\n\x1b[31m'


def _snapshot(name: str) -> NodeSnapshot:
    gpus = [{"index": i, "uuid": "GPU-x", "name": "H100", "util_pct": 50.0, "mem_used_mib": 1024,
             "mem_total_mib": 81920, "temperature_c": 40.5, "power_w": 300.0, "processes": [],
             "reservation": {"id": "r-" + HOSTILE, "owner": HOSTILE, "expires_at": "2027-01-15T08:00:00Z"}
             if i == 1 else None} for i in range(2)]
    return NodeSnapshot.from_agent(name, {
        "t_wall": NOW_S - 1, "cpu_pct": 25.0, "mem_used_bytes": 1 << 30, "mem_total_bytes": 1 << 34, "gpus": gpus,
        "queue": [{"id": "r-q", "gpus_requested": 2, "owner": "bob", "position": 1,
                   "created_at": "2027-01-15T07:59:00Z"}],
        "jobs": [{"id": "j-1", "gpus": [0], "owner": "carol", "state": "running", "command": "train",
                  "created_at": "2027-01-15T07:00:00Z"}]})


def _samples(text: str) -> dict[str, list[Any]]:
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def test_the_exposition_parses_with_the_library_and_round_trips_hostile_labels() -> None:
    view = FleetView({"node-01": _snapshot("node-01"), "node-02": NodeSnapshot("node-02")},
                     {"node-01": NOW_S - 2.5}, {("node-01", 1): 90.0})
    families = _samples(render(view, NOW_S).decode())
    up = {s.labels["node"]: s.value for s in families["gpuconsole_node_up"]}
    assert up == {"node-01": 1.0, "node-02": 0.0}
    assert [(s.labels, s.value) for s in families["gpuconsole_node_snapshot_age_seconds"]] == [
        ({"node": "node-01"}, 2.5)]
    (reserved,) = families["gpuconsole_gpu_reserved"]
    assert reserved.labels == {"node": "node-01", "gpu": "1", "owner": HOSTILE, "reservation": "r-" + HOSTILE}
    assert "evil" not in {k for s in families["gpuconsole_gpu_reserved"] for k in s.labels}
    assert {s.labels["gpu"]: s.value for s in families["gpuconsole_gpu_utilization_ratio"]} == {"0": 0.5, "1": 0.5}
    assert families["gpuconsole_gpu_memory_used_bytes"][0].value == 1024 * 1024 * 1024
    assert [(s.labels["gpu"], s.value) for s in families["gpuconsole_gpu_idle_seconds"]] == [("1", 90.0)]
    assert families["gpuconsole_node_cpu_utilization_ratio"][0].value == 0.25
    assert families["gpuconsole_queue_length"][0].value == 1.0
    assert families["gpuconsole_queue_oldest_wait_seconds"][0].value == 59.0  # queued 07:59, sampled 07:59:59
    jobs = {s.labels["state"]: s.value for s in families["gpuconsole_jobs"]}
    assert jobs["running"] == 1.0 and jobs["failed"] == 0.0 and len(jobs) == 8
    assert all(s.labels.get("node") != "node-02" for s in families["gpuconsole_gpu_utilization_ratio"])
