"""Keep every node's agent streaming telemetry; reconnect with capped, jittered backoff."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable

from gpuconsole.config import COMPUTE_SOURCE, Config, NodeConfig
from gpuconsole.core.clusters import ClusterViews
from gpuconsole.core.registry import MemberEvent, NodeJoined, Registry
from gpuconsole.errors import GpuConsoleError
from gpuconsole.model import NodeSnapshot
from gpuconsole.model.events import NodeFailed, NodeUpdated, PollEvent
from gpuconsole.model.slurm import SLURM_STREAM_S
from gpuconsole.ssh.connection import AuthFailedError, HostKeyError, NodeConnection

BACKOFF_START_S = 0.5
BACKOFF_MAX_S = 30.0


def next_backoff_s(previous_s: float, rng: random.Random) -> tuple[float, float]:
    """(sleep now, next base): "equal jitter", a wait drawn between half and all of the current base,
    which starts at BACKOFF_START_S and doubles up to BACKOFF_MAX_S (never a zero wait, unlike full jitter)."""
    base = min(BACKOFF_MAX_S, previous_s * 2)
    return rng.uniform(previous_s / 2, previous_s), base


class Poller:
    """One task per node in play: connect, stream snapshots, and on any failure back off and retry.

    Connections belong to the registry (shared with the fleet's requests when one is passed in);
    nodes joining or leaving the registry start or stop their task.
    """

    def __init__(
        self,
        members: Config | Registry,
        on_event: Callable[[PollEvent], None],
        *,
        interval_s: float | None = None,
        stale_after_s: float | None = None,
        seed: int | None = None,
    ) -> None:
        self._owned = not isinstance(members, Registry)
        self.registry = members if isinstance(members, Registry) else Registry(members)
        self.config = self.registry.config
        self.on_event = on_event
        self.interval_s = interval_s or self.config.defaults.poll_seconds
        self.stale_after_s = stale_after_s or max(3 * self.interval_s, 5.0)
        self.last_seen: dict[str, float] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}  # node name → its poll task
        self._stopping: set[asyncio.Task[None]] = set()
        self._sources: dict[str, str] = {}
        self._rng = random.Random(seed)
        self._unsubscribe: Callable[[], None] | None = None
        self.clusters = ClusterViews(self.config)  # Slurm clusters: their nodes' entries, measured
        self.registry.stream(self.interval_s, self._snapshot_arrived)

    def start(self) -> None:
        """Start polling every node in play, and each one that joins later (call from a running loop)."""
        if self._unsubscribe is None:
            self._unsubscribe = self.registry.subscribe(self._members_changed)
        for cfg in self.registry.nodes:
            self._start_task(cfg)

    def _members_changed(self, event: MemberEvent) -> None:
        if isinstance(event, NodeJoined):
            self._start_task(event.node)
        else:
            self._stop_task(event.name)

    def add_node(self, cfg: NodeConfig) -> None:
        """Start polling one more node (it joins the registry); a node already polled is left as is."""
        self.registry.join([cfg])
        self._start_task(cfg)

    async def remove_node(self, name: str) -> None:
        """Stop polling a node (it leaves the registry, which closes its connection); unknown names are ignored."""
        self.registry.leave([name])
        task = self._stop_task(name)
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)

    def _start_task(self, cfg: NodeConfig) -> None:
        if cfg.name in self._tasks:
            return
        self._sources[cfg.name] = cfg.source
        self._tasks[cfg.name] = asyncio.create_task(self._node_loop(cfg), name=f"poll-{cfg.name}")

    def _stop_task(self, name: str) -> asyncio.Task[None] | None:
        task = self._tasks.pop(name, None)
        if task is None:
            return None
        task.cancel()
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)
        self.last_seen.pop(name, None)
        self._sources.pop(name, None)
        return task

    @property
    def polled(self) -> list[str]:
        """Names of the nodes being polled."""
        return list(self._tasks)

    def _snapshot_arrived(self, name: str, data: dict[str, object]) -> None:
        if name not in self._tasks:
            return  # a node that is not (or no longer) polled
        source = self._sources.get(name, "onprem")
        self.last_seen[name] = time.monotonic()
        if source == COMPUTE_SOURCE:  # a Slurm compute node's agent: measurements of its Slurm node's entry
            measured = self.clusters.agent_arrived(NodeSnapshot.from_agent(name, data, source))
            if measured is not None:
                self.on_event(NodeUpdated(measured, time.monotonic()))
            return
        self.on_event(NodeUpdated(NodeSnapshot.from_agent(name, data, source), time.monotonic()))
        if source == "slurm" and isinstance(data.get("slurm"), dict):  # then each of its Slurm nodes
            for compute in self.clusters.compute_members(name, data):
                if compute.name not in self._tasks:
                    self.add_node(compute)
            for snap in self.clusters.login_arrived(name, data, source):
                self.on_event(NodeUpdated(snap, time.monotonic()))

    async def _node_loop(self, cfg: NodeConfig) -> None:
        backoff_s = BACKOFF_START_S
        while True:
            conn: NodeConnection | None = None
            try:
                conn = await self.registry.connect(cfg.name)
                error = await self._watch(conn)
                if conn.failure is None:  # it worked until now; a node that answers garbage keeps backing off
                    backoff_s = BACKOFF_START_S
            except (AuthFailedError, HostKeyError) as exc:
                self._failed(cfg, NodeFailed(cfg.name, str(exc), True, None, time.monotonic()))
                return
            except GpuConsoleError as exc:
                error = str(exc)
            finally:
                if conn is not None:
                    await self.registry.drop(cfg.name, conn)
            sleep_s, backoff_s = next_backoff_s(backoff_s, self._rng)
            self._failed(cfg, NodeFailed(cfg.name, error, False, sleep_s, time.monotonic()))
            await asyncio.sleep(sleep_s)

    def _failed(self, cfg: NodeConfig, event: NodeFailed) -> None:
        """A node failed; a compute node's agent failing leaves its Slurm node's entry, unmeasured."""
        if cfg.source != COMPUTE_SOURCE:
            self.on_event(event)
        elif (entry := self.clusters.agent_lost(cfg.name)) is not None:
            self.on_event(NodeUpdated(entry, time.monotonic()))

    async def _watch(self, conn: NodeConnection) -> str:
        """Wait until the connection dies or goes silent; return why."""
        self.last_seen[conn.name] = time.monotonic()
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval_s):
                    await conn.closed.wait()
            if conn.closed.is_set():
                return str(conn.failure) if conn.failure is not None else f"{conn.name}: connection lost"
            silent_s = time.monotonic() - self.last_seen.get(conn.name, 0.0)
            # A Slurm login node streams no more often than every SLURM_STREAM_S (the controller's load).
            stale_s = self.stale_after_s if conn.cfg.source != "slurm" else max(self.stale_after_s, 3 * SLURM_STREAM_S)
            if silent_s > stale_s:
                return f"{conn.name}: no telemetry for {silent_s:.0f}s"

    async def aclose(self) -> None:
        """Stop every node task; close the connections if the registry is the poller's own."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        tasks = [*self._tasks.values(), *self._stopping]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        self.registry.stream(None, None)
        if self._owned:
            await self.registry.aclose()
