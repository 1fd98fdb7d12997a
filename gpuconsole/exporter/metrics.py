"""The exporter's metrics: Prometheus families built, at each scrape, from the last frozen snapshot
of every node (a scrape never waits on a node; a stale one says its age). Names follow the
Prometheus conventions: `gpuconsole_` prefix, base units (bytes, seconds, ratio, celsius, watts),
`_total` only for counters. Labels are bounded: node, GPU index, owner and reservation of a live
grant, job state; never a pid or a command line.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gpuconsole.format import epoch_s
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
    now_s: float = 0.0


def _gauge(name: str, doc: str, labels: tuple[str, ...]) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=list(labels))


class FleetCollector(Collector):
    """A custom collector: `view()` hands it the latest FleetView (a frozen value swapped in whole);
    ages are counted on `clock` at the scrape."""

    def __init__(self, view: Callable[[], FleetView], clock: Callable[[], float] = time.time) -> None:
        self.view = view
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        view = dataclasses.replace(self.view(), now_s=self.clock())
        yield from node_metrics(view)
        yield from gpu_metrics(view)
        yield from queue_metrics(view)


class FleetViewSource:
    """Holds the latest FleetView for the scrape thread (replaced whole: reads need no lock)."""

    def __init__(self) -> None:
        self.current = FleetView()

    def __call__(self) -> FleetView:
        return self.current


def node_metrics(view: FleetView) -> Iterator[Metric]:
    up = _gauge("gpuconsole_node_up", "1 when the node's agent answered its last poll", ("node",))
    age = _gauge("gpuconsole_node_snapshot_age_seconds", "seconds since the node's last snapshot arrived", ("node",))
    cpu = _gauge("gpuconsole_node_cpu_utilization_ratio", "the node's CPU busy share (0..1)", ("node",))
    mem_used = _gauge("gpuconsole_node_memory_used_bytes", "host memory in use", ("node",))
    mem_total = _gauge("gpuconsole_node_memory_total_bytes", "host memory", ("node",))
    rates = {key: _gauge(f"gpuconsole_node_{key}_bytes_per_second", f"host {key.replace('_', ' ')} rate", ("node",))
             for key in ("disk_read", "disk_write", "network_receive", "network_transmit")}
    for name in sorted(view.snapshots):
        snap = view.snapshots[name]
        up.add_metric([name], 1.0 if snap.reachable else 0.0)
        if name in view.seen_at_s:
            age.add_metric([name], max(0.0, view.now_s - view.seen_at_s[name]))
        if not snap.reachable:
            continue
        for family, value in ((cpu, None if snap.cpu_pct is None else snap.cpu_pct / 100.0),
                              (mem_used, snap.mem_used_bytes), (mem_total, snap.mem_total_bytes),
                              (rates["disk_read"], snap.disk_read_bps), (rates["disk_write"], snap.disk_write_bps),
                              (rates["network_receive"], snap.net_rx_bps),
                              (rates["network_transmit"], snap.net_tx_bps)):
            if value is not None:
                family.add_metric([name], float(value))
    yield from (up, age, cpu, mem_used, mem_total, *rates.values())


def gpu_metrics(view: FleetView) -> Iterator[Metric]:
    labels = ("node", "gpu")
    util = _gauge("gpuconsole_gpu_utilization_ratio", "GPU utilization (0..1)", labels)
    mem_used = _gauge("gpuconsole_gpu_memory_used_bytes", "GPU memory in use", labels)
    mem_total = _gauge("gpuconsole_gpu_memory_total_bytes", "GPU memory", labels)
    temp = _gauge("gpuconsole_gpu_temperature_celsius", "GPU temperature", labels)
    power = _gauge("gpuconsole_gpu_power_watts", "GPU power draw", labels)
    reserved = _gauge("gpuconsole_gpu_reserved", "1 while a reservation or job holds the GPU (its owner and grant "
                      "as labels)", (*labels, "owner", "reservation"))
    unreserved = _gauge("gpuconsole_gpu_unreserved_use", "1 while processes run on the GPU with no grant", labels)
    withheld = _gauge("gpuconsole_gpu_withheld", "1 while the node withholds the GPU for its health", labels)
    idle = _gauge("gpuconsole_gpu_idle_seconds", "how long a reserved GPU has been quiet by the watcher's idle rule "
                  "(absent while it is in use)", labels)
    for name in sorted(view.snapshots):
        snap = view.snapshots[name]
        if not snap.reachable:
            continue
        for gpu in snap.gpus:
            key = [name, str(gpu.index)]
            _add_gpu(gpu, key, util, mem_used, mem_total, temp, power)
            if gpu.reservation is not None:
                reserved.add_metric([*key, gpu.reservation.owner, gpu.reservation.id], 1.0)
            unreserved.add_metric(key, 1.0 if gpu.unreserved_use else 0.0)
            withheld.add_metric(key, 1.0 if gpu.withheld_reason is not None else 0.0)
            quiet_s = view.idle_s.get((name, gpu.index))
            if quiet_s is not None and gpu.reservation is not None:
                idle.add_metric(key, quiet_s)
    yield from (util, mem_used, mem_total, temp, power, reserved, unreserved, withheld, idle)


def _add_gpu(gpu: GpuSample, key: list[str], util: GaugeMetricFamily, mem_used: GaugeMetricFamily,
             mem_total: GaugeMetricFamily, temp: GaugeMetricFamily, power: GaugeMetricFamily) -> None:
    for family, value in ((util, None if gpu.util_pct is None else gpu.util_pct / 100.0),
                          (mem_used, None if gpu.mem_used_mib is None else gpu.mem_used_mib * MIB),
                          (mem_total, None if gpu.mem_total_mib is None else gpu.mem_total_mib * MIB),
                          (temp, gpu.temperature_c), (power, gpu.power_w)):
        if value is not None:
            family.add_metric(key, float(value))


def queue_metrics(view: FleetView) -> Iterator[Metric]:
    length = _gauge("gpuconsole_queue_length", "requests waiting in the node's queue", ("node",))
    oldest = _gauge("gpuconsole_queue_oldest_wait_seconds", "how long the node's oldest queued request has waited",
                    ("node",))
    jobs = _gauge("gpuconsole_jobs", "the node's recent jobs by state", ("node", "state"))
    for name in sorted(view.snapshots):
        snap = view.snapshots[name]
        if not snap.reachable:
            continue
        length.add_metric([name], float(len(snap.queue)))
        created = [t for t in (epoch_s(q.created_at) for q in snap.queue) if t is not None]
        if created:
            oldest.add_metric([name], max(0.0, (snap.taken_at or view.now_s) - min(created)))
        counts = dict.fromkeys(JOB_STATES, 0)
        for job in snap.jobs:
            if job.state in counts:
                counts[job.state] += 1
        for state, count in counts.items():
            jobs.add_metric([name, state], float(count))
    yield from (length, oldest, jobs)
