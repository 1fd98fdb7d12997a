"""SVG snapshots at 120×40 with frozen clocks and seeded data: main screen, tabs, dialogs, every theme."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from textual.screen import Screen
from textual.widgets import Input

from gpuconsole.cloud.monitor import CloudView, Quote
from gpuconsole.tui.app import GpuConsoleApp
from gpuconsole.tui.screens.cloud_dialogs import CloudUpDialog
from gpuconsole.tui.screens.dialogs import ConfirmDialog, HelpScreen, ReserveDialog
from gpuconsole.tui.themes import load_themes
from tests.tui.fixture_fleet import (
    FROZEN_NOW_S,
    FROZEN_WALL_S,
    fixture_cloud_node,
    fixture_cloud_node_event,
    fixture_config,
    fixture_events,
    fixture_instances,
)

SIZE = (120, 40)
SETTLE_DEADLINE_S = 30.0  # generous: a loaded 2-core machine mounts a dialog late, never this late


def frozen_app(theme: str = "gpuconsole-dark", cloud: bool = False) -> GpuConsoleApp:
    app = GpuConsoleApp(fixture_config(cloud), theme_name=theme, poll=False, clock=lambda: FROZEN_NOW_S,
                        wall_clock=lambda: FROZEN_WALL_S)
    for event in fixture_events():
        app.inject(event)
    if cloud:
        app.inject_cloud(CloudView(fixture_instances(), (fixture_cloud_node(),), None, FROZEN_WALL_S))
        app.inject(fixture_cloud_node_event())
    return app


async def _steady(pilot: Any, keys: Sequence[str] = (), *, screen: type[Screen[Any]] | None = None,
                  ready: Callable[[Any], bool] = lambda app: True, what: str = "the screen") -> None:
    """Press `keys`, wait (with a deadline) until `screen` is on top and `ready(app)` holds, then stop
    every input's cursor blinking (shown, steady) so a loaded machine cannot catch it half-way."""
    await pilot.press(*keys)
    app = pilot.app
    deadline_s = time.monotonic() + SETTLE_DEADLINE_S
    while not ((screen is None or isinstance(app.screen, screen)) and ready(app)):
        if time.monotonic() > deadline_s:
            raise AssertionError(f"{what} not shown within {SETTLE_DEADLINE_S:g} s")
        await pilot.pause(0.01)
    for shown in app.screen_stack:
        for box in shown.query(Input):
            box.cursor_blink = False
    await pilot.wait_for_scheduled_animations()
    await pilot.pause()


async def _open_reserve(pilot: Any) -> None:
    await _steady(pilot, ["r"], screen=ReserveDialog, what="the reserve dialog")


async def _open(pilot: Any, tab: str) -> None:
    pilot.app.query_one("#bottom").active = tab
    await pilot.pause()


class TestMainScreen:
    @pytest.mark.parametrize("theme", sorted(t.name for t in load_themes().themes))
    def test_main_screen(self, snap_compare: Any, theme: str) -> None:
        assert snap_compare(frozen_app(theme), terminal_size=SIZE)

    def test_reservations_tab(self, snap_compare: Any) -> None:
        async def open_tab(pilot: Any) -> None:
            await _open(pilot, "tab-reservations")

        assert snap_compare(frozen_app(), terminal_size=SIZE, run_before=open_tab)

    def test_cloud_tab(self, snap_compare: Any) -> None:
        """Running (a ready node, also in the node table as cloud), pending and stopped instances."""
        async def open_tab(pilot: Any) -> None:
            await _open(pilot, "tab-cloud")
            pilot.app.query_one("#cloud").focus()
            await pilot.pause()

        assert snap_compare(frozen_app(cloud=True), terminal_size=SIZE, run_before=open_tab)

    def test_alerts_tab(self, snap_compare: Any) -> None:
        """bob's idle reservation and carol's unreserved use, as `gpuconsole watch` would send them."""
        async def open_tab(pilot: Any) -> None:
            await _open(pilot, "tab-alerts")

        assert snap_compare(frozen_app(), terminal_size=SIZE, run_before=open_tab)


class TestDialogs:
    def test_reserve_dialog(self, snap_compare: Any) -> None:
        assert snap_compare(frozen_app(), terminal_size=SIZE, run_before=_open_reserve)

    def test_release_confirmation(self, snap_compare: Any) -> None:
        async def point_at_gpu(pilot: Any) -> None:
            pilot.app.query_one("#gpus").focus()
            await pilot.pause()

            await _steady(pilot, ["x"], screen=ConfirmDialog, what="the release confirmation")

        assert snap_compare(frozen_app(), terminal_size=SIZE, run_before=point_at_gpu)

    def test_terminate_confirmation(self, snap_compare: Any) -> None:
        async def point_at_instance(pilot: Any) -> None:
            await _open(pilot, "tab-cloud")
            pilot.app.query_one("#cloud").focus()
            await pilot.pause()
            await _steady(pilot, ["D"], screen=ConfirmDialog, what="the terminate confirmation")

        assert snap_compare(frozen_app(cloud=True), terminal_size=SIZE, run_before=point_at_instance)

    def test_cloud_up_dialog(self, snap_compare: Any) -> None:
        """`u` shows the quote for the GPU count (EC2 replaced by a fixed quote)."""
        app = frozen_app(cloud=True)

        async def quote(gpus: int) -> Quote:
            return Quote("g6.xlarge" if gpus == 1 else "g6e.12xlarge", 1 if gpus == 1 else 4, False, 0.8048)

        app.quote_for = quote  # type: ignore[method-assign]

        async def open_dialog(pilot: Any) -> None:
            await _steady(pilot, ["u"], screen=CloudUpDialog, what="the quote in the cloud-up dialog",
                          ready=lambda app: getattr(app.screen, "quote", None) is not None)

        assert snap_compare(app, terminal_size=SIZE, run_before=open_dialog)

    def test_reserve_dialog_with_burst(self, snap_compare: Any) -> None:
        assert snap_compare(frozen_app(cloud=True), terminal_size=SIZE, run_before=_open_reserve)

    def test_help(self, snap_compare: Any) -> None:
        async def open_help(pilot: Any) -> None:
            await _steady(pilot, ["question_mark"], screen=HelpScreen, what="the help screen")

        assert snap_compare(frozen_app(), terminal_size=SIZE, run_before=open_help)

    def test_filter(self, snap_compare: Any) -> None:
        async def type_filter(pilot: Any) -> None:
            await _steady(pilot, ["slash", "d", "g", "x", "-", "0", "2"], what="the filtered node table",
                          ready=lambda app: app.name_filter == "dgx-02" and app.query_one("#nodes").row_count == 1)

        assert snap_compare(frozen_app(), terminal_size=SIZE, run_before=type_filter)
