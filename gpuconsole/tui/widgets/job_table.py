"""Jobs on every node: state, node, GPUs, runtime; the cursor picks the target of cancel/preempt/logs."""

from __future__ import annotations

from datetime import datetime

from rich.text import Text

from gpuconsole.durations import format_duration_s
from gpuconsole.model.fleet import FleetState, Health
from gpuconsole.tui.widgets.keyed_table import Cell, KeyedTable

COLUMNS = {"id": 8, "name": 14, "node": 8, "gpus": 8, "owner": 9, "prio": 6, "state": 12, "exit": 4,
           "runtime": 8, "command": 20}  # command: the rest of the line (cut at the edge)
STEPS = (("prio", 0), ("exit", 0), ("name", 0))  # narrow, these go first; ids and node names are never cut
STATE_STYLE = {"running": "gc-util-low", "queued": "gc-flag", "failed": "gc-unreachable",
               "lost": "gc-unreachable", "preempted": "gc-flag", "cancelled": "gc-stale", "succeeded": "gc-free",
               "timed_out": "gc-unreachable"}


def _wall(iso: str | None) -> float | None:
    return None if not iso else datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


class JobTable(KeyedTable):
    """One row per job; runtime ticks while the job runs."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(COLUMNS, steps=STEPS, fit=("id", "node"), **kwargs)

    def show(self, fleet: FleetState, styles: dict[str, str], now_wall_s: float) -> None:
        """`now_wall_s`: the app's wall clock (epoch seconds), which running jobs' runtimes count to."""
        rows: dict[str, list[Cell]] = {}
        for view in fleet.nodes.values():
            if view.snapshot is None or view.health() is Health.UNREACHABLE:
                continue
            for job in view.snapshot.jobs:
                started, ended = _wall(job.started_at), _wall(job.ended_at)
                runtime = format_duration_s((ended or now_wall_s) - started) if started else "-"
                state = job.state + (f" #{job.position}" if job.state == "queued" and job.position else "")
                rows[job.id] = [
                    job.id, job.label, job.node, ",".join(map(str, job.gpus)) or f"{job.gpus_requested}?",
                    job.owner, job.priority, Text(state, style=styles[STATE_STYLE.get(job.state, "gc-stale")]),
                    "" if job.exit_code is None else str(job.exit_code), runtime, job.command,
                ]
        self.sync(rows)
