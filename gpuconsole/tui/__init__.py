"""The interactive console (the only package that imports Textual)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gpuconsole.config import Config
    from gpuconsole.core.registry import Registry


def run(config: Config | Registry, *, theme: str | None = None, readonly: bool = False) -> int:
    """Run the console until the user quits; returns the exit code."""
    from gpuconsole.tui.app import GpuConsoleApp

    app = GpuConsoleApp(config, theme_name=theme, readonly=readonly)
    app.run()
    return app.return_code or 0
