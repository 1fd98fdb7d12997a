"""Pilot tests of the console against the demo cluster: real SSH, real agents, real poller."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from textual.widgets import DataTable

from gpuconsole.config import load_config
from gpuconsole.demo.cluster import DemoThread
from gpuconsole.model.fleet import Health
from gpuconsole.node import reservations as rs
from gpuconsole.node import state as st
from gpuconsole.node.store import StateStore
from gpuconsole.tui.app import GpuConsoleApp
from gpuconsole.tui.commands import COMMANDS, ConsoleCommands
from gpuconsole.tui.screens.dialogs import ConfirmDialog, ReserveDialog
from gpuconsole.tui.widgets.fleet_tables import GpuTable, NodeTable
from tests.helpers import cli_json, until


async def test_fleet_renders_with_right_counts(demo_factory: Callable[..., DemoThread]) -> None:
    demo = demo_factory(nodes=3, gpus=4)
    app = GpuConsoleApp(load_config(str(demo.config_path)))
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: all(v.health() is Health.UP for v in app.fleet.nodes.values()), "3 nodes up")
        await until(pilot, lambda: "3/3 up" in str(app.query_one("#summary").render())
                    and app.query_one(GpuTable).row_count == 4, "the next repaint")
        assert app.query_one(NodeTable).row_count == 3
        assert app.query_one(GpuTable).row_count == 4
        summary = str(app.query_one("#summary").render())
        assert "3/3 up" in summary and "12 free" in summary and "/ 12" in summary


async def test_reserve_dialog_creates_reservation_and_release_works(demo: DemoThread) -> None:
    app = GpuConsoleApp(load_config(str(demo.config_path)))
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.fleet.totals()["gpus"] == 8, "both nodes streaming")
        await pilot.press("r")
        await until(pilot, lambda: isinstance(app.screen, ReserveDialog), "reserve dialog")
        dialog = app.screen
        dialog.query_one("#gpus").value = "2"  # type: ignore[attr-defined]
        dialog.query_one("#duration").value = "30m"  # type: ignore[attr-defined]
        await pilot.click("#ok")
        listed: list[dict[str, object]] = []

        def reserved() -> bool:
            listed[:] = cli_json("reservations", config=demo.config_path)["reservations"]
            return bool(listed)

        await until(pilot, reserved, "reservation visible to the CLI", timeout_s=30)
        assert listed[0]["gpus"] == [0, 1] and listed[0]["node"] == "node-01"
        await until(pilot, lambda: app.fleet.totals()["reserved"] == 2, "console shows the reservation")
        assert any("reserved" in n for n in app.notifications())
        # Release: the cursor is on GPU 0 of node-01, which is now reserved.
        app.query_one(GpuTable).focus()
        await pilot.pause()
        await pilot.press("x")
        await until(pilot, lambda: isinstance(app.screen, ConfirmDialog), "confirmation")
        await pilot.press("y")
        await until(pilot, lambda: not cli_json("reservations", config=demo.config_path)["reservations"],
                    "release visible to the CLI", timeout_s=30)


async def test_permission_error_is_a_notification(demo: DemoThread) -> None:
    """Releasing another user's reservation shows an error toast; the app keeps running."""
    store = StateStore(str(demo.cluster.nodes["node-02"].state_dir))
    store.acquire()
    try:
        state, _, _ = store.load_locked("x")
        ctx = st.Ctx(uid=424242, user="bob", now_bt=time.clock_gettime(time.CLOCK_BOOTTIME),
                     now_wall=time.time(), gpu_count=4)
        grant = rs.reserve(state, ctx, {"gpus": 1, "ttl_s": 3600})
        store.commit(state)
    finally:
        store.release_lock()
    app = GpuConsoleApp(load_config(str(demo.config_path)))
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.fleet.totals()["reserved"] == 1, "bob's reservation")
        app.query_one("#bottom").active = "tab-reservations"  # type: ignore[attr-defined]
        await pilot.pause()
        app.query_one("#reservations").focus()
        # The table repaints on its own timer: a key pressed before the row is drawn selects nothing.
        await until(pilot, lambda: app.query_one("#reservations", DataTable).row_count > 0, "the reservation row")
        await pilot.pause()
        await pilot.press("x")
        await until(pilot, lambda: isinstance(app.screen, ConfirmDialog), "confirmation")
        await pilot.press("y")
        await until(pilot, lambda: any("release failed" in n for n in app.notifications()), "error toast")
        assert any("belongs to bob" in n for n in app.notifications())
        assert app.is_running
    assert [r["id"] for r in cli_json("reservations", config=demo.config_path)["reservations"]] == [grant["id"]]


