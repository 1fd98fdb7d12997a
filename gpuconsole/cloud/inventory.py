"""Discovery: running managed instances become fleet nodes (`source = "cloud"`), found from EC2 tags.

Every user's console sees the same instances because EC2 itself is the inventory; nothing is kept
in a local file. Where to SSH comes from the instance address, or from `host_map` for emulators.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Protocol

from gpuconsole.cloud.ec2 import Ec2
from gpuconsole.cloud.hostkeys import cloud_known_hosts_path, known_instances, remember_host_keys
from gpuconsole.config import AwsConfig, Config, NodeConfig
from gpuconsole.errors import ConfigError
from gpuconsole.model.cloud import LISTED_STATES, Instance


def read_host_map(path: str | None) -> dict[str, dict[str, Any]]:
    """The emulator's instance id → {host, port, state_dir, simulate_gpus} map (missing file = empty)."""
    if not path:
        return {}
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"[cloud.aws] host_map: cannot read {path}: {exc}") from None
    return data if isinstance(data, dict) else {}


def node_for(instance: Instance, config: Config, host_map: dict[str, dict[str, Any]]) -> NodeConfig | None:
    """The SSH node of a running instance, or None while it has no address to dial yet."""
    aws = config.aws
    assert aws is not None
    if instance.state != "running":
        return None
    defaults = config.defaults
    base = NodeConfig(
        name=instance.id, host="", user=aws.ssh_user, identity_file=defaults.identity_file,
        known_hosts=defaults.known_hosts, state_dir=defaults.state_dir, source="cloud",
        ssh_config=defaults.ssh_config, connect_timeout_s=defaults.connect_timeout_s,
    )
    if aws.host_map is not None:
        # An emulator: its invented addresses are never dialled, only what the map names.
        entry = host_map.get(instance.id)
        if not entry:
            return None
        return dataclasses.replace(
            base, host=str(entry.get("host", "127.0.0.1")), port=int(entry["port"]),
            state_dir=str(entry.get("state_dir", base.state_dir)),
            simulate_gpus=int(entry.get("simulate_gpus", 0)),
        )
    address = instance.public_ip if aws.address == "public" else instance.private_ip
    if not address:
        return None
    return dataclasses.replace(base, host=address, known_hosts=str(cloud_known_hosts_path()))


class ConsoleKeys(Protocol):
    """Where host keys come from: EC2's GetConsoleOutput (cloud.ec2.Ec2)."""

    def console_host_keys(self, instance_id: str) -> list[str]: ...


def learn_host_keys(ec2: ConsoleKeys, config: Config, instances: list[Instance]) -> None:
    """Fetch host keys from the console of running instances whose keys this machine does not hold:
    new addresses, and reused ones whose keys were another instance's (EC2 hands addresses out again)."""
    assert config.aws is not None
    if config.aws.host_map is not None:
        return  # the emulator's nodes are in the demo's known_hosts already
    path = cloud_known_hosts_path()
    known = known_instances(path)
    for instance in instances:
        address = instance.public_ip if config.aws.address == "public" else instance.private_ip
        if instance.managed and instance.state == "running" and address and known.get(address) != instance.id:
            keys = ec2.console_host_keys(instance.id)
            if keys:
                remember_host_keys(path, address, keys, instance.id)


def host_keys_learnt(config: Config, instance: Instance) -> bool:
    """Whether the cloud known_hosts holds this instance's own keys (always so with an emulator's
    host_map: its nodes are in the demo's known_hosts)."""
    assert config.aws is not None
    if config.aws.host_map is not None:
        return True
    address = instance.public_ip if config.aws.address == "public" else instance.private_ip
    return bool(address) and known_instances(cloud_known_hosts_path()).get(address or "") == instance.id


def cloud_nodes(config: Config, instances: list[Instance]) -> list[NodeConfig]:
    """Nodes for the running managed instances that can be dialled now."""
    assert config.aws is not None
    host_map = read_host_map(config.aws.host_map)
    taken = {n.name for n in config.members()}
    nodes = [node_for(i, config, host_map) for i in instances if i.managed]
    return [n for n in nodes if n is not None and n.name not in taken]


def scan(ec2: Ec2, config: Config) -> tuple[list[Instance], list[NodeConfig]]:
    """One discovery round: managed instances (live or stopped), with host keys learnt, and their nodes."""
    instances = ec2.describe(states=LISTED_STATES)
    learn_host_keys(ec2, config, instances)
    return instances, cloud_nodes(config, instances)


def discover(config: Config) -> tuple[list[NodeConfig], list[Instance]]:
    """For a one-shot command, one DescribeInstances: a node per running managed instance that can be
    dialled now, and the managed instances themselves (live or stopped). No nodes without `[cloud.aws]`."""
    if config.aws is None:
        return [], []
    instances, nodes = scan(Ec2(config.aws), config)
    return nodes, instances


def live_ids(instances: list[Instance]) -> frozenset[str]:
    """Ids of the managed instances among ``instances`` that are pending or running."""
    return frozenset(i.id for i in instances if i.managed and i.live)


def allowed_types(aws: AwsConfig) -> tuple[str, ...]:
    """The instance types a burst or `cloud up` may launch."""
    from gpuconsole.cloud.prices import known_types

    return aws.instance_types or known_types()
