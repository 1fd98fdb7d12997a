"""The human `jobs` table and `logs -f`'s exit status: jobs as people read them ("queued #3 on node-01",
"running 12m on node-02 GPUs 0,1", "failed (exit 7) 5m ago on node-01"), running ones first, whole
ids at any width (the lesser columns go first)."""

from __future__ import annotations

import signal
import time
from typing import TYPE_CHECKING

from gpuconsole.durations import format_duration_s
from gpuconsole.format import epoch_s
from gpuconsole.model.jobs import Job

if TYPE_CHECKING:
    from rich.table import Table

    from gpuconsole.cli.tables import Column

# `logs -f` of a job that recorded no exit code: as a shell reports a process ended by that signal.
CANCELLED_EXIT = 128 + signal.SIGTERM  # cancelled before it ran (a running one records its own, 143)
LOST_EXIT = 128 + signal.SIGKILL  # lost: it died with its supervisor (PR_SET_PDEATHSIG sends SIGKILL)


def follow_exit_code(job: Job) -> int:
    """`logs -f`'s exit status once the job ended: the job's own exit code (0–255; a job ended by a
    signal, a cancel or a preemption among them, records 128 + the signal), else 143 for a job
    cancelled before it ran and 137 for a lost one."""
    if job.exit_code is not None:
        return job.exit_code if 0 <= job.exit_code <= 255 else 255
    if job.state == "succeeded":
        return 0
    return CANCELLED_EXIT if job.state == "cancelled" else LOST_EXIT


def _since(iso: str | None, now_s: float) -> float | None:
    at_s = epoch_s(iso) if iso else None
    return None if at_s is None else max(0.0, now_s - at_s)


def state_text(job: Job, now_s: float) -> str:
    """Where the job stands, in words: queued #3 / running 12m on NODE GPUs 0,1 / failed (exit 7) 5m ago."""
    if job.state == "queued":
        place = f" #{job.position}" if job.position else ""
        return f"queued{place} on {job.node} ({job.gpus_requested} GPU{'s' if job.gpus_requested != 1 else ''})"
    if job.state == "running":
        ran_s = _since(job.started_at, now_s)
        took = f" {format_duration_s(ran_s)}" if ran_s is not None else ""
        return f"running{took} on {job.node} GPUs {','.join(map(str, job.gpus))}"
    code = f" (exit {job.exit_code})" if job.exit_code is not None and job.state != "succeeded" else ""
    ago_s = _since(job.ended_at, now_s)
    ago = f" {format_duration_s(ago_s)} ago" if ago_s is not None else ""
    return f"{job.state}{code}{ago} on {job.node}"


def _order(job: Job) -> tuple[int, float, str]:
    """Running first (longest running first), then queued (by node and place), then the ended (newest first)."""
    if job.state == "running":
        return (0, epoch_s(job.started_at or "") or 0.0, job.id)
    if job.state == "queued":
        return (1, float(job.position or 1 << 30), f"{job.node} {job.id}")
    return (2, -(epoch_s(job.ended_at or "") or 0.0), job.id)


def ordered(found: list[Job]) -> list[Job]:
    return sorted(found, key=_order)


def _columns() -> tuple[Column, ...]:
    from gpuconsole.cli.tables import Column

    return (Column("id"), Column("name", 3), Column("owner"), Column("state"), Column("priority", 1),
            Column("command", 2, wrap=True))


def jobs_table(found: list[Job], now_s: float | None = None, width: int = 160) -> Table:
    """The `jobs` table (a rich Table) fitted to ``width``; every cell, names and commands included,
    shown literally."""
    from gpuconsole.cli.tables import fit_table

    now = time.time() if now_s is None else now_s
    rows = [(job.id, job.label, job.owner, state_text(job, now), job.priority, job.command) for job in ordered(found)]
    table = fit_table("jobs", _columns(), rows, width)
    # The command is what wraps: every other column kept keeps its whole cells when they fit at all
    # (rich would otherwise share the shrinking between the name and the command).
    from rich.text import Text

    widths = [max([len(str(column.header)), *(c.cell_len for c in column.cells if isinstance(c, Text))])
              for column in table.columns]
    room = width - (sum(widths[:-1]) + 3 * len(widths) + 1)
    if table.columns and table.columns[-1].header == "command" and room >= 20:
        for column, needed in zip(table.columns[:-1], widths, strict=False):
            column.min_width = needed
        table.columns[-1].max_width = room
    return table
