"""`status`'s human view: one line per node (GPUs as glyphs, or counts by state on big nodes), the
per-GPU table when it fits the terminal's height (or `--gpus` asks), and a footer with totals.

Filters (`--free`, `--user`) and `--sort` pick and order nodes (`select`, which the JSON uses too);
the GPU table shows only the matching GPUs of those nodes. Tables fit the width by dropping lesser
columns (gpuconsole.cli.tables), and every text from a node is shown literally (`cell`).
"""

from __future__ import annotations

import os
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gpuconsole.cli.output import cell, console
from gpuconsole.cli.tables import Alt, Cell, Column, fit_table
from gpuconsole.format import NA, bytes_h, left_h, mib_h, num_h, pct_h, rate_h, until_h
from gpuconsole.model import GpuSample, NodeSnapshot

if TYPE_CHECKING:
    from rich.text import Text

SORTS = ("name", "free", "util")
GLYPHS = {"free": ("○", "green"), "reserved": ("◐", "cyan"), "busy": ("●", "blue"),
          "unreserved use": ("▲", "yellow"), "withheld": ("✖", "red")}
GLYPHS_MAX = 16  # a node with more GPUs shows counts by state instead of one glyph each
TABLE_LINES = 5  # title, top border, header, header rule, bottom border


@dataclass(frozen=True, slots=True)
class View:
    """What `status` shows: the per-GPU table (None: when it fits), which nodes, in what order."""

    per_gpu: bool | None = None
    free: bool = False  # only nodes with a free GPU (and, per GPU, the free ones)
    user: str | None = None  # only nodes (and GPUs) where USER holds a reservation or runs a process
    sort: str | None = None  # one of SORTS; None: the config's order

    @property
    def filtered(self) -> bool:
        return self.free or self.user is not None


def gpu_state(gpu: GpuSample) -> str:
    """free, reserved (no process yet), busy (reserved, processes running), unreserved use, or
    withheld (for its health: whoever holds it, no new grant takes it)."""
    if gpu.withheld_reason is not None:
        return "withheld"
    if gpu.reservation is not None:
        return "busy" if gpu.processes else "reserved"
    return "unreserved use" if gpu.processes else "free"


def _users_gpu(gpu: GpuSample, user: str) -> bool:
    held = gpu.reservation is not None and gpu.reservation.owner == user
    return held or any(p.user == user for p in gpu.processes)


def gpu_matches(gpu: GpuSample, view: View) -> bool:
    """A GPU row to show: free (with --free) or USER's (with --user); either one when both are given."""
    if not view.filtered:
        return True
    return (view.free and gpu.is_free) or (view.user is not None and _users_gpu(gpu, view.user))


def node_matches(snap: NodeSnapshot, view: View) -> bool:
    """A node to show: with a free GPU (--free) and where USER holds or runs something (--user). An
    unreachable node stays: it may well have what the filter looks for, and its error is news."""
    if not view.filtered or not snap.reachable:
        return True
    if view.free and snap.gpus_free == 0:
        return False
    if view.user is not None:
        mine = any(_users_gpu(g, view.user) for g in snap.gpus)
        return mine or any(r.owner == view.user for r in snap.reservations)
    return True


