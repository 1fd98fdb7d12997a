"""The console's Usage tab against the demo: opening it reads the nodes' ledgers and shows a row per
user with GPU-hours held and a bar scaled to the heaviest user; the status line sums them up."""

from __future__ import annotations

import time

from textual.widgets import DataTable, Static

from gpuconsole.config import load_config
from gpuconsole.demo.cluster import DemoThread
from gpuconsole.tui.app import GpuConsoleApp
from gpuconsole.tui.widgets.usage_table import UsageLine, bar
from tests.helpers import cli_json, run_cli, until, wait_for


async def test_the_usage_tab_shows_held_hours_per_user(demo: DemoThread) -> None:
    config = demo.config_path
    grant = cli_json("reserve", "--gpus", "4", "--node", "node-01", config=config)
    held_s = time.time()
    wait_for(lambda: time.time() >= held_s + 2, timeout_s=10, message="two seconds held")  # whole-second ledger
    assert run_cli("release", grant["id"], config=config).returncode == 0
    app = GpuConsoleApp(load_config(str(config)))
    async with app.run_test(size=(150, 44)) as pilot:
        app.query_one("#bottom").active = "tab-usage"  # type: ignore[attr-defined]
        table = app.query_one("#usage", DataTable)
        await until(pilot, lambda: table.row_count == 1, "a usage row", timeout_s=30)
        (user,) = [str(key.value) for key in table.rows]
        row = [str(cell) for cell in table.get_row(user)]
        assert float(row[1]) >= 0 and row[2].strip("█") == "" and len(row[2]) >= 12  # the heaviest: a full bar
        status = str(app.query_one("#usage-status", Static).render())
        assert status.startswith("last 30 days, 1 user: ") and "GPU-h held" in status


def test_the_bar_scales_to_the_heaviest_user_and_draws_idle_apart() -> None:
    styles = {"gc-cloud": "blue", "gc-flag": "yellow"}
    assert bar(10.0, 5.0, 10.0, 20, styles).plain == "█" * 10 + "▒" * 10
    assert bar(2.5, 0.0, 10.0, 20, styles).plain == "█" * 5
    assert bar(0.0, 0.0, 0.0, 20, styles).plain == ""
    line = UsageLine.of({"key": "ann", "gpu_hours_held": 1.5, "gpu_hours_idle": 0.5, "gpu_hours_unreserved": 0.0,
                         "job_gpu_hours": {"succeeded": 0.25, "failed": 0.25}, "queue_wait_s": {"p50": None},
                         "cloud_usd": 2.0})
    assert (line.held_h, line.idle_h, line.jobs_h, line.cloud_usd) == (1.5, 0.5, 0.5, 2.0)
