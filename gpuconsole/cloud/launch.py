"""`cloud up` and burst: pick a type, respect max_instances, launch, and follow each instance through
pending → running → SSH reachable → agent ready.

An instance that never becomes reachable is terminated (a forgotten unreachable GPU instance costs
money and helps nobody) and the error says so. `max_instances` holds under concurrent launches:
launches from one machine are serialized by a local lock, and after launching every launcher ranks
the live managed instances by (launch time, id) and terminates its own if it ranks past the limit,
so launchers on different machines converge too.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import getpass
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from gpuconsole.cloud.ec2 import Ec2, is_loopback_endpoint
from gpuconsole.cloud.inventory import allowed_types, host_keys_learnt, learn_host_keys, node_for, read_host_map
from gpuconsole.cloud.prices import price_per_hour
from gpuconsole.config import AwsConfig, Config, NodeConfig, local_state_dir
from gpuconsole.errors import GpuConsoleError, NoCapacityError, UnreachableError, UsageError
from gpuconsole.model.cloud import LIVE_STATES, Instance
from gpuconsole.ssh.connection import HostKeyError, NodeConnection

Progress = Callable[[str, str, float], None]  # (instance id, phase, seconds since launch)


@dataclass
class Launched:
    """One launched instance and when it reached each phase (seconds after run_instances)."""

    instance: Instance
    phases_s: dict[str, float] = field(default_factory=dict)
    node: NodeConfig | None = None


def choose_type(ec2: Ec2, aws: AwsConfig, gpus: int, spot: bool) -> tuple[str, int, float | None]:
    """The cheapest allowed type with at least ``gpus`` GPUs: (type, GPUs, $/hour)."""
    types = list(allowed_types(aws))
    counts = ec2.gpu_counts(types)
    prices = dict(aws.prices)
    fits = [(t, counts[t], price_per_hour(t, spot, prices)) for t in types if counts.get(t, 0) >= gpus]
    if not fits:
        largest = max(counts.values(), default=0)
        raise NoCapacityError(
            f"no allowed instance type has {gpus} GPUs (largest allowed: {largest}; "
            f"allowed: {', '.join(types)})"
        )
    # Unpriced types sort last: an unknown price is never the "cheapest".
    return min(fits, key=lambda f: (f[2] is None, f[2] or 0.0, f[0]))


def check_type(ec2: Ec2, aws: AwsConfig, instance_type: str) -> int:
    """An explicit `--type` must be allowed and exist; returns its GPU count."""
    allowed = allowed_types(aws)
    if instance_type not in allowed:
        raise UsageError(f"--type {instance_type}: not an allowed type (allowed: {', '.join(allowed)})")
    return ec2.gpu_counts([instance_type])[instance_type]


@dataclass(frozen=True, slots=True)
class Quote:
    """What a launch would start, as `cloud up`, a burst and the console announce it."""

    instance_type: str
    gpus: int
    spot: bool
    price_per_hour: float | None

    def describe(self) -> str:
        cost = f"${self.price_per_hour:.2f}/h" if self.price_per_hour is not None else "price unknown"
        kind = "spot" if self.spot else "on-demand"
        return f"{self.instance_type} ({self.gpus} GPU{'s' if self.gpus != 1 else ''}, {kind}, {cost})"


def quote(ec2: Ec2, aws: AwsConfig, gpus: int, instance_type: str | None = None,
          spot: bool | None = None) -> Quote:
    """The type `--type` names (checked), else the cheapest allowed one with ``gpus`` GPUs; spot
    defaults to the config's."""
    use_spot = aws.spot if spot is None else spot
    if instance_type:
        count = check_type(ec2, aws, instance_type)
        return Quote(instance_type, count, use_spot, price_per_hour(instance_type, use_spot, dict(aws.prices)))
    chosen, count, price = choose_type(ec2, aws, gpus, use_spot)
    return Quote(chosen, count, use_spot, price)


def launcher() -> str:
    """Who launches: the local user, whose name goes in the owner tag (`cloud down --mine` reads it)."""
    return getpass.getuser()


