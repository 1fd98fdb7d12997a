"""`gpuconsole keeper run|status|stop`, and commands' way to the keeper: ask it, or start it for the
next command and go direct (core/keeper.py is the server, core/keeper_client.py the wire)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gpuconsole.cli import options as o
from gpuconsole.cli.output import print_json, say
from gpuconsole.config import Config, resolve_config_path
from gpuconsole.core import keeper_client as kc
from gpuconsole.core.keeper_fleet import KeeperFleet
from gpuconsole.errors import GpuConsoleError
from gpuconsole.model.slurm import node_snapshots

if TYPE_CHECKING:
    from typing import TypeAlias

    from gpuconsole.core.fleet import Fleet
    from gpuconsole.core.registry import Registry

    # What a one-shot command runs on: the nodes' own connections, or the keeper's.
    Members: TypeAlias = Registry | KeeperFleet

STOP_WAIT_S = 10.0


def keeper_fleet(config: Config, opts: o.Options) -> KeeperFleet | None:
    """The keeper's fleet for a one-shot command it can serve; None: the command connects itself
    (keeper off, a cloud config whose nodes come from EC2, or a command that holds its connection:
    a waiting reserve owns its queue ticket, `logs --follow` streams)."""
    if not kc.enabled(config.defaults.keeper) or config.aws is not None or not keeper_serves(opts):
        return None
    try:
        return KeeperFleet(config, config.path.read_bytes())
    except (OSError, kc.KeeperUnavailableError):
        return None


def keeper_serves(opts: o.Options) -> bool:
    """Whether the keeper's connections may answer this command: not one that holds its connection
    (a waiting reserve owns its queue ticket, `logs --follow` streams), nor `status --watch`."""
    served = (o.ReleaseArgs, o.RenewArgs, o.ReservationsArgs, o.SubmitArgs, o.JobsArgs, o.CancelArgs,
              o.PreemptArgs, o.AuditArgs, o.UsageArgs)
    return (isinstance(opts, served) or (isinstance(opts, o.ReserveArgs) and not opts.wait)
            or (isinstance(opts, o.LogsArgs) and not opts.follow)
            or (isinstance(opts, o.StatusArgs) and opts.watch is None))


def open_fleet(members: Members) -> Fleet | KeeperFleet:
    """The fleet a command runs its requests on (closed with it: `async with open_fleet(m) as f`)."""
    if isinstance(members, KeeperFleet):
        return members
    from gpuconsole.core.fleet import Fleet  # asyncssh: only for a command that connects itself

    return Fleet(members, owns=True)


def through_keeper(config: Config, op: str, args: dict[str, Any] | None,
                   names: list[str] | None) -> dict[str, dict[str, Any] | GpuConsoleError] | None:
    """Fleet.call_all's results from the user's keeper; None means "go direct" (no keeper, it is
    switched off, it failed or died mid-request). When none was running, one is started for the
    next command."""
    if not kc.enabled(config.defaults.keeper):
        return None
    try:
        text = config.path.read_bytes()
        timeout_s = max(n.connect_timeout_s for n in config.members()) + 40.0 if config.members() else 40.0
        return kc.call_all(config.path, text, op, args, names, timeout_s)
    except kc.KeeperUnavailableError as exc:
        if exc.absent:
            try:
                kc.start(config.path)
            except (OSError, kc.KeeperUnavailableError):
                pass  # the command goes direct either way
        return None
    except OSError:
        return None


def status_through_keeper(config: Config, opts: o.StatusArgs) -> int | None:
    """`status` (once, without cloud nodes) answered by the keeper; None: the caller goes direct."""
    from gpuconsole.cli.status import outcome, show, status_view

    if any(cluster.telemetry == "agent" for cluster in config.clusters):
        return None  # its compute nodes join as the cluster's view names them: the direct path does that
    names = [config.node(opts.node).name] if opts.node else None
    view = status_view(opts)
    # As the direct path asks: a single JSON document does not wait for a rate window.
    results = through_keeper(config, "snapshot", None if not opts.json else {"rates": False}, names)
    if results is None:
        return None
    fetched = [snap for cfg in ([config.node(n) for n in names] if names else list(config.members()))
               for snap in node_snapshots(cfg.name, results.get(cfg.name), cfg.source)]
    show(fetched, opts, view)
    return outcome(fetched)


def run_keeper(opts: o.KeeperArgs) -> int:
    config_path = resolve_config_path(opts.config).absolute()
    if opts.action == "run":
        import asyncio  # only here: a command the keeper answers never imports asyncio

        from gpuconsole.core.keeper import serve

        return asyncio.run(serve(config_path, companion=spawn_resident))
    try:
        paths = kc.keeper_paths(config_path, create=False)
        answer: dict[str, Any] | None = kc.ask(paths, {"op": f"keeper.{opts.action}"}, timeout_s=5.0)
    except kc.KeeperUnavailableError:
        answer = None
    if opts.action == "stop":
        if answer is not None:
            _wait_gone(paths.socket)
        say(f"stopped the keeper (pid {answer['pid']})" if answer else "no keeper running")
        return 0
    if opts.json:
        print_json({"running": answer is not None, **{k: v for k, v in (answer or {}).items() if k != "ok"}})
    elif answer is None:
        say(f"no keeper running for {config_path}")
    else:
        say(f"keeper pid {answer['pid']} for {answer['config']}: {answer['requests']} requests served, "
            f"{len(answer['connected'])} nodes connected, exits after {answer['idle_s']:g}s idle")
    return 0


def spawn_resident(config_path: Path) -> int:
    """Start the resident CLI of this keeper's config (cli/resident.py); returns the write end of its
    lifeline, which the keeper holds open for as long as it runs (the resident ends at its EOF)."""
    read_fd, write_fd = os.pipe()
    try:
        subprocess.Popen([sys.executable, "-m", "gpuconsole.cli.resident", str(config_path), str(read_fd)],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, pass_fds=(read_fd,),
                         start_new_session=True, cwd="/")
    except OSError:
        os.close(write_fd)
        raise
    finally:
        os.close(read_fd)
    return write_fd


def _wait_gone(socket_path: Path) -> None:
    deadline = time.monotonic() + STOP_WAIT_S
    while socket_path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
