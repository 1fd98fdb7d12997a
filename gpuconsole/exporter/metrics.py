"""The exporter's metrics: the Prometheus text exposition (format 0.0.4), rendered at each scrape from
the last frozen snapshot of every node (a scrape never waits on a node; a stale one says its age).

Names follow the Prometheus conventions: `gpuconsole_` prefix, base units (bytes, seconds, ratio,
celsius, watts), `_total` only for counters. Labels are bounded: node, GPU index, owner and
reservation of a live grant, job state; never a pid or a command line. Label values from nodes are
escaped as the format requires (backslash, double quote, newline).

Rendered here rather than through prometheus_client's collector objects and `generate_latest`: at
64 nodes × 8 GPUs (5,000 samples) those cost ~50 ms a scrape on this project's CI machine, the
whole budget; this fixed-shape renderer does the same text in a fraction of it. The output is
checked with the library's own parser and with `promtool check metrics` (tests/unit/test_exporter_metrics.py,
tests/integration/test_exporter.py); the server and content type are the library's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from gpuconsole.format import epoch_s
from gpuconsole.model.cloud import Instance
from gpuconsole.model.telemetry import GpuSample, NodeSnapshot

JOB_STATES = ("queued", "running", "succeeded", "failed", "cancelled", "preempted", "lost", "timed_out")
MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class FleetView:
    """What one scrape renders: each node's last snapshot and when it arrived (wall seconds), and
    how long each reserved GPU has been idle by the watcher's rule (node, GPU → seconds)."""

    snapshots: Mapping[str, NodeSnapshot] = field(default_factory=dict)
    seen_at_s: Mapping[str, float] = field(default_factory=dict)
    idle_s: Mapping[tuple[str, int], float] = field(default_factory=dict)
    instances: tuple[Instance, ...] | None = None  # managed EC2 instances (None: no [cloud.aws] or not asked yet)


class FleetViewSource:
    """Holds the latest FleetView for the scrape thread (replaced whole: reads need no lock)."""

    def __init__(self) -> None:
        self.current = FleetView()

    def __call__(self) -> FleetView:
        return self.current


