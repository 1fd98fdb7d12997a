"""Open the interactive console (the only path from the CLI into Textual)."""

from __future__ import annotations

from gpuconsole.cli.options import ConsoleArgs, DemoArgs
from gpuconsole.config import Config


def run_console(config: Config, opts: ConsoleArgs | DemoArgs) -> int:
    """The console (also the demo's), with `--theme` over the config's theme."""
    from gpuconsole.tui import run

    return run(config, theme=opts.theme or config.defaults.theme, readonly=opts.readonly)
