"""The argument parser (argparse only: building it must stay cheap for `--help`)."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import difflib
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from gpuconsole import __version__
from gpuconsole.cli import options as o
from gpuconsole.errors import UsageError

PRIORITY_CHOICES = ("low", "normal", "high")
STATUS_SORTS = ("name", "free", "util")  # as gpuconsole.cli.status_view.SORTS (not imported: --help stays cheap)
JOB_STATES = ("queued", "running", "succeeded", "failed", "cancelled", "preempted", "lost", "timed_out")


PROG = "gpuconsole"
_INVALID_CHOICE = re.compile(r"invalid choice: '(?P<given>[^']*)' \(choose from (?P<choices>.*)\)")


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors that map to exit code 2 instead of usage dumps."""

    def error(self, message: str) -> NoReturn:
        # main() prefixes "gpuconsole: " once; a subcommand names itself after it.
        where = self.prog.removeprefix(PROG).strip()
        raise UsageError(f"{where + ': ' if where else ''}{message}{_suggestion(message)} (see --help)")


if TYPE_CHECKING:
    from typing import TypeAlias

    Subparsers: TypeAlias = argparse._SubParsersAction[Parser]  # where every command's branch is added


def _suggestion(message: str) -> str:
    """'; did you mean 'status'?' for a mistyped choice close to a real one (else nothing)."""
    found = _INVALID_CHOICE.search(message)
    if found is None:
        return ""
    choices = [choice.strip().strip("'") for choice in found["choices"].split(",")]  # quoted or not
    close = difflib.get_close_matches(found["given"], choices, n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def positive_int(text: str) -> int:
    """`--gpus` and friends: a whole number ≥ 1."""
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def non_negative_int(text: str) -> int:
    """`--tail` and friends: a whole number ≥ 0."""
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 0")
    return value


def _config_parent() -> Parser:
    parent = Parser(add_help=False)
    parent.add_argument(
        "--config", metavar="PATH", default=argparse.SUPPRESS,
        help="config file (default: $GPUCONSOLE_CONFIG, then ~/.config/gpuconsole/config.toml)",
    )
    parent.add_argument("--no-color", action="store_true", default=argparse.SUPPRESS,
                        help="no colours (as NO_COLOR=1 does), before or after the command")
    parent.add_argument("--no-keeper", action="store_true", default=argparse.SUPPRESS,
                        help="connect directly, without the per-user connection keeper (as keeper = false)")
    return parent


def build_parser(only: str | None = None) -> Parser:
    """The whole command tree of the CLI contract (`only`: that command's branch alone, enough to
    parse a command line that names it; help, completion and errors use the whole tree)."""
    common = _config_parent()
    parser = Parser(
        prog=PROG,
        description="A console for shared GPU clusters: live telemetry, reservations and jobs over SSH.",
        parents=[common],
        epilog="Exit codes: 0 ok, 1 internal error, 2 usage/config error, 3 no capacity or timeout, "
        "4 permission denied, 5 node unreachable, 6 not found.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument("--theme", help="TUI theme name")
    parser.add_argument("--readonly", action="store_true", help="TUI without mutating actions")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name, add in COMMAND_PARSERS.items():
        if only is None or name == only:
            add(sub, common)
    return parser


def _status_parser(sub: Subparsers, common: Parser) -> None:
    status = sub.add_parser("status", parents=[common], help="fleet snapshot")
    status.add_argument("--node", metavar="NAME", help="only this node (a name from the config)")
    status.add_argument("--json", action="store_true", help="one JSON document (lines with --watch)")
    status.add_argument("--watch", nargs="?", const=2.0, type=float, metavar="SECONDS",
                        help="refresh every SECONDS (default 2)")
    status.add_argument("--gpus", action="store_true",
                        help="the per-GPU table too (default: only when it fits the terminal's height)")
    status.add_argument("--free", action="store_true", help="only nodes with a free GPU")
    status.add_argument("--sort", choices=STATUS_SORTS,
                        help="order nodes by name, most free GPUs or busiest GPUs (default: config order)")
    status.add_argument("--user", metavar="USER",
                        help="only nodes and GPUs where USER holds a reservation or runs a process")


def _reserve_parser(sub: Subparsers, common: Parser) -> None:
    reserve = sub.add_parser("reserve", parents=[common], help="reserve GPUs on one node")
    reserve.add_argument("--gpus", type=positive_int, required=True, metavar="N", help="how many GPUs, all on one node")
    reserve.add_argument("--node", metavar="NAME", help="on this node (default: the first with N free GPUs)")
    reserve.add_argument("--for", dest="duration", metavar="DUR", help="lease length (default: config reserve_for)")
    reserve.add_argument("--wait", action="store_true", help="queue until granted")
    reserve.add_argument("--timeout", metavar="DUR", help="with --wait: give up after DUR (exit 3)")
    reserve.add_argument("--priority", choices=PRIORITY_CHOICES, default="normal",
                         help="order in the queue with --wait (default normal)")
    reserve.add_argument("--preemptible", action="store_true", help="a higher-priority request may revoke it")
    reserve.add_argument("--burst", action="store_true", help="start a cloud instance if on-prem is full")
    reserve.add_argument("--yes", "-y", action="store_true",
                         help="with --burst: start the instance without asking (needed when stdin is not a terminal)")
    reserve.add_argument("--json", action="store_true", help="the grant as one JSON document")
    reserve.add_argument("--export", action="store_true",
                         help='print only the shell exports on stdout: eval "$(gpuconsole reserve --gpus 2 --export)"')


def _shell_parser(sub: Subparsers, common: Parser) -> None:
    shell = sub.add_parser("shell", parents=[common],
                           help="an interactive shell on a node's GPUs, like srun --pty: shell [--gpus N] [-- CMD…]")
    shell.add_argument("--gpus", type=positive_int, metavar="N", help="how many GPUs (default 1)")
    shell.add_argument("--node", metavar="NAME", help="on this node (default: the tightest fit, as reserve)")
    shell.add_argument("--for", dest="duration", metavar="DUR",
                       help="lease length, renewed while attached (default: config reserve_for)")
    shell.add_argument("--reservation", metavar="ID",
                       help="open the shell in this reservation of yours (never released by the shell)")
    shell.add_argument("--keep", action="store_true", help="keep the new reservation when the shell exits")
    shell.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- CMD [ARG…]",
                       help="run this command instead of a login shell, and exit with its status")


def _release_parser(sub: Subparsers, common: Parser) -> None:
    release = sub.add_parser("release", parents=[common], help="end reservations")
    release.add_argument("ids", nargs="*", metavar="ID", help="reservation ids to release")
    release.add_argument("--mine", action="store_true", help="release all of yours")
    release.add_argument("--token", type=int, help="fencing token the grant returned")
    release.add_argument("--json", action="store_true", help="a JSON list of results")


def _renew_parser(sub: Subparsers, common: Parser) -> None:
    renew = sub.add_parser("renew", parents=[common], help="extend a reservation")
    renew.add_argument("id", metavar="ID", help="the reservation to extend")
    renew.add_argument("--for", dest="duration", metavar="DUR",
                       help="extend to DUR from now, never shorter (default: config reserve_for)")
    renew.add_argument("--token", type=int, help="fencing token the grant returned")
    renew.add_argument("--json", action="store_true", help="the renewed grant as one JSON document")


def _reservations_parser(sub: Subparsers, common: Parser) -> None:
    listing = sub.add_parser("reservations", parents=[common], help="reservations and queue")
    listing.add_argument("--json", action="store_true", help="one JSON document")
    listing.add_argument("--mine", action="store_true", help="only yours (the owner as `release --mine` decides)")
    listing.add_argument("--user", metavar="USER", help="only USER's")


def _submit_parser(sub: Subparsers, common: Parser) -> None:
    submit = sub.add_parser("submit", parents=[common], help="queue a job: submit --gpus N -- CMD [ARG…]")
    submit.add_argument("--gpus", type=positive_int, required=True, metavar="N", help="how many GPUs, all on one node")
    submit.add_argument("--node", metavar="NAME", help="run on this node (default: the scheduler picks)")
    submit.add_argument("--priority", choices=PRIORITY_CHOICES, default="normal",
                        help="place in the node's queue (default normal)")
    submit.add_argument("--preempt", action="store_true", help="may take GPUs from lower-priority jobs")
    submit.add_argument("--requeue", action="store_true", help="run again if preempted or lost")
    submit.add_argument("--name", metavar="NAME", help="a label for the job in `jobs` and the console")
    submit.add_argument("--grace", type=float, metavar="SECONDS",
                        help="when preempted or at its --time limit: SIGTERM, then SIGKILL after SECONDS (default 30)")
    submit.add_argument("--time", metavar="DUR",
                        help="runtime limit (e.g. 2h): stopped like a preemption once it ran this long; "
                             "its queue ETA and others' count on it")
    submit.add_argument("--burst", action="store_true", help="start a cloud instance if on-prem is full")
    submit.add_argument("--yes", "-y", action="store_true",
                        help="with --burst: start the instance without asking (needed when stdin is not a terminal)")
    submit.add_argument("--json", action="store_true", help="the submitted job as one JSON document")
    submit.add_argument("--array", metavar="SPEC",
                        help="a job array: one job per index (0-99, 0-99:2, 1,5,7; at most 1000), "
                             "each with $GPUCONSOLE_ARRAY_INDEX")
    submit.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- CMD [ARG…]",
                        help="the command to run on the node, after --")


