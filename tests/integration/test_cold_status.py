"""A single `status --json` does not wait for a rate window (issue 14: a cheaper cold path)."""

from __future__ import annotations

import asyncio

from gpuconsole.config import load_config
from gpuconsole.core.fleet import Fleet
from gpuconsole.core.registry import Registry
from gpuconsole.core.status import fleet_snapshot
from gpuconsole.demo.cluster import DemoThread
from tests.helpers import cli_json

RATE_FIELDS = ("cpu_pct", "disk_read_bps", "disk_write_bps", "net_rx_bps", "net_tx_bps")


def test_single_json_status_reports_rates_as_unknown_and_the_rest(demo: DemoThread) -> None:
    """One snapshot from a fresh connection has no rate window: the fields stay, their values are null."""
    status = cli_json("status", config=demo.config_path)
    for node in status["nodes"]:
        assert node["reachable"] is True
        assert all(key in node and node[key] is None for key in RATE_FIELDS), node
        assert node["mem_total_bytes"] > node["mem_used_bytes"] > 0 and node["load1"] is not None
        assert len(node["gpus"]) == 4


def test_snapshots_that_show_rates_still_wait_for_the_window(demo: DemoThread) -> None:
    """The table, the console and `--watch` ask for rates: a first snapshot still has them."""

    async def both() -> tuple[list[float | None], list[float | None]]:
        registry = Registry(load_config(str(demo.config_path)))
        async with Fleet(registry, owns=True) as fleet:
            quick = [s.cpu_pct for s in await fleet_snapshot(fleet, rates=False)]
        async with Fleet(Registry(load_config(str(demo.config_path))), owns=True) as fleet:
            rated = [s.cpu_pct for s in await fleet_snapshot(fleet)]
        return quick, rated

    quick, rated = asyncio.run(both())
    assert quick == [None, None]
    assert all(pct is not None and 0 <= pct <= 100 for pct in rated), rated
