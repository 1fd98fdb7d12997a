"""Load and validate the TOML config; every error names the file, the line and the key."""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpuconsole.durations import parse_duration_s
from gpuconsole.errors import ConfigError, UsageError

DEFAULT_STATE_DIR = "/var/lib/gpuconsole"
MODES = ("cooperative", "service")
DEFAULT_SERVICE_USER = "gpuconsole"
DEFAULT_SERVICE_AGENT = "/usr/local/lib/gpuconsole/gcagent.py"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
HOST_RE = re.compile(r"^[A-Za-z0-9_.:%-]{1,253}$")
USER_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}$")
PATH_RE = re.compile(r"^[A-Za-z0-9_./+~-]+$")


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


@dataclass(frozen=True, slots=True)
class WatchConfig:
    """The `[watch]` table."""

    idle_minutes: float = 30.0
    util_below_pct: float = 5.0
    notify: tuple[str, ...] = ()
    exec: str | None = None
    cooldown_minutes: float = 60.0


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
    # Ids of live (pending/running) managed instances, once discovery has asked EC2; None before
    # that or when EC2 could not be asked (then nothing may be judged gone).
    cloud_live: frozenset[str] | None = None

    def node(self, name: str) -> NodeConfig:
        """Return the node called ``name`` or raise NotFoundError."""
        from gpuconsole.errors import NotFoundError

        for node in self.nodes:
            if node.name == name:
                return node
        known = ", ".join(n.name for n in self.nodes) or "none"
        raise NotFoundError(f"unknown node {name!r} (known: {known})")


_SERVICE_KEYS = {"mode", "service_user", "service_agent"}
_DEFAULT_KEYS = {
    "user", "identity_file", "known_hosts", "state_dir", "poll_seconds", "reserve_for",
    "ssh_config", "connect_timeout", "max_parallel", "theme", *_SERVICE_KEYS,
}
_NODE_KEYS = {
    "name", "host", "port", "user", "identity_file", "known_hosts", "state_dir", "python",
    "simulate_gpus", "connect_timeout", *_SERVICE_KEYS,
}
_AWS_KEYS = {
    "region", "endpoint_url", "instance_types", "ami", "key_name", "subnet_id",
    "security_group_ids", "ssh_user", "spot", "max_instances", "idle_stop_minutes", "prices",
    "idle_action", "address", "host_map",
}
_WATCH_KEYS = {"idle_minutes", "util_below_pct", "notify", "exec", "cooldown_minutes"}
_TOP_KEYS = {"defaults", "nodes", "cloud", "watch"}


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


