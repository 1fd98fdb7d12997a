"""Burst orchestration, once for every front end: when no node can serve a reserve or a submit now,
offer the cheapest allowed cloud instance, and on yes start it, bring it into the fleet and place the
request there.

The cloud is a collaborator the front end passes in (gpuconsole.cloud.burst makes one from EC2), so
core imports neither cloud/ nor boto3, and a command that does not burst never loads them. The CLI
and the console differ only in their `confirm` (the --burst flag, the console's dialog) and in how
they report progress.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from gpuconsole.config import NodeConfig
from gpuconsole.core import jobs as core_jobs
from gpuconsole.core import requeue
from gpuconsole.core import reservations as core_reservations
from gpuconsole.core.nodeapi import NodeRequests
from gpuconsole.core.waiting import NoticeCallback, ProgressCallback
from gpuconsole.errors import NoCapacityError
from gpuconsole.model.answers import Grant
from gpuconsole.model.jobs import Submitted

Progress = Callable[[str, str, float], None]  # (instance id, phase, seconds since launch)


class Offer(Protocol):
    """One instance the cloud would start for a request."""

    def describe(self) -> str:
        """What it is and costs, e.g. `g6.xlarge (1 GPU, on-demand, $0.80/h)`."""
        ...

    @property
    def price_per_hour(self) -> float | None:
        """Its list price in dollars per hour (None: not priced)."""
        ...

    async def start(self, progress: Progress | None) -> NodeConfig:
        """Launch it and wait until its agent answers; the node to use."""
        ...


@dataclass(frozen=True, slots=True)
class BurstPlan:
    """How a front end bursts: where offers come from, who says yes, who hears of launch phases.

    ``confirm(gpus, offer)`` is asked once per burst, before anything is launched (the CLI asks on a
    terminal or takes --yes, the console shows its dialog); False (or an error it raises) leaves
    everything as it was. ``started(node, offer)`` hears of the new node once its agent answers, so a
    front end can say what it keeps costing.
    """

    offer_for: Callable[[int], Awaitable[Offer]]
    confirm: Callable[[int, Offer], Awaitable[bool]]
    progress: Progress | None = None
    started: Callable[[str, Offer], None] | None = None


async def burst_node(fleet: NodeRequests, gpus: int, plan: BurstPlan) -> str | None:
    """Start one instance with at least ``gpus`` GPUs and bring its node into the fleet (subscribers
    hear it join); its name, or None when `confirm` said no."""
    offer = await plan.offer_for(gpus)
    if not await plan.confirm(gpus, offer):
        return None
    node = await offer.start(plan.progress)
    fleet.join([node])
    if plan.started is not None:
        plan.started(node.name, offer)
    return node.name


async def reserve(
    fleet: NodeRequests, request: core_reservations.ReserveRequest, burst: BurstPlan | None = None, *,
    on_progress: ProgressCallback | None = None, on_notice: NoticeCallback | None = None,
) -> Grant | None:
    """Reserve as `core.reservations.reserve` does; with a plan, a request no node can take now (no
    queueing) bursts and is granted on the new node. None when the burst was declined."""
    if burst is None:
        return await core_reservations.reserve(fleet, request, on_progress=on_progress, on_notice=on_notice)
    try:
        return await core_reservations.reserve(fleet, dataclasses.replace(request, wait=False),
                                               on_progress=on_progress)
    except NoCapacityError:
        node = await burst_node(fleet, request.gpus, burst)
        if node is None:
            return None
        return await core_reservations.reserve(fleet, dataclasses.replace(request, node=node, wait=False))


async def submit(fleet: NodeRequests, request: core_jobs.SubmitRequest,
                 burst: BurstPlan | None = None) -> Submitted | None:
    """Submit as `core.jobs.submit` does (journaling a requeue-able cloud job); with a plan, a job no
    node can start now (no free GPUs, or a queue ahead) bursts and is submitted on the new node.
    None when the burst was declined."""
    if burst is not None:
        caps = await core_reservations.capacities(fleet, [request.node] if request.node else None)
        if not any(c.free >= request.gpus and c.queued == 0 for c in caps):
            node = await burst_node(fleet, request.gpus, burst)
            if node is None:
                return None
            request = dataclasses.replace(request, node=node)
    result = await core_jobs.submit(fleet, request)
    requeue.remember(fleet, request, result)
    return result