def _jobs_parser(sub: Subparsers, common: Parser) -> None:
    jobs = sub.add_parser("jobs", parents=[common], help="jobs on every node")
    jobs.add_argument("--json", action="store_true", help="one JSON document")
    jobs.add_argument("--mine", action="store_true", help="only your jobs (the SSH login on each node)")
    jobs.add_argument("--user", metavar="USER", help="only USER's jobs")
    jobs.add_argument("--state", choices=JOB_STATES, help="only jobs in this state")


def _logs_parser(sub: Subparsers, common: Parser) -> None:
    logs = sub.add_parser("logs", parents=[common], help="a job's output")
    logs.add_argument("id", metavar="JOB", help="the job id")
    logs.add_argument("--follow", "-f", action="store_true",
                      help="keep printing until the job ends, then exit with the job's exit code")
    logs.add_argument("--tail", "-n", type=non_negative_int, metavar="N",
                      help="only the last N lines of each stream (with --follow: then follow)")


def _preempt_parser(sub: Subparsers, common: Parser) -> None:
    preempt = sub.add_parser("preempt", parents=[common], help="preempt a job or revoke a reservation")
    preempt.add_argument("id", metavar="ID", help="a job or reservation id")
    preempt.add_argument("--grace", type=float, metavar="SECONDS",
                         help="a job gets SIGTERM, then SIGKILL after SECONDS (default: its own grace)")


