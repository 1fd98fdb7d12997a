"""The console with a node whose agent streams wrong types: it keeps running, shows the good node,
and shows the bad one as unreachable with one line naming the bad field; measurements that are NaN
or infinite are shown as not available."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gpuconsole.config import load_config
from gpuconsole.demo.cluster import DemoThread
from gpuconsole.model.fleet import Health
from gpuconsole.tui.app import GpuConsoleApp
from gpuconsole.tui.widgets.fleet_tables import GpuTable, NodeTable
from tests.helpers import hostile_command, until


def _demo(tmp_path: Path, mode: str) -> DemoThread:
    return DemoThread(tmp_path / "demo", nodes=2, gpus=2, command_overrides={"node-02": hostile_command(mode)})


@pytest.fixture(params=["index-str", "list-for-object", "bad-iso", "huge", "non-object"])
def hostile(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DemoThread]:
    with _demo(tmp_path, request.param) as demo:
        yield demo


async def test_console_survives_a_node_streaming_wrong_types(hostile: DemoThread) -> None:
    app = GpuConsoleApp(load_config(str(hostile.config_path)))
    async with app.run_test(size=(120, 40)) as pilot:
        fleet = app.fleet
        await until(pilot, lambda: fleet.nodes["node-01"].health() is Health.UP
                    and fleet.nodes["node-02"].error is not None, "node-01 up and node-02 failed")
        error = fleet.nodes["node-02"].error or ""
        assert error.startswith("node-02: bad reply from agent") and "\n" not in error, error
        assert fleet.nodes["node-02"].snapshot is None  # nothing from the bad node was taken as data
        await until(pilot, lambda: app.query_one(GpuTable).row_count == 2, "node-01's GPUs in the table")
        await pilot.pause(2.5)  # several more bad samples and a reconnect arrive meanwhile
        assert app.is_running
        assert fleet.nodes["node-01"].health() is Health.UP
        assert "unreachable" in str(app.query_one(NodeTable).get_cell("node-02", "health"))


async def test_console_shows_nan_measurements_as_not_available(tmp_path: Path) -> None:
    with _demo(tmp_path, "nan") as demo:
        app = GpuConsoleApp(load_config(str(demo.config_path)))
        async with app.run_test(size=(120, 40)) as pilot:
            fleet = app.fleet
            await until(pilot, lambda: all(v.health() is Health.UP for v in fleet.nodes.values()), "both nodes up")
            app.query_one(NodeTable).focus()
            await pilot.press("down")
            await until(pilot, lambda: app.selected_node == "node-02" and app.query_one(GpuTable).row_count == 2,
                        "node-02's GPUs in the table")
            snapshot = fleet.nodes["node-02"].snapshot
            assert snapshot is not None and snapshot.cpu_pct is None and snapshot.gpus[0].util_pct is None
            await pilot.pause(2.0)  # more samples (and repaints of node-02's GPUs) arrive meanwhile
            assert app.is_running
            assert fleet.nodes["node-02"].health() is Health.UP
