"""One fleet snapshot: every node's telemetry, or why it could not be read."""

from __future__ import annotations

from gpuconsole.config import COMPUTE_SOURCE
from gpuconsole.core.clusters import fleet_entries
from gpuconsole.core.fleet import Fleet
from gpuconsole.model import NodeSnapshot


async def fleet_snapshot(fleet: Fleet, names: list[str] | None = None, *,
                         rates: bool = True) -> list[NodeSnapshot]:
    """Snapshots in config order; unreachable nodes are included with their error; a Slurm cluster
    as one entry per Slurm node (core/clusters.py).

    `rates` False: the caller does not show CPU/disk/net rates, so a node whose connection is too new
    for a rate window answers at once with them null, instead of waiting ~100 ms for the window.
    """
    args = None if rates else {"rates": False}
    # Compute nodes that joined in an earlier round are asked through their cluster's view.
    members = [m for m in fleet.node_configs(names) if m.source != COMPUTE_SOURCE]
    results = await fleet.call_all("snapshot", args, names=[m.name for m in members])
    return await fleet_entries(fleet, members, results, args)
