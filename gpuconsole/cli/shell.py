"""`shell`: an interactive shell (or one command) on a node's GPUs, like `srun --pty`."""

from __future__ import annotations

import asyncio
import os
import sys

from gpuconsole.cli.options import ShellArgs
from gpuconsole.core import reservations as core
from gpuconsole.core.fleet import Fleet
from gpuconsole.core.registry import Registry
from gpuconsole.core.shell import ShellPlan
from gpuconsole.core.shell import run_shell as core_run_shell
from gpuconsole.durations import parse_duration_s
from gpuconsole.errors import UsageError
from gpuconsole.textsafe import terminal_safe


def _say(line: str) -> None:
    """A `gpuconsole:` line on stderr; "\\r\\n" because the terminal may be raw while the shell runs."""
    sys.stderr.write(f"gpuconsole: {terminal_safe(line)}\r\n")
    sys.stderr.flush()


def shell_plan(registry: Registry, args: ShellArgs) -> ShellPlan:
    """The flags as a plan, every conflict a usage error (exit 2) before anything is reserved."""
    config = registry.config
    ttl_s = config.defaults.reserve_for_s if args.duration is None else parse_duration_s(args.duration, what="--for")
    argv = list(args.argv)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if args.argv and (not argv or not argv[0]):
        raise UsageError("shell: give a command after --, or nothing for a login shell")
    if args.reservation is not None:
        if args.gpus is not None or args.node is not None or args.keep:
            raise UsageError("--reservation uses that reservation as it is: drop --gpus, --node and --keep")
        return ShellPlan(ttl_s, reservation=args.reservation, argv=argv or None)
    if args.node:
        registry.node(args.node)
    request = core.ReserveRequest(gpus=args.gpus or 1, ttl_s=ttl_s, node=args.node, ttl_default=args.duration is None)
    return ShellPlan(ttl_s, request=request, argv=argv or None, keep=args.keep)


def run_shell(registry: Registry, args: ShellArgs) -> int:
    """A pty when stdin and stdout are terminals; plain streams otherwise (scripts, pipes)."""
    plan = shell_plan(registry, args)
    pty_wanted = os.isatty(0) and os.isatty(1)

    async def go() -> int:
        async with Fleet(registry, owns=True) as fleet:
            return await core_run_shell(fleet, plan, _say, pty_wanted=pty_wanted)

    return asyncio.run(go())
