"""The console's widgets tell time by the app's clocks (`clock`, `wall_clock`), never the system's."""

from __future__ import annotations

from pathlib import Path

from gpuconsole.config import parse_config
from gpuconsole.model import NodeSnapshot
from gpuconsole.model.events import NodeUpdated
from gpuconsole.tui.app import GpuConsoleApp
from gpuconsole.tui.widgets.job_table import JobTable

FROZEN_WALL_S = 1_795_426_200.0  # 2026-11-23T09:30:00Z
CONFIG = "[[nodes]]\nname = 'n1'\nhost = '127.0.0.1'\nport = 1\n"


async def test_job_runtime_counts_to_the_apps_wall_clock() -> None:
    app = GpuConsoleApp(parse_config(CONFIG, Path("/fixture/clocks.toml")), poll=False, clock=lambda: 50.0,
                        wall_clock=lambda: FROZEN_WALL_S)
    job = {"id": "j-run0001", "name": "train", "owner": "alice", "state": "running", "gpus": [0],
           "gpus_requested": 1, "command": "python train.py", "created_at": "2026-11-23T08:00:00Z",
           "started_at": "2026-11-23T08:00:00Z"}
    app.inject(NodeUpdated(NodeSnapshot.from_agent("n1", {"gpus": [], "jobs": [job]}), 50.0))
    async with app.run_test(size=(120, 40)) as pilot:
        app.query_one("#bottom").active = "tab-jobs"  # type: ignore[attr-defined]
        await pilot.pause()
        app.render_fleet()
        table = app.query_one(JobTable)
        assert table.row_count == 1
        runtime = str(table.get_row("j-run0001")[8])
        assert runtime == "1h30m", runtime  # 08:00 to the app's 09:30, not to today's system time