def escape(value: str) -> str:
    """A label value as the text format requires it."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


Sample = tuple[str, float]  # (the rendered label set, the value)
Family = tuple[str, str, list[Sample]]  # (name, help, samples)


def _labels(**pairs: str) -> str:
    return "{" + ",".join(f'{key}="{escape(value)}"' for key, value in pairs.items()) + "}"


def render(view: FleetView, now_s: float) -> bytes:
    """The whole exposition for `view`, ages counted at `now_s`."""
    out: list[str] = []
    for name, doc, samples in (*node_families(view, now_s), *gpu_families(view), *queue_families(view),
                               *cloud_families(view, now_s)):
        out.append(f"# HELP {name} {doc}\n# TYPE {name} gauge\n")
        out.extend(f"{name}{labels} {number(value)}\n" for labels, value in samples)
    return "".join(out).encode("utf-8")


def _reachable(view: FleetView) -> Iterable[tuple[str, NodeSnapshot]]:
    for name in sorted(view.snapshots):
        snap = view.snapshots[name]
        if snap.reachable:
            yield name, snap


def node_families(view: FleetView, now_s: float) -> list[Family]:
    up = [(_labels(node=n), 1.0 if view.snapshots[n].reachable else 0.0) for n in sorted(view.snapshots)]
    age = [(_labels(node=n), max(0.0, now_s - view.seen_at_s[n])) for n in sorted(view.snapshots)
           if n in view.seen_at_s]
    fields: list[tuple[str, str, Callable[[NodeSnapshot], float | int | None]]] = [
        ("gpuconsole_node_cpu_utilization_ratio", "the node's CPU busy share (0..1)",
         lambda s: None if s.cpu_pct is None else s.cpu_pct / 100.0),
        ("gpuconsole_node_memory_used_bytes", "host memory in use", lambda s: s.mem_used_bytes),
        ("gpuconsole_node_memory_total_bytes", "host memory", lambda s: s.mem_total_bytes),
        ("gpuconsole_node_disk_read_bytes_per_second", "host disk read rate", lambda s: s.disk_read_bps),
        ("gpuconsole_node_disk_write_bytes_per_second", "host disk write rate", lambda s: s.disk_write_bps),
        ("gpuconsole_node_network_receive_bytes_per_second", "host network receive rate", lambda s: s.net_rx_bps),
        ("gpuconsole_node_network_transmit_bytes_per_second", "host network transmit rate",
         lambda s: s.net_tx_bps),
    ]
    reachable = list(_reachable(view))
    families: list[Family] = [
        ("gpuconsole_node_up", "1 when the node's agent answered its last poll", up),
        ("gpuconsole_node_snapshot_age_seconds", "seconds since the node's last snapshot arrived", age),
    ]
    for name, doc, get in fields:
        samples = []
        for node, snap in reachable:
            value = get(snap)
            if value is not None:
                samples.append((_labels(node=node), float(value)))
        families.append((name, doc, samples))
    return families


def gpu_families(view: FleetView) -> list[Family]:
    util: list[Sample] = []
    mem_used: list[Sample] = []
    mem_total: list[Sample] = []
    temp: list[Sample] = []
    power: list[Sample] = []
    reserved: list[Sample] = []
    unreserved: list[Sample] = []
    withheld: list[Sample] = []
    idle: list[Sample] = []
    for node, snap in _reachable(view):
        for gpu in snap.gpus:
            key = _labels(node=node, gpu=str(gpu.index))
            _add_gpu(gpu, key, util, mem_used, mem_total, temp, power)
            if gpu.reservation is not None:
                reserved.append((_labels(node=node, gpu=str(gpu.index), owner=gpu.reservation.owner,
                                         reservation=gpu.reservation.id), 1.0))
                quiet_s = view.idle_s.get((node, gpu.index))
                if quiet_s is not None:
                    idle.append((key, quiet_s))
            unreserved.append((key, 1.0 if gpu.unreserved_use else 0.0))
            withheld.append((key, 1.0 if gpu.withheld_reason is not None else 0.0))
    return [
        ("gpuconsole_gpu_utilization_ratio", "GPU utilization (0..1)", util),
        ("gpuconsole_gpu_memory_used_bytes", "GPU memory in use", mem_used),
        ("gpuconsole_gpu_memory_total_bytes", "GPU memory", mem_total),
        ("gpuconsole_gpu_temperature_celsius", "GPU temperature", temp),
        ("gpuconsole_gpu_power_watts", "GPU power draw", power),
        ("gpuconsole_gpu_reserved", "1 while a reservation or job holds the GPU (its owner and grant as labels)",
         reserved),
        ("gpuconsole_gpu_unreserved_use", "1 while processes run on the GPU with no grant", unreserved),
        ("gpuconsole_gpu_withheld", "1 while the node withholds the GPU for its health", withheld),
        ("gpuconsole_gpu_idle_seconds", "how long a reserved GPU has been quiet by the watcher's idle rule "
         "(absent while it is in use)", idle),
    ]


def _add_gpu(gpu: GpuSample, key: str, util: list[Sample], mem_used: list[Sample], mem_total: list[Sample],
             temp: list[Sample], power: list[Sample]) -> None:
    for samples, value in ((util, None if gpu.util_pct is None else gpu.util_pct / 100.0),
                           (mem_used, None if gpu.mem_used_mib is None else gpu.mem_used_mib * MIB),
                           (mem_total, None if gpu.mem_total_mib is None else gpu.mem_total_mib * MIB),
                           (temp, gpu.temperature_c), (power, gpu.power_w)):
        if value is not None:
            samples.append((key, float(value)))


def queue_families(view: FleetView) -> list[Family]:
    length: list[Sample] = []
    oldest: list[Sample] = []
    jobs: list[Sample] = []
    for node, snap in _reachable(view):
        length.append((_labels(node=node), float(len(snap.queue))))
        created = [t for t in (epoch_s(q.created_at) for q in snap.queue) if t is not None]
        if created and snap.taken_at is not None:
            oldest.append((_labels(node=node), max(0.0, snap.taken_at - min(created))))
        counts = dict.fromkeys(JOB_STATES, 0)
        for job in snap.jobs:
            if job.state in counts:
                counts[job.state] += 1
        jobs.extend((_labels(node=node, state=state), float(count)) for state, count in counts.items())
    return [
        ("gpuconsole_queue_length", "requests waiting in the node's queue", length),
        ("gpuconsole_queue_oldest_wait_seconds", "how long the node's oldest queued request has waited", oldest),
        ("gpuconsole_jobs", "the node's recent jobs by state", jobs),
    ]


def cloud_families(view: FleetView, now_s: float) -> list[Family]:
    """The managed instances EC2 lists: how many in each state, and each live one's list price and
    what it has cost so far (labels: instance id, type, owner tag)."""
    if view.instances is None:
        return []
    states: dict[str, int] = {}
    price: list[Sample] = []
    spent: list[Sample] = []
    for instance in view.instances:
        states[instance.state] = states.get(instance.state, 0) + 1
        if not instance.live:
            continue
        key = _labels(instance=instance.id, type=instance.type, owner=instance.owner or "")
        if instance.price_per_hour is not None:
            price.append((key, instance.price_per_hour))
        cost = instance.cost_so_far(now_s)
        if cost is not None:
            spent.append((key, cost))
    return [
        ("gpuconsole_cloud_instances", "managed EC2 instances by state",
         [(_labels(state=state), float(count)) for state, count in sorted(states.items())]),
        ("gpuconsole_cloud_price_usd_per_hour", "a live managed instance's list price", price),
        ("gpuconsole_cloud_spent_usd", "what a live managed instance has cost since its launch, at list price", spent),
    ]
