"""One fleet snapshot: every node's telemetry, or why it could not be read."""

from __future__ import annotations

from gpuconsole.core.fleet import Fleet
from gpuconsole.errors import GpuConsoleError
from gpuconsole.model import NodeSnapshot


async def fleet_snapshot(fleet: Fleet, names: list[str] | None = None, *,
                         rates: bool = True) -> list[NodeSnapshot]:
    """Snapshots in config order; unreachable nodes are included with their error.

    `rates` False: the caller does not show CPU/disk/net rates, so a node whose connection is too new
    for a rate window answers at once with them null, instead of waiting ~100 ms for the window.
    """
    results = await fleet.call_all("snapshot", None if rates else {"rates": False}, names=names)
    snapshots = []
    for cfg in fleet.node_configs(names):
        result = results.get(cfg.name)
        if isinstance(result, GpuConsoleError):
            snapshots.append(NodeSnapshot.unreachable(cfg.name, str(result), cfg.source))
        elif result is None:
            snapshots.append(NodeSnapshot.unreachable(cfg.name, "not contacted", cfg.source))
        else:
            snapshots.append(NodeSnapshot.from_agent(cfg.name, result, cfg.source))
    return snapshots
