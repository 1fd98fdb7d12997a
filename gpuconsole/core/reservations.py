"""Reserve, release, renew and list reservations across the fleet (CLI and TUI share these)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from gpuconsole.core.nodeapi import NodeRequests, new_req_id
from gpuconsole.core.placement import Capacity, best_fit, queue_choice
from gpuconsole.core.waiting import NoticeCallback, ProgressCallback, wait_for_grant
from gpuconsole.errors import (
    AgentError,
    GpuConsoleError,
    NoCapacityError,
    NotFoundError,
    UnreachableError,
    UsageError,
)
from gpuconsole.model import QueuedRequest, Reservation
from gpuconsole.model.answers import Grant, Released, grant_or_ticket
from gpuconsole.model.jobs import Job


@dataclass(frozen=True, slots=True)
class ReserveRequest:
    """What `reserve` asks for; durations are seconds and are evaluated on the node's clock."""

    gpus: int
    ttl_s: float
    node: str | None = None
    wait: bool = False
    timeout_s: float | None = None
    priority: str = "normal"
    preemptible: bool = False
    ttl_default: bool = False  # ttl_s is the config's default, not asked for: a node's policy may shorten it



def _raise_if_all_failed(results: dict[str, Any]) -> None:
    errors = [v for v in results.values() if isinstance(v, GpuConsoleError)]
    if results and len(errors) == len(results):
        raise UnreachableError("no node reachable: " + "; ".join(str(e) for e in errors))


async def capacities(fleet: NodeRequests, names: list[str] | None = None) -> list[Capacity]:
    """Free GPUs per reachable node (lock-free reads)."""
    results = await fleet.call_all("capacity", names=names)
    _raise_if_all_failed(results)
    return [
        Capacity.from_agent(name, r)
        for name, r in results.items()
        if not isinstance(r, GpuConsoleError)
    ]


async def reserve(
    fleet: NodeRequests, request: ReserveRequest, on_progress: ProgressCallback | None = None,
    on_notice: NoticeCallback | None = None,
) -> Grant:
    """Grant on the best-fitting node, trying the next on a lost race; queue with `wait`."""
    if request.gpus < 1:
        raise UsageError("--gpus must be at least 1")
    names = [request.node] if request.node else None
    caps = await capacities(fleet, names)
    largest = max((c.gpu_count for c in caps), default=0)
    if request.gpus > largest:
        where = f"node {request.node} has" if request.node else "the largest reachable node has"
        raise NoCapacityError(f"{request.gpus} GPUs requested but {where} {largest}")
    await _within_fleet_cap(fleet, caps, request.gpus, all_nodes=names is None)
    args = {
        "gpus": request.gpus, "ttl_s": request.ttl_s, "priority": request.priority,
        "preemptible": request.preemptible, **({"ttl_up_to_policy": True} if request.ttl_default else {}),
    }
    quota_refusals: list[str] = []
    for name in best_fit(caps, request.gpus):
        try:
            answer = grant_or_ticket(name, await _settled(fleet, name, "reserve", dict(args, req_id=new_req_id())))
            if isinstance(answer, Grant):
                return answer
            continue  # queued although not asked to wait: not a grant, whatever that node thinks
        except AgentError as exc:
            if exc.code != "insufficient":
                raise
            if isinstance(exc.detail.get("quota"), dict):
                quota_refusals.append(str(exc))  # the node's per-user cap, not its free GPUs, said no
    if not request.wait:
        summary = ", ".join(f"{c.node} {c.free}/{c.gpu_count}" for c in sorted(caps, key=lambda c: c.node))
        why = "".join(f"; {refusal}" for refusal in quota_refusals)
        raise NoCapacityError(
            f"no node has {request.gpus} free GPUs now for you (free: {summary}){why}; use --wait to queue"
            if why else f"no node has {request.gpus} free GPUs now (free: {summary}); use --wait to queue"
        )
    target = request.node or queue_choice(caps, request.gpus)
    assert target is not None
    # Survives dropped connections; a cancelled wait withdraws its ticket (gpuconsole.core.waiting).
    return await wait_for_grant(fleet, target, args, request.timeout_s, on_progress, on_notice)


async def _within_fleet_cap(fleet: NodeRequests, caps: list[Capacity], gpus: int, all_nodes: bool) -> None:
    """The nodes' policy's max_gpus_per_user_fleet (the lowest any node states), checked here since
    no node knows what the others granted: advisory, a client that skips it is held only by each
    node's own max_gpus_per_user. NoCapacityError (exit 3) when the request would pass it."""
    stated = [c.fleet_cap for c in caps if c.fleet_cap is not None]
    if not stated:
        return
    if not all_nodes:
        caps = await capacities(fleet)  # what the caller holds elsewhere counts too
    held = sum(c.mine for c in caps)
    if held + gpus > min(stated):
        raise NoCapacityError(f"{gpus} GPUs requested: you hold {held} across the fleet and its policy allows "
                              f"{min(stated)} per user (max_gpus_per_user_fleet)")


