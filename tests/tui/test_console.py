"""The first console renders the demo fleet through the real poller (Pilot, no terminal)."""

from __future__ import annotations

import asyncio
import time

from gpuconsole.config import load_config
from gpuconsole.demo.cluster import DemoThread
from gpuconsole.tui.app import GpuConsoleApp


async def test_console_shows_nodes_and_gpus(demo: DemoThread) -> None:
    app = GpuConsoleApp(load_config(str(demo.config_path)))
    async with app.run_test(size=(120, 40)) as pilot:
        deadline = time.monotonic() + 20
        while len(app.snapshots) < 2:
            assert time.monotonic() < deadline, "no snapshots"
            await asyncio.sleep(0.05)
        await pilot.pause()
        nodes = app.query_one("#nodes")
        gpus = app.query_one("#gpus")
        assert nodes.row_count == 2  # type: ignore[attr-defined]
        assert gpus.row_count == 4  # type: ignore[attr-defined]
        assert "8 free" in str(app.query_one("#summary").render())
        await pilot.press("q")
