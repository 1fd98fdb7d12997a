"""The demo's cloud: an EC2 emulator whose running managed instances boot as simulated SSH nodes.

Each poll turns emulator state into node lifecycle: running → a new loopback node (after a short
simulated boot) with the instance type's GPU count; stopped → its server goes away (state kept, as
an EBS root volume would be); terminated → gone for good.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from gpuconsole.cloud.emulator import DEMO_TYPES, Ec2Emulator
from gpuconsole.demo.nodes import DemoCluster, kill_marked
from gpuconsole.model.cloud import Instance

POLL_S = 0.2


class CloudBridge:
    """Runs on the demo cluster's loop; `boot_s` is how long an instance takes to answer SSH."""

    def __init__(self, cluster: DemoCluster, *, boot_s: float = 0.5, max_instances: int = 4,
                 idle_stop_minutes: float = 30.0) -> None:
        self.cluster = cluster
        self.emulator = Ec2Emulator()
        self.boot_s = boot_s
        self.max_instances = max_instances
        self.idle_stop_minutes = idle_stop_minutes
        self.never_boot = False  # tests: instances not yet booted never answer SSH
        self._seen_running_s: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        endpoint = await asyncio.to_thread(self.emulator.start)
        ami = await asyncio.to_thread(self.emulator.ubuntu_ami)
        types = ", ".join(f'"{t}"' for t in DEMO_TYPES)
        self.cluster.cloud_section = (
            "\n[cloud.aws]\n"
            f'region = "{self.emulator.region}"\n'
            f'endpoint_url = "{endpoint}"\n'
            f'ami = "{ami}"\n'
            f"instance_types = [{types}]\n"
            f"max_instances = {self.max_instances}\n"
            f"idle_stop_minutes = {self.idle_stop_minutes}\n"
            f'host_map = "{self.cluster.host_map_path}"\n'
        )
        self.cluster.write_files()
        self._task = asyncio.create_task(self._run(), name="demo-cloud-bridge")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await asyncio.to_thread(self.emulator.stop)

    async def _run(self) -> None:
        while True:
            try:
                instances = await asyncio.to_thread(self.emulator.instances)
                await self.sync(instances)
            except Exception:  # the emulator hiccuped: try again next round
                pass
            await asyncio.sleep(POLL_S)

    async def sync(self, instances: list[Instance]) -> None:
        """Bring simulated nodes in line with instance states."""
        now_s = time.monotonic()
        changed = False
        for instance in instances:
            if not instance.managed:
                continue
            node = self.cluster.nodes.get(instance.id)
            if instance.state == "running":
                first_s = self._seen_running_s.setdefault(instance.id, now_s)
                if (node is None and self.never_boot) or now_s - first_s < self.boot_s:
                    continue
                if node is None:
                    await self.cluster.add_node(instance.id, instance.gpus or 1, cloud=True)
                elif node.server is None:
                    await self.cluster.start_node(instance.id)
                    changed = True
            else:
                self._seen_running_s.pop(instance.id, None)
                if node is not None and node.server is not None:
                    await self.cluster.stop_node(instance.id)
                    # A stopped or terminated instance takes its detached supervisors and jobs with it.
                    kill_marked({node.sim_key})
                    changed = True
                if node is not None and instance.state == "terminated":
                    self.cluster.nodes.pop(instance.id, None)
                    changed = True
        if changed:
            self.cluster.write_files()
