"""Load and validate the TOML config; every error names the file, the line and the key."""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from gpuconsole.config.keys import (
    AGENT_PATH_RE,
    AWS_ID_RE,
    HOST_RE,
    INSTANCE_TYPE_RE,
    MODES,
    NAME_RE,
    PATH_RE,
    USER_RE,
    Locator,
)
from gpuconsole.config.sections import AWS, CLUSTERS, DEFAULTS, EXPORTER, NODES, SECTIONS, WATCH
from gpuconsole.errors import ConfigError

__all__ = [  # the patterns are part of this module's interface (node-install checks with them)
    "AGENT_PATH_RE",
    "AWS",
    "AWS_ID_RE",
    "CLUSTERS",
    "DEFAULTS",
    "DEFAULT_SERVICE_AGENT",
    "DEFAULT_SERVICE_USER",
    "DEFAULT_STATE_DIR",
    "EXPORTER",
    "HOST_RE",
    "INSTANCE_TYPE_RE",
    "MODES",
    "NAME_RE",
    "NODES",
    "PATH_RE",
    "SECTIONS",
    "USER_RE",
    "WATCH",
    "AwsConfig",
    "ClusterConfig",
    "Config",
    "Defaults",
    "ExporterConfig",
    "NodeConfig",
    "WatchConfig",
    "default_config_path",
    "load_config",
    "local_state_dir",
    "parse_config",
    "resolve_config_path",
]

DEFAULT_STATE_DIR = "/var/lib/gpuconsole"
COMPUTE_SOURCE = "slurm-node"  # a Slurm compute node's agent (telemetry only; its entry's source is "slurm")
DEFAULT_SERVICE_USER = "gpuconsole"
DEFAULT_SERVICE_AGENT = "/usr/local/lib/gpuconsole/gcagent.py"


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """One SSH node of the fleet."""

    name: str
    host: str
    port: int | None = None
    user: str | None = None
    identity_file: str | None = None
    known_hosts: str | None = None
    state_dir: str = DEFAULT_STATE_DIR
    python: str = "python3"
    simulate_gpus: int = 0
    source: str = "onprem"
    ssh_config: str | None = None
    connect_timeout_s: float = 10.0
    # Trust model of the node: "cooperative" (a group-writable state dir) or "service" (state
    # owned by service_user, changed through sudo and the admin-installed service_agent).
    mode: str = "cooperative"
    service_user: str = DEFAULT_SERVICE_USER
    service_agent: str = DEFAULT_SERVICE_AGENT


@dataclass(frozen=True, slots=True)
class Defaults:
    """The `[defaults]` table."""

    user: str | None = None
    identity_file: str | None = None
    known_hosts: str | None = None
    state_dir: str = DEFAULT_STATE_DIR
    poll_seconds: float = 1.0
    reserve_for_s: float = 4 * 3600.0
    ssh_config: str | None = None
    connect_timeout_s: float = 10.0
    max_parallel: int = 64
    theme: str | None = None
    mode: str = "cooperative"
    service_user: str = DEFAULT_SERVICE_USER
    service_agent: str = DEFAULT_SERVICE_AGENT
    keeper: bool = True  # commands go through the per-user connection keeper (core/keeper.py)
    keeper_idle_s: float = 600.0  # the keeper exits after this long without a request


@dataclass(frozen=True, slots=True)
class WatchConfig:
    """The `[watch]` table."""

    idle_minutes: float = 30.0
    util_below_pct: float = 5.0
    notify: tuple[str, ...] = ()
    exec: str | None = None
    cooldown_minutes: float = 60.0


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """A `[[clusters]]` entry: a scheduler gpuconsole fronts (kind "slurm"), reached over SSH at its
    login node like a node (same keys, same host-key rules); Slurm decides, gpuconsole asks."""

    name: str
    kind: str
    login: str
    port: int | None = None
    user: str | None = None
    identity_file: str | None = None
    known_hosts: str | None = None
    python: str = "python3"
    ssh_config: str | None = None
    connect_timeout_s: float = 10.0
    telemetry: str = "none"  # "agent": the gpuconsole agent on each compute node, over SSH like the login
    simulate_gpus: int = 0  # demo and tests: the compute nodes' agents simulate that many GPUs

    def login_node(self) -> NodeConfig:
        """The login node as the fleet connects to it: a member named after the cluster."""
        return NodeConfig(name=self.name, host=self.login, port=self.port, user=self.user,
                          identity_file=self.identity_file, known_hosts=self.known_hosts, python=self.python,
                          source=self.kind, ssh_config=self.ssh_config, connect_timeout_s=self.connect_timeout_s)

    def compute_node(self, entry: str, address: str) -> NodeConfig:
        """A compute node whose agent measures its GPUs (`telemetry = "agent"`): reached at the address
        Slurm gives it with the cluster's SSH settings (a ProxyJump belongs in the ssh config); named
        like its Slurm entry, `CLUSTER/NODE`. Its agent reads telemetry only: every change is Slurm's."""
        return NodeConfig(name=entry, host=address, port=self.port, user=self.user, identity_file=self.identity_file,
                          known_hosts=self.known_hosts, python=self.python, simulate_gpus=self.simulate_gpus,
                          source=COMPUTE_SOURCE, ssh_config=self.ssh_config, connect_timeout_s=self.connect_timeout_s)


