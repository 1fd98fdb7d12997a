"""`reserve --wait` on one node: hold the ticket through dropped connections until granted, timed
out or interrupted.

A queued ticket lives only while the agent that queued it lives (the node drops a dead waiter's
ticket), so a dropped connection is a lost ticket unless the waiter comes back for it: reconnect
with backoff inside the timeout, then `reattach` (the node hands the ticket, and its place, to the
new agent) or, on a node that cannot, queue again. A cancelled wait (Ctrl-C, SIGTERM, a closed
console) withdraws its ticket before it ends, so nothing is left queued for a waiter that is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

from gpuconsole.core.nodeapi import NodeRequests, new_req_id
from gpuconsole.errors import AgentError, GpuConsoleError, NoCapacityError, UnreachableError
from gpuconsole.model.answers import Grant, Released, Ticket, grant_or_ticket

WAIT_POLL_S = 0.2
RECONNECT_FIRST_S = 0.25  # backoff after a lost connection: doubling, full jitter, capped
RECONNECT_MAX_S = 5.0
WITHDRAW_S = 5.0  # how long an interrupted wait may spend withdrawing its ticket
DEADLINE_SLACK_S = 1.0  # the node's copy of our deadline runs a network delay behind ours
TRANSIENT_AGENT_CODES = frozenset({"busy", "io"})  # the node's lock or disk, briefly

ProgressCallback = Callable[[str, Ticket, float], None]  # node, where the request stands, seconds waited
NoticeCallback = Callable[[str], None]



def _transient(exc: GpuConsoleError) -> bool:
    """Worth reconnecting for: a lost, refused or timed-out connection (a plain UnreachableError)
    or a briefly busy node. The subclasses (authentication, host key, a malformed reply) would fail
    the same way again, so they end the wait at once."""
    if isinstance(exc, AgentError):
        return exc.code in TRANSIENT_AGENT_CODES
    return type(exc) is UnreachableError


class Waiter:
    """One queued request on one node, followed until it is granted."""

    def __init__(self, fleet: NodeRequests, node: str, args: dict[str, Any], timeout_s: float | None,
                 on_progress: ProgressCallback | None = None, on_notice: NoticeCallback | None = None) -> None:
        self.fleet = fleet
        self.node = node
        self.args = dict(args, wait=True)
        self.timeout_s = timeout_s
        self.on_progress = on_progress
        self.on_notice = on_notice
        self.started = time.monotonic()
        self.ticket_id: str | None = None
        # False once the agent that queued the ticket may be gone (we reconnected since): the node
        # then drops the ticket at its next housekeeping unless it was reattached.
        self.attached = False
        self.position = 0
        self.unwithdrawn: str | None = None  # a ticket the node could not be told to drop

    def _notice(self, message: str) -> None:
        if self.on_notice is not None:
            self.on_notice(message)

    def _remaining_s(self) -> float | None:
        if self.timeout_s is None:
            return None
        return self.timeout_s - (time.monotonic() - self.started)

    def _timed_out_error(self, why: str = "") -> NoCapacityError:
        return NoCapacityError(
            f"timed out after {self.timeout_s:g}s waiting for {self.args['gpus']} GPUs on {self.node} "
            f"(position {self.position}){why}"
        )

    async def run(self) -> Grant:
        """Queue, follow, and return the grant; withdraws the ticket when cancelled or timed out."""
        submit = asyncio.ensure_future(self._submit())
        try:
            ticket = await asyncio.shield(submit)
            while not isinstance(ticket, Grant):
                self.position = ticket.position
                if self.on_progress is not None:
                    self.on_progress(self.node, ticket, time.monotonic() - self.started)
                remaining_s = self._remaining_s()
                if remaining_s is not None and remaining_s <= 0:
                    raise await self._give_up()
                await asyncio.sleep(WAIT_POLL_S if remaining_s is None else min(WAIT_POLL_S, remaining_s))
                ticket = await self._follow()
            return ticket
        except asyncio.CancelledError:
            if not submit.done():  # learn the id of a ticket that may be committed already
                with contextlib.suppress(BaseException):
                    await asyncio.wait_for(submit, WITHDRAW_S / 2)
            await self.withdraw()
            raise

    async def _submit(self) -> Grant | Ticket:
        """Queue the request; a retry after a drop resends the same req_id, so it is never queued twice."""
        req_id = new_req_id()

        async def send() -> Grant | Ticket:
            return await self._ask("reserve", self._request(req_id))

        ticket = await self._resilient(send)
        return self._took(ticket, attached=not ticket.replayed)

    async def _ask(self, op: str, args: dict[str, Any]) -> Grant | Ticket:
        """One reserve, poll or reattach on the node, no retry here; its answer parsed."""
        return grant_or_ticket(self.node, await self.fleet.request(self.node, op, args, retries=0))

    def _request(self, req_id: str) -> dict[str, Any]:
        """The reserve request; with a timeout, the node is told how long we wait (`wait_s`), so it
        never grants the ticket after we have given up, even if our withdraw cannot reach it."""
        args = dict(self.args, req_id=req_id)
        remaining_s = self._remaining_s()
        if remaining_s is not None:
            args["wait_s"] = max(remaining_s, 0.001)
        return args

    def _took(self, ticket: Grant | Ticket, *, attached: bool) -> Grant | Ticket:
        self.ticket_id = ticket.id
        self.attached = attached
        return ticket

    async def _follow(self) -> Grant | Ticket:
        """The ticket now: a poll, or after a lost connection, the ticket taken back."""
        assert self.ticket_id is not None
        ticket_id = self.ticket_id
        try:
            return await self._ask("poll", {"id": ticket_id})
        except AgentError as exc:
            if exc.code == "not_found" and self._past_deadline():
                self.ticket_id = None  # the node dropped it at the deadline we gave it: a timeout
                raise self._timed_out_error() from None
            if exc.code == "not_found" and not self.attached:
                return await self._requeue()  # dropped with the agent that queued it
            if exc.code not in TRANSIENT_AGENT_CODES:
                raise
        except UnreachableError as exc:
            if not _transient(exc):
                raise
            self._notice(f"{exc} while waiting; reconnecting to keep the place in the queue")
            await self._drop()
        return await self._resilient(self._reattach)

    def _past_deadline(self) -> bool:
        """Within DEADLINE_SLACK_S of our timeout: the node (told `wait_s`) may have dropped the
        ticket a moment before our own clock ran out."""
        remaining_s = self._remaining_s()
        return remaining_s is not None and remaining_s < DEADLINE_SLACK_S

    async def _reattach(self) -> Grant | Ticket:
        """Give the ticket to this connection's agent, keeping its place; queue again if it is gone."""
        assert self.ticket_id is not None
        try:
            ticket = await self._ask("reattach", {"id": self.ticket_id, "req_id": new_req_id()})
        except AgentError as exc:
            if exc.code == "not_found" and self._past_deadline():
                self.ticket_id = None
                raise self._timed_out_error() from None
            if exc.code == "not_found":
                return await self._requeue()
            if exc.code != "invalid" or "unknown op" not in str(exc):
                raise
            # A node without `reattach`: the ticket stays while its old agent lingers, then goes.
            try:
                return await self._ask("poll", {"id": self.ticket_id})
            except AgentError as poll_exc:
                if poll_exc.code != "not_found":
                    raise
                return await self._requeue()
        self.attached = True
        return ticket

    async def _requeue(self) -> Grant | Ticket:
        lost = self.ticket_id
        ticket = await self._ask("reserve", self._request(new_req_id()))
        self._took(ticket, attached=True)
        if isinstance(ticket, Ticket):
            self._notice(f"{self.node}: queued request {lost} was dropped while disconnected; queued again as "
                         f"{self.ticket_id} at position {ticket.position}")
        return ticket

    async def _resilient(self, step: Callable[[], Awaitable[Grant | Ticket]]) -> Grant | Ticket:
        """Run ``step`` until it gets through: reconnect after transient failures, with capped,
        jittered backoff, until the timeout (then exit 3 as for any timed-out wait)."""
        delay_s = RECONNECT_FIRST_S
        while True:
            try:
                return await step()
            except GpuConsoleError as exc:
                if not _transient(exc):
                    raise
                remaining_s = self._remaining_s()
                if remaining_s is not None and remaining_s <= 0:
                    raise await self._give_up(f"; {self.node} unreachable: {exc}") from None
                pause_s = random.uniform(0, delay_s)
                await asyncio.sleep(pause_s if remaining_s is None else min(pause_s, remaining_s))
                delay_s = min(delay_s * 2, RECONNECT_MAX_S)
                if isinstance(exc, UnreachableError):
                    await self._drop()

    async def _drop(self) -> None:
        """Forget a dead connection (the next request opens a new one); its agent took the ticket's
        attachment with it."""
        self.attached = False
        await self.fleet.drop(self.node)

    async def withdraw(self, *, announce: bool = True) -> bool:
        """Release the ticket (or the grant it just became) before the waiter goes away; False when
        the node could not be told, so the request may still be (or have been) granted."""
        if self.ticket_id is None:
            return True
        ticket_id, self.ticket_id = self.ticket_id, None
        req_id = new_req_id()  # one id for every try: a retry of a committed release is replayed
        deadline = time.monotonic() + WITHDRAW_S
        delay_s = RECONNECT_FIRST_S / 2
        while True:
            try:
                async with asyncio.timeout(max(0.1, deadline - time.monotonic())):
                    result = await self.fleet.request(self.node, "release", {"id": ticket_id, "req_id": req_id})
                break
            except AgentError as exc:
                if exc.code in TRANSIENT_AGENT_CODES and time.monotonic() + delay_s < deadline:
                    await asyncio.sleep(delay_s)  # a full disk or a held lock, briefly: try again
                    delay_s = min(delay_s * 2, RECONNECT_MAX_S)
                    continue
                if exc.code != "not_found":
                    self._notice(f"{self.node}: could not withdraw queued request {ticket_id}: {exc}")
                    self.unwithdrawn = ticket_id
                    return False
                return True
            except (GpuConsoleError, TimeoutError) as exc:
                if isinstance(exc, GpuConsoleError) and _transient(exc) and time.monotonic() + delay_s < deadline:
                    await asyncio.sleep(delay_s)
                    delay_s = min(delay_s * 2, RECONNECT_MAX_S)
                    continue
                self._notice(f"{self.node}: could not withdraw queued request {ticket_id} ({exc or 'timed out'}); "
                             "the node drops it when it sees this client gone or its wait ran out")
                self.unwithdrawn = ticket_id
                return False
        if Released.from_agent(self.node, result).was == "active":
            self._notice(f"released {ticket_id} on {self.node}: it was granted as the wait ended")
        elif announce:
            self._notice(f"withdrew queued request {ticket_id} on {self.node}")
        return True

    async def _give_up(self, why: str = "") -> GpuConsoleError:
        """The error for a wait that ran out: a timeout (exit 3) only once the ticket is known to be
        withdrawn; if the node could not be told, it may have been granted meanwhile (exit 5)."""
        if await self.withdraw(announce=False):
            return self._timed_out_error(why)
        return UnreachableError(
            f"timed out after {self.timeout_s:g}s waiting on {self.node}{why}, and the request "
            f"{self.unwithdrawn} could not be withdrawn: it may have been granted; check `gpuconsole reservations`")


async def wait_for_grant(
    fleet: NodeRequests, node: str, args: dict[str, Any], timeout_s: float | None,
    on_progress: ProgressCallback | None = None, on_notice: NoticeCallback | None = None,
) -> Grant:
    """Queue ``args`` on ``node`` and return the grant (see the module docstring)."""
    return await Waiter(fleet, node, args, timeout_s, on_progress, on_notice).run()
