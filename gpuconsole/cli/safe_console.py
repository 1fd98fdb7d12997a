"""A rich Console that cannot put a control sequence from data on the terminal.

Cells are made safe where tables are built (gpuconsole.cli.output.cell); this is the backstop for
anything that slips past: every text segment is escaped on its way out, while rich's own control
segments (cursor moves, clear) and its style codes, which are not segment text, pass.
"""

from __future__ import annotations

from collections.abc import Iterable

from rich.console import Console, ConsoleOptions, RenderableType
from rich.segment import Segment

from gpuconsole.textsafe import is_terminal_safe, terminal_safe


class SafeConsole(Console):
    """`Console.render` with every non-control segment passed through `terminal_safe` (newlines kept:
    they are how rich ends lines)."""

    def render(self, renderable: RenderableType, options: ConsoleOptions | None = None) -> Iterable[Segment]:
        for segment in super().render(renderable, options):
            if segment.control or is_terminal_safe(segment.text, multiline=True):
                yield segment
            else:
                yield Segment(terminal_safe(segment.text, multiline=True), segment.style, segment.control)
