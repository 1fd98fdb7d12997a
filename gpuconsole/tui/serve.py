"""`gpuconsole serve`: the console in a browser through textual-serve. Each page that connects runs
its own console process as the serving user, read-only unless the operator allowed actions (whoever
opens the page acts as that user). Binds 127.0.0.1 unless told otherwise."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path


def console_command(config_path: Path, *, allow_actions: bool, theme: str | None) -> str:
    """The command line textual-serve runs per page: this interpreter, this config, the keeper off
    (one page's console must not leave a keeper behind for the serving user's shell)."""
    argv = [sys.executable, "-m", "gpuconsole", "--config", str(config_path), "--no-keeper"]
    if theme:
        argv += ["--theme", theme]
    if not allow_actions:
        argv.append("--readonly")
    return shlex.join(argv)


def serve(config_path: Path, host: str, port: int, *, allow_actions: bool, theme: str | None) -> None:
    """Serve until SIGINT/SIGTERM (textual-serve's own loop and signal handling)."""
    from textual_serve.server import Server

    Server(console_command(config_path, allow_actions=allow_actions, theme=theme), host=host, port=port,
           title="gpuconsole").serve()
