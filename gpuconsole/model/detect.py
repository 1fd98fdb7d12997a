"""Alert conditions from telemetry, judged over a window. Pure: no I/O, the caller passes the time.

The one idle rule of the project: `gpuconsole watch`, the console's `⚑ idle` flag, its summary count
and its Alerts tab judge with this detector and the `[watch]` thresholds, and the cloud idle judge
(`cloud/idle.py`) reads its quiet windows. It lives in model/ because both front ends and cloud/ use it.

Idle rule. A reserved GPU is *quiet* from a sample on while every later sample has a known
utilization below `util_below_pct`, the same set of processes, memory in use within
`window.MEM_BAND_MIB` and power draw within `window.POWER_BAND_W` of the stretch's extremes. Memory that is
held but constant (a notebook keeping its tensors) is not work; memory that grows (a job loading
data or a model) and power that rises are. A reservation is idle when each of its GPUs has been
quiet for `idle_s` — a GPU needs a full window of samples first, and a gap in its samples longer
than `max_gap_s` starts its window again.

Conditions are keyed (`kind:node:subject`) so the tracker can match onset, repeat and resolve.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from gpuconsole.durations import format_duration_s
from gpuconsole.format import iso_utc
from gpuconsole.model.alerts import Alert
from gpuconsole.model.events import NodeFailed, NodeUpdated, PollEvent
from gpuconsole.model.telemetry import GpuSample, NodeSnapshot
from gpuconsole.model.window import GpuWindow


@dataclass(frozen=True, slots=True)
class Judgement:
    """Conditions holding now, and what cannot be judged now (a down or not yet seen node, a
    window not yet complete after a restart): the tracker neither raises nor resolves those."""

    conditions: dict[str, Alert]
    undecided_keys: frozenset[str] = frozenset()
    undecided_nodes: frozenset[str] = frozenset()
    undecided_kinds: frozenset[str] = frozenset()  # judged elsewhere, and that judge failed this time
    # Each GPU of an idle reservation -> the time its reservation has been idle since (the console's flag).
    idle_since_s: dict[tuple[str, int], float] = field(default_factory=dict)

    def holds(self, alert: Alert) -> bool:
        """Whether an already-raised condition must be kept although it is not in `conditions`."""
        if alert.key in self.undecided_keys or alert.kind in self.undecided_kinds:
            return True
        return alert.node in self.undecided_nodes and alert.kind != "node_down"

    def merged(self, extra: Sequence[Alert] | None, kind: str = "idle_cloud") -> Judgement:
        """Add conditions judged elsewhere (idle cloud instances); None means they could not be
        judged now, so raised ones of that kind are held rather than resolved."""
        if extra is None:
            return dataclasses.replace(self, undecided_kinds=self.undecided_kinds | {kind})
        return dataclasses.replace(self, conditions={**self.conditions, **{a.key: a for a in extra}})


@dataclass
class _Down:
    since_s: float
    error: str
    final: bool


@dataclass
class Detector:
    """Folds snapshots and failures; `judge(now_s)` gives the conditions. Cost is O(GPUs) per sample."""

    idle_s: float
    util_below_pct: float
    max_gap_s: float = 60.0
    node_down_after_s: float = 10.0
    expected_nodes: set[str] = field(default_factory=set)
    windows: dict[tuple[str, int], GpuWindow] = field(default_factory=dict)
    snapshots: dict[str, NodeSnapshot] = field(default_factory=dict)
    unreserved_since: dict[tuple[str, str], float] = field(default_factory=dict)
    down: dict[str, _Down] = field(default_factory=dict)
    # Per node: the GPU indices and unreserved users last seen, so a snapshot touches only its own
    # entries (the flat dicts above would otherwise be scanned per snapshot: O(fleet) each).
    _indices: dict[str, frozenset[int]] = field(default_factory=dict)
    _users: dict[str, frozenset[str]] = field(default_factory=dict)

    @classmethod
    def live(cls, idle_s: float, util_below_pct: float, *, poll_s: float, judge_s: float,
             nodes: Iterable[str]) -> Detector:
        """For a live poll stream (the watcher's loop and the console): a gap of 10 polls (at least a
        minute) restarts a window, and a node is down after 2 polls or 2 judgements (at least 1 s)."""
        return cls(idle_s=idle_s, util_below_pct=util_below_pct, max_gap_s=max(60.0, 10 * poll_s),
                   node_down_after_s=max(1.0, 2 * judge_s, 2 * poll_s), expected_nodes=set(nodes))

    def apply(self, event: PollEvent, now_s: float) -> None:
        """Fold one poller event observed at wall time `now_s`."""
        if isinstance(event, NodeUpdated):
            self.observe(event.snapshot, now_s)
        elif isinstance(event, NodeFailed):
            self.node_failed(event.name, event.error, event.final, now_s)

    def node_failed(self, name: str, error: str, final: bool, now_s: float) -> None:
        down = self.down.get(name)
        if down is None:
            self.down[name] = _Down(now_s, error, final)
        else:
            down.error, down.final = error, final

    def observe(self, snap: NodeSnapshot, now_s: float) -> None:
        """Fold one snapshot (an unreachable one counts as a failure)."""
        if not snap.reachable:
            self.node_failed(snap.name, snap.error or "unreachable", False, now_s)
            return
        name = snap.name
        self.down.pop(name, None)
        self.snapshots[name] = snap
        if snap.state_error:
            return  # without its reservations the samples cannot be attributed: keep the windows as they are
        for gpu in snap.gpus:
            self._observe_gpu(name, gpu, now_s)
        present = frozenset(g.index for g in snap.gpus)
        for index in self._indices.get(name, frozenset()) - present:
            self.windows.pop((name, index), None)
        self._indices[name] = present
        users = frozenset(p.user or "?" for g in snap.gpus if g.reservation is None for p in g.processes)
        for user in users:
            self.unreserved_since.setdefault((name, user), now_s)
        for user in self._users.get(name, frozenset()) - users:
            self.unreserved_since.pop((name, user), None)
        self._users[name] = users

    def forget_node(self, name: str) -> None:
        """A node left the fleet (a terminated cloud instance): drop everything known about it."""
        self.expected_nodes.discard(name)
        self.snapshots.pop(name, None)
        self.down.pop(name, None)
        for index in self._indices.pop(name, frozenset()):
            self.windows.pop((name, index), None)
        for user in self._users.pop(name, frozenset()):
            self.unreserved_since.pop((name, user), None)

    def _observe_gpu(self, node: str, gpu: GpuSample, now_s: float) -> None:
        key = (node, gpu.index)
        window = self.windows.get(key)
        busy = gpu.util_pct is None or gpu.util_pct >= self.util_below_pct
        reservation = gpu.reservation.id if gpu.reservation else None
        if window is None or window.reservation != reservation or not (
            0 <= now_s - window.last_sample_s <= self.max_gap_s
        ):
            self.windows[key] = GpuWindow.start(gpu, now_s, busy=busy, observed_only=True)
        elif busy or window.quiet_since_s is None or not window.still_quiet(gpu):
            self.windows[key] = GpuWindow.start(gpu, now_s, busy=busy, observed_only=False)
        else:
            window.extend(gpu, now_s)

    def quiet_for_s(self, node: str, gpu_index: int, now_s: float) -> float | None:
        """How long any GPU (reserved or not) has been quiet by the idle rule; None if unknown, busy or
        its node is down. The cloud idle judge reads this for unreserved GPUs."""
        window = self.windows.get((node, gpu_index))
        if window is None or window.quiet_since_s is None or node in self.down:
            return None
        return now_s - window.quiet_since_s

    def judge(self, now_s: float) -> Judgement:
        """The conditions that hold at `now_s`."""
        conditions: dict[str, Alert] = {}
        undecided_keys: set[str] = set()
        undecided_nodes: set[str] = set()
        idle_since_s: dict[tuple[str, int], float] = {}
        for name in sorted(self.expected_nodes | set(self.snapshots) | set(self.down)):
            down = self.down.get(name)
            if down is not None:
                undecided_nodes.add(name)
                if down.final or now_s - down.since_s >= self.node_down_after_s:
                    alert = _node_down(name, down)
                    conditions[alert.key] = alert
                continue
            snap = self.snapshots.get(name)
            if snap is None or snap.state_error:
                # Not seen yet, or its reservations are unreadable (then every process would look
                # unreserved and every idle reservation gone): judge nothing there for now.
                undecided_nodes.add(name)
                continue
            self._judge_idle(snap, now_s, conditions, undecided_keys, idle_since_s)
            for alert in [*self._unreserved(snap), *_unhealthy(snap)]:
                conditions[alert.key] = alert
        return Judgement(conditions, frozenset(undecided_keys), frozenset(undecided_nodes),
                         idle_since_s=idle_since_s)

    def _judge_idle(self, snap: NodeSnapshot, now_s: float, out: dict[str, Alert], undecided: set[str],
                    idle_since_s: dict[tuple[str, int], float]) -> None:
        by_reservation: dict[str, list[GpuSample]] = {}
        for gpu in snap.gpus:
            if gpu.reservation is not None:
                by_reservation.setdefault(gpu.reservation.id, []).append(gpu)
        job_ids = {job.id for job in snap.jobs}
        for rid, gpus in by_reservation.items():
            key = f"idle_reservation:{snap.name}:{rid}"
            windows = [self.windows.get((snap.name, g.index)) for g in gpus]
            complete, blocked = True, False
            for window in windows:
                if window is None or window.reservation != rid or window.quiet_since_s is None:
                    blocked = True
                elif now_s - window.quiet_since_s < self.idle_s:
                    complete = False
                    blocked = blocked or not window.observed_only
            if blocked:
                continue
            if not complete:
                undecided.add(key)
                continue
            quiet = [w for w in windows if w is not None]
            since_s = max(w.quiet_since_s or now_s for w in quiet)
            ref = gpus[0].reservation
            assert ref is not None
            indices = tuple(sorted(g.index for g in gpus))
            idle_since_s.update({(snap.name, index): since_s for index in indices})
            util_max = max(w.util_max_pct for w in quiet)
            out[key] = Alert(
                kind="idle_reservation", node=snap.name, since=iso_utc(since_s), gpus=indices,
                owner=ref.owner, reservation=rid, key=key,
                message=(f"reservation {rid} of {ref.owner} on {snap.name} GPU{_s(indices)} "
                         f"{_list(indices)} idle for {format_duration_s(now_s - since_s)} "
                         f"(utilization below {self.util_below_pct:g}%, no change in processes, memory or power)"),
                extra={"idle_s": round(now_s - since_s, 1), "util_max_pct": util_max,
                       "util_below_pct": self.util_below_pct, "expires_at": ref.expires_at,
                       "reservation_kind": "job" if rid in job_ids else "reservation"},
            )

    def _unreserved(self, snap: NodeSnapshot) -> list[Alert]:
        by_user: dict[str, list[tuple[int, int, str | None]]] = {}
        for gpu in snap.gpus:
            if gpu.reservation is None:
                for proc in gpu.processes:
                    by_user.setdefault(proc.user or "?", []).append((gpu.index, proc.pid, proc.command))
        alerts = []
        for user, procs in sorted(by_user.items()):
            key = f"unreserved_use:{snap.name}:{user}"
            indices = tuple(sorted({gpu for gpu, _, _ in procs}))
            pids = sorted({pid for _, pid, _ in procs})
            since_s = self.unreserved_since.get((snap.name, user))
            alerts.append(Alert(
                kind="unreserved_use", node=snap.name, since=iso_utc(since_s or 0.0), gpus=indices, owner=user,
                key=key,
                message=(f"unreserved use on {snap.name} GPU{_s(indices)} {_list(indices)} by {user} "
                         f"(pid{_s(pids)} {_list(pids)}); reserve GPUs with `gpuconsole reserve`"),
                extra={"pids": pids,
                       "processes": [{"gpu": g, "pid": p, "user": user, "command": c} for g, p, c in procs]},
            ))
        return alerts

    # -- persistence (the state file keeps windows across restarts and --once runs) --------------

    def to_json(self) -> dict[str, Any]:
        return {
            "windows": {f"{node}/{index}": asdict(w) for (node, index), w in self.windows.items()},
            "unreserved_since": {f"{node}/{user}": s for (node, user), s in self.unreserved_since.items()},
        }

    def load_json(self, data: dict[str, Any]) -> None:
        """Restore windows; a malformed entry is skipped (its window simply starts again)."""
        for name, raw in (data.get("windows") or {}).items():
            node, _, index = str(name).rpartition("/")
            try:
                self.windows[(node, int(index))] = GpuWindow(**raw)
            except (TypeError, ValueError):
                continue
            self._indices[node] = self._indices.get(node, frozenset()) | {int(index)}
        for name, since_s in (data.get("unreserved_since") or {}).items():
            node, _, user = str(name).partition("/")
            if isinstance(since_s, int | float):
                self.unreserved_since[(node, user)] = float(since_s)
                self._users[node] = self._users.get(node, frozenset()) | {user}


def _unhealthy(snap: NodeSnapshot) -> list[Alert]:
    """A GPU its node withholds for its health (node/health.py): one alert per GPU and fault, naming
    the reservation on it (whose owner should save their work) and how an admin returns it."""
    alerts = []
    for gpu in snap.gpus:
        if gpu.withheld_reason is None:
            continue
        ref = gpu.reservation
        key = f"gpu_unhealthy:{snap.name}:{gpu.index}:{gpu.withheld_since}"
        holder = f"; reservation {ref.id} of {ref.owner} is on it" if ref is not None else ""
        alerts.append(Alert(
            kind="gpu_unhealthy", node=snap.name, since=gpu.withheld_since or "", gpus=(gpu.index,),
            owner=ref.owner if ref is not None else None, reservation=ref.id if ref is not None else None, key=key,
            message=(f"GPU {gpu.index} of {snap.name} withheld from new grants: {gpu.withheld_reason}{holder}; "
                     f"an admin returns it with `gpuconsole gpu clear {snap.name}:{gpu.index}`"),
            extra={"reason": gpu.withheld_reason, "health": dict(gpu.health or {})},
        ))
    return alerts


def _node_down(name: str, down: _Down) -> Alert:
    key = f"node_down:{name}"
    how = "unreachable (not retried: fix the host key or credentials)" if down.final else "down"
    return Alert(kind="node_down", node=name, since=iso_utc(down.since_s), key=key,
                 message=f"node {name} is {how}: {down.error}",
                 extra={"error": down.error, "final": down.final})


def _s(items: tuple[int, ...] | list[int]) -> str:
    return "s" if len(items) != 1 else ""


def _list(items: tuple[int, ...] | list[int]) -> str:
    return ",".join(str(i) for i in items)
