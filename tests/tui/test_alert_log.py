"""The Alerts tab: the watcher's detector and tracker fed from injected poll events on injected clocks,
and cloud nodes joining and leaving through injected CloudViews."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from gpuconsole.cloud.monitor import CloudView
from gpuconsole.config import parse_config
from gpuconsole.model import NodeSnapshot
from gpuconsole.model.events import NodeUpdated
from gpuconsole.model.telemetry import GpuProcess
from gpuconsole.tui.app import GpuConsoleApp
from gpuconsole.tui.widgets.alert_log import AlertLog
from tests.helpers import until
from tests.tui.fixture_fleet import CLOUD_NODE, fixture_cloud_node, fixture_config, fixture_instances

WALL_AT_ZERO_S = 1_795_400_000.0  # the wall clock when the injected monotonic clock reads 0
CONFIG = """\
[watch]
idle_minutes = 1
util_below_pct = 5

[[nodes]]
name = "n1"
host = "127.0.0.1"
port = 1
"""


def _snapshot(util_pct: float) -> NodeSnapshot:
    """n1 with bob's reservation on GPU 0 at `util_pct` and a free GPU 1."""
    res = {"id": "r-bob001", "owner": "bob", "expires_at": "2026-11-23T12:00:00Z"}
    gpus: list[dict[str, Any]] = [
        {"index": i, "uuid": f"GPU-{i}", "name": "NVIDIA L4", "util_pct": util, "mem_used_mib": 500,
         "mem_total_mib": 23034, "temperature_c": 40, "power_w": 30.0, "reservation": r, "processes": []}
        for i, util, r in ((0, util_pct, res), (1, 0.0, None))
    ]
    return NodeSnapshot.from_agent("n1", {
        "gpus": gpus, "reservations": [{"id": "r-bob001", "gpus": [0], "owner": "bob", "priority": "normal",
                                        "state": "active", "created_at": "2026-11-23T09:00:00Z",
                                        "expires_at": res["expires_at"]}],
    })


def _rows(app: GpuConsoleApp) -> list[list[str]]:
    table = app.query_one(AlertLog)
    return [[str(cell) for cell in table.get_row_at(i)] for i in range(table.row_count)]


async def test_idle_reservation_alert_raises_and_resolves_when_util_rises() -> None:
    config = parse_config(CONFIG, Path("/fixture/alerts.toml"))
    now = [100.0]
    app = GpuConsoleApp(config, poll=False, clock=lambda: now[0], wall_clock=lambda: WALL_AT_ZERO_S + now[0])
    async with app.run_test(size=(120, 40)) as pilot:
        app.query_one("#bottom").active = "tab-alerts"  # type: ignore[attr-defined]
        for step_s in range(0, 31):  # 30 s quiet: below the 1-minute threshold
            now[0] = 100.0 + step_s
            app.inject(NodeUpdated(_snapshot(0.0), now[0]))
        app.judge_alerts()
        assert app.alerts.active_keys == frozenset()
        for step_s in range(31, 71):  # now 70 s quiet
            now[0] = 100.0 + step_s
            app.inject(NodeUpdated(_snapshot(0.0), now[0]))
        await until(pilot, lambda: app.query_one(AlertLog).row_count == 1, "the idle alert in the log")
        time_cell, kind, node, gpus, owner, reservation, message = _rows(app)[0]
        assert (kind, node, gpus, owner, reservation) == ("idle_reservation", "n1", "0", "bob", "r-bob001")
        assert "idle for 1m" in message and time_cell == "02:16:10Z"
        assert "Alerts (1)" in str(app.query_one("#bottom").get_tab("tab-alerts").label)  # type: ignore[attr-defined]
        assert "▲ 1" in str(app.query_one("#summary").render())

        now[0] += 1.0  # bob starts working
        app.inject(NodeUpdated(_snapshot(85.0), now[0]))
        await until(pilot, lambda: app.query_one(AlertLog).row_count == 2, "the resolution in the log")
        newest, oldest = _rows(app)
        assert newest[1] == "resolved" and newest[5] == "r-bob001" and "no longer idle" in newest[6]
        assert oldest[1] == "idle_reservation"  # newest first
        assert app.alerts.active_keys == frozenset()
        await until(pilot, lambda: str(app.query_one("#bottom").get_tab("tab-alerts").label)  # type: ignore[attr-defined]
                    == "Alerts", "the tab title without a count")
        assert "▲" not in str(app.query_one("#summary").render())


async def test_alerts_of_a_cloud_node_resolve_when_its_instance_is_gone() -> None:
    """Membership from injected CloudViews (no EC2): the node joins, alerts, then leaves with its alerts."""
    now = [100.0]
    app = GpuConsoleApp(fixture_config(cloud=True), poll=False, clock=lambda: now[0],
                        wall_clock=lambda: WALL_AT_ZERO_S + now[0])
    running = fixture_instances()[:1]
    async with app.run_test(size=(120, 40)) as pilot:
        app.inject_cloud(CloudView(running, (fixture_cloud_node(),), None, WALL_AT_ZERO_S))
        assert CLOUD_NODE in app.fleet.nodes and app.fleet.nodes[CLOUD_NODE].source == "cloud"
        stray = dataclasses.replace(_snapshot(0.0), name=CLOUD_NODE, source="cloud")
        gpu = dataclasses.replace(stray.gpus[1], processes=(GpuProcess(4242, "eve", "python mine.py", 1000),))
        app.inject(NodeUpdated(dataclasses.replace(stray, gpus=(stray.gpus[0], gpu)), now[0]))
        app.judge_alerts()
        assert [k for k in app.alerts.active_keys if k.startswith("unreserved_use")] == \
            [f"unreserved_use:{CLOUD_NODE}:eve"]

        gone = (dataclasses.replace(running[0], state="terminated"),)
        app.inject_cloud(CloudView(gone, (), None, WALL_AT_ZERO_S + 1))
        assert CLOUD_NODE not in app.fleet.nodes and all(n.name != CLOUD_NODE for n in app.config.nodes)
        assert not any(CLOUD_NODE in k for k in app.alerts.active_keys)
        await until(pilot, lambda: any(f"node {CLOUD_NODE} left the fleet" in row[6] for row in _rows(app)),
                    "the resolution in the log")
        app.inject(NodeUpdated(stray, now[0] + 1))  # a late event of the gone node is dropped
        assert CLOUD_NODE not in app.fleet.nodes
