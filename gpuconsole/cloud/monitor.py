"""The cloud as long-running front ends (console, watcher) use it: periodic discovery as frozen views,
plus launch and down, all off the event loop (boto3 is synchronous)."""

from __future__ import annotations

import asyncio
import getpass
import time
from dataclasses import dataclass

from gpuconsole.cloud.ec2 import Ec2
from gpuconsole.cloud.inventory import scan
from gpuconsole.cloud.launch import Launched, Progress, Quote, launch, quote, wait_ready
from gpuconsole.config import Config, NodeConfig
from gpuconsole.errors import GpuConsoleError, UsageError
from gpuconsole.model.cloud import Instance

__all__ = ["CloudMonitor", "CloudView", "Quote"]


@dataclass(frozen=True, slots=True)
class CloudView:
    """One discovery round: managed instances, the nodes they give, or why EC2 could not be asked."""

    instances: tuple[Instance, ...] = ()
    nodes: tuple[NodeConfig, ...] = ()
    error: str | None = None
    taken_at_s: float = 0.0  # epoch seconds

    @property
    def live(self) -> tuple[Instance, ...]:
        return tuple(i for i in self.instances if i.live)

    @property
    def burn_per_hour(self) -> float:
        """Dollars per hour the live instances cost at list price."""
        return round(sum(i.price_per_hour or 0.0 for i in self.live), 4)

    def summary(self) -> str:
        """The console summary's cloud cell."""
        if self.error and not self.instances:
            return "cloud: unavailable"
        return f"cloud: {len(self.live)} up · ${self.burn_per_hour:.2f}/h"


class CloudMonitor:
    """Discovery and actions for one config's `[cloud.aws]`; one Ec2 client, created on first use."""

    def __init__(self, config: Config) -> None:
        if config.aws is None:
            raise UsageError("no [cloud.aws] section in the config")
        self.config = config
        self.aws = config.aws
        self._ec2: Ec2 | None = None

    def _client(self) -> Ec2:
        if self._ec2 is None:
            self._ec2 = Ec2(self.aws)
        return self._ec2

    def _refresh(self) -> CloudView:
        instances, nodes = scan(self._client(), self.config)
        return CloudView(tuple(instances), tuple(nodes), None, time.time())

    async def refresh(self) -> CloudView:
        """One discovery round; failures become a view with `error` set (never an exception)."""
        try:
            return await asyncio.to_thread(self._refresh)
        except GpuConsoleError as exc:
            return CloudView(error=str(exc), taken_at_s=time.time())

    async def quote(self, gpus: int = 1, instance_type: str | None = None, spot: bool | None = None) -> Quote:
        return await asyncio.to_thread(lambda: quote(self._client(), self.aws, gpus, instance_type, spot))

    async def launch(self, quote: Quote, *, count: int = 1, timeout_s: float = 600.0,
                     progress: Progress | None = None) -> list[Launched]:
        """Launch and follow to `agent ready` (max_instances and unreachable rules as `cloud up`)."""
        ec2 = self._client()
        instances = await asyncio.to_thread(launch, ec2, self.aws, quote.instance_type, spot=quote.spot, count=count)
        launched = [Launched(i) for i in instances]
        await wait_ready(ec2, self.config, launched, timeout_s=timeout_s, progress=progress)
        return launched

    async def down(self, ids: list[str], *, stop: bool = False) -> list[Instance]:
        """Terminate (or stop) managed instances; unmanaged ones are refused (exit 4)."""
        ec2 = self._client()
        return await asyncio.to_thread(ec2.stop if stop else ec2.terminate, ids)

    @staticmethod
    def owner() -> str:
        return getpass.getuser()
