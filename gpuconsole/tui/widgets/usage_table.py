"""The Usage tab's table: `gpuconsole usage --by user` as rows, each with a bar of its GPU-hours held
(the idle part drawn apart), scaled to the heaviest user."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.text import Text

from gpuconsole.tui.widgets.keyed_table import Cell, KeyedTable

BAR_WIDTH = 24
COLUMNS = {"user": 10, "GPU-h held": 10, "held (▒ idle)": BAR_WIDTH, "idle": 7, "unreserved": 10, "jobs": 7,
           "wait p50": 8, "cloud $": 8}
STEPS = (("cloud $", 0), ("wait p50", 0), ("jobs", 0), ("unreserved", 0), ("held (▒ idle)", 12))


@dataclass(frozen=True, slots=True)
class UsageLine:
    """One user's figures (core/usage.py's row, as the tab shows them)."""

    user: str
    held_h: float
    idle_h: float
    unreserved_h: float
    jobs_h: float
    wait_p50_s: float | None
    cloud_usd: float

    @classmethod
    def of(cls, row: dict[str, Any]) -> UsageLine:
        return cls(str(row["key"]), float(row["gpu_hours_held"]), float(row["gpu_hours_idle"]),
                   float(row["gpu_hours_unreserved"]), float(sum(row["job_gpu_hours"].values())),
                   row["queue_wait_s"]["p50"], float(row["cloud_usd"]))


def bar(held_h: float, idle_h: float, most_h: float, width: int, styles: dict[str, str]) -> Text:
    """'█████▒▒▒': held GPU-hours as a share of the heaviest user's, the idle part as ▒."""
    if most_h <= 0:
        return Text("")
    cells = round(width * held_h / most_h)
    idle_cells = min(cells, round(width * idle_h / most_h))
    text = Text("█" * (cells - idle_cells), style=styles["gc-cloud"])
    text.append("▒" * idle_cells, style=styles["gc-flag"])
    return text


class UsageTable(KeyedTable):
    """One row per user, heaviest first."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(COLUMNS, steps=STEPS, fit=("user",), **kwargs)

    def show(self, lines: tuple[UsageLine, ...], styles: dict[str, str]) -> None:
        most_h = max((line.held_h for line in lines), default=0.0)
        width = self._layout.get("held (▒ idle)", BAR_WIDTH)
        rows: dict[str, list[Cell]] = {}
        for line in sorted(lines, key=lambda item: (-item.held_h, item.user)):
            rows[line.user] = [
                line.user, f"{line.held_h:.2f}", bar(line.held_h, line.idle_h, most_h, width, styles),
                f"{line.idle_h:.2f}", f"{line.unreserved_h:.2f}", f"{line.jobs_h:.2f}",
                "-" if line.wait_p50_s is None else f"{line.wait_p50_s:.0f}s", f"${line.cloud_usd:.2f}",
            ]
        self.sync(rows)