SETTLE_S = 10.0  # how long a change whose answer was lost is asked again before giving up


async def _settled(fleet: NodeRequests, node: str, op: str, args: dict[str, Any]) -> dict[str, Any]:
    """The answer to a change on ``node``, asked again with the same req_id while the node cannot be
    reached: a lost reply may hide a committed change (the node replays it), so moving on to another
    node, or reporting "no capacity", could leave a grant nobody knows about. Still no answer after
    SETTLE_S: exit 5 saying the change may have been made."""
    deadline = time.monotonic() + SETTLE_S
    delay_s = 0.2
    while True:
        try:
            return await fleet.request(node, op, args)
        except AgentError:
            raise
        except UnreachableError as exc:
            # Only a plain connection failure can clear up; a host-key, auth or protocol error would not.
            if type(exc) is not UnreachableError or time.monotonic() + delay_s >= deadline:
                raise UnreachableError(
                    f"{exc}; the {op} may have taken effect on {node}: check `gpuconsole reservations`"
                ) from None
            await asyncio.sleep(delay_s)
            delay_s = min(delay_s * 2, 2.0)


async def list_all(fleet: NodeRequests) -> tuple[list[Reservation], list[QueuedRequest], dict[str, str]]:
    """Every active reservation and queued request, and the nodes that could not be read."""
    results = await fleet.call_all("reservations")
    reservations: list[Reservation] = []
    queue: list[QueuedRequest] = []
    errors: dict[str, str] = {}
    for name, result in sorted(results.items()):
        if isinstance(result, GpuConsoleError):
            errors[name] = str(result)
            continue
        reservations += [Reservation.from_agent(name, r) for r in result["reservations"]]
        queue += [QueuedRequest.from_agent(name, q) for q in result["queue"]]
    return reservations, queue, errors


async def find_node(fleet: NodeRequests, reservation_id: str) -> str:
    """The node holding an active or queued reservation id; NotFoundError otherwise."""
    reservations, queue, errors = await list_all(fleet)
    items: list[Reservation | QueuedRequest] = [*reservations, *queue]
    for item in items:
        if item.id == reservation_id:
            return item.node
    if errors:  # it may well be there: "not found" would be a claim we cannot make (exit 5, not 6)
        raise UnreachableError(f"{reservation_id!r} is not on any reachable node, and "
                               f"{', '.join(sorted(errors))} did not answer: {'; '.join(errors.values())}")
    raise NotFoundError(f"no reservation {reservation_id!r} on any reachable node")


async def release(fleet: NodeRequests, reservation_id: str, token: int | None = None) -> Released:
    """Release one reservation wherever it is; the node checks ownership."""
    node = await find_node(fleet, reservation_id)
    return await release_on(fleet, node, reservation_id, token)


async def release_on(fleet: NodeRequests, node: str, reservation_id: str, token: int | None = None,
                     reason: str | None = None) -> Released:
    """Release one reservation on a node already known to hold it (no fleet-wide lookup); the node
    checks ownership, so a caller who is neither its owner nor an admin gets a permission error.
    `reason` "idle": the watcher's idle release (so the ledger says so)."""
    args: dict[str, Any] = {"id": reservation_id, "req_id": new_req_id()}
    if token is not None:
        args["token"] = token
    if reason is not None:
        args["reason"] = reason
    return Released.from_agent(node, await fleet.request(node, "release", args))


def is_mine(fleet: NodeRequests, item: Reservation | QueuedRequest | Job) -> bool:
    """Whether the SSH user on the item's node owns it (as that node's agent reports the user): the
    one rule of `release --mine`, `reservations --mine` and `jobs --mine`."""
    hello = fleet.hello(item.node)
    return hello is not None and hello.user == item.owner


async def release_mine(fleet: NodeRequests) -> list[Released]:
    """Release every reservation and queued request owned by the SSH user on each node."""
    reservations, queue, _ = await list_all(fleet)
    released = []
    items: list[Reservation | QueuedRequest] = [*reservations, *queue]
    for item in items:
        if not is_mine(fleet, item):
            continue
        result = await fleet.request(item.node, "release", {"id": item.id, "req_id": new_req_id()})
        released.append(Released.from_agent(item.node, result))
    return released


async def renew(fleet: NodeRequests, reservation_id: str, ttl_s: float, token: int | None = None) -> Grant:
    """Extend a reservation to at least now + ttl on its node's clock."""
    return await renew_on(fleet, await find_node(fleet, reservation_id), reservation_id, ttl_s, token)


async def renew_on(fleet: NodeRequests, node: str, reservation_id: str, ttl_s: float,
                   token: int | None = None) -> Grant:
    """Renew on a node already known to hold the reservation (no fleet-wide lookup: the shell's
    renew loop)."""
    args: dict[str, Any] = {"id": reservation_id, "ttl_s": ttl_s, "req_id": new_req_id()}
    if token is not None:
        args["token"] = token
    return Grant.from_agent(node, await fleet.request(node, "renew", args))
