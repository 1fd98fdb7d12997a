"""`gpuconsole` entry point: parse, dispatch lazily, map errors to one line and an exit code."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gpuconsole.cli import options as o
    from gpuconsole.cli.keeper import Members
    from gpuconsole.config import Config
    from gpuconsole.core.registry import Registry


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the process exit code. A process started for one command (argv None)
    first offers it to its keeper's resident CLI, which has the imports done already."""
    if argv is None and os.environ.get("GPUCONSOLE_KEEPER", "1") != "0":  # (no keeper: not even the stub)
        from gpuconsole.cli.forward import forward

        code = forward(sys.argv[1:])
        if code is not None:
            return code
    return run(sys.argv[1:] if argv is None else argv) or 0


def run(args: list[str], gate: Callable[[o.Options], bool] | None = None) -> int | None:
    """Run one command line; None only when `gate` (a resident CLI's, cli/resident.py) turned the
    parsed command down before it did anything."""
    import logging

    from gpuconsole import notices
    from gpuconsole.cli.output import warn
    from gpuconsole.cli.parser import parse
    from gpuconsole.errors import ExitCode, GpuConsoleError

    notices.set_handler(lambda node, text: warn(f"{node}: {text}"))
    # asyncio's own warnings (e.g. "socket.send() raised exception." after a node hung up) are not
    # for the user: the command reports the node's failure as one line of its own.
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    try:
        if args[:1] == ["__complete"]:  # the completion scripts' hidden way back in (cli/completion.py)
            from gpuconsole.cli.completion import print_candidates

            return print_candidates(args[1:])
        opts = parse(args)
        if gate is not None and not gate(opts):
            return None
        return _dispatch(opts)
    except GpuConsoleError as exc:  # messages quote node and user texts: `warn` escapes them
        warn(str(exc))
        return int(exc.exit_code)
    except KeyboardInterrupt:
        warn("interrupted")
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # the contract: never a traceback unless asked for
        if os.environ.get("GPUCONSOLE_DEBUG"):
            raise
        warn(f"internal error: {exc.__class__.__name__}: {exc} (set GPUCONSOLE_DEBUG=1 for a traceback)")
        return int(ExitCode.INTERNAL)


def _registry(config: Config) -> Registry:
    """The nodes in play: the file's, plus a node per running managed EC2 instance when `[cloud.aws]`
    is set (one DescribeInstances, whose live set also tells `jobs` which instances are gone). The
    config stays what the file said; a cloud outage never hides the on-prem fleet."""
    from gpuconsole.core.registry import Registry
    from gpuconsole.errors import GpuConsoleError

    if config.aws is None:
        return Registry(config)
    from gpuconsole.cloud.inventory import discover, live_ids

    try:
        nodes, instances = discover(config)
    except GpuConsoleError as exc:
        from gpuconsole.cli.output import warn

        warn(f"cloud nodes left out: {exc}")
        return Registry(config)
    return Registry(config, nodes, live_instances=live_ids(instances))


def _dispatch(opts: o.Options) -> int:
    """Hand the typed arguments to their command's handler (imported only when it runs); fleet
    commands get one registry (the file's nodes and the cloud's), the cloud commands the config."""
    from gpuconsole.cli import options as o

    if isinstance(opts, o.DemoArgs):
        from gpuconsole.cli.demo import run_demo

        return run_demo(opts)
    if isinstance(opts, o.InitArgs):  # writes the config: runs without one
        from gpuconsole.cli.init import run_init

        return run_init(opts)
    if isinstance(opts, o.CompletionArgs):  # needs no config: the script reads it on each TAB
        from gpuconsole.cli.completion import run_completion

        return run_completion(opts)
    if isinstance(opts, o.NodeInstallArgs):  # reads the config only for --node
        from gpuconsole.cli.node_install import run_node_install

        return run_node_install(opts)
    if isinstance(opts, o.KeeperArgs):  # `run` reads the config itself; status/stop need only its path
        from gpuconsole.cli.keeper import run_keeper

        return run_keeper(opts)
    from gpuconsole.config import load_config

    config = load_config(opts.config)
    if isinstance(opts, o.ServeArgs):
        from gpuconsole.cli.serve import run_serve

        return run_serve(config, opts)
    if isinstance(opts, o.CloudUpArgs | o.CloudLsArgs | o.CloudDownArgs):
        from gpuconsole.cli.cloud import run_cloud

        return run_cloud(config, opts)
    if isinstance(opts, o.StatusArgs) and opts.watch is None and config.aws is None:
        from gpuconsole.cli.keeper import status_through_keeper

        answered = status_through_keeper(config, opts)  # None: no keeper (or it failed): go direct
        if answered is not None:
            return answered
    if isinstance(opts, o.ONE_SHOT):
        from gpuconsole.cli.keeper import keeper_fleet

        # The keeper's connections when it can serve the command, else the command's own.
        members = keeper_fleet(config, opts) or _registry(config)
        if isinstance(opts, o.GpuArgs):
            from gpuconsole.cli.gpu import run_gpu

            return run_gpu(members, opts)
        if isinstance(opts, o.AuditArgs | o.UsageArgs):
            from gpuconsole.cli.audit import run_audit, run_usage

            return run_audit(members, opts) if isinstance(opts, o.AuditArgs) else run_usage(members, opts)
        if isinstance(opts, o.SubmitArgs | o.JobsArgs | o.LogsArgs | o.CancelArgs | o.PreemptArgs):
            return _jobs(members, opts)
        return _reservations(members, opts)
    registry = _registry(config)
    if isinstance(opts, o.ConsoleArgs):
        from gpuconsole.cli.console import run_console

        return run_console(registry, opts)
    if isinstance(opts, o.StatusArgs):
        from gpuconsole.cli.status import run_status

        return run_status(registry, opts)
    if isinstance(opts, o.WatchArgs):
        from gpuconsole.cli.watch import run_watch

        return run_watch(registry, opts)
    if isinstance(opts, o.ExporterArgs):
        from gpuconsole.cli.exporter import run_exporter

        return run_exporter(registry, opts)
    if isinstance(opts, o.ShellArgs):
        from gpuconsole.cli.shell import run_shell

        return run_shell(registry, opts)
    if isinstance(opts, o.DoctorArgs):
        from gpuconsole.cli.doctor import run_doctor

        return run_doctor(registry, opts)
    raise AssertionError(f"no handler for {type(opts).__name__}")


def _jobs(members: Members, opts: o.SubmitArgs | o.JobsArgs | o.LogsArgs | o.CancelArgs | o.PreemptArgs) -> int:
    from gpuconsole.cli import jobs
    from gpuconsole.cli import options as o

    if isinstance(opts, o.SubmitArgs):
        return jobs.run_submit(members, opts)
    if isinstance(opts, o.JobsArgs):
        return jobs.run_jobs(members, opts)
    if isinstance(opts, o.LogsArgs):
        return jobs.run_logs(members, opts)
    if isinstance(opts, o.CancelArgs):
        return jobs.run_cancel(members, opts)
    return jobs.run_preempt(members, opts)


def _reservations(members: Members, opts: o.Options) -> int:
    from gpuconsole.cli import options as o
    from gpuconsole.cli import reservations

    if isinstance(opts, o.ReserveArgs):
        return reservations.run_reserve(members, opts)
    if isinstance(opts, o.ReleaseArgs):
        return reservations.run_release(members, opts)
    if isinstance(opts, o.RenewArgs):
        return reservations.run_renew(members, opts)
    if isinstance(opts, o.ReservationsArgs):
        return reservations.run_list(members, opts)
    raise AssertionError(f"no handler for {type(opts).__name__}")
