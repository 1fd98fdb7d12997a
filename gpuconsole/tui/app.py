"""The console: wiring only — themes, the poll worker, message routing and actions (the cloud side
lives in tui/cloud.py, the alert log's logic in tui/alerts.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.css.query import NoMatches
from textual.notifications import SeverityLevel
from textual.screen import Screen
from textual.widgets import Footer, Header, Input, Static, TabbedContent, TabPane

from gpuconsole import notices
from gpuconsole.config import COMPUTE_SOURCE, Config
from gpuconsole.core.clusters import member_of
from gpuconsole.core.fleet import Fleet
from gpuconsole.core.poller import Poller
from gpuconsole.core.registry import MemberEvent, NodeJoined, Registry
from gpuconsole.durations import format_duration_s
from gpuconsole.model.events import NodeUpdated, PollEvent
from gpuconsole.model.fleet import FleetState
from gpuconsole.notices import NoticeHandler
from gpuconsole.textsafe import rich_text, terminal_safe
from gpuconsole.tui.actions import ActionSide
from gpuconsole.tui.alerts import JUDGE_INTERVAL_S, AlertBook
from gpuconsole.tui.cloud import CloudSide
from gpuconsole.tui.commands import ConsoleCommands
from gpuconsole.tui.filtering import NodeListSide
from gpuconsole.tui.messages import PollEventArrived
from gpuconsole.tui.readback import ReadBack
from gpuconsole.tui.screens.dialogs import ConfirmDialog, HelpScreen, LogScreen, ReserveDialog, ReserveForm
from gpuconsole.tui.shell import open_shell
from gpuconsole.tui.themes import DEFAULT_THEME, VARIABLE_DEFAULTS, load_themes
from gpuconsole.tui.usage import UsageSide
from gpuconsole.tui.widgets.alert_log import AlertPanel
from gpuconsole.tui.widgets.cloud_table import CloudTable
from gpuconsole.tui.widgets.fleet_tables import GpuTable, NodeTable, ProcessTable
from gpuconsole.tui.widgets.job_table import JobTable
from gpuconsole.tui.widgets.keyed_table import KeyedTable
from gpuconsole.tui.widgets.reservation_table import ReservationTable, queue_why
from gpuconsole.tui.widgets.summary import SummaryBar, connecting_text
from gpuconsole.tui.widgets.usage_table import UsageTable

# Data arrives at the poll rate (1 Hz); repainting it at 2 Hz keeps it fresh without repainting
# 64 rows four times a second. Keys repaint at once (see _select_node).
RENDER_INTERVAL_S = 0.5
AGE_REFRESH_S = 1.0
MUTATING_ACTIONS = frozenset({"reserve", "release", "renew", "cancel_job", "preempt_job", "cloud_up", "cloud_down",
                              "shell"})


class GpuConsoleApp(NodeListSide, CloudSide, UsageSide, ActionSide, ReadBack, App[int]):
    """Fleet overview with reservations; every mutation goes through `core`, errors become toasts."""

    TITLE = "gpuconsole"
    CSS_PATH = "app.tcss"
    COMMANDS = App.COMMANDS | {ConsoleCommands}
    BINDINGS = [
        Binding("r", "reserve", "Reserve"),
        Binding("x", "release", "Release"),
        Binding("e", "renew", "Renew"),
        Binding("s", "shell", "Shell"),
        Binding("c", "cancel_job", "Cancel job", show=False),
        Binding("p", "preempt_job", "Preempt", show=False),
        Binding("l", "job_logs", "Logs", show=False),
        Binding("u", "cloud_up", "Cloud up", show=False),
        Binding("D", "cloud_down", "Terminate", show=False),
        Binding("slash", "filter", "Filter"),
        Binding("o", "cycle_sort", "Sort"),
        Binding("t", "next_theme", "Theme"),
        Binding("question_mark", "help", "Help"),
        Binding("q", "quit", "Quit"),
        Binding("escape", "close_filter", "Clear filter", show=False),
    ]

    def __init__(self, config: Config | Registry, *, theme_name: str | None = None, readonly: bool = False,
                 poll: bool = True, clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        # Membership and connections, one owner: the poller streams and the actions ask over the
        # same connection per node; Config stays what the file said (the CLI's registry holds the
        # cloud nodes it discovered).
        self.registry = config if isinstance(config, Registry) else Registry(config)
        config = self.registry.config
        nodes = self.registry.nodes
        self.config = config
        self.readonly = readonly
        self.clock = clock  # monotonic: poll event times, ages
        self.wall_clock = wall_clock  # epoch: alert times, cloud uptime and cost
        self._poll_enabled = poll
        self.fleet = FleetState([n.name for n in nodes], {n.name: n.source for n in nodes})
        self.init_node_list()
        self.selected_node: str | None = nodes[0].name if nodes else None
        self.poller: Poller | None = None
        self._dirty = True
        self._last_render_s = 0.0
        self._themes = load_themes()
        self._theme_names = [t.name for t in self._themes.themes]
        self._requested_theme = theme_name or DEFAULT_THEME
        self.registry.subscribe(self._members_changed)
        self.actions = Fleet(self.registry)
        self._previous_notices: NoticeHandler | None = None
        self.alerts = AlertBook(config.watch, [n.name for n in nodes], poll_s=config.defaults.poll_seconds)
        self._alerts_shown = -1
        self._queue_why_shown = ""  # the line under the reservations (ReservationTable.queue_why)
        self.init_cloud()
        self.init_usage()

    # -- setup ------------------------------------------------------------------------------

    def get_theme_variable_defaults(self) -> dict[str, str]:
        return dict(VARIABLE_DEFAULTS)

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False)
        yield SummaryBar(connecting_text(len(self.fleet.nodes)), id="summary")
        nodes = NodeTable(id="nodes")
        nodes.border_title = "nodes"
        yield nodes
        gpus = GpuTable(id="gpus")
        gpus.border_title = "GPUs"
        yield gpus
        with TabbedContent(id="bottom"):
            with TabPane("Processes", id="tab-processes"):
                yield ProcessTable(id="processes")
            with TabPane("Reservations", id="tab-reservations"):
                yield ReservationTable(id="reservations")
                why = Static("", id="queue-why", classes="status-line detail")
                why.display = False  # only while the cursor is on a queued request its node explained
                yield why
            with TabPane("Jobs", id="tab-jobs"):
                yield JobTable(id="jobs")
            with TabPane("Cloud", id="tab-cloud"):
                self._cloud_status_shown = self.cloud_status()
                yield Static(rich_text(self._cloud_status_shown), id="cloud-status", classes="status-line")
                yield CloudTable(id="cloud")
            with TabPane("Alerts", id="tab-alerts"):
                yield AlertPanel(id="alert-panel")
            with TabPane("Usage", id="tab-usage"):
                yield Static("reading the nodes' ledgers…", id="usage-status", classes="status-line")
                yield UsageTable(id="usage")
        yield Input(placeholder="filter nodes by name (enter keeps it, esc clears it)", id="filter")
        yield Footer()

    def on_mount(self) -> None:
        self._previous_notices = notices.set_handler(self._node_warning)
        for theme in self._themes.themes:
            self.register_theme(theme)
        if self._requested_theme in self.available_themes:
            self.theme = self._requested_theme
        else:
            self.notify(f"unknown theme {self._requested_theme!r}; using {DEFAULT_THEME}", severity="warning")
            self.theme = DEFAULT_THEME
        for failure in self._themes.failed:
            self.notify(f"theme not loaded: {failure}", severity="warning")
        self.set_interval(RENDER_INTERVAL_S, self._tick)
        self.set_interval(JUDGE_INTERVAL_S, self.judge_alerts)
        self.judge_alerts()
        self.render_fleet()
        self.query_one(NodeTable).on_key_move = self.show_node
        self.query_one(NodeTable).focus()
        if self._poll_enabled:
            self.poll_fleet()
            if self.config.aws is not None:
                self.discover_cloud()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """--readonly hides every mutating action (keys, footer and palette)."""
        return not (self.readonly and action in MUTATING_ACTIONS)

    # -- data -------------------------------------------------------------------------------

    @work(exclusive=True, group="poll", exit_on_error=False)
    async def poll_fleet(self) -> None:
        """Run the poller on the app's loop; it only posts messages, never touches widgets."""

        def forward(event: PollEvent) -> None:
            self.post_message(PollEventArrived(event))

        self.poller = Poller(self.registry, forward)
        self.poller.start()
        try:
            await asyncio.Event().wait()
        finally:
            await self.poller.aclose()

    @on(PollEventArrived)
    def _fold(self, message: PollEventArrived) -> None:
        self.inject(message.event)

    def inject(self, event: PollEvent) -> None:
        """Fold an event into the fleet view and the alert detector (the poller's path; also tests,
        snapshots and recorded data). Late events of a node that left the fleet are dropped."""
        name = event.snapshot.name if isinstance(event, NodeUpdated) else event.name
        if name in self.gone_nodes:
            return
        self.fleet.apply(event)
        # The event's own (monotonic) time on the wall clock, so injected history keeps its spacing.
        event_s = event.received_at if isinstance(event, NodeUpdated) else event.failed_at
        self.alerts.apply(event, self.wall_clock() - (self.clock() - event_s))
        self._dirty = True

    def judge_alerts(self) -> None:
        """Judge alert conditions now (watch thresholds from `[watch]`); new alerts repaint the log."""
        now_s = self.wall_clock()
        if self.alerts.judge(now_s, self.idle_cloud_conditions(now_s)):
            self._dirty = True

    def _styles(self) -> dict[str, str]:
        variables = self.current_theme.variables  # the theme's own, not the stylesheet's (may lag)
        return {key: variables.get(key, default) for key, default in VARIABLE_DEFAULTS.items()}

    def _tick(self) -> None:
        """Repaint when data arrived; otherwise once a second so "last seen" ages move."""
        now_s = self.clock()
        if self._dirty or now_s - self._last_render_s >= AGE_REFRESH_S:
            self.render_fleet()
        self.refresh_usage()

    def render_fleet(self) -> None:
        """Push the folded state down to the widgets (ages tick even without new data)."""
        if not self.screen_stack:
            return
        main = self.screen_stack[0]  # dialogs may be on top; the tables live on the main screen
        try:
            nodes, gpus = main.query_one(NodeTable), main.query_one(GpuTable)
            procs, reservations = main.query_one(ProcessTable), main.query_one(ReservationTable)
            job_table, alert_panel = main.query_one(JobTable), main.query_one(AlertPanel)
            summary, tabs = main.query_one(SummaryBar), main.query_one(TabbedContent)
        except NoMatches:
            return  # shutting down: the widgets are already gone
        now_s = self.clock()
        styles = self._styles()
        with self.batch_update():
            shown = self.visible_nodes()
            nodes.show(shown, now_s, styles)
            self.show_node_list(nodes, shown)
            view = self.fleet.nodes.get(self.selected_node or "")
            idle_for_s = self.alerts.idle_for_s(self.wall_clock())  # the idle rule's: [watch]'s detector
            gpus.show(view, self.fleet, styles, idle_for_s, self.wall_clock())
            gpus.border_title = rich_text(f"GPUs · {self.selected_node}" if self.selected_node else "GPUs")
            procs.show(view)
            reservations.show(self.fleet, styles, self.wall_clock())
            self.show_queue_why(main)
            job_table.show(self.fleet, styles, self.wall_clock())
            self.render_cloud(styles, main)
            active = self.alerts.active_keys
            alert_panel.show(self.alerts.entries, active, styles)
            if len(active) != self._alerts_shown:
                self._alerts_shown = len(active)
                tabs.get_tab("tab-alerts").label = f"Alerts ({len(active)})" if active else "Alerts"
            summary.show(self.fleet, cloud=self.cloud_summary(), alerts=len(active), idle_gpus=len(idle_for_s))
        self._dirty = False
        self._last_render_s = now_s

    @on(ReservationTable.RowHighlighted, "#reservations")
    def _select_reservation(self, _event: ReservationTable.RowHighlighted) -> None:
        self.show_queue_why(self.screen_stack[0])

    def show_queue_why(self, main: Screen[object]) -> None:
        """Under the reservations: why the queued request under the cursor waits and until when."""
        try:
            why, table = main.query_one("#queue-why", Static), main.query_one(ReservationTable)
        except NoMatches:
            return
        text = queue_why(self.fleet, table.selected_key, self.wall_clock())
        if text != self._queue_why_shown:
            self._queue_why_shown = text
            why.update(rich_text(text))
            why.display = bool(text)

    @on(NodeTable.RowHighlighted, "#nodes")
    def _select_node(self, event: NodeTable.RowHighlighted) -> None:
        # Only the row under the cursor now: a key already showed its node (NodeTable.on_key_move).
        if event.row_key.value is not None and event.row_key.value == self.query_one(NodeTable).selected_key:
            self.show_node(event.row_key.value)

    def show_node(self, name: str) -> None:
        """A new node under the cursor: repaint only its GPU and process panels, now."""
        if name == self.selected_node:
            return
        self.selected_node = name
        view = self.fleet.nodes.get(self.selected_node)
        with self.batch_update():
            gpus = self.query_one(GpuTable)
            now_wall_s = self.wall_clock()
            gpus.show(view, self.fleet, self._styles(), self.alerts.idle_for_s(now_wall_s), now_wall_s)
            gpus.border_title = rich_text(f"GPUs · {self.selected_node}")
            self.query_one(ProcessTable).show(view)

    def on_keyed_table_layout_changed(self, _: KeyedTable.LayoutChanged) -> None:
        self._dirty = True  # a narrowed column's cells take their short form at the next repaint

    def notify(self, message: str, *, title: str = "", severity: SeverityLevel = "information",
               timeout: float | None = None, markup: bool = True) -> None:
        """Every toast of the console: error texts quote node and user text, so message and title are
        escaped and never markup (`markup` is accepted and ignored)."""
        super().notify(terminal_safe(message), title=terminal_safe(title), severity=severity, timeout=timeout,
                       markup=False)

    # -- actions ----------------------------------------------------------------------------

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_next_theme(self) -> None:
        names = self._theme_names or [DEFAULT_THEME]
        index = names.index(self.theme) if self.theme in names else -1
        self.theme = names[(index + 1) % len(names)]
        self.notify(f"theme: {self.theme}")
        self.render_fleet()

    def action_reserve(self) -> None:
        duration = format_duration_s(self.config.defaults.reserve_for_s)
        # A Slurm node's row reserves on its cluster (Slurm picks the node); compute agents are no target.
        targets = [n.name for n in self.registry.nodes if n.source != COMPUTE_SOURCE]
        selected = member_of(self.config, self.selected_node) if self.selected_node else None
        dialog = ReserveDialog(targets, duration, selected, cloud=self.config.aws is not None)
        self.push_screen(dialog, self._reserve_chosen)

    def _reserve_chosen(self, form: ReserveForm | None) -> None:
        if form is not None:
            self.run_reserve(form)

    def selected_reservation(self) -> tuple[str, str] | None:
        """(id, description) of the reservation the user points at, if any."""
        tabs = self.query_one(TabbedContent)
        if tabs.active == "tab-reservations":
            rid = self.query_one(ReservationTable).selected_key
            if rid:
                for view in self.fleet.nodes.values():
                    for res in view.snapshot.reservations if view.snapshot else ():
                        if res.id == rid:
                            return rid, f"{rid} on {res.node} (GPUs {','.join(map(str, res.gpus))}, {res.owner})"
                    for req in view.snapshot.queue if view.snapshot else ():
                        if req.id == rid:
                            return rid, f"queued request {rid} on {req.node} ({req.owner})"
        key = self.query_one(GpuTable).selected_key
        node_view = self.fleet.nodes.get(self.selected_node or "")
        if key and node_view and node_view.snapshot:
            index = int(key.rsplit("/", 1)[-1])
            for gpu in node_view.snapshot.gpus:
                if gpu.index == index and gpu.reservation is not None:
                    ref = gpu.reservation
                    return ref.id, f"{ref.id} on {node_view.name} (GPU {index}, {ref.owner})"
        return None

    def action_release(self) -> None:
        target = self.selected_reservation()
        if target is None:
            self.notify("select a reservation first (Reservations tab, or a reserved GPU)", severity="warning")
            return
        rid, description = target

        def confirmed(yes: bool | None) -> None:
            if yes:
                self.run_release(rid)

        self.push_screen(ConfirmDialog(f"Release {description}?", "Release", "Keep it"), confirmed)

    def action_renew(self) -> None:
        target = self.selected_reservation()
        if target is None:
            self.notify("select a reservation first (Reservations tab, or a reserved GPU)", severity="warning")
            return
        self.run_renew(target[0])

    async def action_shell(self) -> None:
        """A shell on the selected node, the console suspended meanwhile (tui/shell.py)."""
        await open_shell(self)

    def selected_job(self) -> str | None:
        """The job under the cursor in the Jobs tab, or None (with a hint)."""
        job_id = None
        if self.query_one(TabbedContent).active == "tab-jobs":
            job_id = self.query_one(JobTable).selected_key
        if job_id is None:
            self.notify("select a job in the Jobs tab first", severity="warning")
        return job_id

    def _confirm_job_action(self, action: str, question: str, label: str, keep_label: str) -> None:
        job_id = self.selected_job()
        if job_id is None:
            return

        def confirmed(yes: bool | None) -> None:
            if yes:
                self.run_job_action(action, job_id)

        self.push_screen(ConfirmDialog(question.format(job=job_id), label, keep_label), confirmed)

    def action_cancel_job(self) -> None:
        self._confirm_job_action("cancel", "Cancel job {job}? (SIGTERM, then SIGKILL)", "Cancel job", "Keep running")

    def action_preempt_job(self) -> None:
        self._confirm_job_action("preempt", "Preempt job {job}? (requeued if it asked)", "Preempt", "Keep running")

    def action_job_logs(self) -> None:
        job_id = self.selected_job()
        if job_id is None:
            return
        screen = LogScreen(job_id, f"output of {job_id}")
        self.push_screen(screen)
        self.load_logs(screen)

    def _members_changed(self, event: MemberEvent) -> None:
        """A node joined or left the registry: the fleet view, the alert book and the selection follow
        (the poller subscribes on its own). Late poll events of a node that left are dropped."""
        if isinstance(event, NodeJoined):
            self.gone_nodes.discard(event.node.name)
            # A Slurm compute node's agent measures its Slurm node's row, which is the cluster's ("slurm").
            self.fleet.add_node(event.node.name, "slurm" if event.node.source == COMPUTE_SOURCE else event.node.source)
            self.alerts.expect(event.node.name)
        else:
            self.gone_nodes.add(event.name)
            self.fleet.remove_node(event.name)
            self.alerts.forget(event.name, self.wall_clock())
            if self.selected_node == event.name:
                self.selected_node = next(iter(self.fleet.nodes), None)
        self._dirty = True

    async def on_unmount(self) -> None:
        notices.set_handler(self._previous_notices)
        await self.registry.aclose()
