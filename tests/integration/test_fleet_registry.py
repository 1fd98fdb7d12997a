"""The registry and the fleet over it, against the demo's real asyncssh servers: dead connections are
reopened, members join and leave with events, and a snapshot that cannot be read is the node's bad
reply, not a lost connection."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from gpuconsole.config import load_config
from gpuconsole.core.fleet import Fleet
from gpuconsole.core.poller import Poller
from gpuconsole.core.registry import MemberEvent, NodeJoined, NodeLeft, Registry
from gpuconsole.demo.cluster import DemoThread
from gpuconsole.model.events import PollEvent
from gpuconsole.model.replies import BadReplyError
from gpuconsole.ssh.connection import NodeConnection


async def _until(predicate: Any, what: str, timeout_s: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def test_call_all_reopens_a_dead_connection(demo: DemoThread) -> None:
    """A node that restarted answers the next fan-out (the fleet used to keep asking its dead connection)."""
    async with Fleet(load_config(str(demo.config_path))) as fleet:
        first = await fleet.call_all("capacity")
        assert all(isinstance(r, dict) for r in first.values()), first
        conn = fleet.connection("node-01")
        assert conn is not None
        await asyncio.to_thread(demo.stop_node, "node-01")
        await _until(conn.closed.is_set, "node-01's connection to die")
        await asyncio.to_thread(demo.start_node, "node-01")
        again = await fleet.call_all("capacity")
        assert isinstance(again["node-01"], dict), again["node-01"]
        assert isinstance(again["node-02"], dict), again["node-02"]


async def test_a_snapshot_the_callback_cannot_read_is_a_bad_reply(demo: DemoThread) -> None:
    """The snapshot callback failing to build its model ends the stream as the node's bad reply."""
    cfg = load_config(str(demo.config_path)).node("node-01")

    def unreadable(name: str, data: dict[str, Any]) -> None:
        raise ValueError("gpus[0].index: not a GPU index")

    conn = await NodeConnection.open(cfg, stream_s=0.2, on_snapshot=unreadable)
    try:
        await asyncio.wait_for(conn.closed.wait(), 20)
        assert isinstance(conn.failure, BadReplyError)
        assert str(conn.failure).startswith("node-01: bad reply from agent in telemetry"), conn.failure
        assert "connection lost" not in str(conn.failure)
    finally:
        await conn.close()


async def test_members_join_and_leave_with_events_and_the_poller_follows(demo: DemoThread) -> None:
    """A node that joins is polled over the registry's connection (one per node, shared with requests);
    one that leaves is no longer polled and its connection is closed."""
    config = load_config(str(demo.config_path))
    second = config.node("node-02")
    registry = Registry(dataclasses.replace(config, nodes=(config.node("node-01"),)))
    heard: list[MemberEvent] = []
    registry.subscribe(heard.append)
    events: list[PollEvent] = []
    poller = Poller(registry, events.append, interval_s=0.3)
    fleet = Fleet(registry)
    try:
        poller.start()
        joined = dataclasses.replace(second, name="late")
        assert registry.join([joined]) == [joined]
        assert heard == [NodeJoined(joined)] and "late" in poller.polled
        await _until(lambda: registry.connection("late") is not None, "the poller's connection to late")
        streaming = registry.connection("late")
        reply = await fleet.request("late", "capacity")
        assert reply["gpu_count"] >= 1 and registry.connection("late") is streaming  # the same connection
        registry.leave(["late"])
        assert heard[-1] == NodeLeft("late") and "late" not in poller.polled
        assert streaming is not None
        await _until(streaming.closed.is_set, "late's connection to close")
        assert not registry.has("late") and registry.connection("late") is None
    finally:
        await poller.aclose()
        await registry.aclose()
