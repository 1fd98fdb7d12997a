"""The node table, the GPU panel and the process list, rendered from a FleetState."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from rich.text import Text

from gpuconsole.format import NA, bytes_h, left_h, mib_h, num_h, pct_h, rate_h
from gpuconsole.model.fleet import FleetState, Health, NodeView, bar, sparkline
from gpuconsole.model.telemetry import GpuSample
from gpuconsole.textsafe import rich_text
from gpuconsole.tui.widgets.keyed_table import Cell, KeyedTable

# Everything fits 120 columns; narrower, the lesser columns go first (the *_STEPS, in order), so the
# node name, its health, its free GPUs and who holds each GPU stay. "node" widens to its longest name
# (an EC2 instance id: cloud nodes are named by it); "health" fits "◌ stale · 59m ago".
NODE_COLUMNS = {"node": 8, "src": 6, "health": 17, "GPUs free": 9, "CPU": 5, "mem": 13,
                "disk r/w": 16, "net rx/tx": 17}
NODE_STEPS = (("src", 0), ("disk r/w", 0), ("net rx/tx", 0), ("mem", 0), ("CPU", 0))
# "reservation" is the holder: "alice · 3h58m left ⚑idle 2m", widening to fit a long owner name.
GPU_COLUMNS = {"gpu": 3, "name": 14, "util": 16, "mem": 20, "temp": 4, "power": 5, "history": 12,
               "reservation": 26}
GPU_STEPS = (("history", 0), ("name", 0), ("power", 0), ("temp", 0))
PROCESS_COLUMNS = {"gpu": 3, "user": 10, "pid": 8, "mem": 7, "command": 60}


def _age_h(seconds: float) -> str:
    return f"{seconds:.0f}s" if seconds < 120 else f"{seconds / 60:.0f}m"


def _seen(view: NodeView, now_s: float) -> str:
    """" · 12s ago": when the node last answered (shown while it is stale)."""
    return "" if view.last_ok_s is None else f" · {_age_h(max(0.0, now_s - view.last_ok_s))} ago"


class NodeTable(KeyedTable):
    """One row per node: health with "last seen", CPU, memory, disk and network rates, GPUs free."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(NODE_COLUMNS, steps=NODE_STEPS, fit=("node",), **kwargs)
        # Each node's row and what it was made from: a node with no new snapshot (half of them at
        # each repaint, polled at 1 Hz and repainted at 2 Hz) keeps its row, which `sync` skips.
        self._made: dict[str, tuple[tuple[object, ...], list[Cell]]] = {}
        self._made_styles: dict[str, str] = {}
        # Called with the node under the cursor after an up/down key, before the frame that shows the
        # cursor moved: the GPU panel follows in that frame, not in the next (RowHighlighted is a
        # message, handled after the frame began).
        self.on_key_move: Callable[[str], None] | None = None

    def action_cursor_down(self) -> None:
        super().action_cursor_down()
        self._key_moved()

    def action_cursor_up(self) -> None:
        super().action_cursor_up()
        self._key_moved()

    def _key_moved(self) -> None:
        key = self.selected_key
        if key is not None and self.on_key_move is not None:
            self.on_key_move(key)

    def show(self, views: Sequence[NodeView], now_s: float, styles: dict[str, str]) -> None:
        """Exactly ``views``, in their order (the app filters and sorts them: tui/filtering.py)."""
        if styles != self._made_styles:
            self._made.clear()
            self._made_styles = dict(styles)
        rows: dict[str, list[Cell]] = {}
        for view in views:
            health = view.health()
            seen = _seen(view, now_s) if health is Health.STALE else ""
            inputs = (view.snapshot, health, seen, view.final, view.source)
            made = self._made.get(view.name)
            if made is None or made[0][0] is not view.snapshot or made[0][1:] != inputs[1:]:
                made = inputs, self._cells(view, now_s, styles)
                self._made[view.name] = made
            rows[view.name] = made[1]
        for name in [name for name in self._made if name not in rows]:
            del self._made[name]
        self.sync(rows)

    @staticmethod
    def _cells(view: NodeView, now_s: float, styles: dict[str, str]) -> list[Cell]:
        health = view.health()
        snap = view.snapshot
        seen = _seen(view, now_s)
        if health is Health.UP:
            health_cell: Cell = Text("● up", style=styles["gc-free"])
        elif health is Health.CONNECTING:
            health_cell = Text("○ connecting", style=styles["gc-stale"])
        elif health is Health.STALE:
            health_cell = Text(f"◌ stale{seen}", style=styles["gc-stale"])
        else:
            health_cell = Text("✕ auth/host key" if view.final else "✕ unreachable",
                               style=styles["gc-unreachable"])
        # Cloud nodes (EC2 instances that joined the fleet) are marked in their own colour.
        src_style = styles["gc-cloud"] if view.source == "cloud" else ""
        if snap is None:
            return [view.name, Text(view.source, style=src_style), health_cell, NA, NA, NA, NA, NA]
        dim = "dim" if health is not Health.UP else ""
        cells: list[Cell] = [
            rich_text(view.name, dim), Text(view.source, style=f"{src_style} {dim}".strip()), health_cell,
            Text(f"{snap.gpus_free}/{len(snap.gpus)}", style=dim), Text(pct_h(snap.cpu_pct), style=dim),
            Text(f"{bytes_h(snap.mem_used_bytes)}/{bytes_h(snap.mem_total_bytes)}", style=dim),
            Text(f"{rate_h(snap.disk_read_bps)} {rate_h(snap.disk_write_bps)}", style=dim),
            Text(f"{rate_h(snap.net_rx_bps)} {rate_h(snap.net_tx_bps)}", style=dim),
        ]
        return cells


