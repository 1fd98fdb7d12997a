"""Burst: when no node can serve a request now, start the cheapest allowed instance that fits and
add it to the fleet, so the caller can reserve or submit there like on any node."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from gpuconsole.cloud.ec2 import Ec2
from gpuconsole.cloud.inventory import with_nodes
from gpuconsole.cloud.launch import Launched, Progress, launch, quote, wait_ready
from gpuconsole.core.fleet import Fleet
from gpuconsole.errors import UsageError

BURST_READY_TIMEOUT_S = 600.0
Announce = Callable[[str], None]


async def burst_node(fleet: Fleet, gpus: int, *, spot: bool | None = None,
                     timeout_s: float = BURST_READY_TIMEOUT_S, announce: Announce | None = None,
                     progress: Progress | None = None) -> str:
    """Launch one instance with at least ``gpus`` GPUs, wait for its agent, add it as a node; its name."""
    aws = fleet.config.aws
    if aws is None:
        raise UsageError("--burst needs a [cloud.aws] section in the config")
    ec2 = await asyncio.to_thread(Ec2, aws)
    chosen = await asyncio.to_thread(quote, ec2, aws, gpus, None, spot)
    if announce is not None:
        announce(f"no node can take {gpus} GPU(s) now: bursting to {chosen.describe()}")
    instances = await asyncio.to_thread(launch, ec2, aws, chosen.instance_type, spot=chosen.spot, count=1)
    launched = [Launched(instances[0])]
    await wait_ready(ec2, fleet.config, launched, timeout_s=timeout_s, progress=progress)
    node = launched[0].node
    assert node is not None
    fleet.config = with_nodes(fleet.config, [node])
    return node.name