class _Locator:
    """Finds the line of a key in the TOML text so errors can say `path:line: key: ...`."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.lines = text.splitlines()

    def line_of(self, table: str, key: str | None, index: int = 0) -> int:
        header_re = re.compile(r"^\s*\[\[?\s*([A-Za-z0-9_.\"-]+)\s*\]\]?")
        current, seen, table_line = "", -1, 0
        for lineno, raw in enumerate(self.lines, start=1):
            header = header_re.match(raw)
            if header:
                current = header.group(1).replace('"', "")
                if current == table:
                    seen += 1
                    if seen == index:
                        table_line = lineno
                continue
            if key and current == table and seen == index and re.match(
                rf"^\s*\"?{re.escape(key)}\"?\s*=", raw
            ):
                return lineno
        return table_line or 1

    def error(self, table: str, key: str | None, problem: str, index: int = 0) -> ConfigError:
        line = self.line_of(table, key, index)
        label = key if key else f"[{table}]"
        return ConfigError(f"{self.path}:{line}: {label}: {problem}")


def load_config(cli_path: str | None = None) -> Config:
    """Read and validate the config chosen by `--config`, env or the platform dir."""
    path = resolve_config_path(cli_path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no config file (pass --config PATH, set $GPUCONSOLE_CONFIG, "
            f"or run `gpuconsole demo --serve --write-config {path}`)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config: {exc}") from None
    return parse_config(text, path)


def parse_config(text: str, path: Path) -> Config:
    """Validate TOML text as a gpuconsole config."""
    loc = _Locator(path, text)
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
    defaults = _parse_defaults(_table(data, "defaults", loc), loc, base_dir)
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
    aws = _parse_aws(data.get("cloud"), loc, base_dir)
    watch = _parse_watch(_table(data, "watch", loc), loc)
    return Config(path=path, defaults=defaults, nodes=tuple(nodes), watch=watch, aws=aws)


def _table(data: dict[str, Any], name: str, loc: _Locator) -> dict[str, Any]:
    value = data.get(name, {})
    if not isinstance(value, dict):
        raise loc.error(name, None, "must be a table")
    return value


def _check_keys(raw: dict[str, Any], allowed: set[str], table: str, loc: _Locator, index: int = 0) -> None:
    for key in raw:
        if key not in allowed:
            raise loc.error(table, key, f"unknown key (allowed: {', '.join(sorted(allowed))})", index)


def _str(raw: dict[str, Any], key: str, table: str, loc: _Locator, pattern: re.Pattern[str] | None,
         index: int = 0) -> str | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise loc.error(table, key, "must be a non-empty string", index)
    if pattern is not None and not pattern.match(value):
        raise loc.error(table, key, f"{value!r} contains characters that are not allowed", index)
    return value


def _path(raw: dict[str, Any], key: str, table: str, loc: _Locator, base_dir: Path,
          index: int = 0) -> str | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value or "\0" in value:
        raise loc.error(table, key, "must be a non-empty path string", index)
    expanded = Path(value).expanduser()
    if not expanded.is_absolute():
        expanded = base_dir / expanded
    return str(expanded)


def _number(raw: dict[str, Any], key: str, table: str, loc: _Locator, *, minimum: float,
            maximum: float, index: int = 0, integer: bool = False) -> float | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or (
        integer and not isinstance(value, int)
    ):
        kind = "an integer" if integer else "a number"
        raise loc.error(table, key, f"must be {kind}, not {value!r}", index)
    if not minimum <= value <= maximum:
        raise loc.error(table, key, f"{value} is out of range [{minimum:g}, {maximum:g}]", index)
    return float(value)


def _duration(raw: dict[str, Any], key: str, table: str, loc: _Locator) -> float | None:
    value = raw.get(key)
    if value is None:
        return None
    try:
        return parse_duration_s(str(value), what=key)
    except UsageError as exc:
        raise loc.error(table, key, str(exc).split(": ", 1)[-1]) from None


AGENT_PATH_RE = re.compile(r"^/[A-Za-z0-9_./+-]+$")


def _service_keys(raw: dict[str, Any], table: str, loc: _Locator, inherited: Defaults | None,
                  index: int = 0) -> dict[str, str]:
    """mode, service_user and service_agent of a table, else inherited (or built-in) values."""
    base = inherited or Defaults()
    mode = _str(raw, "mode", table, loc, None, index) or base.mode
    if mode not in MODES:
        raise loc.error(table, "mode", f'must be "cooperative" or "service", not {mode!r}', index)
    agent = _str(raw, "service_agent", table, loc, AGENT_PATH_RE, index)
    if agent is not None and "/../" in agent:
        raise loc.error(table, "service_agent", f"{agent!r} must be an absolute path without '..'", index)
    return {
        "mode": mode,
        "service_user": _str(raw, "service_user", table, loc, USER_RE, index) or base.service_user,
        "service_agent": agent or base.service_agent,
    }


def _parse_defaults(raw: dict[str, Any], loc: _Locator, base_dir: Path) -> Defaults:
    _check_keys(raw, _DEFAULT_KEYS, "defaults", loc)
    base = Defaults()
    poll = _number(raw, "poll_seconds", "defaults", loc, minimum=0.1, maximum=3600)
    timeout = _number(raw, "connect_timeout", "defaults", loc, minimum=0.1, maximum=600)
    parallel = _number(raw, "max_parallel", "defaults", loc, minimum=1, maximum=4096, integer=True)
    # state_dir is a path on the node, so it is not resolved against the local config dir.
    state_dir = _str(raw, "state_dir", "defaults", loc, PATH_RE)
    return Defaults(
        user=_str(raw, "user", "defaults", loc, USER_RE),
        identity_file=_path(raw, "identity_file", "defaults", loc, base_dir),
        known_hosts=_path(raw, "known_hosts", "defaults", loc, base_dir),
        state_dir=state_dir or base.state_dir,
        poll_seconds=poll if poll is not None else base.poll_seconds,
        reserve_for_s=_duration(raw, "reserve_for", "defaults", loc) or base.reserve_for_s,
        ssh_config=_path(raw, "ssh_config", "defaults", loc, base_dir),
        connect_timeout_s=timeout if timeout is not None else base.connect_timeout_s,
        max_parallel=int(parallel) if parallel is not None else base.max_parallel,
        theme=_str(raw, "theme", "defaults", loc, NAME_RE),
        **_service_keys(raw, "defaults", loc, None),
    )


def _parse_node(raw: Any, index: int, defaults: Defaults, loc: _Locator, base_dir: Path) -> NodeConfig:
    if not isinstance(raw, dict):
        raise loc.error("nodes", None, "each [[nodes]] entry must be a table", index)
    _check_keys(raw, _NODE_KEYS, "nodes", loc, index)
    name = _str(raw, "name", "nodes", loc, None, index)
    if name is None:
        raise loc.error("nodes", "name", "is required", index)
    if not NAME_RE.match(name):
        raise loc.error(
            "nodes", "name",
            f"{name!r} is not a valid node name (letters, digits, '.', '_', '-'; at most 63)", index,
        )
    host = _str(raw, "host", "nodes", loc, HOST_RE, index) or name
    if not HOST_RE.match(host):
        raise loc.error("nodes", "host", f"{host!r} is not a valid host", index)
    port = _number(raw, "port", "nodes", loc, minimum=1, maximum=65535, index=index, integer=True)
    sim = _number(raw, "simulate_gpus", "nodes", loc, minimum=0, maximum=64, index=index, integer=True)
    timeout = _number(raw, "connect_timeout", "nodes", loc, minimum=0.1, maximum=600, index=index)
    return NodeConfig(
        name=name,
        host=host,
        port=int(port) if port is not None else None,
        user=_str(raw, "user", "nodes", loc, USER_RE, index) or defaults.user,
        identity_file=_path(raw, "identity_file", "nodes", loc, base_dir, index) or defaults.identity_file,
        known_hosts=_path(raw, "known_hosts", "nodes", loc, base_dir, index) or defaults.known_hosts,
        state_dir=_str(raw, "state_dir", "nodes", loc, PATH_RE, index) or defaults.state_dir,
        python=_str(raw, "python", "nodes", loc, PATH_RE, index) or "python3",
        simulate_gpus=int(sim or 0),
        ssh_config=defaults.ssh_config,
        connect_timeout_s=timeout if timeout is not None else defaults.connect_timeout_s,
        **_service_keys(raw, "nodes", loc, defaults, index),
    )


AWS_ID_RE = re.compile(r"^[A-Za-z0-9._:/-]{1,255}$")
INSTANCE_TYPE_RE = re.compile(r"^[a-z0-9-]+\.[a-z0-9-]+$")


def _str_list(raw: dict[str, Any], key: str, table: str, loc: _Locator,
              pattern: re.Pattern[str]) -> tuple[str, ...]:
    value = raw.get(key, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and pattern.match(v) for v in value):
        raise loc.error(table, key, "must be a list of names (letters, digits, '.', '-')")
    return tuple(value)


def _parse_aws(raw: Any, loc: _Locator, base_dir: Path) -> AwsConfig | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or set(raw) - {"aws"}:
        raise loc.error("cloud", None, "only [cloud.aws] is supported")
    aws = raw.get("aws", {})
    if not isinstance(aws, dict):
        raise loc.error("cloud.aws", None, "must be a table")
    table = "cloud.aws"
    _check_keys(aws, _AWS_KEYS, table, loc)
    region = _str(aws, "region", table, loc, re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$"))
    if region is None:
        raise loc.error(table, "region", "is required (for example \"us-east-1\")")
    endpoint = _str(aws, "endpoint_url", table, loc, re.compile(r"^https?://[^\s]+$"))
    spot = aws.get("spot", False)
    if not isinstance(spot, bool):
        raise loc.error(table, "spot", f"must be true or false, not {spot!r}")
    max_instances = _number(aws, "max_instances", table, loc, minimum=0, maximum=1000, integer=True)
    idle_stop = _number(aws, "idle_stop_minutes", table, loc, minimum=0.001, maximum=100000)
    action = _str(aws, "idle_action", table, loc, None) or "stop"
    if action not in ("stop", "terminate"):
        raise loc.error(table, "idle_action", f"must be \"stop\" or \"terminate\", not {action!r}")
    address = _str(aws, "address", table, loc, None) or "public"
    if address not in ("public", "private"):
        raise loc.error(table, "address", f"must be \"public\" or \"private\", not {address!r}")
    prices_raw = aws.get("prices", {})
    if not isinstance(prices_raw, dict):
        raise loc.error(table, "prices", "must be a table of instance type = dollars per hour")
    prices: list[tuple[str, float]] = []
    for type_name, price in prices_raw.items():
        if not INSTANCE_TYPE_RE.match(type_name) or isinstance(price, bool) or not isinstance(
            price, int | float
        ) or price < 0:
            raise loc.error(table, "prices", f"{type_name} = {price!r}: want an instance type = dollars per hour")
        prices.append((type_name, float(price)))
    return AwsConfig(
        region=region,
        endpoint_url=endpoint,
        instance_types=_str_list(aws, "instance_types", table, loc, INSTANCE_TYPE_RE),
        ami=_str(aws, "ami", table, loc, AWS_ID_RE),
        key_name=_str(aws, "key_name", table, loc, AWS_ID_RE),
        subnet_id=_str(aws, "subnet_id", table, loc, AWS_ID_RE),
        security_group_ids=_str_list(aws, "security_group_ids", table, loc, AWS_ID_RE),
        ssh_user=_str(aws, "ssh_user", table, loc, USER_RE) or "ubuntu",
        spot=spot,
        max_instances=int(max_instances) if max_instances is not None else 4,
        idle_stop_minutes=idle_stop if idle_stop is not None else 30.0,
        idle_action=action,
        prices=tuple(prices),
        address=address,
        host_map=_path(aws, "host_map", table, loc, base_dir),
    )


def _parse_watch(raw: dict[str, Any], loc: _Locator) -> WatchConfig:
    _check_keys(raw, _WATCH_KEYS, "watch", loc)
    base = WatchConfig()
    idle = _number(raw, "idle_minutes", "watch", loc, minimum=0.001, maximum=100000)
    util = _number(raw, "util_below_pct", "watch", loc, minimum=0, maximum=100)
    notify = raw.get("notify", [])
    if isinstance(notify, str):
        notify = [notify]
    if not isinstance(notify, list) or not all(isinstance(u, str) for u in notify):
        raise loc.error("watch", "notify", "must be a URL string or a list of them")
    cooldown = _number(raw, "cooldown_minutes", "watch", loc, minimum=0, maximum=100000)
    return WatchConfig(
        idle_minutes=idle if idle is not None else base.idle_minutes,
        util_below_pct=util if util is not None else base.util_below_pct,
        notify=tuple(notify),
        exec=_str(raw, "exec", "watch", loc, None),
        cooldown_minutes=cooldown if cooldown is not None else base.cooldown_minutes,
    )