def _cancel_parser(sub: Subparsers, common: Parser) -> None:
    cancel = sub.add_parser("cancel", parents=[common], help="cancel a queued or running job")
    cancel.add_argument("id", metavar="JOB", help="the job id (an array's id a-…: every job of the array)")
    cancel.add_argument("--json", action="store_true", help="the result as one JSON document")


def _cloud_parser(sub: Subparsers, common: Parser) -> None:
    cloud = sub.add_parser("cloud", parents=[common], help="EC2 instances: up, ls, down")
    cloud_sub = cloud.add_subparsers(dest="cloud_command", metavar="up|ls|down", parser_class=Parser,
                                     required=True)
    up = cloud_sub.add_parser("up", parents=[common], help="launch managed GPU instances")
    up.add_argument("--type", dest="instance_type", metavar="T", help="instance type (default: cheapest allowed)")
    up.add_argument("--gpus", type=positive_int, default=1, metavar="N",
                    help="without --type: the cheapest allowed type with at least N GPUs")
    up.add_argument("--spot", action="store_true", default=None, help="spot instead of on-demand")
    up.add_argument("--count", type=positive_int, default=1, metavar="K", help="how many instances (default 1)")
    up.add_argument("--no-wait", action="store_true", help="return once launched, before SSH is ready")
    up.add_argument("--timeout", metavar="DUR", default="10m", help="give up on SSH readiness after DUR")
    up.add_argument("--json", action="store_true", help="the launched instances as one JSON document")
    ls = cloud_sub.add_parser("ls", parents=[common], help="managed instances, price and cost so far")
    ls.add_argument("--all", action="store_true", help="include stopped and terminated instances")
    ls.add_argument("--json", action="store_true", help="one JSON document")
    down = cloud_sub.add_parser("down", parents=[common], help="terminate managed instances")
    down.add_argument("ids", nargs="*", metavar="ID", help="instance ids (i-…)")
    down.add_argument("--stop", action="store_true", help="stop instead of terminate")
    down.add_argument("--json", action="store_true", help="the results as one JSON document")
    down.add_argument("--force", action="store_true",
                      help="also instances with live reservations or jobs, without asking")
    down.add_argument("--mine", action="store_true", help="every live instance you launched")
    down.add_argument("--idle", action="store_true", help="every live instance with no reservation or job")


