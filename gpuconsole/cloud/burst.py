"""Burst offers from EC2: the cheapest allowed instance that fits a request, which core.burst starts
(launch, then follow it to `agent ready`) once the front end's confirmation said yes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from gpuconsole.cloud.launch import Progress, Quote
from gpuconsole.cloud.monitor import CloudMonitor
from gpuconsole.config import NodeConfig
from gpuconsole.errors import UnreachableError

BURST_READY_TIMEOUT_S = 600.0


@dataclass(frozen=True, slots=True)
class Ec2Offer:
    """One quoted instance (a core.burst.Offer)."""

    monitor: CloudMonitor
    quote: Quote
    timeout_s: float = BURST_READY_TIMEOUT_S

    def describe(self) -> str:
        return self.quote.describe()

    @property
    def price_per_hour(self) -> float | None:
        return self.quote.price_per_hour

    async def start(self, progress: Progress | None) -> NodeConfig:
        """Launch it (max_instances holds) and wait for its agent; the node to use."""
        launched = await self.monitor.launch(self.quote, count=1, timeout_s=self.timeout_s, progress=progress)
        node = launched[0].node
        if node is None:  # wait_ready returns only once every instance has a node, or raises
            raise UnreachableError(f"{launched[0].instance.id} did not become a node")
        return node


def ec2_offers(monitor: CloudMonitor, *, spot: bool | None = None,
               timeout_s: float = BURST_READY_TIMEOUT_S) -> Callable[[int], Awaitable[Ec2Offer]]:
    """`offer_for` of a core.burst.BurstPlan: the cheapest allowed type with at least ``gpus`` GPUs."""

    async def offer_for(gpus: int) -> Ec2Offer:
        return Ec2Offer(monitor, await monitor.quote(gpus, None, spot), timeout_s)

    return offer_for
