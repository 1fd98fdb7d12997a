"""The SSH layer against real asyncssh servers: aliases, fan-out isolation, reconnect backoff."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from gpuconsole.config import load_config
from gpuconsole.core.fleet import Fleet
from gpuconsole.core.poller import Poller
from gpuconsole.core.status import fleet_snapshot
from gpuconsole.demo.cluster import DemoThread
from gpuconsole.model.events import NodeFailed, NodeUpdated, PollEvent
from tests.helpers import cli_json


def test_ssh_config_alias_resolves_host_and_port(demo: DemoThread, tmp_path: Path) -> None:
    """A node whose host is a `Host` alias in ~/.ssh/config connects through HostName/Port."""
    port = demo.cluster.nodes["node-01"].port
    ssh_dir = Path.home() / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    (ssh_dir / "config").write_text(f"Host gpu-alias\n  HostName 127.0.0.1\n  Port {port}\n")
    text = demo.config_path.read_text()
    head, _, _ = text.partition("\n[[nodes]]")
    config = tmp_path / "alias.toml"
    config.write_text(head + f'\n[[nodes]]\nname = "aliased"\nhost = "gpu-alias"\n'
                      f'state_dir = "{demo.cluster.nodes["node-01"].state_dir}"\nsimulate_gpus = 4\n')
    status = cli_json("status", config=config)
    assert status["nodes"][0]["reachable"] is True, status
    assert len(status["nodes"][0]["gpus"]) == 4


async def test_one_dead_node_does_not_delay_the_others(demo_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A node that accepts TCP but never speaks SSH times out alone; the others answer promptly."""
    demo = demo_factory(nodes=3, gpus=2)
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)  # accepts, says nothing
    silent_port = server.sockets[0].getsockname()[1]
    text = demo.config_path.read_text().replace(
        f"port = {demo.cluster.nodes['node-2'.replace('node-2', 'node-02')].port}",
        f"port = {silent_port}\nconnect_timeout = 2",
    )
    config_path = tmp_path / "c.toml"
    config_path.write_text(text)
    config = load_config(str(config_path))
    started = time.monotonic()
    async with Fleet(config) as fleet:
        snaps = await fleet_snapshot(fleet)
    elapsed_s = time.monotonic() - started
    server.close()
    reach = {s.name: s.reachable for s in snaps}
    assert reach == {"node-01": True, "node-02": False, "node-03": True}
    assert "timed out" in (next(s for s in snaps if s.name == "node-02").error or "")
    assert elapsed_s < 2 + 3  # bounded by the dead node's own timeout, not a sum


@pytest.mark.timeout(90)
async def test_poller_marks_dead_node_and_recovers(demo: DemoThread) -> None:
    """Killing a node's server yields NodeFailed (with backoff); restarting it brings updates back."""
    config = load_config(str(demo.config_path))
    events: list[PollEvent] = []
    poller = Poller(config, events.append, interval_s=0.3, seed=1)
    poller.start()

    async def until(predicate, timeout_s: float, what: str) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            await asyncio.sleep(0.05)

    try:
        await until(lambda: {e.snapshot.name for e in events if isinstance(e, NodeUpdated)} == {"node-01", "node-02"},
                    15, "both nodes streaming")
        await asyncio.to_thread(demo.stop_node, "node-01")
        mark = len(events)
        await until(lambda: any(isinstance(e, NodeFailed) and e.name == "node-01" for e in events[mark:]),
                    15, "node-01 failure")
        failure = next(e for e in events[mark:] if isinstance(e, NodeFailed))
        assert not failure.final and failure.retry_in_s is not None
        # node-02 keeps streaming while node-01 is down.
        later = len(events)
        await until(lambda: any(isinstance(e, NodeUpdated) and e.snapshot.name == "node-02" for e in events[later:]),
                    10, "node-02 updates during the outage")
        await asyncio.to_thread(demo.start_node, "node-01")
        back = len(events)
        await until(lambda: any(isinstance(e, NodeUpdated) and e.snapshot.name == "node-01" for e in events[back:]),
                    40, "node-01 recovery")
        failures = [e for e in events if isinstance(e, NodeFailed) and e.name == "node-01"]
        delays = [e.retry_in_s for e in failures if e.retry_in_s is not None]
        assert all(d <= 30 for d in delays)
        if len(delays) >= 3:
            assert max(delays) > min(delays)  # it backs off rather than hammering
    finally:
        await poller.aclose()