def util_style(pct: float | None, styles: dict[str, str]) -> str:
    if pct is None:
        return styles["gc-stale"]
    if pct >= 75:
        return styles["gc-util-high"]
    return styles["gc-util-mid"] if pct >= 10 else styles["gc-util-low"]


class GpuTable(KeyedTable):
    """The selected node's GPUs: bars, temperature, power, history and who holds each one."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(GPU_COLUMNS, steps=GPU_STEPS, fit=("reservation",), **kwargs)

    def show(self, view: NodeView | None, fleet: FleetState, styles: dict[str, str],
             idle_for_s: Mapping[tuple[str, int], float], now_wall_s: float) -> None:
        """`idle_for_s`: the GPUs the idle rule finds idle now, (node, index) -> seconds (`AlertBook.idle_for_s`);
        `now_wall_s`: the app's wall clock, which the time left on a lease counts from."""
        rows: dict[str, list[Cell]] = {}
        snap = view.snapshot if view else None
        if view is not None and snap is not None:
            dim = "dim" if view.health() is not Health.UP else ""
            for gpu in snap.gpus:
                # Rows keyed by GPU index: switching nodes rewrites cells instead of rebuilding rows.
                key = str(gpu.index)
                history_key = f"{view.name}/{gpu.index}"
                mem_frac = (gpu.mem_used_mib / gpu.mem_total_mib
                            if gpu.mem_used_mib is not None and gpu.mem_total_mib else None)
                util_text = Text(bar((gpu.util_pct or 0) / 100, 10), style=util_style(gpu.util_pct, styles))
                util_text.append(f" {pct_h(gpu.util_pct):>4}", style=dim)
                mem_text = Text(bar(mem_frac, 8), style=util_style(None if mem_frac is None else mem_frac * 100,
                                                                    styles))
                mem_text.append(f" {mib_h(gpu.mem_used_mib)}/{mib_h(gpu.mem_total_mib)}", style=dim)
                history = list(fleet.util_history.get(history_key, ()))
                rows[key] = [
                    Text(str(gpu.index), style=dim),
                    rich_text((gpu.name or NA).removeprefix("NVIDIA "), dim),
                    util_text, mem_text,
                    Text(num_h(gpu.temperature_c, "C"), style=dim), Text(num_h(gpu.power_w, "W"), style=dim),
                    Text(sparkline(history, GPU_COLUMNS["history"]), style=styles["gc-util-low"]),
                    self._holder(gpu, idle_for_s.get((view.name, gpu.index)), styles, now_wall_s),
                ]
        self.sync(rows)

    @staticmethod
    def _holder(gpu: GpuSample, idle_s: float | None, styles: dict[str, str], now_wall_s: float) -> Text:
        if gpu.withheld_reason is not None:  # for its health: no new grant takes it (node/health.py)
            who = f"{gpu.reservation.owner} · " if gpu.reservation is not None else ""
            return rich_text(f"{who}✖ withheld: {gpu.withheld_reason}", f"bold {styles['gc-unreachable']}")
        if gpu.reservation is not None:
            text = rich_text(f"{gpu.reservation.owner} · {left_h(gpu.reservation.expires_at, now_wall_s)}")
            if idle_s is not None:
                text.append(f" ⚑idle {_age_h(idle_s)}", style=f"bold {styles['gc-flag']}")
            return text
        if gpu.unreserved_use:
            users = ",".join(sorted({p.user or "?" for p in gpu.processes}))
            return rich_text(f"⚠ unreserved: {users}", f"bold {styles['gc-flag']}")
        return Text("free", style=styles["gc-free"])


class ProcessTable(KeyedTable):
    """Processes on the selected node's GPUs: user, pid, GPU memory, command."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(PROCESS_COLUMNS, **kwargs)

    def show(self, view: NodeView | None) -> None:
        rows: dict[str, list[Cell]] = {}
        if view is not None and view.snapshot is not None:
            for gpu in view.snapshot.gpus:
                for proc in gpu.processes:
                    rows[f"{view.name}/{gpu.index}/{proc.pid}"] = [
                        str(gpu.index), proc.user or NA, str(proc.pid), mib_h(proc.mem_mib),
                        proc.command or NA,
                    ]
        self.sync(rows)
