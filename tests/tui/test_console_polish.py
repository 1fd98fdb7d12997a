"""Issue 13, the console's everyday polish: panels that fit 100×30 and 80×24, times as people read
them, the startup message, the filter's indicator, the sort key, confirmations that show their keys,
the reserve dialog's node, the help's dialog keys and an output view that follows the job."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import Button, RichLog, Select

from gpuconsole.config import load_config
from gpuconsole.demo.cluster import DemoThread
from gpuconsole.tui.app import GpuConsoleApp
from gpuconsole.tui.screens.dialogs import ConfirmDialog, HelpScreen, LogScreen, ReserveDialog
from gpuconsole.tui.widgets.fleet_tables import GpuTable, NodeTable
from gpuconsole.tui.widgets.job_table import JobTable
from tests.helpers import cli_json, run_cli, until
from tests.tui.fixture_fleet import NODES, frozen_console


def _rows(app: GpuConsoleApp) -> list[str]:
    return [str(row.key.value) for row in app.query_one(NodeTable).ordered_rows]


@pytest.mark.parametrize("size", [(100, 30), (80, 24)])
async def test_narrow_panels_keep_the_holder_and_whole_ids(size: tuple[int, int]) -> None:
    """At 100×30 and 80×24 the lesser columns go, not the holder (with the time left on the lease),
    and an EC2 instance id stays whole; at 100 the network rates stay too."""
    app = frozen_console(cloud=True)
    async with app.run_test(size=size) as pilot:
        await until(pilot, lambda: "alice · 3h30m left" in app.screen_text(), "the holder column")
        text = app.screen_text()
        assert "bob · 2h left ⚑idle" in text
        assert "▲ 2  ⚑ 2  ⚠ 1" in text.splitlines()[1]  # the summary's flags: its counts get shorter first
        assert ("net rx/tx" in text) == (size[0] >= 100)
        assert "reservation" in app.query_one(GpuTable).shown_columns
        assert "·13:00Z" not in text
        app.query_one("#bottom").active = "tab-reservations"  # type: ignore[attr-defined]
        # A cloud node's name is its instance id: never cut, nor the reservation's id.
        await until(pilot, lambda: "r-c10ud5  i-0a1b2c3d4e5f60718 " in app.screen_text(), "whole ids")


@pytest.mark.parametrize(("size", "ends"), [((100, 30), "until 13:00 UTC (in 3h30m)"), ((80, 24), "3h30m left")])
async def test_reservations_tab_reads_like_a_person(size: tuple[int, int], ends: str) -> None:
    """Whole reservation ids and when each lease ends, as people read it (shorter when narrow)."""
    app = frozen_console()
    async with app.run_test(size=size) as pilot:
        app.query_one("#bottom").active = "tab-reservations"  # type: ignore[attr-defined]
        await until(pilot, lambda: "r-a7k2m9" in app.screen_text(), "the Reservations tab")
        text = app.screen_text()
        assert ends in text
        assert "r-a7k2m9" in text and "r-b4x8q2" in text and "r-q9w3e5" in text
        assert "2026-11-23 13:00:00Z" not in text


async def test_first_frame_says_it_is_connecting() -> None:
    """Before any node answers, the summary says what the console is doing."""
    app = frozen_console(events=False)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: "connecting to 5 nodes…" in app.screen_text(), "the startup message")
        assert "0/5 up" not in app.screen_text()


async def test_filter_shows_clears_keeps_order_and_the_gpu_panel_follows() -> None:
    app = frozen_console()
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: _rows(app) == list(NODES), "every node, in config order")
        await pilot.press("slash", "d", "g", "x", "-", "0", "2")
        await until(pilot, lambda: _rows(app) == ["dgx-02"], "the filtered node table")
        assert "filter: dgx-02" in app.screen_text() and "1 of 5" in app.screen_text()
        # dgx-01 was selected and is hidden now: the GPU panel shows the node that is shown.
        await until(pilot, lambda: "GPUs · dgx-02" in app.screen_text(), "the GPU panel to follow")
        await pilot.press("enter")  # closes the box, keeps the filter (the title says so)
        await until(pilot, lambda: app.focused is app.query_one(NodeTable), "focus back on the nodes")
        assert "filter: dgx-02" in app.screen_text()
        await pilot.press("escape")
        await until(pilot, lambda: _rows(app) == list(NODES), "every node back in config order")
        assert "filter:" not in app.screen_text()


async def test_sort_key_cycles_the_node_order() -> None:
    app = frozen_console()
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: _rows(app) == list(NODES), "config order")
        await pilot.press("o")
        await until(pilot, lambda: _rows(app) == sorted(NODES), "by name")
        assert "nodes · by name" in app.screen_text()
        await pilot.press("o")  # most free GPUs first; nodes without data last
        await until(pilot, lambda: _rows(app)[:3] == ["dgx-02", "dgx-03", "dgx-01"], "by free GPUs")
        await pilot.press("o", "o")
        await until(pilot, lambda: _rows(app) == list(NODES), "back to config order")


async def test_terminate_confirmation_shows_its_keys_and_the_whole_cost() -> None:
    app = frozen_console(cloud=True)
    async with app.run_test(size=(80, 24)) as pilot:
        app.query_one("#bottom").active = "tab-cloud"  # type: ignore[attr-defined]
        await pilot.pause()
        app.query_one("#cloud").focus()
        await pilot.pause()
        await pilot.press("D")
        await until(pilot, lambda: isinstance(app.screen, ConfirmDialog), "the terminate confirmation")
        await until(pilot, lambda: "so far)?" in app.screen_text(), "the whole question")
        text = app.screen_text()
        assert "$2.01 so far" in text
        assert "Terminate (y)" in text and "Keep running (n/esc)" in text
        await pilot.press("n")
        await until(pilot, lambda: not isinstance(app.screen, ConfirmDialog), "n keeps the instance")


async def test_reserve_dialog_preselects_the_highlighted_node() -> None:
    app = frozen_console()
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: app.query_one(NodeTable).row_count == len(NODES), "the node table")
        await pilot.press("down")
        await until(pilot, lambda: app.selected_node == "dgx-02", "dgx-02 highlighted")
        await pilot.press("r")
        await until(pilot, lambda: isinstance(app.screen, ReserveDialog), "the reserve dialog")
        assert app.screen.query_one("#node", Select).value == "dgx-02"


async def test_help_lists_the_dialog_keys() -> None:
    app = frozen_console()
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen), "help")
        await until(pilot, lambda: "In dialogs" in app.screen_text(), "the dialog keys")
        text = app.screen_text()
        assert "n, esc" in text and "sort nodes" in text and "clear the filter" in text


async def test_output_view_follows_the_job_and_cancel_says_keep_running(tmp_path: Path, demo: DemoThread) -> None:
    """New output scrolls into view while the view is at its end, stays put when scrolled up; the
    cancel confirmation reads "Cancel job" / "Keep running", and keeping it keeps the job."""
    stop = tmp_path / "stop"
    script = f"i=0; while [ ! -e {stop} ]; do i=$((i+1)); echo line-$i; sleep 0.02; done; echo last-line; sleep 60"
    submitted = run_cli("submit", "--gpus", "1", "--name", "chatty", "--json", "--", "sh", "-c", script,
                        config=demo.config_path)
    assert submitted.returncode == 0, submitted.stderr
    app = GpuConsoleApp(load_config(str(demo.config_path)))
    async with app.run_test(size=(100, 30)) as pilot:
        app.query_one("#bottom").active = "tab-jobs"  # type: ignore[attr-defined]
        table = app.query_one(JobTable)
        await until(pilot, lambda: table.row_count == 1, "the job in the Jobs tab", timeout_s=30)
        table.focus()
        await pilot.press("l")
        await until(pilot, lambda: isinstance(app.screen, LogScreen), "the output view")
        log = app.screen.query_one("#log", RichLog)
        await until(pilot, lambda: len(log.lines) > 60, "more output than the view holds", timeout_s=30)
        await until(pilot, lambda: log.max_scroll_y > 0 and log.scroll_y == log.max_scroll_y, "the view at its end")
        log.scroll_home(animate=False, immediate=True)
        lines_then = len(log.lines)
        await until(pilot, lambda: len(log.lines) > lines_then + 10, "new lines while scrolled up")
        assert log.scroll_y == 0  # the reader scrolled up: new lines do not pull the view down
        log.scroll_end(animate=False, immediate=True)
        stop.touch()
        await until(pilot, lambda: any("last-line" in line.text for line in log.lines), "the job's last line",
                    timeout_s=30)
        await until(pilot, lambda: log.scroll_y == log.max_scroll_y, "the view following to the end")
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, LogScreen), "the output view closed")
        await pilot.press("c")
        await until(pilot, lambda: isinstance(app.screen, ConfirmDialog), "the cancel confirmation")
        assert str(app.screen.query_one("#yes", Button).label) == "Cancel job (y)"
        assert str(app.screen.query_one("#no", Button).label) == "Keep running (n/esc)"
        await pilot.press("n")
        await until(pilot, lambda: not isinstance(app.screen, ConfirmDialog), "kept")
    assert [job["state"] for job in cli_json("jobs", config=demo.config_path)["jobs"]] == ["running"]
