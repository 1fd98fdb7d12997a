"""What each command was asked, typed: one frozen dataclass per command, built from argparse's
Namespace in one place (gpuconsole.cli.parser.options), so a handler reads fields a type checker
knows (`opts.gpus: int`) instead of attributes of an `Any`.

Field names are the parser's `dest`s; the CLI tests hold flags, exit codes and outputs fixed.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ConsoleArgs:
    """`gpuconsole` with no command: the interactive console."""

    config: str | None = None
    theme: str | None = None
    readonly: bool = False


@dataclass(frozen=True, slots=True)
class StatusArgs:
    config: str | None
    node: str | None
    json: bool
    watch: float | None  # seconds between refreshes; None: once
    gpus: bool = False  # the per-GPU table even when it does not fit the terminal's height
    free: bool = False  # only nodes with a free GPU
    sort: str | None = None  # name, free or util; None: the config's order
    user: str | None = None  # only nodes and GPUs where USER holds a reservation or runs a process


@dataclass(frozen=True, slots=True)
class ReserveArgs:
    config: str | None
    gpus: int
    node: str | None
    duration: str | None  # --for, as typed (parsed against the config's reserve_for default)
    wait: bool
    timeout: str | None
    priority: str
    preemptible: bool
    burst: bool
    json: bool
    export: bool  # only `export NAME=value` lines on stdout, for eval
    yes: bool = False  # --burst without asking (scripts)


@dataclass(frozen=True, slots=True)
class ShellArgs:
    """`shell`: a login shell (or `-- CMD…`) on the node, in a new or an existing reservation."""

    config: str | None
    gpus: int | None  # None: 1 (and not given, which --reservation needs)
    node: str | None
    duration: str | None  # --for: the lease it is renewed to while attached (default: reserve_for)
    reservation: str | None  # use this reservation of yours instead of reserving (left as it was)
    keep: bool  # keep the new reservation when the shell exits
    argv: tuple[str, ...]  # as given after the flags (a leading `--` included); empty: the login shell


@dataclass(frozen=True, slots=True)
class ReleaseArgs:
    config: str | None
    ids: tuple[str, ...]
    mine: bool
    token: int | None
    json: bool


@dataclass(frozen=True, slots=True)
class RenewArgs:
    config: str | None
    id: str
    duration: str | None
    token: int | None
    json: bool


@dataclass(frozen=True, slots=True)
class ReservationsArgs:
    config: str | None
    json: bool
    mine: bool = False  # only yours (the owner each node reports for your SSH user, as `release --mine`)
    user: str | None = None  # only USER's


@dataclass(frozen=True, slots=True)
class SubmitArgs:
    config: str | None
    gpus: int
    node: str | None
    priority: str
    preempt: bool
    requeue: bool
    name: str | None
    grace: float | None  # seconds
    burst: bool
    json: bool
    argv: tuple[str, ...]  # as given after the flags (a leading `--` included)
    yes: bool = False  # --burst without asking (scripts)
    array: str | None = None  # --array SPEC: one job per index (core.jobs.parse_array)
    time: str | None = None  # --time DUR: the job's runtime limit


@dataclass(frozen=True, slots=True)
class JobsArgs:
    config: str | None
    json: bool
    mine: bool = False
    user: str | None = None
    state: str | None = None


@dataclass(frozen=True, slots=True)
class LogsArgs:
    config: str | None
    id: str
    follow: bool
    tail: int | None = None  # only the last N lines (then follow, with --follow)


@dataclass(frozen=True, slots=True)
class PreemptArgs:
    config: str | None
    id: str
    grace: float | None  # seconds


@dataclass(frozen=True, slots=True)
class CancelArgs:
    config: str | None
    id: str
    json: bool


@dataclass(frozen=True, slots=True)
class CloudUpArgs:
    config: str | None
    instance_type: str | None
    gpus: int
    spot: bool | None  # None: the config's default
    count: int
    no_wait: bool
    timeout: str
    json: bool


@dataclass(frozen=True, slots=True)
class CloudLsArgs:
    config: str | None
    all: bool
    json: bool


@dataclass(frozen=True, slots=True)
class CloudDownArgs:
    config: str | None
    ids: tuple[str, ...]
    stop: bool
    json: bool
    force: bool = False  # also an instance with live reservations or jobs, without asking
    mine: bool = False  # every live instance you launched
    idle: bool = False  # every live instance with no reservation or job


CloudArgs = CloudUpArgs | CloudLsArgs | CloudDownArgs


@dataclass(frozen=True, slots=True)
class WatchArgs:
    """`watch`: every flag None (or False) when not given, so `[watch]` supplies the value."""

    config: str | None = None
    idle_minutes: float | None = None
    util_below: float | None = None
    cooldown_minutes: float | None = None
    notify: tuple[str, ...] = ()
    exec_cmd: str | None = None
    release_idle: bool = False
    grace_minutes: float | None = None
    stop_idle_cloud: bool = False
    interval: float | None = None  # seconds
    state_file: str | None = None
    once: bool = False
    json: bool = False
    metrics: str | None = None  # HOST:PORT: also serve the exporter's /metrics from the same poller
    web_config: str | None = None  # with --metrics: TLS and basic auth (else [exporter] web_config)


@dataclass(frozen=True, slots=True)
class DoctorArgs:
    config: str | None
    json: bool


@dataclass(frozen=True, slots=True)
class ServeArgs:
    """`serve [--listen HOST:PORT] [--readonly | --allow-actions]`: the console in a browser (tui/serve.py)."""

    config: str | None
    listen: str | None
    allow_actions: bool
    theme: str | None = None
    readonly: bool = False  # the default, spelled out


@dataclass(frozen=True, slots=True)
class ExporterArgs:
    """`exporter [--listen HOST:PORT] [--web-config FILE]`: Prometheus metrics of the fleet."""

    config: str | None
    listen: str | None
    web_config: str | None = None


@dataclass(frozen=True, slots=True)
class GpuArgs:
    """`gpu clear NODE:GPU`: an admin returns a GPU withheld for its health (node/health.py)."""

    config: str | None
    action: str
    target: str  # NODE:GPU
    json: bool


@dataclass(frozen=True, slots=True)
class AuditArgs:
    """`audit`: the nodes' ledgers (node/ledger.py), each chain verified."""

    config: str | None
    node: str | None
    since: str | None  # a duration back from now
    user: str | None
    json: bool


