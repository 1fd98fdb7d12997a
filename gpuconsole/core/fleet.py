"""Fan-out over the fleet: requests to many nodes at once, bounded, each with its own timeout, over
the connections the registry (core/registry.py) owns."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Any

from gpuconsole.config import Config, NodeConfig
from gpuconsole.core.registry import Registry
from gpuconsole.errors import GpuConsoleError, UnreachableError
from gpuconsole.model.answers import Hello
from gpuconsole.model.replies import BadReplyError, interpret_all, interpret_reply
from gpuconsole.ssh.connection import NodeConnection, SnapshotCallback


class Fleet:
    """Requests to the nodes in play; one slow or dead node never delays the others.

    `Fleet(config)` owns a registry of its own (closed with the fleet); `Fleet(registry)` shares one
    (the console's and the watcher's, whose poller streams over the same connections);
    `Fleet(registry, owns=True)` takes one over (a CLI command's, with the cloud nodes it discovered).
    """

    def __init__(
        self,
        members: Config | Registry,
        *,
        owns: bool = False,
        stream_s: float | None = None,
        on_snapshot: SnapshotCallback | None = None,
    ) -> None:
        self._owned = owns or not isinstance(members, Registry)
        self.registry = members if isinstance(members, Registry) else Registry(members)
        if stream_s is not None or on_snapshot is not None:
            self.registry.stream(stream_s, on_snapshot)

    async def __aenter__(self) -> Fleet:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def config(self) -> Config:
        """The config as read from the file (membership lives in the registry)."""
        return self.registry.config

    def node_configs(self, names: Iterable[str] | None = None) -> list[NodeConfig]:
        return self.registry.configs(names)

    def node(self, name: str) -> NodeConfig:
        return self.registry.node(name)

    def has(self, name: str) -> bool:
        return self.registry.has(name)

    def join(self, nodes: Iterable[NodeConfig]) -> list[NodeConfig]:
        """Bring nodes into play (a burst's new instance); subscribers hear of each."""
        return self.registry.join(nodes)

    def connection(self, name: str) -> NodeConnection | None:
        """The node's live connection, if one is open."""
        return self.registry.connection(name)

    def hello(self, name: str) -> Hello | None:
        """What the node's agent said when it connected (user, hostname, …); None when not connected."""
        conn = self.registry.connection(name)
        return Hello.from_agent(conn.hello) if conn is not None and conn.hello else None

    @property
    def errors(self) -> Mapping[str, GpuConsoleError]:
        """Per-node connection failures, read-only."""
        return self.registry.errors

    async def connect(self, names: Iterable[str] | None = None) -> dict[str, NodeConnection]:
        """Connect to ``names`` (default: all) concurrently, reopening dead connections; failures
        land in `errors`."""
        wanted = [c.name for c in self.node_configs(names)]

        async def one(name: str) -> NodeConnection | None:
            try:
                return await self.registry.connect(name)
            except GpuConsoleError:
                return None

        conns = await asyncio.gather(*(one(name) for name in wanted))
        return {name: conn for name, conn in zip(wanted, conns, strict=True) if conn is not None}

    async def drop(self, name: str) -> None:
        """Close the node's connection so the next request opens a fresh one (and retries a failure)."""
        await self.registry.drop(name)

    async def reconnect(self, name: str, stale: NodeConnection | None = None) -> NodeConnection:
        """Drop and reopen one node's connection (after a transport failure)."""
        await self.registry.drop(name, stale)
        return await self.registry.connect(name)

    async def request(self, name: str, op: str, args: dict[str, Any] | None = None, *,
                      retries: int = 1, timeout_s: float = 30.0) -> dict[str, Any]:
        """One request to one node; on a dropped connection, reconnect and resend the same
        request (its req_id makes the retry safe: the node replays a committed answer). A connection
        that died is used as held, so the caller sees the failure (a waiter must know its agent, and
        the ticket attached to it, are gone) and the retry is what reconnects."""
        return interpret_reply(name, op, await self.exchange(name, op, args, retries=retries, timeout_s=timeout_s))

    async def exchange(self, name: str, op: str, args: dict[str, Any] | None = None, *,
                       retries: int = 1, timeout_s: float = 30.0) -> Any:
        """`request` up to the agent's reply line as it came, unchecked (what the keeper hands on)."""
        conn = self.registry.held(name) or await self.registry.connect(name)
        for attempt in range(retries + 1):
            try:
                return await conn.exchange(op, args, timeout_s=timeout_s)
            except BadReplyError:
                raise  # the node did answer, wrongly: asking again gets the same answer
            except UnreachableError:
                if attempt >= retries:
                    raise
                await asyncio.sleep(0.1 * (attempt + 1))
                conn = await self.reconnect(name, conn)
        raise AssertionError("unreachable")

    async def call_all(
        self, op: str, args: dict[str, Any] | None = None, names: Iterable[str] | None = None,
        *, timeout_s: float = 30.0,
    ) -> dict[str, dict[str, Any] | GpuConsoleError]:
        """The same request on every node (dead connections reopened first); per-node result or error."""
        return interpret_all(op, await self.exchange_all(op, args, names, timeout_s=timeout_s))

    async def exchange_all(
        self, op: str, args: dict[str, Any] | None = None, names: Iterable[str] | None = None,
        *, timeout_s: float = 30.0,
    ) -> dict[str, Any]:
        """`call_all` up to each agent's reply line as it came (per node: the line, or the
        transport's GpuConsoleError)."""
        wanted = [c.name for c in self.node_configs(names)]

        async def one(name: str) -> Any:
            try:
                conn = await self.registry.connect(name)
                return await conn.exchange(op, args, timeout_s=timeout_s)
            except GpuConsoleError as exc:
                return exc

        results = await asyncio.gather(*(one(name) for name in wanted))
        return dict(zip(wanted, results, strict=True))

    async def close(self) -> None:
        """Close the connections of a fleet that owns its registry (a shared one is closed by its owner)."""
        if self._owned:
            await self.registry.aclose()