@dataclass(frozen=True, slots=True)
class ExporterConfig:
    """The `[exporter]` table: what `gpuconsole exporter` and `watch --metrics` serve with."""

    listen: str | None = None  # HOST:PORT; None: 127.0.0.1:9400
    web_config: str | None = None  # TLS and basic auth, Prometheus exporters' web config format


@dataclass(frozen=True, slots=True)
class AwsConfig:
    """The `[cloud.aws]` table. Credentials are never here: they come from the boto3 chain."""

    region: str
    endpoint_url: str | None = None
    instance_types: tuple[str, ...] = ()  # allowed types; empty = every type in the price table
    ami: str | None = None
    key_name: str | None = None
    subnet_id: str | None = None
    security_group_ids: tuple[str, ...] = ()
    ssh_user: str = "ubuntu"
    spot: bool = False
    max_instances: int = 4
    idle_stop_minutes: float = 30.0
    idle_action: str = "stop"  # or "terminate"
    prices: tuple[tuple[str, float], ...] = ()  # overrides of the built-in table, $/hour
    address: str = "public"  # which instance address to SSH to: "public" or "private"
    # Emulators only (moto in the demo and tests): a JSON file naming where each instance's SSH
    # server really listens, because the addresses an emulator invents must never be dialled.
    host_map: str | None = None


@dataclass(frozen=True, slots=True)
class Config:
    """A validated config file."""

    path: Path
    defaults: Defaults
    nodes: tuple[NodeConfig, ...]
    watch: WatchConfig = field(default_factory=WatchConfig)
    aws: AwsConfig | None = None
    exporter: ExporterConfig = field(default_factory=ExporterConfig)
    clusters: tuple[ClusterConfig, ...] = ()

    def members(self) -> tuple[NodeConfig, ...]:
        """What the fleet connects to: the [[nodes]], then each cluster's login node."""
        return (*self.nodes, *(cluster.login_node() for cluster in self.clusters))

    def node(self, name: str) -> NodeConfig:
        """Return the node called ``name`` or raise NotFoundError."""
        from gpuconsole.errors import NotFoundError

        for node in self.members():
            if node.name == name:
                return node
        known = ", ".join(n.name for n in self.members()) or "none"
        raise NotFoundError(f"unknown node {name!r} (known: {known})")



_TOP_KEYS = {"defaults", "nodes", "clusters", "cloud", "watch", "exporter"}
CLUSTER_INHERITED = ("user", "identity_file", "known_hosts", "ssh_config", "connect_timeout_s")
_INHERITED = frozenset(f.name for f in fields(Defaults)) & frozenset(f.name for f in fields(NodeConfig))


def default_config_path() -> Path:
    """The platform config path (`$XDG_CONFIG_HOME/gpuconsole/config.toml`)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "gpuconsole" / "config.toml"


def local_state_dir() -> Path:
    """Where gpuconsole keeps this user's local state (`$XDG_STATE_HOME/gpuconsole`)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "gpuconsole"


def resolve_config_path(cli_path: str | None) -> Path:
    """`--config`, else `$GPUCONSOLE_CONFIG`, else the platform config dir."""
    if cli_path:
        return Path(cli_path).expanduser()
    env_path = os.environ.get("GPUCONSOLE_CONFIG")
    if env_path:
        return Path(env_path).expanduser()
    return default_config_path()


