"""The console's `s`: `gpuconsole shell` on the selected node (core/shell.py), the console suspended
while the shell owns the terminal and back when it exits.

In your own reservation when one is selected (Reservations tab, or a GPU it holds) on that node,
left as it was; otherwise a new 1-GPU reservation on the node, released when the shell exits.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Protocol

from textual.notifications import SeverityLevel

from gpuconsole.config import Config
from gpuconsole.core import reservations as core
from gpuconsole.core.clusters import member_of
from gpuconsole.core.fleet import Fleet
from gpuconsole.core.shell import ShellPlan, run_shell
from gpuconsole.errors import GpuConsoleError
from gpuconsole.model.fleet import FleetState
from gpuconsole.textsafe import terminal_safe


class ShellHost(Protocol):
    """What the shell needs of the console app (a Protocol: no import of tui/app.py)."""

    config: Config
    fleet: FleetState
    actions: Fleet
    selected_node: str | None

    @property
    def is_headless(self) -> bool: ...

    def selected_reservation(self) -> tuple[str, str] | None: ...

    def suspend(self) -> contextlib.AbstractContextManager[None]: ...

    def batch_update(self) -> contextlib.AbstractContextManager[None]: ...

    def notify(self, message: str, *, title: str = "", severity: SeverityLevel = "information",
               timeout: float | None = None, markup: bool = True) -> None: ...


def shell_plan(app: ShellHost, node: str) -> ShellPlan:
    """Your selected reservation on `node`, else a new one there (1 GPU, reserve_for, renewed)."""
    ttl_s = app.config.defaults.reserve_for_s
    selected = app.selected_reservation()
    view = app.fleet.nodes.get(node)
    hello = app.actions.hello(node)
    if selected is not None and view is not None and view.snapshot is not None and hello is not None:
        for res in view.snapshot.reservations:
            if res.id == selected[0] and res.owner == hello.user and res.kind == "reservation":
                return ShellPlan(ttl_s, reservation=res.id)
    return ShellPlan(ttl_s, request=core.ReserveRequest(gpus=1, ttl_s=ttl_s, node=node))


async def open_shell(app: ShellHost) -> None:
    """Run the shell with the console suspended; its end (or why it could not start) as a toast."""
    node = app.selected_node
    if node is None:
        app.notify("select a node first", severity="warning")
        return
    node = member_of(app.config, node)  # a Slurm node's row: a shell in an allocation on its cluster
    if app.is_headless:
        app.notify("the shell needs a real terminal", severity="warning")
        return

    suspended = False

    def say(line: str) -> None:
        """On the terminal while the shell has it (raw mode: "\r\n"), else as a toast."""
        if suspended and sys.__stderr__ is not None:
            sys.__stderr__.write(f"gpuconsole: {terminal_safe(line)}\r\n")
            sys.__stderr__.flush()
        else:
            app.notify(line)

    @contextlib.contextmanager
    def hold_terminal() -> Iterator[None]:
        nonlocal suspended
        # batch_update: no repaint may reach the stopped driver while the shell owns the terminal
        with app.suspend(), app.batch_update():
            suspended = True
            try:
                yield
            finally:
                suspended = False

    try:
        code = await run_shell(app.actions, shell_plan(app, node), say, pty_wanted=True,
                               hold_terminal=hold_terminal)
    except GpuConsoleError as exc:
        app.notify(f"shell on {node}: {exc}", severity="error")
        return
    app.notify(f"shell on {node} exited with {code}", severity="information" if code == 0 else "warning")
