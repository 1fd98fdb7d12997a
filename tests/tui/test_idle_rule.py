"""One idle rule: the console's `⚑ idle` flag, its summary count, the Alerts tab and `gpuconsole watch`
judge the same events with the same detector and the same `[watch]` thresholds."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from textual.pilot import Pilot

from gpuconsole.config import parse_config
from gpuconsole.model.events import NodeUpdated
from gpuconsole.model.telemetry import GpuSample, NodeSnapshot, ReservationRef
from gpuconsole.tui.app import GpuConsoleApp
from gpuconsole.tui.widgets.fleet_tables import GpuTable
from gpuconsole.watch.runner import WatchRunner, WatchSettings
from gpuconsole.watch.sinks import Dispatcher

WALL_AT_ZERO_S = 1_795_400_000.0  # the wall clock when the injected monotonic clock reads 0
# Non-default thresholds: idle after 2 minutes below 20 %.
CONFIG = """\
[watch]
idle_minutes = 2
util_below_pct = 20

[[nodes]]
name = "n1"
host = "127.0.0.1"
port = 1
"""
EXPIRES = "2030-01-01T00:00:00Z"


def _gpu(index: int, util_pct: float, rid: str, owner: str) -> GpuSample:
    return GpuSample(index, f"GPU-{index}", "NVIDIA L4", util_pct, 500, 23034, 40.0, 30.0,
                     ReservationRef(rid, owner, EXPIRES), ())


def _snapshot(step_s: int) -> NodeSnapshot:
    """bob's GPU 0 sits at 10 % throughout (below [watch]'s 20 %, above the console's old 5 %); carol's
    GPUs 1-2 work for the first minute, then sit at 0 % (quiet for 90 s at the end: past the console's
    old 60 s, short of [watch]'s 2 minutes)."""
    carol_pct = 90.0 if step_s < 60 else 0.0
    return NodeSnapshot(name="n1", reachable=True, gpus=(
        _gpu(0, 10.0, "r-bob001", "bob"), _gpu(1, carol_pct, "r-carol01", "carol"),
        _gpu(2, carol_pct, "r-carol01", "carol")))


async def _until(pilot: Pilot[int], predicate: Callable[[], object], what: str, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.05)


def _holders(app: GpuConsoleApp) -> dict[str, str]:
    table = app.query_one(GpuTable)
    return {str(row.value): str(table.get_row(row)[-1]) for row in table.rows}


async def test_console_flag_summary_alerts_and_watcher_agree_on_non_default_thresholds(tmp_path: Path) -> None:
    config = parse_config(CONFIG, tmp_path / "config.toml")
    now = [0.0]
    wall = lambda: WALL_AT_ZERO_S + now[0]  # noqa: E731
    # `gpuconsole watch` without flags: [watch]'s thresholds (as cli/watch.py:settings_from maps them).
    settings = WatchSettings(idle_s=config.watch.idle_minutes * 60.0, util_below_pct=config.watch.util_below_pct,
                             cooldown_s=config.watch.cooldown_minutes * 60.0, interval_s=5.0,
                             state_path=tmp_path / "watch-state.json")
    logs: list[str] = []
    watcher = WatchRunner(config, settings, Dispatcher(None, [], logs.append), logs.append, clock=wall)
    app = GpuConsoleApp(config, poll=False, clock=lambda: now[0], wall_clock=wall)
    async with app.run_test(size=(120, 40)) as pilot:
        for step_s in range(0, 151):
            now[0] = float(step_s)
            event = NodeUpdated(_snapshot(step_s), now[0])
            app.inject(event)
            watcher.on_event(event)
        sent = await watcher.tick()
        app.judge_alerts()
        app.render_fleet()

        assert [(a.kind, a.reservation) for a in sent] == [("idle_reservation", "r-bob001")]
        assert app.alerts.active_keys == {"idle_reservation:n1:r-bob001"}  # the Alerts tab
        await _until(pilot, lambda: app.query_one(GpuTable).row_count == 3, "the GPU table")
        holders = _holders(app)
        assert "⚑idle 2m" in holders["0"], holders  # bob: idle by [watch] (10 % < 20 %, 150 s >= 2 min)
        assert "⚑" not in holders["1"] and "⚑" not in holders["2"], holders  # carol: quiet only 90 s
        summary = str(app.query_one("#summary").render())
        assert "⚑ 1 idle" in summary, summary  # one idle GPU, as the watcher and the Alerts tab say
    await watcher.close(0.1)
