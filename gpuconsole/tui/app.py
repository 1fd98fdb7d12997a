"""The first console: a live node table and the selected node's GPUs (the full TUI is issue 4)."""

from __future__ import annotations

import time

from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Header, Static

from gpuconsole.config import Config
from gpuconsole.core.poller import Poller
from gpuconsole.format import NA, bytes_h, mib_h, num_h, pct_h, rate_h
from gpuconsole.model import NodeSnapshot
from gpuconsole.model.events import NodeFailed, NodeUpdated, PollEvent
from gpuconsole.tui.messages import PollEventArrived

# Fixed widths: cells change every second and must not make columns jump.
NODE_COLUMNS = {"node": 16, "src": 7, "health": 18, "GPUs free": 9, "CPU": 5, "mem": 13,
                "disk r/w": 19, "net rx/tx": 19}
GPU_COLUMNS = {"gpu": 3, "name": 22, "util": 5, "mem": 13, "temp": 5, "power": 6, "reservation": 20,
               "processes": 30}


class GpuConsoleApp(App[int]):
    """Fleet overview fed by the poller; tables update cell by cell, keyed by node and GPU."""

    TITLE = "gpuconsole"
    CSS = """
    #nodes { height: 1fr; }
    #gpus { height: 2fr; }
    #summary { height: 1; padding: 0 1; background: $panel; color: $text; }
    """
    BINDINGS = [Binding("q", "quit", "Quit")]

    def __init__(self, config: Config, *, theme_name: str | None = None, readonly: bool = False) -> None:
        super().__init__()
        self.config = config
        self.readonly = readonly
        self.snapshots: dict[str, NodeSnapshot] = {}
        self.last_seen: dict[str, float] = {}
        self.failures: dict[str, str] = {}
        self.selected: str | None = config.nodes[0].name if config.nodes else None
        if theme_name:
            self.theme = theme_name

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("connecting…", id="summary")
        yield DataTable(id="nodes", cursor_type="row")
        yield DataTable(id="gpus", cursor_type="row")
        yield Footer()

    def on_mount(self) -> None:
        nodes = self.query_one("#nodes", DataTable)
        for column, width in NODE_COLUMNS.items():
            nodes.add_column(column, key=column, width=width)
        for cfg in self.config.nodes:
            nodes.add_row(cfg.name, cfg.source, "connecting", NA, NA, NA, NA, NA, key=cfg.name)
        gpus = self.query_one("#gpus", DataTable)
        for column, width in GPU_COLUMNS.items():
            gpus.add_column(column, key=column, width=width)
        self.poll()

    @work(exclusive=True, group="poll", exit_on_error=False)
    async def poll(self) -> None:
        def forward(event: PollEvent) -> None:
            self.post_message(PollEventArrived(event))

        poller = Poller(self.config, forward)
        poller.start()
        try:
            await self._forever()
        finally:
            await poller.aclose()

    async def _forever(self) -> None:
        import asyncio

        await asyncio.Event().wait()

    @on(PollEventArrived)
    def _apply(self, message: PollEventArrived) -> None:
        event = message.event
        if isinstance(event, NodeUpdated):
            self.snapshots[event.snapshot.name] = event.snapshot
            self.last_seen[event.snapshot.name] = time.monotonic()
            self.failures.pop(event.snapshot.name, None)
            name = event.snapshot.name
        elif isinstance(event, NodeFailed):
            self.failures[event.name] = event.error
            name = event.name
        else:
            return
        with self.batch_update():
            self._update_node_row(name)
            if name == self.selected:
                self._show_gpus(name)
            self._update_summary()

    def _update_node_row(self, name: str) -> None:
        table = self.query_one("#nodes", DataTable)
        snap = self.snapshots.get(name)
        failure = self.failures.get(name)
        if snap is None:
            cells = [name, "onprem", f"unreachable: {failure}" if failure else "connecting", NA, NA, NA, NA, NA]
        else:
            health = "up"
            if failure:
                age_s = time.monotonic() - self.last_seen.get(name, time.monotonic())
                health = f"stale ({age_s:.0f}s ago)"
            cells = [
                name, snap.source, health, f"{snap.gpus_free}/{len(snap.gpus)}", pct_h(snap.cpu_pct),
                f"{bytes_h(snap.mem_used_bytes)}/{bytes_h(snap.mem_total_bytes)}",
                f"{rate_h(snap.disk_read_bps)} {rate_h(snap.disk_write_bps)}",
                f"{rate_h(snap.net_rx_bps)} {rate_h(snap.net_tx_bps)}",
            ]
        for column, value in zip(NODE_COLUMNS, cells, strict=True):
            table.update_cell(name, column, value)

    def _show_gpus(self, name: str) -> None:
        table = self.query_one("#gpus", DataTable)
        snap = self.snapshots.get(name)
        wanted = {f"{name}/{g.index}" for g in snap.gpus} if snap else set()
        for key in [k for k in table.rows if k.value not in wanted]:
            table.remove_row(key)
        if snap is None:
            return
        for gpu in snap.gpus:
            if gpu.reservation:
                res = f"{gpu.reservation.owner} {gpu.reservation.id}"
            elif gpu.unreserved_use:
                res = "UNRESERVED USE"
            else:
                res = "free"
            procs = ", ".join(f"{p.user}:{p.pid}" for p in gpu.processes) or NA
            cells = [str(gpu.index), gpu.name or NA, pct_h(gpu.util_pct),
                     f"{mib_h(gpu.mem_used_mib)}/{mib_h(gpu.mem_total_mib)}",
                     num_h(gpu.temperature_c, "C"), num_h(gpu.power_w, "W"), res, procs]
            row_key = f"{name}/{gpu.index}"
            if row_key in table.rows:
                for column, value in zip(GPU_COLUMNS, cells, strict=True):
                    table.update_cell(row_key, column, value)
            else:
                table.add_row(*cells, key=row_key)

    def _update_summary(self) -> None:
        up = sum(1 for n in self.config.nodes if n.name in self.snapshots and n.name not in self.failures)
        gpus = [g for s in self.snapshots.values() for g in s.gpus]
        free = sum(1 for g in gpus if g.is_free)
        reserved = sum(1 for g in gpus if g.reservation is not None)
        unreserved = sum(1 for g in gpus if g.unreserved_use)
        queued = sum(len(s.queue) for s in self.snapshots.values())
        self.query_one("#summary", Static).update(
            f"nodes {up}/{len(self.config.nodes)} up · GPUs {free} free, {reserved} reserved, "
            f"{unreserved} unreserved use · queue {queued}"
        )

    @on(DataTable.RowHighlighted, "#nodes")
    def _select(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key.value is not None:
            self.selected = str(event.row_key.value)
            self._show_gpus(self.selected)
