"""SVG snapshots at 120×40 with a frozen clock and seeded data: main screen, dialogs, every theme."""

from __future__ import annotations

from typing import Any

import pytest

from gpuconsole.tui.app import GpuConsoleApp
from gpuconsole.tui.themes import load_themes
from tests.tui.fixture_fleet import FROZEN_NOW_S, fixture_config, fixture_events

SIZE = (120, 40)


def frozen_app(theme: str = "gpuconsole-dark") -> GpuConsoleApp:
    app = GpuConsoleApp(fixture_config(), theme_name=theme, poll=False, clock=lambda: FROZEN_NOW_S)
    for event in fixture_events():
        app.inject(event)
    return app


class TestMainScreen:
    @pytest.mark.parametrize("theme", sorted(t.name for t in load_themes().themes))
    def test_main_screen(self, snap_compare: Any, theme: str) -> None:
        assert snap_compare(frozen_app(theme), terminal_size=SIZE)

    def test_reservations_tab(self, snap_compare: Any) -> None:
        async def open_tab(pilot: Any) -> None:
            pilot.app.query_one("#bottom").active = "tab-reservations"
            await pilot.pause()

        assert snap_compare(frozen_app(), terminal_size=SIZE, run_before=open_tab)


class TestDialogs:
    def test_reserve_dialog(self, snap_compare: Any) -> None:
        assert snap_compare(frozen_app(), terminal_size=SIZE, press=["r"])

    def test_release_confirmation(self, snap_compare: Any) -> None:
        async def point_at_gpu(pilot: Any) -> None:
            pilot.app.query_one("#gpus").focus()
            await pilot.pause()

        assert snap_compare(frozen_app(), terminal_size=SIZE, run_before=point_at_gpu, press=["x"])

    def test_help(self, snap_compare: Any) -> None:
        assert snap_compare(frozen_app(), terminal_size=SIZE, press=["question_mark"])

    def test_filter(self, snap_compare: Any) -> None:
        assert snap_compare(frozen_app(), terminal_size=SIZE, press=["slash", "d", "g", "x", "-", "0", "2"])
