"""The console's Usage tab, mixed into the app: the figures of `gpuconsole usage --by user` over the
last USAGE_WINDOW_S, read from the nodes' ledgers by a worker when the tab is opened (and each
USAGE_REFRESH_S while it stays open), delivered as a frozen UsageArrived; cloud dollars come from
the cloud discovery the console already runs (no second DescribeInstances)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from textual import work
from textual.widgets import Static, TabbedContent

from gpuconsole.core.usage import usage
from gpuconsole.errors import GpuConsoleError
from gpuconsole.textsafe import rich_text
from gpuconsole.tui.messages import UsageArrived
from gpuconsole.tui.widgets.usage_table import UsageLine, UsageTable

if TYPE_CHECKING:
    from textual.app import App

    from gpuconsole.cloud.monitor import CloudView
    from gpuconsole.core.fleet import Fleet

    _AppBase = App[int]
else:
    _AppBase = object

USAGE_WINDOW_S = 30 * 86400.0
USAGE_REFRESH_S = 60.0


class UsageSide(_AppBase):
    """The Usage tab's data and its rendering; the app calls `init_usage` and composes the tab."""

    actions: Fleet
    cloud_view: CloudView | None
    wall_clock: Callable[[], float]

    if TYPE_CHECKING:
        def _styles(self) -> dict[str, str]: ...

    def init_usage(self) -> None:
        self._usage_lines: tuple[UsageLine, ...] = ()
        self._usage_read_s = 0.0

    @work(exclusive=True, group="usage", exit_on_error=False)
    async def read_usage(self) -> None:
        until_s = self.wall_clock()
        answers = await self.actions.call_all("ledger", {}, None)
        ledgers = {n: a["records"] for n, a in answers.items() if not isinstance(a, GpuConsoleError)}
        failed = tuple(sorted(n for n, a in answers.items() if isinstance(a, GpuConsoleError)))
        instances = self.cloud_view.instances if self.cloud_view is not None else ()
        rows = usage(ledgers, until_s - USAGE_WINDOW_S, until_s, "user", instances)
        self.post_message(UsageArrived(tuple(UsageLine.of(r.to_json()) for r in rows), failed, until_s))

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        if event.pane.id == "tab-usage" and time.monotonic() - self._usage_read_s >= 2.0:
            self._usage_read_s = time.monotonic()
            self.read_usage()

    def refresh_usage(self) -> None:
        """While the tab is open, read again every USAGE_REFRESH_S (the app's tick calls this)."""
        if self.query_one(TabbedContent).active == "tab-usage" \
                and time.monotonic() - self._usage_read_s >= USAGE_REFRESH_S:
            self._usage_read_s = time.monotonic()
            self.read_usage()

    def on_usage_arrived(self, message: UsageArrived) -> None:
        self._usage_lines = message.lines
        self.query_one(UsageTable).show(message.lines, self._styles())
        held = sum(line.held_h for line in message.lines)
        idle = sum(line.idle_h for line in message.lines)
        text = (f"last 30 days, {len(message.lines)} user{'s' if len(message.lines) != 1 else ''}: "
                f"{held:.1f} GPU-h held, {idle:.1f} of them idle"
                + (f" · not read: {', '.join(message.failed)}" if message.failed else "")
                + " · `gpuconsole usage` for more")
        self.query_one("#usage-status", Static).update(rich_text(text))
