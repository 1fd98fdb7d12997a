"""`gpuconsole status`: a fleet snapshot as a table or JSON, once or every N seconds."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from gpuconsole.cli.options import StatusArgs
from gpuconsole.cli.output import add_row, cell, console, print_json, warn
from gpuconsole.core.fleet import Fleet
from gpuconsole.core.registry import Registry
from gpuconsole.core.status import fleet_snapshot
from gpuconsole.errors import ExitCode, UnreachableError, UsageError
from gpuconsole.format import NA, bytes_h, mib_h, num_h, pct_h, rate_h
from gpuconsole.model import NodeSnapshot

if TYPE_CHECKING:
    from rich.text import Text


def run_status(registry: Registry, opts: StatusArgs) -> int:
    names = [registry.node(opts.node).name] if opts.node else None
    if opts.watch is not None and not 0.1 <= opts.watch <= 3600:
        raise UsageError("--watch: SECONDS must be between 0.1 and 3600")
    return asyncio.run(_status(registry, opts, names))


async def _status(registry: Registry, opts: StatusArgs, names: list[str] | None) -> int:
    async with Fleet(registry, owns=True) as fleet:
        while True:
            snapshots = await fleet_snapshot(fleet, names)
            if opts.json:
                print_json({"nodes": [s.to_json() for s in snapshots]})
            else:
                render(snapshots, clear=opts.watch is not None)
            for snap in snapshots:
                for warning in snap.warnings:
                    warn(f"{snap.name}: {warning}")
            if opts.watch is None:
                break
            started = time.monotonic()
            # Dead nodes are retried each round; live ones keep their connection.
            for name in [s.name for s in snapshots if not s.reachable]:
                await fleet.drop(name)
            await asyncio.sleep(max(0.0, opts.watch - (time.monotonic() - started)))
    if snapshots and not any(s.reachable for s in snapshots):
        raise UnreachableError("; ".join(s.error or s.name for s in snapshots))
    return int(ExitCode.OK)


def render(snapshots: list[NodeSnapshot], clear: bool = False) -> None:
    """Two rich tables: nodes, then every GPU with its reservation and processes (every text from a
    node shown literally, as `cell`s)."""
    from rich.table import Table

    out = console()
    if clear:
        out.clear()
    nodes = Table(title="nodes", title_justify="left", header_style="bold")
    for column in ("node", "src", "state", "GPUs free", "CPU", "mem", "disk r/w", "net rx/tx"):
        nodes.add_column(column, no_wrap=True)
    gpus = Table(title="GPUs", title_justify="left", header_style="bold")
    for column in ("node", "gpu", "name", "util", "mem", "temp", "power", "reservation", "processes"):
        gpus.add_column(column, no_wrap=column != "processes")
    for snap in snapshots:
        if not snap.reachable:
            state = cell("unreachable", "red").append_text(cell(f" {snap.error or ''}"))
            add_row(nodes, snap.name, snap.source, state, NA, NA, NA, NA, NA)
            continue
        mem = f"{bytes_h(snap.mem_used_bytes)}/{bytes_h(snap.mem_total_bytes)}"
        state = cell("up", "green") if not snap.state_error else cell(snap.state_error, "red")
        add_row(
            nodes, snap.name, snap.source, state, f"{snap.gpus_free}/{len(snap.gpus)}", pct_h(snap.cpu_pct), mem,
            f"{rate_h(snap.disk_read_bps)} {rate_h(snap.disk_write_bps)}",
            f"{rate_h(snap.net_rx_bps)} {rate_h(snap.net_tx_bps)}",
        )
        for gpu in snap.gpus:
            if gpu.reservation:
                ref = gpu.reservation
                res: str | Text = f"{ref.owner} {ref.id} until {ref.expires_at[11:16]}Z"
            elif gpu.unreserved_use:
                res = cell("UNRESERVED USE", "yellow")
            else:
                res = cell("free", "green")
            procs = ", ".join(f"{p.user}:{p.pid} {mib_h(p.mem_mib)}" for p in gpu.processes) or NA
            add_row(
                gpus, snap.name, str(gpu.index), (gpu.name or NA).removeprefix("NVIDIA "), pct_h(gpu.util_pct),
                f"{mib_h(gpu.mem_used_mib)}/{mib_h(gpu.mem_total_mib)}",
                num_h(gpu.temperature_c, "C"), num_h(gpu.power_w, "W"), res, procs,
            )
    out.print(nodes)
    out.print(gpus)