def _watch_parser(sub: Subparsers, common: Parser) -> None:
    watch = sub.add_parser("watch", parents=[common], help="idle-GPU alert watcher")
    watch.add_argument("--idle-minutes", type=float, metavar="M", help="idle this long before alerting")
    watch.add_argument("--util-below", type=float, metavar="PCT", help="utilization below this is idle")
    watch.add_argument("--cooldown-minutes", type=float, metavar="M", help="re-alert an ongoing condition after M")
    watch.add_argument("--notify", action="append", metavar="URL", help="apprise URL (repeatable)")
    watch.add_argument("--exec", dest="exec_cmd", metavar="CMD", help="run CMD with each alert as JSON on stdin")
    watch.add_argument("--release-idle", action="store_true", help="release idle reservations after a grace")
    watch.add_argument("--grace-minutes", type=float, metavar="M", help="with --release-idle (default 15)")
    watch.add_argument("--stop-idle-cloud", action="store_true", help="stop idle managed instances")
    watch.add_argument("--interval", type=float, metavar="SECONDS", help="how often to judge (default 5)")
    watch.add_argument("--state-file", metavar="PATH", help="where alert state survives restarts")
    watch.add_argument("--once", action="store_true", help="judge once and exit (for cron)")
    watch.add_argument("--metrics", metavar="HOST:PORT",
                       help="also serve the exporter's Prometheus /metrics there, from the watcher's own poll")
    watch.add_argument("--web-config", metavar="FILE",
                       help="with --metrics: TLS and basic auth from a Prometheus web config file")
    watch.add_argument("--json", action="store_true", help="one alert per line as JSON")


def _doctor_parser(sub: Subparsers, common: Parser) -> None:
    doctor = sub.add_parser("doctor", parents=[common], help="check config, SSH, python3, driver, state dir")
    doctor.add_argument("--json", action="store_true", help="the checks as one JSON document")


def _audit_parser(sub: Subparsers, common: Parser) -> None:
    audit = sub.add_parser("audit", parents=[common],
                           help="the nodes' ledgers of grants and jobs, their hash chains checked")
    audit.add_argument("--node", metavar="NAME", help="only this node")
    audit.add_argument("--since", metavar="DUR", help="only records of the last DUR (e.g. 7d)")
    audit.add_argument("--user", metavar="USER", help="only records USER owns or made")
    audit.add_argument("--json", action="store_true", help="the records and each node's chain as one JSON document")


def _exporter_parser(sub: Subparsers, common: Parser) -> None:
    exporter = sub.add_parser("exporter", parents=[common], help="serve the fleet as Prometheus metrics on /metrics")
    exporter.add_argument("--listen", metavar="HOST:PORT",
                          help="the address to serve on (default 127.0.0.1:9400; port 0: a free one)")
    exporter.add_argument("--web-config", metavar="FILE",
                          help="TLS and basic auth from a Prometheus web config file (tls_server_config, "
                               "basic_auth_users)")


def _serve_parser(sub: Subparsers, common: Parser) -> None:
    serve = sub.add_parser("serve", parents=[common],
                           help="the console in a browser (read-only unless --allow-actions)")
    serve.add_argument("--listen", metavar="HOST:PORT", help="the address to serve on (default 127.0.0.1:8000)")
    mode = serve.add_mutually_exclusive_group()
    mode.add_argument("--readonly", action="store_true", help="no reserve, release, cancel… from the page (default)")
    mode.add_argument("--allow-actions", action="store_true",
                      help="let the page reserve, release, cancel…: whoever opens it acts as you")


