"""The config file's tables, declared once: each key's TOML name, the field it fills, how its value
is read and checked, and what it is for. The parser (gpuconsole/config), the unknown-key errors,
`init`'s commented config and the docs check (tests/unit/test_config_keys.py holds README and
docs/design.md to these tables) all read them."""

from __future__ import annotations

from gpuconsole.config.keys import (
    AWS_ID_RE,
    CLUSTER_KINDS,
    HOST_RE,
    INSTANCE_TYPE_RE,
    LISTEN_RE,
    MODES,
    NAME_RE,
    PATH_RE,
    REGION_RE,
    URL_RE,
    USER_RE,
    Key,
    Section,
    agent_path,
    boolean,
    duration,
    local_path,
    names,
    number,
    prices,
    text,
    urls,
)

# A key left out takes its dataclass default ([[nodes]] and [[clusters]]: the [defaults] value of
# the same field, when [defaults] has one).

_MODE = Key("mode", text(choices=MODES), 'trust model: "cooperative" or "service" (README "Trust model")')
_SERVICE_USER = Key("service_user", text(USER_RE), "service mode: the account that owns the state")
_SERVICE_AGENT = Key("service_agent", agent_path, "service mode: where the admin installed the agent")

DEFAULTS = Section("[defaults]", "defaults", (
    Key("poll_seconds", number(0.1, 3600), "telemetry interval of the console and watcher"),
    Key("connect_timeout", number(0.1, 600), "seconds, per node", field="connect_timeout_s"),
    Key("max_parallel", number(1, 4096, integer=True), "connections opened at once"),
    Key("state_dir", text(PATH_RE), "the state directory on the node"),
    Key("user", text(USER_RE), "SSH login (default: ~/.ssh/config, then your local name)"),
    Key("identity_file", local_path, "SSH private key"),
    Key("known_hosts", local_path, "host keys; unknown hosts are refused"),
    Key("reserve_for", duration, "default lease for `reserve`", field="reserve_for_s"),
    Key("ssh_config", local_path, "OpenSSH client config (Host aliases work)"),
    Key("theme", text(NAME_RE), "console theme (--theme overrides)"),
    _MODE, _SERVICE_AGENT, _SERVICE_USER,
    Key("keeper", boolean, "warm connections through the per-user keeper (false: always connect directly)"),
    Key("keeper_idle", duration, "the keeper exits after this long unused", field="keeper_idle_s"),
))

NODES = Section("[[nodes]]", "nodes", (
    Key("name", text(NAME_RE, invalid="is not a valid node name (letters, digits, '.', '_', '-'; at most 63)"),
        "the node's name in every command", required="is required"),
    Key("host", text(HOST_RE), "host name, address or ~/.ssh/config alias (default: the name)"),
    Key("port", number(1, 65535, integer=True), "SSH port"),
    Key("simulate_gpus", number(0, 64, integer=True), ">0: the agent simulates that many GPUs (demo, tests)"),
    Key("connect_timeout", number(0.1, 600), "seconds", field="connect_timeout_s"),
    Key("user", text(USER_RE), "SSH login"),
    Key("identity_file", local_path, "SSH private key"),
    Key("known_hosts", local_path, "host keys"),
    Key("state_dir", text(PATH_RE), "the state directory on the node"),
    Key("python", text(PATH_RE), "the node's interpreter (3.8+)"),
    _MODE, _SERVICE_AGENT, _SERVICE_USER,
))

AWS = Section("[cloud.aws]", "cloud.aws", (
    Key("region", text(REGION_RE), "EC2 region", required='is required (for example "us-east-1")'),
    Key("endpoint_url", text(URL_RE), "an EC2 emulator (moto)"),
    Key("spot", boolean, "default for `cloud up` and bursts (--spot overrides)"),
    Key("max_instances", number(0, 1000, integer=True), "live managed instances, all users together"),
    Key("idle_stop_minutes", number(0.001, 100000), "the watcher's --stop-idle-cloud threshold"),
    Key("idle_action", text(choices=("stop", "terminate")), "what happens to an idle instance"),
    Key("address", text(choices=("public", "private")), "which instance address to SSH to"),
    Key("prices", prices, "$/h overrides of the built-in table"),
    Key("instance_types", names(INSTANCE_TYPE_RE), "allowed types (default: every priced type)"),
    Key("ami", text(AWS_ID_RE), "image with python3 and the NVIDIA driver"),
    Key("key_name", text(AWS_ID_RE), "EC2 key pair whose private half is your identity_file"),
    Key("subnet_id", text(AWS_ID_RE), "subnet to launch in"),
    Key("security_group_ids", names(AWS_ID_RE), "must let you reach port 22"),
    Key("ssh_user", text(USER_RE), "login on the instances"),
    Key("host_map", local_path, "emulators only: where each instance's SSH server listens"),
))

WATCH = Section("[watch]", "watch", (
    Key("idle_minutes", number(0.001, 100000), "a reserved GPU quiet this long is idle (--idle-minutes)"),
    Key("util_below_pct", number(0, 100), "quiet means below this utilization (--util-below)"),
    Key("notify", urls, "apprise URLs (--notify)"),
    Key("cooldown_minutes", number(0, 100000), "re-alert an ongoing condition after this (0: never)"),
    Key("exec", text(), "gets each alert as JSON on stdin (--exec)"),
))

CLUSTERS = Section("[[clusters]]", "clusters", (
    Key("name", text(NAME_RE, invalid="is not a valid cluster name (letters, digits, '.', '_', '-'; at most 63)"),
        "the cluster's name in every command (--node NAME)", required="is required"),
    Key("kind", text(choices=CLUSTER_KINDS), 'the scheduler: "slurm"', required='is required ("slurm")'),
    Key("login", text(HOST_RE), "the login node: host name, address or ~/.ssh/config alias (default: the name)"),
    Key("port", number(1, 65535, integer=True), "SSH port"),
    Key("user", text(USER_RE), "SSH login (the Slurm user)"),
    Key("identity_file", local_path, "SSH private key"),
    Key("known_hosts", local_path, "host keys"),
    Key("python", text(PATH_RE), "the login node's interpreter (3.8+)"),
    Key("connect_timeout", number(0.1, 600), "seconds", field="connect_timeout_s"),
    Key("telemetry", text(choices=("none", "agent")),
        '"agent": GPU telemetry from the agent on each compute node (SSH to them); "none": unknown'),
    Key("simulate_gpus", number(0, 64, integer=True), ">0: the compute nodes' agents simulate GPUs (demo, tests)"),
))

EXPORTER = Section("[exporter]", "exporter", (
    Key("listen", text(LISTEN_RE, invalid="is not HOST:PORT (e.g. 127.0.0.1:9400)"),
        "HOST:PORT of /metrics (--listen overrides; default 127.0.0.1:9400)"),
    Key("web_config", local_path, "TLS and basic auth: a Prometheus web config file (--web-config overrides)"),
))

SECTIONS = (DEFAULTS, NODES, CLUSTERS, AWS, WATCH, EXPORTER)