async def test_dead_node_turns_unreachable_and_recovers(demo: DemoThread) -> None:
    config = load_config(str(demo.config_path))
    app = GpuConsoleApp(config)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.fleet.nodes["node-02"].health() is Health.UP, "node-02 up")
        await asyncio.to_thread(demo.stop_node, "node-02")
        await until(pilot, lambda: app.fleet.nodes["node-02"].health() is Health.STALE,
                    "node-02 stale", timeout_s=5 * config.defaults.poll_seconds + 5)
        await until(pilot, lambda: "stale" in str(app.query_one(NodeTable).get_cell("node-02", "health")),
                    "the table to show node-02 stale")
        assert app.fleet.nodes["node-01"].health() is Health.UP  # the other node is unaffected
        await asyncio.to_thread(demo.start_node, "node-02")
        await until(pilot, lambda: app.fleet.nodes["node-02"].health() is Health.UP, "recovery", timeout_s=45)


async def test_readonly_hides_mutating_actions(demo: DemoThread) -> None:
    app = GpuConsoleApp(load_config(str(demo.config_path)), readonly=True)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("r")
        await pilot.pause()
        assert not isinstance(app.screen, ReserveDialog)
        shown = {key for key, active in app.screen.active_bindings.items() if active.enabled}
        assert {"r", "x", "e", "c", "p", "u", "D"}.isdisjoint(shown)
        assert {"q", "question_mark"} <= shown
        offered = [str(hit.display) async for hit in ConsoleCommands(app.screen).discover()]
        assert offered == [name for name, _, _, mutating in COMMANDS if not mutating]  # the palette too


async def test_filter_narrows_the_node_table(tmp_path: Path, demo_factory: Callable[..., DemoThread]) -> None:
    demo = demo_factory(nodes=3, gpus=1)
    app = GpuConsoleApp(load_config(str(demo.config_path)))
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.fleet.totals()["up"] == 3, "3 up")
        await pilot.press("slash")
        await pilot.press("0", "3")
        await until(pilot, lambda: app.query_one(NodeTable).row_count == 1, "filtered to node-03")
        await pilot.press("escape")
        app.query_one("#filter").value = ""  # type: ignore[attr-defined]
        await until(pilot, lambda: app.query_one(NodeTable).row_count == 3, "unfiltered")


async def test_jobs_tab_lists_shows_output_and_cancels(demo: DemoThread) -> None:
    from gpuconsole.tui.screens.dialogs import LogScreen
    from gpuconsole.tui.widgets.job_table import JobTable
    from tests.helpers import run_cli

    submitted = run_cli("submit", "--gpus", "1", "--name", "loop", "--json", "--",
                        "sh", "-c", "echo hello-from-job; sleep 60", config=demo.config_path)
    assert submitted.returncode == 0, submitted.stderr
    app = GpuConsoleApp(load_config(str(demo.config_path)))
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: any(j.state == "running" for v in app.fleet.nodes.values()
                                       if v.snapshot for j in v.snapshot.jobs), "job running in telemetry")
        app.query_one("#bottom").active = "tab-jobs"  # type: ignore[attr-defined]
        table = app.query_one(JobTable)
        await until(pilot, lambda: table.row_count == 1, "the job in the Jobs tab")
        table.focus()
        await pilot.press("l")
        await until(pilot, lambda: isinstance(app.screen, LogScreen), "log view")
        log = app.screen.query_one("#log")
        await until(pilot, lambda: any("hello-from-job" in str(line.text) for line in log.lines),  # type: ignore[attr-defined]
                    "job output in the log view")
        await pilot.press("escape")
        await pilot.press("c")
        await until(pilot, lambda: isinstance(app.screen, ConfirmDialog), "cancel confirmation")
        await pilot.press("y")
        await until(pilot, lambda: cli_json("jobs", config=demo.config_path)["jobs"][0]["state"] == "cancelled",
                    "job cancelled", timeout_s=30)