def _gpu_parser(sub: Subparsers, common: Parser) -> None:
    gpu = sub.add_parser("gpu", parents=[common],
                         help="an admin returns a GPU withheld for its health: gpu clear NODE:GPU")
    gpu.add_argument("action", choices=("clear",), metavar="ACTION", help="clear: return the GPU to the pool")
    gpu.add_argument("target", metavar="NODE:GPU", help="the node's name and the GPU's index, e.g. node-01:3")
    gpu.add_argument("--json", action="store_true", help="the node's answer as one JSON document")


def _usage_parser(sub: Subparsers, common: Parser) -> None:
    usage = sub.add_parser("usage", parents=[common],
                           help="GPU-hours held and by jobs, and queue waits, from the ledgers")
    usage.add_argument("--since", metavar="DUR", default="30d", help="the window: the last DUR (default 30d)")
    usage.add_argument("--by", choices=("user", "node", "day"), default="user", help="one row per user, node or day")
    out = usage.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="the rows as one JSON document")
    out.add_argument("--csv", action="store_true", help="the rows as CSV (a header line, then a row each)")


def _init_parser(sub: Subparsers, common: Parser) -> None:
    init = sub.add_parser("init", parents=[common], help="write a commented config from ~/.ssh/config's Host entries")
    init.add_argument("--host", dest="hosts", action="append", metavar="NAME",
                      help="include this Host as a node (repeatable; without it a terminal asks)")
    init.add_argument("--yes", "-y", action="store_true",
                      help="every Host entry, and overwrite an existing config, without asking")
    init.add_argument("--force", action="store_true", help="overwrite an existing config without asking")


def _node_install_parser(sub: Subparsers, common: Parser) -> None:
    install = sub.add_parser("node-install", parents=[common],
                             help="service mode: the admin's setup steps, or (--print) the service agent file")
    install.add_argument("--print", action="store_true", help="write the service agent program to stdout")
    install.add_argument("--node", metavar="NAME", help="take state_dir, service_user, simulate_gpus from this node")
    install.add_argument("--state-dir", metavar="DIR", help="the node's state dir (default /var/lib/gpuconsole)")
    install.add_argument("--service-user", metavar="NAME", help="the service account (default gpuconsole)")
    install.add_argument("--simulate-gpus", type=int, metavar="N", help="simulated GPUs (demos and tests only)")


def _demo_parser(sub: Subparsers, common: Parser) -> None:
    demo = sub.add_parser("demo", parents=[common], help="simulated cluster on loopback")
    demo.add_argument("--nodes", type=positive_int, default=4, help="simulated nodes (default 4)")
    demo.add_argument("--gpus", type=positive_int, default=8, help="GPUs per node (default 8)")
    demo.add_argument("--seed", type=int, default=0,
                      help="seed of the simulated GPUs: the same seed gives the same GPUs and telemetry")
    demo.add_argument("--serve", action="store_true", help="headless: serve until SIGINT/SIGTERM")
    demo.add_argument("--write-config", metavar="PATH", help="where to write the demo config")
    demo.add_argument("--dir", metavar="PATH", help="keep keys and state here (default: a temp dir)")
    demo.add_argument("--no-cloud", action="store_true", help="no local EC2 emulator")


def _completion_parser(sub: Subparsers, common: Parser) -> None:
    completion = sub.add_parser("completion", parents=[common],
                                help="print the shell completion script: eval \"$(gpuconsole completion bash)\"")
    completion.add_argument("shell", choices=("bash", "zsh", "fish"), metavar="SHELL", help="bash, zsh or fish")


def _keeper_parser(sub: Subparsers, common: Parser) -> None:
    keeper = sub.add_parser("keeper", parents=[common], help="the per-user connection keeper: run, status, stop")
    keeper.add_argument("action", choices=("run", "status", "stop"), metavar="ACTION",
                        help="run (in the foreground), status or stop")
    keeper.add_argument("--json", action="store_true", help="status: one JSON document")


