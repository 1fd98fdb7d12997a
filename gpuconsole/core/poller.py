"""Keep every node's agent streaming telemetry; reconnect with capped, jittered backoff."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable

from gpuconsole.config import Config, NodeConfig
from gpuconsole.errors import GpuConsoleError
from gpuconsole.model import NodeSnapshot
from gpuconsole.model.events import NodeFailed, NodeUpdated, PollEvent
from gpuconsole.ssh.connection import AuthFailedError, HostKeyError, NodeConnection

BACKOFF_START_S = 0.5
BACKOFF_MAX_S = 30.0


def next_backoff_s(previous_s: float, rng: random.Random) -> tuple[float, float]:
    """(sleep now, next base): full jitter over an exponentially growing, capped base."""
    base = min(BACKOFF_MAX_S, previous_s * 2)
    return rng.uniform(previous_s / 2, previous_s), base


class Poller:
    """One task per node: connect, stream snapshots, and on any failure back off and retry."""

    def __init__(
        self,
        config: Config,
        on_event: Callable[[PollEvent], None],
        *,
        interval_s: float | None = None,
        stale_after_s: float | None = None,
        seed: int | None = None,
    ) -> None:
        self.config = config
        self.on_event = on_event
        self.interval_s = interval_s or config.defaults.poll_seconds
        self.stale_after_s = stale_after_s or max(3 * self.interval_s, 5.0)
        self.conns: dict[str, NodeConnection] = {}
        self.last_seen: dict[str, float] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}  # node name → its poll task
        self._sources: dict[str, str] = {}
        self._rng = random.Random(seed)
        self._limit = asyncio.Semaphore(config.defaults.max_parallel)

    def start(self) -> None:
        """Start polling every configured node (call from a running loop)."""
        for cfg in self.config.nodes:
            self.add_node(cfg)

    def add_node(self, cfg: NodeConfig) -> None:
        """Start polling one more node (cloud nodes join this way); a node already polled is left as is."""
        if cfg.name in self._tasks:
            return
        self._sources[cfg.name] = cfg.source
        self._tasks[cfg.name] = asyncio.create_task(self._node_loop(cfg), name=f"poll-{cfg.name}")

    async def remove_node(self, name: str) -> None:
        """Stop polling a node (a terminated cloud instance) and close its connection; unknown names are ignored."""
        task = self._tasks.pop(name, None)
        if task is None:
            return
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        conn = self.conns.pop(name, None)
        if conn is not None:
            await conn.close()
        self.last_seen.pop(name, None)
        self._sources.pop(name, None)

    @property
    def polled(self) -> list[str]:
        """Names of the nodes being polled."""
        return list(self._tasks)

    def _snapshot_arrived(self, name: str, data: dict[str, object]) -> None:
        source = self._sources.get(name, "onprem")
        self.last_seen[name] = time.monotonic()
        self.on_event(NodeUpdated(NodeSnapshot.from_agent(name, data, source), time.monotonic()))

    async def _node_loop(self, cfg: NodeConfig) -> None:
        backoff_s = BACKOFF_START_S
        while True:
            try:
                async with self._limit:
                    conn = await NodeConnection.open(
                        cfg, stream_s=self.interval_s, on_snapshot=self._snapshot_arrived
                    )
                self.conns[cfg.name] = conn
                error = await self._watch(conn)
                if conn.failure is None:  # it worked until now; a node that answers garbage keeps backing off
                    backoff_s = BACKOFF_START_S
            except (AuthFailedError, HostKeyError) as exc:
                self.on_event(NodeFailed(cfg.name, str(exc), True, None, time.monotonic()))
                return
            except GpuConsoleError as exc:
                error = str(exc)
            finally:
                stale = self.conns.pop(cfg.name, None)
                if stale is not None:
                    await stale.close()
            sleep_s, backoff_s = next_backoff_s(backoff_s, self._rng)
            self.on_event(NodeFailed(cfg.name, error, False, sleep_s, time.monotonic()))
            await asyncio.sleep(sleep_s)

    async def _watch(self, conn: NodeConnection) -> str:
        """Wait until the connection dies or goes silent; return why."""
        self.last_seen[conn.name] = time.monotonic()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(conn.closed.wait(), self.interval_s)
            if conn.closed.is_set():
                return str(conn.failure) if conn.failure is not None else f"{conn.name}: connection lost"
            silent_s = time.monotonic() - self.last_seen.get(conn.name, 0.0)
            if silent_s > self.stale_after_s:
                return f"{conn.name}: no telemetry for {silent_s:.0f}s"

    async def aclose(self) -> None:
        """Stop every node task and close the connections."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        conns, self.conns = list(self.conns.values()), {}
        await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)
