"""Open the interactive console (the only path from the CLI into Textual)."""

from __future__ import annotations

from gpuconsole.cli.options import ConsoleArgs, DemoArgs
from gpuconsole.core.registry import Registry


def run_console(registry: Registry, opts: ConsoleArgs | DemoArgs) -> int:
    """The console (also the demo's) over the CLI's registry, with `--theme` over the config's theme."""
    from gpuconsole.tui import run

    return run(registry, theme=opts.theme or registry.config.defaults.theme, readonly=opts.readonly)
