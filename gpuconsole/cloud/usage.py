"""What a managed instance is being used for right now: its live reservations and jobs, read from its
own agent, so `cloud down` can name them before it kills them and `cloud down --idle` can pick the
instances nobody uses.

"In use" is the idle cloud judge's rule (cloud/idle.py `busy_reason`): a reservation, a queued
request, a queued or running job, or a process on a GPU. The other half of that rule (every GPU quiet
for `idle_stop_minutes`) needs a window of samples that a one-shot command cannot see; the watcher's
`--stop-idle-cloud` judges it.
"""

from __future__ import annotations

from dataclasses import dataclass

from gpuconsole.cloud.idle import ENDED_JOB_STATES, busy_reason
from gpuconsole.cloud.inventory import cloud_nodes
from gpuconsole.config import Config
from gpuconsole.core.fleet import Fleet
from gpuconsole.core.registry import Registry
from gpuconsole.core.status import fleet_snapshot
from gpuconsole.model.cloud import Instance
from gpuconsole.model.telemetry import NodeSnapshot


@dataclass(frozen=True, slots=True)
class Usage:
    """One instance's use: what runs on it (`uses`), why it counts as busy (`busy`, None when
    unused), or why its agent could not be asked (`error`: then nobody knows, so it is not idle)."""

    instance_id: str
    uses: tuple[str, ...] = ()
    busy: str | None = None
    error: str | None = None

    @property
    def idle(self) -> bool:
        return self.error is None and self.busy is None


def describe_uses(snapshot: NodeSnapshot) -> tuple[str, ...]:
    """Each live reservation, queued request and job on the node, as people read it."""
    uses = [f"reservation {r.id} ({r.owner}, GPUs {','.join(map(str, r.gpus))})"
            for r in snapshot.reservations if r.kind != "job"]
    uses += [f"queued request {q.id} ({q.owner})" for q in snapshot.queue]
    uses += [f"job {j.id} ({j.owner}, {j.state})" for j in snapshot.jobs if j.state not in ENDED_JOB_STATES]
    return tuple(uses)


async def usage(config: Config, instances: list[Instance]) -> dict[str, Usage]:
    """The use of each running instance among ``instances`` (one snapshot from each agent); an
    instance that is not running uses nothing, one whose node cannot be dialled is an error."""
    nodes = {n.name: n for n in cloud_nodes(config, [i for i in instances if i.state == "running"])}
    found: dict[str, Usage] = {}
    for instance in instances:
        if instance.state != "running":
            found[instance.id] = Usage(instance.id)
        elif instance.id not in nodes:
            found[instance.id] = Usage(instance.id, error="its node has no address to dial yet")
    if not nodes:
        return found
    async with Fleet(Registry(config, nodes.values()), owns=True) as fleet:
        snapshots = await fleet_snapshot(fleet, list(nodes), rates=False)  # only the instances' agents are asked
    for snapshot in snapshots:
        if not snapshot.reachable or snapshot.state_error:
            found[snapshot.name] = Usage(snapshot.name, error=snapshot.error or snapshot.state_error)
        else:
            found[snapshot.name] = Usage(snapshot.name, describe_uses(snapshot), busy_reason(snapshot))
    return found
