"""known_hosts is parsed once per process, not once per connection (issue 14: a cheaper cold path),
and a changed file is still read again: verification is exactly as before."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from gpuconsole.config import load_config
from gpuconsole.core.fleet import Fleet
from gpuconsole.core.registry import Registry
from gpuconsole.core.status import fleet_snapshot
from gpuconsole.demo.cluster import DemoThread
from gpuconsole.ssh import hostkeys


def test_a_64_node_fleet_parses_known_hosts_once_and_a_changed_file_again(
    demo_factory: Callable[..., DemoThread],
) -> None:
    cluster = demo_factory(nodes=64, gpus=1)
    config = load_config(str(cluster.config_path))
    known_hosts = cluster.cluster.known_hosts_path

    async def run() -> tuple[int, int, str | None]:
        before = hostkeys.parse_count()
        async with Fleet(Registry(config), owns=True) as fleet:
            snapshots = await fleet_snapshot(fleet, rates=False)
            assert [s.reachable for s in snapshots] == [True] * 64, [s.error for s in snapshots if s.error]
            first = hostkeys.parse_count() - before
            # node-01's key leaves the file: a new connection to it is refused, not served from a cache.
            lines = known_hosts.read_text().splitlines(keepends=True)
            port = config.nodes[0].port
            known_hosts.write_text("".join(ln for ln in lines if f"]:{port} " not in ln))
            await fleet.drop("node-01")
            again = await fleet_snapshot(fleet, ["node-01"], rates=False)
            return first, hostkeys.parse_count() - before, again[0].error

    first, total, error = asyncio.run(run())
    assert first == 1
    assert total == 2
    assert error is not None and "host key not verified" in error