@dataclass(frozen=True, slots=True)
class UsageArgs:
    """`usage`: GPU-hours and queue waits from the nodes' ledgers (core/usage.py)."""

    config: str | None
    since: str
    by: str  # user, node or day
    json: bool
    csv: bool


@dataclass(frozen=True, slots=True)
class InitArgs:
    """`init`: write a commented config from ~/.ssh/config's Host entries (needs no config)."""

    config: str | None
    yes: bool  # every Host entry, and overwrite an existing config, without asking
    force: bool  # overwrite an existing config without asking
    hosts: tuple[str, ...] = ()  # --host NAME…: these nodes, without asking


@dataclass(frozen=True, slots=True)
class NodeInstallArgs:
    config: str | None
    print: bool
    node: str | None
    state_dir: str | None
    service_user: str | None
    simulate_gpus: int | None


@dataclass(frozen=True, slots=True)
class DemoArgs:
    """`demo`; `theme` and `readonly` reach the console it opens."""

    config: str | None
    nodes: int
    gpus: int
    seed: int
    serve: bool
    write_config: str | None
    dir: str | None
    no_cloud: bool
    theme: str | None = None
    readonly: bool = False


@dataclass(frozen=True, slots=True)
class CompletionArgs:
    """`completion SHELL`: print the shell's completion script (needs no config)."""

    config: str | None
    shell: str  # bash, zsh or fish


@dataclass(frozen=True, slots=True)
class KeeperArgs:
    """`keeper run|status|stop`: the per-user connection keeper of the config (core/keeper.py)."""

    config: str | None
    action: str  # run (foreground), status or stop
    json: bool = False


Options = (
    ConsoleArgs | StatusArgs | ReserveArgs | ReleaseArgs | RenewArgs | ReservationsArgs | SubmitArgs | JobsArgs
    | LogsArgs | PreemptArgs | CancelArgs | CloudUpArgs | CloudLsArgs | CloudDownArgs | WatchArgs | DoctorArgs
    | NodeInstallArgs | DemoArgs | CompletionArgs | ShellArgs | InitArgs | KeeperArgs | AuditArgs | UsageArgs
    | GpuArgs | ExporterArgs | ServeArgs
)

# The commands a keeper may answer (cli/keeper.keeper_serves says when it does).
ONE_SHOT = (ReserveArgs, ReleaseArgs, RenewArgs, ReservationsArgs, SubmitArgs, JobsArgs, LogsArgs, CancelArgs,
            PreemptArgs, AuditArgs, UsageArgs, GpuArgs)
