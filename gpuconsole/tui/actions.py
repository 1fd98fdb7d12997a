"""The console's actions, mixed into the app: every one runs its core call through `act`, in a
worker off the UI path, over the connections the poller streams on (the registry's, one per node);
a failure is one escaped toast, a success a toast and an immediate refresh of the node it changed."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from textual.worker import Worker

from gpuconsole.config import Config
from gpuconsole.core.fleet import Fleet
from gpuconsole.core.registry import Registry
from gpuconsole.errors import GpuConsoleError
from gpuconsole.format import until_h
from gpuconsole.model.events import NodeUpdated
from gpuconsole.tui.screens.dialogs import LogScreen, ReserveForm

if TYPE_CHECKING:
    from textual.app import App

    from gpuconsole.core.burst import BurstPlan
    from gpuconsole.model.events import PollEvent

    _AppBase = App[int]
else:
    _AppBase = object

ERROR_TOAST_S = 8


@dataclass(frozen=True, slots=True)
class Done:
    """What an action reports when it worked: a toast, and the node to refresh at once (if any)."""

    message: str
    title: str
    node: str | None = None


class ActionSide(_AppBase):
    """Action workers of GpuConsoleApp; the app provides the registry, the clock and `inject`."""

    # Provided by GpuConsoleApp.
    config: Config
    registry: Registry
    actions: Fleet
    clock: Callable[[], float]
    wall_clock: Callable[[], float]

    if TYPE_CHECKING:
        def inject(self, event: PollEvent) -> None: ...
        def render_fleet(self) -> None: ...
        def burst_plan(self) -> BurstPlan: ...

    def act(self, failed: str, action: Callable[[], Awaitable[Done | None]]) -> Worker[None]:
        """Run ``action`` in a worker; a GpuConsoleError becomes the toast titled ``failed`` (the
        notify override escapes it), a Done its toast and a refresh; None reports nothing."""

        async def run() -> None:
            try:
                done = await action()
            except GpuConsoleError as exc:
                self.notify(str(exc), title=failed, severity="error", timeout=ERROR_TOAST_S)
                return
            if done is None:
                return
            self.notify(done.message, title=done.title)
            if done.node is not None:
                await self.refresh_node(done.node)

        return self.run_worker(run(), group="actions", exit_on_error=False)

    def _node_warning(self, node: str, text: str) -> None:
        """A node's warning on a reply that worked (gpuconsole.notices): a toast, once per text."""
        self.notify(f"{node}: {text}", title="node warning", severity="warning", timeout=ERROR_TOAST_S)

    async def _fleet(self) -> Fleet:
        """The fleet actions use: requests over the registry's connections (the poller's)."""
        return self.actions

    def run_reserve(self, form: ReserveForm) -> Worker[None]:
        from gpuconsole.core import burst as core_burst
        from gpuconsole.core import reservations as core

        request = core.ReserveRequest(gpus=form.gpus, ttl_s=form.ttl_s, node=form.node,
                                      preemptible=form.preemptible)

        async def reserve() -> Done | None:
            plan = self.burst_plan() if form.burst else None  # only a burst loads the cloud side
            result = await core_burst.reserve(self.actions, request, plan)
            if result is None:
                return None  # the burst was declined
            return Done(f"{result.id} on {result.node}: GPUs {result.cuda_visible_devices}, "
                        f"{until_h(result.expires_at, self.wall_clock())}", "reserved", result.node)

        return self.act("reserve failed", reserve)

    def run_release(self, rid: str) -> Worker[None]:
        from gpuconsole.core import reservations as core

        async def release() -> Done:
            result = await core.release(self.actions, rid)
            return Done(f"{rid} on {result.node}", "released", result.node)

        return self.act("release failed", release)

    def run_renew(self, rid: str) -> Worker[None]:
        from gpuconsole.core import reservations as core

        async def renew() -> Done:
            result = await core.renew(self.actions, rid, self.config.defaults.reserve_for_s)
            return Done(f"{rid} {until_h(result.expires_at, self.wall_clock())}", "renewed", result.node)

        return self.act("renew failed", renew)

    def run_job_action(self, action: str, job_id: str) -> Worker[None]:
        from gpuconsole.core import jobs as core_jobs

        async def job_action() -> Done:
            if action == "cancel":
                node = (await core_jobs.cancel(self.actions, job_id)).node
            else:
                node = (await core_jobs.preempt(self.actions, job_id)).node
            return Done(f"{job_id} on {node}", "cancelled" if action == "cancel" else "preempting", node)

        return self.act(f"{action} failed", job_action)

    def load_logs(self, screen: LogScreen) -> Worker[None]:
        """Stream the job's output into ``screen`` until the job ends; the worker belongs to the
        screen, so closing it stops the stream."""
        from gpuconsole.core import jobs as core_jobs

        async def follow() -> None:
            try:
                job = await core_jobs.follow_logs(self.actions, screen.job_id, screen.add_output, follow=True)
            except GpuConsoleError as exc:
                self.notify(str(exc), title="logs failed", severity="error", timeout=ERROR_TOAST_S)
                return
            screen.ended(job.state)

        return screen.run_worker(follow(), group="logs", exit_on_error=False)

    async def refresh_node(self, name: str) -> None:
        """Fetch one node's snapshot now instead of waiting for the next poll tick."""
        conn = self.registry.connection(name)
        if conn is None or not self.registry.has(name):
            return
        try:
            data = await conn.request("snapshot", timeout_s=10)
        except GpuConsoleError:
            return
        from gpuconsole.model import NodeSnapshot

        source = self.registry.node(name).source
        self.inject(NodeUpdated(NodeSnapshot.from_agent(name, data, source), self.clock()))
        self.render_fleet()
