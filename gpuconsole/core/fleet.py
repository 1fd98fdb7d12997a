"""Fan-out over the fleet: connect to many nodes at once, bounded, each with its own timeout."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import Any

from gpuconsole.config import Config, NodeConfig
from gpuconsole.errors import GpuConsoleError, UnreachableError
from gpuconsole.model.replies import BadReplyError
from gpuconsole.ssh.connection import NodeConnection, SnapshotCallback


class Fleet:
    """Open connections to the configured nodes; one slow or dead node never delays the others."""

    def __init__(
        self,
        config: Config,
        *,
        stream_s: float | None = None,
        on_snapshot: SnapshotCallback | None = None,
    ) -> None:
        self.config = config
        self.stream_s = stream_s
        self.on_snapshot = on_snapshot
        self.conns: dict[str, NodeConnection] = {}
        self.errors: dict[str, GpuConsoleError] = {}
        self._limit = asyncio.Semaphore(config.defaults.max_parallel)

    async def __aenter__(self) -> Fleet:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def node_configs(self, names: Iterable[str] | None = None) -> list[NodeConfig]:
        if names is None:
            return list(self.config.nodes)
        return [self.config.node(name) for name in names]

    async def _open(self, cfg: NodeConfig) -> None:
        async with self._limit:
            try:
                self.conns[cfg.name] = await NodeConnection.open(
                    cfg, stream_s=self.stream_s, on_snapshot=self.on_snapshot
                )
                self.errors.pop(cfg.name, None)
            except GpuConsoleError as exc:
                self.errors[cfg.name] = exc

    async def connect(self, names: Iterable[str] | None = None) -> dict[str, NodeConnection]:
        """Connect to ``names`` (default: all) concurrently; failures land in `self.errors`."""
        todo = [c for c in self.node_configs(names) if c.name not in self.conns]
        await asyncio.gather(*(self._open(cfg) for cfg in todo))
        wanted = {c.name for c in self.node_configs(names)}
        return {name: conn for name, conn in self.conns.items() if name in wanted}

    async def reconnect(self, name: str) -> NodeConnection:
        """Drop and reopen one node's connection (after a transport failure)."""
        old = self.conns.pop(name, None)
        if old is not None:
            await old.close()
        await self._open(self.config.node(name))
        if name in self.errors:
            raise self.errors[name]
        return self.conns[name]

    async def request(self, name: str, op: str, args: dict[str, Any] | None = None, *,
                      retries: int = 1, timeout_s: float = 30.0) -> dict[str, Any]:
        """One request to one node; on a dropped connection, reconnect and resend the same
        request (its req_id makes the retry safe: the node replays a committed answer)."""
        conn = self.conns.get(name) or (await self.connect([name])).get(name)
        if conn is None:
            raise self.errors[name]
        for attempt in range(retries + 1):
            try:
                return await conn.request(op, args, timeout_s=timeout_s)
            except BadReplyError:
                raise  # the node did answer, wrongly: asking again gets the same answer
            except UnreachableError:
                if attempt >= retries:
                    raise
                await asyncio.sleep(0.1 * (attempt + 1))
                conn = await self.reconnect(name)
        raise AssertionError("unreachable")

    async def call_all(
        self, op: str, args: dict[str, Any] | None = None, names: Iterable[str] | None = None,
        *, timeout_s: float = 30.0,
    ) -> dict[str, dict[str, Any] | GpuConsoleError]:
        """The same request on every connected node; per-node result or error."""
        conns = await self.connect(names)

        async def one(name: str, conn: NodeConnection) -> dict[str, Any] | GpuConsoleError:
            try:
                return await conn.request(op, args, timeout_s=timeout_s)
            except GpuConsoleError as exc:
                return exc

        names_order = list(conns)
        results = await asyncio.gather(*(one(n, conns[n]) for n in names_order))
        out: dict[str, dict[str, Any] | GpuConsoleError] = dict(zip(names_order, results, strict=True))
        for cfg in self.node_configs(names):
            if cfg.name not in out and cfg.name in self.errors:
                out[cfg.name] = self.errors[cfg.name]
        return out

    async def close(self) -> None:
        conns, self.conns = list(self.conns.values()), {}
        with contextlib.suppress(Exception):
            await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)
