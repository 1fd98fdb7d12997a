"""The watcher's cloud side: rediscover instances on a cadence (new ones are polled like any node,
gone ones stop being polled), raise `idle_cloud` conditions, and stop idle managed instances when
asked to. Plugs into the watcher through its conditions hook and its idle_cloud action hook."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable

from gpuconsole.cloud.ec2 import is_loopback_endpoint
from gpuconsole.cloud.idle import IdleCloudJudge
from gpuconsole.cloud.monitor import CloudMonitor, CloudView
from gpuconsole.config import Config, NodeConfig
from gpuconsole.errors import GpuConsoleError
from gpuconsole.model.alerts import Alert
from gpuconsole.model.detect import Detector

NodesChanged = Callable[[list[NodeConfig], list[str]], None]  # (added, removed names)
Log = Callable[[str], None]


class CloudWatch:
    """Owns one CloudMonitor and the idle judge; `stop_idle` turns alerts into stop/terminate calls.
    `detector` is the watcher's own (its quiet windows decide whether an instance's GPUs are idle)."""

    def __init__(self, config: Config, *, detector: Detector, stop_idle: bool, log: Log,
                 on_nodes_changed: NodesChanged | None = None, refresh_s: float | None = None,
                 nodes: Iterable[NodeConfig] | None = None) -> None:
        assert config.aws is not None
        self.aws = config.aws
        self.monitor = CloudMonitor(config)
        self.judge = IdleCloudJudge(self.aws.idle_stop_minutes * 60.0, detector)
        self.stop_idle = stop_idle
        self.log = log
        self.on_nodes_changed = on_nodes_changed
        # DescribeInstances is batched into one call per round; real AWS is asked at most every 15 s.
        self.refresh_s = refresh_s if refresh_s is not None else (
            0.5 if is_loopback_endpoint(self.aws.endpoint_url) else 15.0)
        self.view = CloudView()
        self._refreshed_at_s = float("-inf")
        # The cloud nodes already in play (``nodes``: the watcher's registry), so one gone by the first
        # round is reported removed.
        self._nodes: dict[str, NodeConfig] = {
            n.name: n for n in (config.nodes if nodes is None else nodes) if n.source == "cloud"}
        self._acted: set[str] = set()

    async def refresh(self) -> CloudView:
        """Rediscover now; report added and removed nodes; raise if EC2 could not be asked."""
        view = await self.monitor.refresh()
        self._refreshed_at_s = time.monotonic()
        if view.error is not None:
            raise GpuConsoleError(view.error)
        self.view = view
        current = {n.name: n for n in view.nodes}
        added = [n for name, n in current.items() if name not in self._nodes]
        removed = [name for name in self._nodes if name not in current]
        self._nodes = current
        if (added or removed) and self.on_nodes_changed is not None:
            self.on_nodes_changed(added, removed)
        self._acted &= {i.id for i in view.live}
        return view

    async def conditions(self, now_s: float) -> list[Alert]:
        """The watcher's hook: the idle_cloud conditions that hold at `now_s` (the detector's clock)."""
        if time.monotonic() - self._refreshed_at_s >= self.refresh_s:
            await self.refresh()
        alerts = self.judge.judge(now_s, self.view)
        if self.stop_idle:
            verb = "stopping" if self.aws.idle_action == "stop" else "terminating"
            alerts = [dataclasses.replace(a, message=f"{a.message}; {verb} it", extra={**a.extra, "action": verb})
                      for a in alerts]
        return alerts

    async def on_idle_cloud(self, alert: Alert) -> None:
        """The watcher's action hook: with --stop-idle-cloud, stop (or terminate) the instance once."""
        if not self.stop_idle or alert.kind != "idle_cloud" or alert.node is None or alert.node in self._acted:
            return
        stop = self.aws.idle_action == "stop"
        self._acted.add(alert.node)
        await self.monitor.down([alert.node], stop=stop)
        self.log(f"watch: {'stopped' if stop else 'terminated'} idle instance {alert.node}")
        self._refreshed_at_s = float("-inf")  # see it leave on the next tick
