"""The console fed random hostile snapshots (issue 11 fuzzing): any text in any node field, on
every tab, keeps the app running and puts no control, C1 or bidi character on the screen."""

from __future__ import annotations

import asyncio

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from tests.tui.hostile_console import SIZE, hostile_app, show_tab

CONTROLS = hs.sampled_from([chr(c) for c in (*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0))]
                           + ["\u202e", "\u2066", "\u2028", "[/]", "[bold red]", "[link=x]", "\\", "\ud800"])
TEXT = hs.lists(hs.one_of(CONTROLS, hs.characters(), hs.text(max_size=5)), min_size=1, max_size=12).map("".join)
TABS = ("tab-processes", "tab-reservations", "tab-jobs", "tab-cloud", "tab-alerts")


@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(text=TEXT)
def test_console_fed_random_hostile_text_stays_up_and_clean(text: str) -> None:
    async def go() -> None:
        app = hostile_app(text)
        async with app.run_test(size=SIZE) as pilot:
            app.judge_alerts()
            for tab in TABS:
                await show_tab(pilot, tab)  # asserts the screen is clean
            assert app.is_running

    asyncio.run(go())
