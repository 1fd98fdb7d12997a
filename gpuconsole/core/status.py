"""One fleet snapshot: every node's telemetry, or why it could not be read."""

from __future__ import annotations

from gpuconsole.core.fleet import Fleet
from gpuconsole.model import NodeSnapshot
from gpuconsole.model.slurm import node_snapshots


async def fleet_snapshot(fleet: Fleet, names: list[str] | None = None, *,
                         rates: bool = True) -> list[NodeSnapshot]:
    """Snapshots in config order; unreachable nodes are included with their error.

    `rates` False: the caller does not show CPU/disk/net rates, so a node whose connection is too new
    for a rate window answers at once with them null, instead of waiting ~100 ms for the window.
    """
    results = await fleet.call_all("snapshot", None if rates else {"rates": False}, names=names)
    return [snap for cfg in fleet.node_configs(names)
            for snap in node_snapshots(cfg.name, results.get(cfg.name), cfg.source)]
