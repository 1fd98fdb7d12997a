"""Slurm clusters in the fleet: a cluster's view (its login node's snapshot) becomes one entry per
Slurm node, with the telemetry of the agent on that compute node where the cluster says
`telemetry = "agent"`. The compute nodes join the fleet as the view names them; their own snapshots
are never entries of their own, only the measurements of their Slurm node's entry."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gpuconsole.config import COMPUTE_SOURCE, HOST_RE, ClusterConfig, Config, NodeConfig
from gpuconsole.model import NodeSnapshot
from gpuconsole.model.slurm import addresses, node_snapshots, with_telemetry

if TYPE_CHECKING:
    from gpuconsole.core.fleet import Fleet


def member_of(config: Config, entry: str) -> str:
    """The fleet member that answers for an entry: a Slurm node's `CLUSTER/NODE` is its cluster's."""
    cluster, sep, _node = entry.partition("/")
    return cluster if sep and any(c.name == cluster for c in config.clusters) else entry


class ClusterViews:
    """The latest Slurm view of each Slurm node and the latest telemetry of its agent, merged."""

    def __init__(self, config: Config) -> None:
        self.clusters: dict[str, ClusterConfig] = {c.name: c for c in config.clusters}
        self._slurm: dict[str, NodeSnapshot] = {}
        self._agent: dict[str, NodeSnapshot] = {}

    def compute_members(self, name: str, result: object) -> list[NodeConfig]:
        """The compute nodes a login node's snapshot names, to measure (none unless telemetry = "agent")."""
        cluster = self.clusters.get(name)
        if cluster is None or cluster.telemetry != "agent":
            return []
        # An address is the site's Slurm's word, but it becomes an SSH host: a host name or address only.
        return [cluster.compute_node(entry, address) for entry, address in addresses(name, result).items()
                if HOST_RE.fullmatch(address) and not address.startswith("-")]

    def login_arrived(self, name: str, result: object, source: str) -> list[NodeSnapshot]:
        """A member's snapshot as entries: a cluster's, one per Slurm node with its measurements."""
        entries = node_snapshots(name, result, source)
        if source != "slurm":
            return entries
        for entry in entries:
            self._slurm[entry.name] = entry
        return [with_telemetry(entry, self._agent.get(entry.name)) for entry in entries]

    def agent_arrived(self, snapshot: NodeSnapshot) -> NodeSnapshot | None:
        """A compute node's telemetry: its Slurm node's entry, measured (None before Slurm named it)."""
        self._agent[snapshot.name] = snapshot
        base = self._slurm.get(snapshot.name)
        return with_telemetry(base, snapshot) if base is not None else None

    def agent_lost(self, name: str) -> NodeSnapshot | None:
        """A compute node's agent failed: its entry as Slurm has it, telemetry unknown again."""
        self._agent.pop(name, None)
        return self._slurm.get(name)


async def fleet_entries(fleet: Fleet, members: list[NodeConfig], results: dict[str, Any],
                        args: dict[str, Any] | None) -> list[NodeSnapshot]:
    """The entries of one round of `snapshot` answers (status, the watcher's --once, usage): each
    member's, a cluster's as its Slurm nodes, measured by their agents (asked here) where wanted."""
    views = ClusterViews(fleet.config)
    computes = [c for m in members if m.source == "slurm" for c in views.compute_members(m.name, results.get(m.name))]
    measured: dict[str, Any] = {}
    if computes:
        fleet.join(computes)
        measured = await fleet.call_all("snapshot", args, names=[c.name for c in computes])
    for compute in computes:
        answer = measured.get(compute.name)
        if isinstance(answer, dict):
            views.agent_arrived(NodeSnapshot.from_agent(compute.name, answer, COMPUTE_SOURCE))
    entries: list[NodeSnapshot] = []
    for member in members:
        if member.source == COMPUTE_SOURCE:
            continue  # measured into its Slurm node's entry
        entries.extend(views.login_arrived(member.name, results.get(member.name), member.source))
    return entries