def load_config(cli_path: str | None = None) -> Config:
    """Read and validate the config chosen by `--config`, env or the platform dir."""
    path = resolve_config_path(cli_path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no config file (run `gpuconsole init` to write one from your ~/.ssh/config, "
            "or pass --config PATH or set $GPUCONSOLE_CONFIG; `gpuconsole demo` tries a simulated cluster)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config: {exc}") from None
    return parse_config(text, path)


def parse_config(text: str, path: Path) -> Config:
    """Validate TOML text as a gpuconsole config."""
    loc = Locator(path, text)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"line (\d+)", str(exc))
        line = match.group(1) if match else "1"
        reason = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        raise ConfigError(f"{path}:{line}: syntax: {reason}") from None
    for key in data:
        if key not in _TOP_KEYS:
            raise loc.error(key, None, f"unknown table (expected one of {sorted(_TOP_KEYS)})")
    base_dir = path.parent
    defaults = Defaults(**DEFAULTS.read(_table(data, "defaults", loc), loc, base_dir))
    raw_nodes = data.get("nodes", [])
    if not isinstance(raw_nodes, list):
        raise loc.error("nodes", None, "must be an array of tables ([[nodes]])")
    nodes: list[NodeConfig] = []
    seen: set[str] = set()
    for index, raw in enumerate(raw_nodes):
        node = _parse_node(raw, index, defaults, loc, base_dir)
        if node.name in seen:
            raise loc.error("nodes", "name", f"duplicate node name {node.name!r}", index)
        seen.add(node.name)
        nodes.append(node)
    clusters = _parse_clusters(data.get("clusters", []), defaults, seen, loc, base_dir)
    aws = _parse_aws(data.get("cloud"), loc, base_dir)
    watch = WatchConfig(**WATCH.read(_table(data, "watch", loc), loc, base_dir))
    exporter = ExporterConfig(**EXPORTER.read(_table(data, "exporter", loc), loc, base_dir))
    return Config(path=path, defaults=defaults, nodes=tuple(nodes), watch=watch, aws=aws, exporter=exporter,
                  clusters=clusters)


def _table(data: dict[str, Any], name: str, loc: Locator) -> dict[str, Any]:
    value = data.get(name, {})
    if not isinstance(value, dict):
        raise loc.error(name, None, "must be a table")
    return value


def _parse_node(raw: Any, index: int, defaults: Defaults, loc: Locator, base_dir: Path) -> NodeConfig:
    """A [[nodes]] entry; what it leaves out comes from [defaults], then the built-in defaults."""
    if not isinstance(raw, dict):
        raise loc.error("nodes", None, "each [[nodes]] entry must be a table", index)
    values = NODES.read(raw, loc, base_dir, index)
    inherited = {name: getattr(defaults, name) for name in _INHERITED}
    return NodeConfig(**{"host": values["name"], **inherited, **values})


def _parse_clusters(raw: Any, defaults: Defaults, seen: set[str], loc: Locator,
                    base_dir: Path) -> tuple[ClusterConfig, ...]:
    """The [[clusters]] entries; a name is unique among nodes and clusters (it is a --node target)."""
    if not isinstance(raw, list):
        raise loc.error("clusters", None, "must be an array of tables ([[clusters]])")
    clusters = []
    for index, entry in enumerate(raw):
        if not isinstance(entry, dict):
            raise loc.error("clusters", None, "each [[clusters]] entry must be a table", index)
        values = CLUSTERS.read(entry, loc, base_dir, index)
        if values["name"] in seen:
            raise loc.error("clusters", "name", f"duplicate name {values['name']!r} (nodes and clusters share names)",
                            index)
        seen.add(values["name"])
        inherited = {name: getattr(defaults, name) for name in CLUSTER_INHERITED}
        clusters.append(ClusterConfig(**{"login": values["name"], **inherited, **values}))
    return tuple(clusters)


def _parse_aws(raw: Any, loc: Locator, base_dir: Path) -> AwsConfig | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or set(raw) - {"aws"}:
        raise loc.error("cloud", None, "only [cloud.aws] is supported")
    aws = raw.get("aws", {})
    if not isinstance(aws, dict):
        raise loc.error("cloud.aws", None, "must be a table")
    return AwsConfig(**AWS.read(aws, loc, base_dir))
