"""The demo cluster on its own event loop in a background thread: simulated nodes (demo.nodes) and,
when asked, the local EC2 whose instances boot as more nodes (demo.cloud).

The node-level parts live in demo.nodes, so demo.cloud builds on them without importing this
module (the import graph has no cycle); their names are re-exported here for existing importers.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from gpuconsole.demo.nodes import LOOPBACK, DemoCluster, DemoNode, kill_marked, marked_processes

__all__ = ["LOOPBACK", "DemoCluster", "DemoNode", "DemoThread", "kill_marked", "marked_processes"]

T = TypeVar("T")


class DemoThread:
    """Runs a DemoCluster on its own event loop in a background thread (tests, benchmarks)."""

    def __init__(self, root: Path, nodes: int = 4, gpus: int = 8, *, cloud: bool = False,
                 command_overrides: dict[str, str] | None = None, agent_env: dict[str, str] | None = None,
                 seed: int | None = None, **cloud_options: Any) -> None:
        self.cluster = DemoCluster(root, nodes, gpus, seed=seed)
        self.cluster.command_overrides.update(command_overrides or {})
        self.cluster.agent_env.update(agent_env or {})
        self.cloud: Any = None  # a demo.cloud.CloudBridge when cloud=True
        self._cloud_wanted = cloud
        self._cloud_options = cloud_options
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="demo-cluster", daemon=True)

    def __enter__(self) -> DemoThread:
        self._thread.start()
        self.call(self.cluster.start())
        if self._cloud_wanted:
            from gpuconsole.demo.cloud import CloudBridge

            self.cloud = CloudBridge(self.cluster, **self._cloud_options)
            self.call(self.cloud.start())
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, coro: Coroutine[Any, Any, T], timeout_s: float = 60.0) -> T:
        """Run a coroutine on the cluster's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    @property
    def config_path(self) -> Path:
        return self.cluster.config_path

    def stop_node(self, name: str) -> None:
        self.call(self.cluster.stop_node(name))

    def start_node(self, name: str) -> None:
        self.call(self.cluster.start_node(name))

    def close(self) -> None:
        if self._thread.is_alive():
            if self.cloud is not None:
                with contextlib.suppress(Exception):
                    self.call(self.cloud.stop(), timeout_s=30)
            with contextlib.suppress(Exception):
                self.call(self.cluster.stop(), timeout_s=30)
            with contextlib.suppress(Exception):  # a loaded machine may be slow to unwind: stop anyway
                self.call(self._cancel_leftovers(), timeout_s=10)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            if not self._thread.is_alive():
                self.loop.close()

    @staticmethod
    async def _cancel_leftovers() -> None:
        current = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
