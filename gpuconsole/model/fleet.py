"""The fleet as the console sees it: last snapshot per node, health, utilization history.

A pure fold over poller events with an injected clock, shared by the TUI and the watcher. Whether a
reservation is idle is not decided here: that is the one idle rule, `model/detect.py`'s Detector.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import Enum

from gpuconsole.model.events import NodeUpdated, PollEvent
from gpuconsole.model.telemetry import GpuSample, NodeSnapshot

HISTORY_SAMPLES = 180  # three minutes at the default 1 Hz
# The summary's "busy" count: a GPU with processes or at least this utilization now (a snapshot
# count, not the idle rule, which also asks for a window of quiet samples and uses `[watch]`).
BUSY_UTIL_PCT = 5.0


class Health(Enum):
    """How fresh a node's data is."""

    CONNECTING = "connecting"
    UP = "up"
    STALE = "stale"  # connected before, failing now: last data shown dimmed
    UNREACHABLE = "unreachable"  # never answered, or gave up (auth / host key)


@dataclass
class NodeView:
    """Everything the console knows about one node."""

    name: str
    source: str = "onprem"
    snapshot: NodeSnapshot | None = None
    last_ok_s: float | None = None  # monotonic time of the last good snapshot
    error: str | None = None
    final: bool = False
    retry_in_s: float | None = None

    def health(self) -> Health:
        if self.error is None:
            return Health.UP if self.snapshot is not None else Health.CONNECTING
        if self.snapshot is None or self.final:
            return Health.UNREACHABLE
        return Health.STALE


@dataclass
class FleetState:
    """Folds NodeUpdated/NodeFailed into per-node views and per-GPU utilization history."""

    node_names: list[str]
    sources: dict[str, str] = field(default_factory=dict)
    nodes: dict[str, NodeView] = field(default_factory=dict)
    util_history: dict[str, deque[float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in self.node_names:
            self.nodes.setdefault(name, NodeView(name, self.sources.get(name, "onprem")))

    def add_node(self, name: str, source: str = "onprem") -> None:
        """A node joined the fleet (a cloud instance became reachable); a known name is left as is."""
        if name not in self.nodes:
            self.node_names.append(name)
            self.sources[name] = source
            self.nodes[name] = NodeView(name, source)

    def remove_node(self, name: str) -> None:
        """A node left the fleet (its instance was terminated or stopped): forget its view and history."""
        self.nodes.pop(name, None)
        self.sources.pop(name, None)
        if name in self.node_names:
            self.node_names.remove(name)
        prefix = f"{name}/"
        self.util_history = {k: v for k, v in self.util_history.items() if not k.startswith(prefix)}

    def apply(self, event: PollEvent) -> str:
        """Fold one event; returns the name of the node it changed."""
        if isinstance(event, NodeUpdated):
            snap = event.snapshot
            view = self.nodes.setdefault(snap.name, NodeView(snap.name, snap.source))
            view.snapshot, view.last_ok_s = snap, event.received_at
            view.error, view.final, view.retry_in_s = None, False, None
            for gpu in snap.gpus:
                self._record_gpu(snap.name, gpu)
            return snap.name
        view = self.nodes.setdefault(event.name, NodeView(event.name))
        view.error, view.final, view.retry_in_s = event.error, event.final, event.retry_in_s
        return event.name

    def _record_gpu(self, node: str, gpu: GpuSample) -> None:
        history = self.util_history.setdefault(f"{node}/{gpu.index}", deque(maxlen=HISTORY_SAMPLES))
        history.append(gpu.util_pct or 0.0)

    def visible(self, name_filter: str = "") -> list[NodeView]:
        """Nodes in config order (then discovered ones), filtered by a substring of the name."""
        needle = name_filter.lower()
        return [v for v in self.nodes.values() if needle in v.name.lower()]

    def totals(self) -> dict[str, int]:
        """Counts for the summary bar (the idle count is the detector's: see `tui/alerts.py`)."""
        counts = {"nodes": len(self.nodes), "up": 0, "gpus": 0, "free": 0, "reserved": 0,
                  "in_use": 0, "unreserved": 0, "queued": 0}
        for view in self.nodes.values():
            if view.health() is Health.UP:
                counts["up"] += 1
            snap = view.snapshot
            if snap is None or view.health() is not Health.UP:
                continue
            counts["queued"] += len(snap.queue)
            for gpu in snap.gpus:
                counts["gpus"] += 1
                busy = bool(gpu.processes) or (gpu.util_pct or 0.0) >= BUSY_UTIL_PCT
                counts["free"] += gpu.is_free
                counts["reserved"] += gpu.reservation is not None
                counts["in_use"] += busy
                counts["unreserved"] += gpu.unreserved_use
        return counts


SPARK_BLOCKS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float], width: int, maximum: float = 100.0) -> str:
    """Unicode block sparkline of the last values, each cell the max of its bucket."""
    if not values:
        return " " * width
    values = values[-width * 4:]
    buckets = max(1, -(-len(values) // width))
    cells = [max(values[i:i + buckets]) for i in range(0, len(values), buckets)]
    top = len(SPARK_BLOCKS) - 1
    # Clamped both ways: a node may report a utilization below 0 or above the maximum.
    out = "".join(SPARK_BLOCKS[max(0, min(top, int(v / maximum * top + 0.5)))] for v in cells)
    return out.rjust(width)


def bar(fraction: float | None, width: int) -> str:
    """A text bar like `████▌     ` for 0..1 (blank when unknown)."""
    if fraction is None:
        return " " * width
    fraction = min(1.0, max(0.0, fraction))
    eighths = round(fraction * width * 8)
    full, rem = divmod(eighths, 8)
    partial = " ▏▎▍▌▋▊▉"[rem] if rem else ""
    return ("█" * full + partial).ljust(width)
