"""`gpuconsole serve [--listen HOST:PORT] [--allow-actions]`: the console in a browser (tui/serve.py):
read-only unless --allow-actions, on 127.0.0.1:8000 unless told otherwise."""

from __future__ import annotations

from gpuconsole.cli.exporter import parse_listen
from gpuconsole.cli.options import ServeArgs
from gpuconsole.cli.output import warn
from gpuconsole.config import Config
from gpuconsole.errors import ExitCode, UsageError

DEFAULT_LISTEN = "127.0.0.1:8000"


def run_serve(config: Config, args: ServeArgs) -> int:
    host, port = parse_listen(args.listen or DEFAULT_LISTEN)
    if port == 0:
        raise UsageError("--listen: serve needs a port of its own (the page links to it), not 0")
    from gpuconsole.tui.serve import serve

    mode = "actions allowed: whoever opens the page acts as you" if args.allow_actions else "read-only"
    warn(f"serving the console at http://{host}:{port}/ ({mode})")
    try:
        serve(config.path, host, port, allow_actions=bool(args.allow_actions), theme=args.theme)
    except OSError as exc:
        raise UsageError(f"--listen {host}:{port}: {exc.strerror or exc}") from None
    return int(ExitCode.OK)
