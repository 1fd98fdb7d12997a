"""Fleet membership and connections, with one owner: the nodes in play (the configured ones plus cloud
nodes that joined), one connection per node, and why a node could not be reached.

The poller streams telemetry over the same connection that requests use, so a console or watcher
holds one SSH connection and one agent per node. Front ends learn of cloud nodes joining and leaving
by subscribing here instead of keeping node lists of their own; `Config` stays what the file said.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from gpuconsole.config import Config, NodeConfig
from gpuconsole.errors import GpuConsoleError, NotFoundError, UnreachableError
from gpuconsole.ssh.connection import NodeConnection, SnapshotCallback


@dataclass(frozen=True, slots=True)
class NodeJoined:
    """A node entered the fleet (a cloud instance that became reachable)."""

    node: NodeConfig


@dataclass(frozen=True, slots=True)
class NodeLeft:
    """A node left the fleet (a stopped or terminated cloud instance); its connection is closed."""

    name: str


MemberEvent = NodeJoined | NodeLeft
Subscriber = Callable[[MemberEvent], None]


class Registry:
    """The nodes in play and their connections; every connection is opened here, at most one per node.

    Connections opened after `stream()` stream snapshots to its callback (the poller's); any
    connection answers requests. A dead connection is reopened by the next `connect`.
    """

    def __init__(self, config: Config, joined: Iterable[NodeConfig] = (), *,
                 live_instances: frozenset[str] | None = None) -> None:
        self.config = config
        # The managed cloud instances pending or running when `joined` was discovered (None: no
        # cloud, or EC2 could not be asked); `jobs` requeues the journaled jobs of instances not in it.
        self.live_instances = live_instances
        self._nodes: dict[str, NodeConfig] = {n.name: n for n in config.members()}
        for node in joined:
            self._nodes.setdefault(node.name, node)
        self._conns: dict[str, NodeConnection] = {}
        self._errors: dict[str, GpuConsoleError] = {}
        self._opening: dict[str, asyncio.Task[NodeConnection]] = {}
        self._subscribers: list[Subscriber] = []
        self._background: set[asyncio.Task[None]] = set()
        self._limit = asyncio.Semaphore(config.defaults.max_parallel)
        self._stream_s: float | None = None
        self._on_snapshot: SnapshotCallback | None = None
        self._closed = False

    # -- membership ---------------------------------------------------------------------------

    @property
    def nodes(self) -> tuple[NodeConfig, ...]:
        """Every node in play: the configured ones in file order, then joined ones as they joined."""
        return tuple(self._nodes.values())

    def has(self, name: str) -> bool:
        return name in self._nodes

    def node(self, name: str) -> NodeConfig:
        """The node called ``name`` or NotFoundError (exit 4)."""
        found = self._nodes.get(name)
        if found is None:
            known = ", ".join(self._nodes) or "none"
            raise NotFoundError(f"unknown node {name!r} (known: {known})")
        return found

    def configs(self, names: Iterable[str] | None = None) -> list[NodeConfig]:
        """The named nodes (default: all) in order; an unknown name is NotFoundError."""
        if names is None:
            return list(self._nodes.values())
        return [self.node(name) for name in names]

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Call ``subscriber`` with every NodeJoined / NodeLeft from now on; returns the unsubscribe."""
        self._subscribers.append(subscriber)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._subscribers.remove(subscriber)

        return unsubscribe

    def _publish(self, event: MemberEvent) -> None:
        for subscriber in list(self._subscribers):
            subscriber(event)

    def join(self, nodes: Iterable[NodeConfig]) -> list[NodeConfig]:
        """Add nodes not yet in play (names already in play are left as they are); returns the new ones."""
        added = []
        for node in nodes:
            if node.name not in self._nodes:
                self._nodes[node.name] = node
                self._errors.pop(node.name, None)
                added.append(node)
                self._publish(NodeJoined(node))
        return added

    def leave(self, names: Iterable[str]) -> list[str]:
        """Remove nodes from play and close their connections (in the background); returns the removed."""
        removed = []
        for name in names:
            if self._nodes.pop(name, None) is None:
                continue
            removed.append(name)
            self._errors.pop(name, None)
            opening = self._opening.pop(name, None)
            if opening is not None:
                opening.cancel()
            conn = self._conns.pop(name, None)
            if conn is not None:
                self._in_background(conn.close())
            self._publish(NodeLeft(name))
        return removed

    # -- connections --------------------------------------------------------------------------

    def stream(self, interval_s: float | None, on_snapshot: SnapshotCallback | None) -> None:
        """Connections opened from now on stream a snapshot every ``interval_s`` to ``on_snapshot``
        (None, None: stop handing them on)."""
        self._stream_s = interval_s
        self._on_snapshot = on_snapshot

    def _snapshot(self, name: str, data: dict[str, Any]) -> None:
        if self._on_snapshot is not None and name in self._nodes:
            self._on_snapshot(name, data)

    def connection(self, name: str) -> NodeConnection | None:
        """The node's live connection, or None (not opened yet, or dead)."""
        conn = self._conns.get(name)
        return conn if conn is not None and not conn.closed.is_set() else None

    def held(self, name: str) -> NodeConnection | None:
        """The node's connection as held, even if it has died since (nobody dropped it yet)."""
        return self._conns.get(name)

    def error(self, name: str) -> GpuConsoleError | None:
        """Why the node's last connection attempt failed (None once one succeeds)."""
        return self._errors.get(name)

    @property
    def errors(self) -> Mapping[str, GpuConsoleError]:
        """Per-node connection failures, read-only."""
        return MappingProxyType(self._errors)

    async def connect(self, name: str) -> NodeConnection:
        """The node's live connection, opened (or reopened) if needed; callers asking at once share
        one attempt. Raises the node's error (also kept in `errors`)."""
        live = self.connection(name)
        if live is not None:
            return live
        if self._closed:
            raise UnreachableError(f"{name}: the fleet is closed")
        cfg = self.node(name)
        opening = self._opening.get(name)
        if opening is None:
            opening = asyncio.get_running_loop().create_task(self._open(cfg), name=f"open-{name}")
            self._opening[name] = opening
            opening.add_done_callback(lambda task: self._opened(name, task))
        return await asyncio.shield(opening)

    def _opened(self, name: str, task: asyncio.Task[NodeConnection]) -> None:
        if self._opening.get(name) is task:
            del self._opening[name]
        if not task.cancelled():
            task.exception()  # retrieved here: every waiter may have gone

    async def _open(self, cfg: NodeConfig) -> NodeConnection:
        async with self._limit:
            try:
                conn = await NodeConnection.open(cfg, stream_s=self._stream_s, on_snapshot=self._snapshot)
            except GpuConsoleError as exc:
                if cfg.name in self._nodes:
                    self._errors[cfg.name] = exc
                raise
        if self._closed or self._nodes.get(cfg.name) is not cfg:
            await conn.close()
            raise UnreachableError(f"{cfg.name}: left the fleet")
        stale = self._conns.get(cfg.name)
        if stale is not None:
            self._in_background(stale.close())
        self._conns[cfg.name] = conn
        self._errors.pop(cfg.name, None)
        return conn

    async def drop(self, name: str, conn: NodeConnection | None = None) -> None:
        """Close the node's connection (only if it is still ``conn``, when given) so the next
        `connect` opens a fresh one; its error is forgotten too."""
        current = self._conns.get(name)
        if current is not None and (conn is None or current is conn):
            del self._conns[name]
            await current.close()
        elif conn is not None:
            await conn.close()
        self._errors.pop(name, None)

    def _in_background(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def aclose(self) -> None:
        """Close every connection and refuse new ones."""
        self._closed = True
        self._on_snapshot = None
        openings = list(self._opening.values())
        for task in openings:
            task.cancel()
        conns, self._conns = list(self._conns.values()), {}
        with contextlib.suppress(Exception):
            await asyncio.gather(*openings, *(c.close() for c in conns), *self._background,
                                 return_exceptions=True)
