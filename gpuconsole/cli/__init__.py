"""`gpuconsole` entry point: parse, dispatch lazily, map errors to one line and an exit code."""

from __future__ import annotations

import logging
import os
from typing import Any

from gpuconsole.errors import ExitCode, GpuConsoleError


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    from gpuconsole import notices
    from gpuconsole.cli.output import warn
    from gpuconsole.cli.parser import build_parser

    notices.set_handler(lambda node, text: warn(f"{node}: {text}"))
    # asyncio's own warnings (e.g. "socket.send() raised exception." after a node hung up) are not
    # for the user: the command reports the node's failure as one line of its own.
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    try:
        args = build_parser().parse_args(argv)
        return _dispatch(args)
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


def _with_cloud_nodes(config: Any) -> Any:
    """Add running managed EC2 instances as nodes; a cloud outage never hides the on-prem fleet."""
    from gpuconsole.cloud.inventory import discover

    try:
        return discover(config)[0]
    except GpuConsoleError as exc:
        from gpuconsole.cli.output import warn

        warn(f"cloud nodes left out: {exc}")
        return config


def _dispatch(args: object) -> int:
    command = getattr(args, "command", None)
    if command == "demo":
        from gpuconsole.cli.demo import run_demo

        return run_demo(args)
    if command == "node-install":  # reads the config only for --node
        from gpuconsole.cli.node_install import run_node_install

        return run_node_install(args)
    from gpuconsole.config import load_config

    config = load_config(getattr(args, "config", None))
    if config.aws is not None and command not in ("cloud", "demo"):
        config = _with_cloud_nodes(config)
    if command is None:
        from gpuconsole.cli.console import run_console

        return run_console(config, args)
    if command == "status":
        from gpuconsole.cli.status import run_status

        return run_status(config, args)
    if command == "cloud":
        from gpuconsole.cli.cloud import run_cloud

        return run_cloud(config, args)
    if command == "watch":
        from gpuconsole.cli.watch import run_watch

        return run_watch(config, args)
    if command == "doctor":
        from gpuconsole.cli.doctor import run_doctor

        return run_doctor(config, args)
    if command in ("submit", "jobs", "logs", "cancel", "preempt"):
        from gpuconsole.cli import jobs

        return {"submit": jobs.run_submit, "jobs": jobs.run_jobs, "logs": jobs.run_logs,
                "cancel": jobs.run_cancel, "preempt": jobs.run_preempt}[str(command)](config, args)
    from gpuconsole.cli import reservations

    handler = {
        "reserve": reservations.run_reserve,
        "release": reservations.run_release,
        "renew": reservations.run_renew,
        "reservations": reservations.run_list,
    }[str(command)]
    return handler(config, args)
