"""`gpuconsole status`: a fleet snapshot as a table or JSON, once or every N seconds."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from gpuconsole.cli.options import StatusArgs
from gpuconsole.cli.output import print_json, warn
from gpuconsole.cli.status_view import SORTS, View, render, select
from gpuconsole.errors import ExitCode, UnreachableError, UsageError
from gpuconsole.model import NodeSnapshot

if TYPE_CHECKING:
    from gpuconsole.core.registry import Registry

__all__ = ["render", "run_status"]  # `render` is the status tables' entry point for tests and callers


def run_status(registry: Registry, opts: StatusArgs) -> int:
    import asyncio  # here, not at the top: a status the keeper answers never imports it

    names = [registry.node(opts.node).name] if opts.node else None
    view = status_view(opts)
    return asyncio.run(_status(registry, opts, names, view))


def status_view(opts: StatusArgs) -> View:
    """The flags' checks (UsageError) and what they select."""
    if opts.watch is not None and not 0.1 <= opts.watch <= 3600:
        raise UsageError("--watch: SECONDS must be between 0.1 and 3600")
    if opts.sort is not None and opts.sort not in SORTS:
        raise UsageError(f"--sort: choose from {', '.join(SORTS)}")
    return View(per_gpu=True if opts.gpus else None, free=opts.free, user=opts.user, sort=opts.sort)


def show(fetched: list[NodeSnapshot], opts: StatusArgs, view: View) -> None:
    """Print one round (the same whether it came over direct connections or the keeper)."""
    snapshots = select(fetched, view)  # --free/--user/--sort: the JSON's `nodes` as the tables
    if opts.json:
        print_json({"nodes": [s.to_json() for s in snapshots], "errors": [
            {"node": s.name, "error": s.error or "unreachable"} for s in snapshots if not s.reachable]})
    else:
        render(snapshots, clear=opts.watch is not None, view=view, fleet_size=len(fetched))
    for snap in fetched:
        for warning in snap.warnings:
            warn(f"{snap.name}: {warning}")


def outcome(fetched: list[NodeSnapshot]) -> int:
    """Exit 0 when any node answered; UnreachableError (exit 5) when none did."""
    if fetched and not any(s.reachable for s in fetched):
        raise UnreachableError("; ".join(s.error or s.name for s in fetched))
    return int(ExitCode.OK)


async def _status(registry: Registry, opts: StatusArgs, names: list[str] | None, view: View) -> int:
    import asyncio

    from gpuconsole.core.fleet import Fleet  # asyncssh: not imported when the keeper answers
    from gpuconsole.core.status import fleet_snapshot

    async with Fleet(registry, owns=True) as fleet:
        while True:
            # A single JSON document does not wait for a rate window (README: rates null there).
            fetched = await fleet_snapshot(fleet, names, rates=not opts.json or opts.watch is not None)
            show(fetched, opts, view)
            if opts.watch is None:
                break
            started = time.monotonic()
            # Dead nodes are retried each round; live ones keep their connection.
            for name in [s.name for s in fetched if not s.reachable]:
                await fleet.drop(name)
            await asyncio.sleep(max(0.0, opts.watch - (time.monotonic() - started)))
    return outcome(fetched)