def _natural(name: str) -> list[str | int]:
    """node-2 before node-10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _mean_util(snap: NodeSnapshot) -> float | None:
    utils = [g.util_pct for g in snap.gpus if g.util_pct is not None]
    return sum(utils) / len(utils) if utils else None


def select(snapshots: Sequence[NodeSnapshot], view: View) -> list[NodeSnapshot]:
    """The nodes `view` shows, in its order: by name, most free GPUs first, or busiest GPUs first
    (unreachable nodes last)."""
    chosen = [s for s in snapshots if node_matches(s, view)]
    if view.sort == "name":
        chosen.sort(key=lambda s: _natural(s.name))
    elif view.sort == "free":
        chosen.sort(key=lambda s: (not s.reachable, -s.gpus_free, _natural(s.name)))
    elif view.sort == "util":
        chosen.sort(key=lambda s: (not s.reachable, -(_mean_util(s) or 0.0), _natural(s.name)))
    return chosen


def gpu_glyphs(gpus: Sequence[GpuSample]) -> Text:
    """One glyph per GPU in groups of four, or on a big node a count per state ('○12 ●3')."""
    from rich.text import Text

    text = Text()
    if not gpus:
        return Text(NA)
    if len(gpus) > GLYPHS_MAX:
        counts = Counter(gpu_state(g) for g in gpus)
        for state, (glyph, style) in GLYPHS.items():
            if counts[state]:
                text.append(" " if text.plain else "")
                text.append(f"{glyph}{counts[state]}", style)
        return text
    for i, gpu in enumerate(gpus):
        glyph, style = GLYPHS[gpu_state(gpu)]
        text.append(" " if i and i % 4 == 0 and len(gpus) > 4 else "")
        text.append(glyph, style)
    return text


def _holders(snap: NodeSnapshot) -> str:
    owners = Counter(g.reservation.owner for g in snap.gpus if g.reservation is not None)
    return ", ".join(f"{owner}({n})" for owner, n in owners.items()) or NA


def _node_row(snap: NodeSnapshot) -> list[Cell]:
    if not snap.reachable:
        return [snap.name, snap.source, cell("unreachable", "red"), NA, NA, NA, NA, NA, NA, NA, NA]
    state = cell("up", "green") if not snap.state_error else cell("state error", "red")
    return [
        snap.name, snap.source, state, gpu_glyphs(snap.gpus), f"{snap.gpus_free}/{len(snap.gpus)}",
        pct_h(_mean_util(snap)), _holders(snap), pct_h(snap.cpu_pct),
        f"{bytes_h(snap.mem_used_bytes)}/{bytes_h(snap.mem_total_bytes)}",
        f"{rate_h(snap.disk_read_bps)} {rate_h(snap.disk_write_bps)}",
        f"{rate_h(snap.net_rx_bps)} {rate_h(snap.net_tx_bps)}",
    ]


NODE_COLUMNS = (
    Column("node"), Column("src", priority=1), Column("state"), Column("GPUs"), Column("free"),
    Column("util", priority=6), Column("holders", priority=5, wrap=True), Column("CPU", priority=4),
    Column("mem", priority=3), Column("disk r/w", priority=2), Column("net rx/tx", priority=2),
)
GPU_COLUMNS = (
    Column("node"), Column("gpu", justify="right"), Column("name", priority=2), Column("util", priority=8),
    Column("mem", priority=5), Column("temp", priority=1), Column("power", priority=1), Column("holder"),
    Column("reservation"), Column("ends", priority=6, narrow_at=3), Column("processes", priority=4, wrap=True),
)


def _gpu_row(snap: NodeSnapshot, gpu: GpuSample, now_s: float) -> list[Cell]:
    ref = gpu.reservation
    holder: str | Text
    ends: Cell = NA
    if ref is not None:
        holder = ref.owner
        kinds = {r.id: r.kind for r in snap.reservations}
        if kinds.get(ref.id) == "job":
            ends = Alt("with the job", "with job")  # a job's grant lasts as long as the job runs
        else:
            ends = Alt(until_h(ref.expires_at, now_s), left_h(ref.expires_at, now_s))
    elif gpu.unreserved_use:
        holder = cell("UNRESERVED USE", "yellow")
    elif gpu.withheld_reason is not None:
        holder = cell("WITHHELD", "red")
    else:
        holder = cell("free", "green")
    procs = ", ".join(f"{p.user}:{p.pid} {mib_h(p.mem_mib)}" for p in gpu.processes) or NA
    return [
        snap.name, str(gpu.index), (gpu.name or NA).removeprefix("NVIDIA "), pct_h(gpu.util_pct),
        f"{mib_h(gpu.mem_used_mib)}/{mib_h(gpu.mem_total_mib)}", num_h(gpu.temperature_c, "C"),
        num_h(gpu.power_w, "W"), holder, ref.id if ref is not None else NA, ends, procs,
    ]


def notes(snapshots: Sequence[NodeSnapshot]) -> list[str]:
    """Why a node is unreachable or its state unusable, and why a GPU is withheld, whole, one line
    each under the node table (in a cell they would stretch or wrap every row)."""
    lines = []
    for snap in snapshots:
        problem = snap.error if not snap.reachable else snap.state_error
        if problem:
            lines.append(problem if problem.startswith(f"{snap.name}: ") else f"{snap.name}: {problem}")
        elif not snap.reachable:
            lines.append(f"{snap.name}: unreachable")
        for gpu in snap.gpus if snap.reachable else ():
            if gpu.withheld_reason is not None:
                holder = f"; {gpu.reservation.owner}'s {gpu.reservation.id} is on it" if gpu.reservation else ""
                lines.append(f"{snap.name}: GPU {gpu.index} withheld since {gpu.withheld_since}: "
                             f"{gpu.withheld_reason}{holder} (an admin returns it: gpuconsole gpu clear "
                             f"{snap.name}:{gpu.index})")
    return lines


def footer(snapshots: Sequence[NodeSnapshot], fleet_size: int | None = None) -> str:
    """'2/3 nodes up · 8 GPUs: ○ 3 free · ◐ 2 reserved · ● 2 busy · ▲ 1 unreserved use' (the glyphs'
    legend too); 'showing 2 of 5 nodes' when a filter hid some."""
    up = sum(1 for s in snapshots if s.reachable)
    gpus = [g for s in snapshots if s.reachable for g in s.gpus]
    counts = Counter(gpu_state(g) for g in gpus)
    parts = [f"{up}/{len(snapshots)} nodes up", f"{len(gpus)} GPU{'' if len(gpus) == 1 else 's'}: " + " · ".join(
        f"{glyph} {counts[state]} {state}" for state, (glyph, _) in GLYPHS.items()
        if counts[state] or state == "free")]
    if fleet_size is not None and fleet_size != len(snapshots):
        parts.append(f"showing {len(snapshots)} of {fleet_size} nodes")
    return " · ".join(parts)


def render(snapshots: Sequence[NodeSnapshot], clear: bool = False, view: View | None = None, *,
           fleet_size: int | None = None, width: int | None = None, height: int | None = None) -> None:
    """The node table, the GPU table (by `view.per_gpu`, or when both fit `height` lines: the
    terminal's, or LINES; a pipe has no height) and the footer; a table with no rows is not
    printed. `snapshots` are the nodes `select` chose."""
    view = view or View()
    out = console(width)
    if height is None and (out.is_terminal or os.environ.get("LINES", "").isdigit()):
        height = out.height  # a pipe or file has no screen to fit: it gets every GPU unless LINES says
    if clear:
        out.clear()
    if not snapshots:
        out.print(cell("no node matches" if view.filtered else "no nodes"))
        return
    gpu_rows = [_gpu_row(s, g, s.taken_at or time.time()) for s in snapshots if s.reachable
                for g in s.gpus if gpu_matches(g, view)]
    per_gpu = view.per_gpu
    if per_gpu is None:  # both tables, the footer and the prompt on one screen, or only the summary
        per_gpu = height is None or len(snapshots) + len(gpu_rows) + 2 * TABLE_LINES + 2 <= height
    out.print(fit_table("nodes", NODE_COLUMNS, [_node_row(s) for s in snapshots], out.width))
    for line in notes(snapshots):
        out.print(cell(line, "red"))
    if per_gpu and gpu_rows:
        out.print(fit_table("GPUs", GPU_COLUMNS, gpu_rows, out.width))
    hint = "" if per_gpu or not gpu_rows else " · every GPU: --gpus"
    out.print(cell(footer(snapshots, fleet_size) + hint))
