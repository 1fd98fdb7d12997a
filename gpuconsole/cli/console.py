"""Open the interactive console (the only path from the CLI into Textual)."""

from __future__ import annotations

from typing import Any

from gpuconsole.config import Config


def run_console(config: Config, args: Any) -> int:
    from gpuconsole.tui import run

    theme = getattr(args, "theme", None) or config.defaults.theme
    return run(config, theme=theme, readonly=bool(getattr(args, "readonly", False)))
