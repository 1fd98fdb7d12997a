"""`gpuconsole shell`, once for the CLI and the console: reserve (or take an existing reservation),
open the shell session on its node, renew the lease while attached, release when the shell ends.

The lease is never left behind by accident: the release runs in a `finally`, also when SIGHUP (the
terminal closed) or SIGTERM ends the session; `keep` leaves it on purpose, and a reservation the
caller named (`reservation`) is left as it was found.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

from gpuconsole.core import burst as core_burst
from gpuconsole.core import reservations as core
from gpuconsole.core.burst import BurstPlan
from gpuconsole.core.fleet import Fleet
from gpuconsole.durations import format_duration_s
from gpuconsole.errors import GpuConsoleError, NotFoundError
from gpuconsole.ssh import pty

MIN_RENEW_S = 0.5
SIGNALS = (signal.SIGHUP, signal.SIGTERM)


@dataclass(frozen=True, slots=True)
class ShellPlan:
    """What a shell asks for: a new reservation (`request`) or an existing one (`reservation`)."""

    ttl_s: float  # the lease length it is renewed to while attached
    request: core.ReserveRequest | None = None
    reservation: str | None = None
    argv: Sequence[str] | None = None  # None: the login shell
    keep: bool = False  # leave a new reservation when the shell ends
    burst: BurstPlan | None = None

    @property
    def renew_every_s(self) -> float:
        """Well inside the lease: a third of it, so two renewals may fail before it lapses."""
        return max(MIN_RENEW_S, self.ttl_s / 3)


@dataclass(frozen=True, slots=True)
class Lease:
    """The reservation the shell runs in."""

    id: str
    node: str
    gpus: str  # as CUDA_VISIBLE_DEVICES spells them
    expires_at: str
    token: int | None
    ours: bool  # reserved by this shell: released when it ends (unless kept)


async def acquire(fleet: Fleet, plan: ShellPlan) -> Lease:
    """Reserve as `reserve` does, or find the named reservation (its node checks it is ours)."""
    if plan.reservation is not None:
        reservations, _, _ = await core.list_all(fleet)
        for r in reservations:
            if r.id == plan.reservation:
                return Lease(r.id, r.node, ",".join(map(str, r.gpus)), r.expires_at, r.token, ours=False)
        node = await core.find_node(fleet, plan.reservation)  # queued, or on a node that did not answer
        return Lease(plan.reservation, node, "?", "?", None, ours=False)
    assert plan.request is not None
    grant = await core_burst.reserve(fleet, plan.request, plan.burst)
    if grant is None:
        raise NotFoundError("the burst was declined: no reservation, no shell")
    return Lease(grant.id, grant.node, grant.cuda_visible_devices, grant.expires_at, grant.token, ours=True)


async def _renew_loop(fleet: Fleet, lease: Lease, plan: ShellPlan, say: Callable[[str], None]) -> None:
    """Renew every `renew_every_s` while the shell runs; a lost lease is said once, then left."""
    while True:
        await asyncio.sleep(plan.renew_every_s)
        try:
            await core.renew_on(fleet, lease.node, lease.id, plan.ttl_s, lease.token)
        except GpuConsoleError as exc:
            if isinstance(exc, NotFoundError):
                say(f"{lease.id} is over ({exc}); its GPUs may go to others now")
                return
            say(f"could not renew {lease.id} (will try again): {exc}")


@contextlib.contextmanager
def _signals_cancel(task: asyncio.Task[int], caught: list[int]) -> Iterator[None]:
    """SIGHUP/SIGTERM cancel the session (so its `finally` releases) instead of killing us; the
    handlers that were there before come back afterwards."""
    loop = asyncio.get_running_loop()
    before = {sig: signal.getsignal(sig) for sig in SIGNALS}

    def on_signal(sig: int) -> None:
        caught.append(sig)
        task.cancel()

    for sig in SIGNALS:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        yield
    finally:
        for sig in SIGNALS:
            loop.remove_signal_handler(sig)
            if before[sig] is not None:
                signal.signal(sig, before[sig])


async def run_shell(fleet: Fleet, plan: ShellPlan, say: Callable[[str], None], *, pty_wanted: bool,
                    hold_terminal: Callable[[], AbstractContextManager[object]] = contextlib.nullcontext) -> int:
    """The whole session; the remote exit status (128 + signal when SIGHUP/SIGTERM ended it).
    `hold_terminal` wraps the part that owns the terminal (the console suspends itself there)."""
    task = asyncio.current_task()
    assert task is not None
    caught: list[int] = []
    lease: Lease | None = None
    renewer: asyncio.Task[None] | None = None
    try:
        with _signals_cancel(task, caught):
            lease = await acquire(fleet, plan)
            conn = await fleet.registry.connect(lease.node)
            renewer = asyncio.create_task(_renew_loop(fleet, lease, plan, say), name="shell-renew")
            proc = await pty.start(conn, lease.id, plan.argv, pty=pty_wanted)
            if lease.ours:
                ending = "kept when it exits (--keep)" if plan.keep else "released when it exits"
            else:
                ending = "left as it is when it exits"
            with hold_terminal():
                say(f"shell on {lease.node} in {lease.id} (GPUs {lease.gpus}), renewed while attached, {ending}")
                return await pty.bridge(proc, lease.node, pty=pty_wanted)
    except asyncio.CancelledError:
        if caught:
            return 128 + caught[0]
        raise
    finally:
        if renewer is not None:
            renewer.cancel()
        if lease is not None and lease.ours:
            await _finish(fleet, lease, plan, say)


async def _finish(fleet: Fleet, lease: Lease, plan: ShellPlan, say: Callable[[str], None]) -> None:
    if plan.keep:
        say(f"kept {lease.id} on {lease.node} (GPUs {lease.gpus}); `gpuconsole release {lease.id}` ends it")
        return
    try:
        async with asyncio.timeout(15):
            await core.release_on(fleet, lease.node, lease.id, lease.token)
        say(f"released {lease.id} on {lease.node}")
    except (GpuConsoleError, TimeoutError) as exc:
        say(f"could not release {lease.id} on {lease.node}: {exc or 'timed out'}; it lapses within "
            f"{format_duration_s(plan.ttl_s)} (or `gpuconsole release {lease.id}`)")
