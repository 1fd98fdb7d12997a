"""The console's cloud side (issue 6), mixed into the app: discovery in a worker that only posts frozen
CloudViews, cloud nodes joining and leaving the fleet, and the cloud up / terminate / burst actions.

gpuconsole.cloud.monitor (and so boto3) is imported only inside workers and handlers that run when
`[cloud.aws]` is configured: a console without it never loads boto3.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from textual import work
from textual.screen import Screen
from textual.widgets import Static, TabbedContent
from textual.worker import Worker

from gpuconsole.config import Config
from gpuconsole.model.cloud import PHASE_LABELS, Instance
from gpuconsole.model.fleet import FleetState
from gpuconsole.textsafe import rich_text
from gpuconsole.tui.alerts import AlertBook
from gpuconsole.tui.messages import CloudViewArrived
from gpuconsole.tui.screens.cloud_dialogs import CloudUpDialog
from gpuconsole.tui.screens.dialogs import ConfirmDialog
from gpuconsole.tui.widgets.cloud_table import CloudTable, describe_instance

if TYPE_CHECKING:
    from textual.app import App

    from gpuconsole.cloud.idle import IdleCloudJudge
    from gpuconsole.cloud.monitor import CloudMonitor, CloudView, Quote
    from gpuconsole.core.burst import BurstPlan, Offer
    from gpuconsole.core.fleet import Fleet
    from gpuconsole.core.registry import Registry
    from gpuconsole.model.alerts import Alert
    from gpuconsole.tui.actions import Done

    _AppBase = App[int]
else:
    _AppBase = object

CLOUD_POLL_S = 10.0  # real AWS: DescribeInstances is rate-limited per account, shared by every console
CLOUD_POLL_LOOPBACK_S = 1.0  # an emulator on loopback (the demo, tests)
NOT_CONFIGURED = "Cloud: not configured. Add a [cloud.aws] section to the config to burst to EC2."


class CloudSide(_AppBase):
    """Cloud state and actions of GpuConsoleApp; the app calls `init_cloud` and `render_cloud`."""

    # Provided by GpuConsoleApp.
    config: Config
    registry: Registry
    actions: Fleet
    fleet: FleetState
    alerts: AlertBook
    readonly: bool
    wall_clock: Callable[[], float]
    _dirty: bool

    if TYPE_CHECKING:
        def act(self, failed: str, action: Callable[[], Awaitable[Done | None]]) -> Worker[None]: ...

    def init_cloud(self) -> None:
        self.cloud_view: CloudView | None = None
        self._cloud_monitor: CloudMonitor | None = None
        # Nodes a burst brought in, kept until discovery has seen their instance past `pending`: a
        # round that asked EC2 before the launch must not send them away again.
        self._burst_nodes: set[str] = set()
        self._cloud_kick = asyncio.Event()
        self._idle_cloud: IdleCloudJudge | None = None
        self.gone_nodes: set[str] = set()  # cloud nodes that left: late poll events for them are dropped
        self._cloud_status_shown = ""

    # -- discovery ----------------------------------------------------------------------------

    def cloud_monitor(self) -> CloudMonitor:
        """The monitor (one EC2 client), created on first use; call only from workers."""
        if self._cloud_monitor is None:
            from gpuconsole.cloud.monitor import CloudMonitor

            self._cloud_monitor = CloudMonitor(self.config)
        return self._cloud_monitor

    def kick_cloud(self) -> None:
        """Ask discovery to run now rather than at its next interval (after a launch or terminate)."""
        self._cloud_kick.set()

    @work(exclusive=True, group="cloud", exit_on_error=False)
    async def discover_cloud(self) -> None:
        """Ask EC2 every CLOUD_POLL_S (1 s on loopback); only posts CloudViewArrived messages."""
        from gpuconsole.cloud.ec2 import is_loopback_endpoint

        aws = self.config.aws
        assert aws is not None
        interval_s = CLOUD_POLL_LOOPBACK_S if is_loopback_endpoint(aws.endpoint_url) else CLOUD_POLL_S
        from gpuconsole.cloud.monitor import CloudView

        monitor = self.cloud_monitor()
        while True:
            self._cloud_kick.clear()
            try:
                view = await monitor.refresh()  # EC2 errors come back as a view with `error` set
            except Exception as exc:  # anything else must not end discovery for the session either
                view = CloudView(error=f"discovery failed: {exc}", taken_at_s=time.time())
            self.post_message(CloudViewArrived(view))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._cloud_kick.wait(), interval_s)

    def on_cloud_view_arrived(self, message: CloudViewArrived) -> None:
        self.apply_cloud_view(message.view)

    def inject_cloud(self, view: CloudView) -> None:
        """Feed a discovery round directly (tests and snapshots, no EC2 needed)."""
        self.apply_cloud_view(view)

    def apply_cloud_view(self, view: CloudView) -> None:
        """Keep the view; running instances' nodes join the fleet, nodes of stopped or gone ones leave.
        A failed round changes no membership (missing data is not proof an instance is gone)."""
        self.cloud_view = view
        if view.error is None:
            self._burst_nodes -= {i.id for i in view.instances if i.state != "pending"}
            running = {i.id for i in view.instances if i.state == "running"}
            self.registry.join(view.nodes)  # the registry tells the fleet view, the alerts and the poller
            self.registry.leave([n.name for n in self.registry.nodes if n.source == "cloud"
                                 and n.name not in running and n.name not in self._burst_nodes])
        self._dirty = True

    # -- what the rest of the console shows ---------------------------------------------------

    def cloud_summary(self) -> str:
        """The summary bar's cloud cell."""
        if self.config.aws is None:
            return "cloud: off"
        return self.cloud_view.summary() if self.cloud_view is not None else "cloud: …"

    def cloud_status(self) -> str:
        """The line above the Cloud tab's table."""
        if self.config.aws is None:
            return NOT_CONFIGURED
        view = self.cloud_view
        if view is None:
            return "Cloud: asking EC2…"
        if view.error:
            return f"Cloud: {view.error}"
        hint = "" if self.readonly else "  ·  u: start a node   D: terminate the selected one"
        summary = view.summary()
        return f"{summary[:1].upper()}{summary[1:]}  ·  {len(view.instances)} managed instance(s){hint}"

    def render_cloud(self, styles: dict[str, str], main: Screen[Any]) -> None:
        """Repaint the Cloud tab (uptime and cost tick with the wall clock)."""
        main.query_one(CloudTable).show(self.cloud_view, self.fleet, styles, self.wall_clock())
        text = self.cloud_status()
        if text != self._cloud_status_shown:  # Static.update costs a layout pass: only on change
            self._cloud_status_shown = text
            main.query_one("#cloud-status", Static).update(rich_text(text))

    def idle_cloud_conditions(self, now_s: float) -> list[Alert] | None:
        """idle_cloud conditions for the alert log ([] without a cloud; None when EC2 is unavailable)."""
        aws, view = self.config.aws, self.cloud_view
        if aws is None or view is None:
            return []
        if view.error is not None:
            return None
        if self._idle_cloud is None:
            from gpuconsole.cloud.idle import IdleCloudJudge

            self._idle_cloud = IdleCloudJudge(aws.idle_stop_minutes * 60.0, self.alerts.detector)
        return self._idle_cloud.judge(now_s, view)

    # -- actions ------------------------------------------------------------------------------

    def _cloud_configured(self) -> bool:
        if self.config.aws is None:
            self.notify("no [cloud.aws] section in the config", title="cloud", severity="warning")
            return False
        return True

    async def quote_for(self, gpus: int) -> Quote:
        """What `cloud up` would start for ``gpus`` GPUs (the cheapest allowed type, at EC2's price).
        The dialog asks this; a test may put a fixed quote in its place."""
        return await self.cloud_monitor().quote(gpus)

    def action_cloud_up(self) -> None:
        if self._cloud_configured():
            self.push_screen(CloudUpDialog(self.quote_for), self._cloud_up_chosen)

    def _cloud_up_chosen(self, quote: Quote | None) -> None:
        if quote is not None:
            self.run_cloud_up(quote)

    def _launch_progress(self, instance_id: str, phase: str, elapsed_s: float) -> None:
        """One toast per launch phase: pending → running → SSH reachable → agent ready."""
        self.notify(f"{instance_id}: {PHASE_LABELS.get(phase, phase)} after {elapsed_s:.1f}s", title="cloud up")
        self.kick_cloud()

    def run_cloud_up(self, quote: Quote) -> Worker[None]:
        async def cloud_up() -> None:
            self.notify(f"starting {quote.describe()}", title="cloud up")
            try:
                launched = await self.cloud_monitor().launch(quote, progress=self._launch_progress)
            finally:
                self.kick_cloud()
            for item in launched:
                self.notify(f"{item.instance.id} ({quote.instance_type}) is ready as a node", title="cloud up")

        return self.act("cloud up failed", cloud_up)

    def selected_instance(self) -> Instance | None:
        """The instance under the cursor in the Cloud tab, or None (with a hint)."""
        instance_id = None
        if self.query_one(TabbedContent).active == "tab-cloud":
            instance_id = self.query_one(CloudTable).selected_key
        found = [i for i in (self.cloud_view.instances if self.cloud_view else ()) if i.id == instance_id]
        if not found:
            self.notify("select an instance in the Cloud tab first", severity="warning")
            return None
        return found[0]

    def action_cloud_down(self) -> None:
        if not self._cloud_configured():
            return
        instance = self.selected_instance()
        if instance is None:
            return

        def confirmed(yes: bool | None) -> None:
            if yes:
                self.run_cloud_down(instance.id)

        question = f"Terminate {instance.id} ({describe_instance(instance, self.wall_clock())})?"
        self.push_screen(ConfirmDialog(question, "Terminate", "Keep running"), confirmed)

    def run_cloud_down(self, instance_id: str) -> Worker[None]:
        async def cloud_down() -> None:
            done = await self.cloud_monitor().down([instance_id])
            self.kick_cloud()
            for instance in done:
                self.notify(f"terminating {instance.id} ({instance.type})", title="cloud down")

        return self.act("terminate failed", cloud_down)

    async def _confirm_burst(self, gpus: int, offer: Offer) -> bool:
        """The console's burst confirmation: the dialog with the quote; on yes, say so."""
        question = f"No node has {gpus} free GPU{'s' if gpus != 1 else ''}. Start {offer.describe()}?"
        if not await self.push_screen_wait(ConfirmDialog(question, "Start")):
            return False
        self.notify(f"starting {offer.describe()}", title="burst")
        return True

    def _note_burst_node(self, instance_id: str, phase: str, elapsed_s: float) -> None:
        if phase == "agent":  # it joins the registry now: keep it until discovery has seen it run
            self._burst_nodes.add(instance_id)
        self._launch_progress(instance_id, phase, elapsed_s)

    def burst_plan(self) -> BurstPlan:
        """How the console bursts (core.burst does the work, inside the reserve worker): the quote in
        a dialog, launch phases as toasts. Loads the cloud side (boto3) only when asked."""
        from gpuconsole.cloud.burst import ec2_offers
        from gpuconsole.core.burst import BurstPlan

        return BurstPlan(ec2_offers(self.cloud_monitor()), self._confirm_burst, self._note_burst_node)
