"""The Alerts tab: what the watcher would send, newest first; conditions still holding stand out.
The table shows the start of each message; the line under it shows the selected one in full."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable, Static

from gpuconsole.textsafe import rich_text
from gpuconsole.tui.alerts import LoggedAlert
from gpuconsole.tui.widgets.keyed_table import Cell, KeyedTable

# Fits 120 columns without horizontal scrolling; the detail line carries the rest of the message.
COLUMNS = {"time": 9, "kind": 17, "node": 19, "GPUs": 5, "owner": 8, "reservation": 11, "message": 33}
KIND_STYLE = {"idle_reservation": "gc-flag", "unreserved_use": "gc-flag", "idle_cloud": "gc-flag",
              "node_down": "gc-unreachable", "gpu_unhealthy": "gc-unreachable", "resolved": "gc-free"}


def _clock_h(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%H:%M:%SZ")


class AlertLog(KeyedTable):
    """One row per logged alert; rebuilt only when the log or the set of active conditions changes."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(COLUMNS, **kwargs)
        self._signature: tuple[int, int, frozenset[str], str] | None = None

    def show(self, entries: Sequence[LoggedAlert], active: frozenset[str], styles: dict[str, str]) -> None:
        signature = (entries[-1].seq if entries else 0, len(entries), active, styles["gc-flag"])
        if signature == self._signature:
            return
        self._signature = signature
        rows: dict[str, list[Cell]] = {}
        for entry in reversed(entries):
            alert = entry.alert
            holding = alert.kind == "resolved" or alert.key in active
            kind = alert.kind + (" ↻" if alert.extra.get("repeat") else "")
            style = styles[KIND_STYLE.get(alert.kind, "gc-stale")]
            dim = "" if holding else "dim"
            rows[str(entry.seq)] = [
                Text(_clock_h(entry.at_s), style=dim),
                Text(kind, style=f"bold {style}" if holding and alert.kind != "resolved" else f"{style} {dim}"),
                rich_text(alert.node or "-", dim), Text(",".join(map(str, alert.gpus)) or "-", style=dim),
                rich_text(alert.owner or "-", dim), rich_text(alert.reservation or "-", dim),
                rich_text(alert.message, dim),
            ]
        self.rebuild(rows)


class AlertPanel(Vertical):
    """The log and, under it, the highlighted alert's full message and when its condition began."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._entries: dict[str, LoggedAlert] = {}
        self._detail_shown = ""

    def compose(self) -> ComposeResult:
        yield AlertLog(id="alerts")
        yield Static("", id="alert-detail", classes="status-line detail")

    def show(self, entries: Sequence[LoggedAlert], active: frozenset[str], styles: dict[str, str]) -> None:
        if len(entries) != len(self._entries) or (entries and str(entries[-1].seq) not in self._entries):
            self._entries = {str(e.seq): e for e in entries}
        self.query_one(AlertLog).show(entries, active, styles)
        self._show_detail()

    def _show_detail(self) -> None:
        entry = self._entries.get(self.query_one(AlertLog).selected_key or "")
        text = "" if entry is None else f"since {entry.alert.since[11:]} · {entry.alert.message}"
        if not self._entries:
            text = "No alerts. Thresholds come from [watch] in the config (idle_minutes, util_below_pct)."
        if text != self._detail_shown:
            self._detail_shown = text
            self.query_one("#alert-detail", Static).update(rich_text(text))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_detail()