COMMAND_PARSERS: dict[str, Callable[[Subparsers, Parser], None]] = {
    "status": _status_parser,
    "reserve": _reserve_parser,
    "shell": _shell_parser,
    "release": _release_parser,
    "renew": _renew_parser,
    "reservations": _reservations_parser,
    "submit": _submit_parser,
    "jobs": _jobs_parser,
    "logs": _logs_parser,
    "preempt": _preempt_parser,
    "cancel": _cancel_parser,
    "cloud": _cloud_parser,
    "watch": _watch_parser,
    "doctor": _doctor_parser,
    "audit": _audit_parser,
    "usage": _usage_parser,
    "gpu": _gpu_parser,
    "exporter": _exporter_parser,
    "serve": _serve_parser,
    "init": _init_parser,
    "node-install": _node_install_parser,
    "demo": _demo_parser,
    "completion": _completion_parser,
    "keeper": _keeper_parser,
}


# The typed arguments of each command (gpuconsole.cli.options), by `command` (and `cloud_command`).
COMMANDS: dict[str | None, type[o.Options]] = {
    None: o.ConsoleArgs, "status": o.StatusArgs, "reserve": o.ReserveArgs, "release": o.ReleaseArgs,
    "renew": o.RenewArgs, "reservations": o.ReservationsArgs, "submit": o.SubmitArgs, "jobs": o.JobsArgs,
    "logs": o.LogsArgs, "preempt": o.PreemptArgs, "cancel": o.CancelArgs, "watch": o.WatchArgs,
    "doctor": o.DoctorArgs, "audit": o.AuditArgs, "usage": o.UsageArgs, "node-install": o.NodeInstallArgs,
    "demo": o.DemoArgs, "completion": o.CompletionArgs, "shell": o.ShellArgs, "init": o.InitArgs,
    "keeper": o.KeeperArgs, "gpu": o.GpuArgs, "exporter": o.ExporterArgs,
    "serve": o.ServeArgs,
}
CLOUD_COMMANDS: dict[str, type[o.Options]] = {"up": o.CloudUpArgs, "ls": o.CloudLsArgs, "down": o.CloudDownArgs}


def options(namespace: argparse.Namespace) -> o.Options:
    """The one place a parsed Namespace becomes a command's typed arguments: each field is the
    `dest` of the same name (lists become tuples; `--config`, absent unless given, is None)."""
    command = namespace.command
    cls = CLOUD_COMMANDS[namespace.cloud_command] if command == "cloud" else COMMANDS[command]
    given = vars(namespace)
    values: dict[str, Any] = {}
    for spec in dataclasses.fields(cls):
        value = given.get(spec.name)
        if spec.name not in given and spec.name != "config":
            raise AssertionError(f"{command}: the parser has no {spec.name!r}")  # options.py and the parser disagree
        if isinstance(value, list):
            value = tuple(value)
        elif value is None and spec.default == ():
            value = ()  # an `append` flag never given
        values[spec.name] = value
    return cls(**values)


def parse(argv: Sequence[str] | None = None) -> o.Options:
    """Parse a command line into its command's typed arguments (UsageError, exit 2, when it is bad)."""
    args = list(sys.argv[1:] if argv is None else argv)
    # Building one command's branch is most of a parse's cost: the first word that names a command
    # picks it. A word that only looked like one (an option's value) makes that parse fail, and the
    # whole tree parses again, as it does for help and version.
    only = next((a for a in args if a in COMMAND_PARSERS), None)
    namespace: argparse.Namespace | None = None
    if only is not None and not {"-h", "--help", "--version"} & set(args):
        with contextlib.suppress(UsageError):
            namespace = build_parser(only).parse_args(args)
    if namespace is None:
        namespace = build_parser().parse_args(args)
    if getattr(namespace, "no_color", False):
        # The no-color.org convention, which rich, Textual and the tools a job runs all read.
        os.environ["NO_COLOR"] = "1"
    if getattr(namespace, "no_keeper", False):
        os.environ["GPUCONSOLE_KEEPER"] = "0"  # core/keeper_client.ENV_SWITCH (children inherit it)
    return options(namespace)