@contextlib.contextmanager
def launch_lock() -> Iterator[None]:
    """Serializes count-then-launch between processes on this machine."""
    base = local_state_dir()
    base.mkdir(parents=True, exist_ok=True)
    fd = os.open(base / "cloud-launch.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def launch(ec2: Ec2, aws: AwsConfig, instance_type: str, *, spot: bool, count: int) -> list[Instance]:
    """Launch ``count`` instances, all or none: refused (exit 3) if that would pass max_instances,
    and EC2 starts all of them or none (MinCount = MaxCount); if a concurrent launch elsewhere took
    the room meanwhile, every one of them is terminated again."""
    with launch_lock():
        live = [i for i in ec2.describe(states=LIVE_STATES) if i.managed]
        if len(live) + count > aws.max_instances:
            names = ", ".join(i.id for i in live) or "none"
            raise NoCapacityError(
                f"max_instances = {aws.max_instances} reached: {len(live)} managed instance(s) live ({names})"
            )
        mine = ec2.launch(instance_type, spot=spot, count=count, owner=launcher())
    ranked = [i.id for i in ec2.describe(states=LIVE_STATES) if i.managed]
    over = [i for i in mine if i.id in ranked and ranked.index(i.id) >= aws.max_instances]
    if over:
        # All of this launch goes, not only the ones past the limit: a launch of K starts K or none.
        ec2.terminate([i.id for i in mine])
        raise NoCapacityError(
            f"max_instances = {aws.max_instances} reached by a concurrent launch; terminated "
            + ", ".join(i.id for i in mine)
        )
    return mine


async def _tcp_open(host: str, port: int, timeout_s: float) -> bool:
    try:
        _reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()
    return True


async def wait_ready(ec2: Ec2, config: Config, launched: list[Launched], *, timeout_s: float,
                     progress: Progress | None = None) -> None:
    """Follow each instance to `agent ready`; on timeout terminate the stragglers and raise (exit 5)."""
    aws = config.aws
    assert aws is not None
    poll_s = 0.2 if is_loopback_endpoint(aws.endpoint_url) else 2.0
    started = time.monotonic()
    pending = {item.instance.id: item for item in launched}

    def mark(item: Launched, phase: str) -> None:
        if phase not in item.phases_s:
            item.phases_s[phase] = round(time.monotonic() - started, 3)
            if progress is not None:
                progress(item.instance.id, phase, item.phases_s[phase])

    for item in launched:
        mark(item, "pending")
    while pending:
        if time.monotonic() - started > timeout_s:
            ids = sorted(pending)
            with contextlib.suppress(GpuConsoleError):
                await asyncio.to_thread(ec2.terminate, ids)
            raise UnreachableError(
                f"{', '.join(ids)} did not become reachable over SSH within {timeout_s:.0f}s; "
                "terminated (check security groups, key_name and the AMI's python3)"
            )
        current = {i.id: i for i in await asyncio.to_thread(ec2.describe, sorted(pending), managed_only=False)}
        host_map = read_host_map(aws.host_map)
        for instance_id, item in list(pending.items()):
            instance = current.get(instance_id)
            if instance is None:
                continue
            item.instance = instance
            if instance.state in ("shutting-down", "terminated", "stopping", "stopped"):
                pending.pop(instance_id)
                raise UnreachableError(f"{instance_id} went {instance.state} while starting")
            if instance.state != "running":
                continue
            mark(item, "running")
            await asyncio.to_thread(learn_host_keys, ec2, config, [instance])
            node = node_for(instance, config, host_map)
            if node is None or not await _tcp_open(node.host, node.port or 22, 2.0):
                continue
            mark(item, "ssh")
            try:
                conn = await NodeConnection.open(node, timeout_s=min(30.0, max(5.0, timeout_s / 4)))
            except HostKeyError as exc:
                if not await asyncio.to_thread(host_keys_learnt, config, instance):
                    continue  # sshd answered before its keys reached the console: learn them, try again
                raise UnreachableError(
                    f"{exc}; {instance_id} is still running: add its host key, or stop paying with "
                    f"`gpuconsole cloud down --force {instance_id}` (its agent cannot be asked what runs there)"
                ) from None
            except GpuConsoleError:
                continue  # sshd is up before cloud-init put our key in place: try again
            await conn.close()
            mark(item, "agent")
            item.node = node
            pending.pop(instance_id)
        if pending:
            await asyncio.sleep(poll_s)
