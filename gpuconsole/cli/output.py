"""The only writers: data to stdout (JSON or rich tables), diagnostics to stderr.

Every human-readable line and table cell leaves through here, made safe for a terminal
(gpuconsole.textsafe): node and user text never reaches it as control sequences or markup.
JSON keeps the exact strings.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import TYPE_CHECKING, Any

from gpuconsole.format import iso_utc
from gpuconsole.textsafe import rich_text, terminal_safe

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text


def print_json(document: Any) -> None:
    """One JSON document (or one line of a stream) on stdout. Every object document says when it was
    made (`generated_at`, ISO 8601 UTC): a script can tell a stale file or a slow answer apart."""
    if isinstance(document, dict) and "generated_at" not in document:
        document = {"generated_at": iso_utc(time.time()), **document}
    # allow_nan=False: NaN/Infinity are not JSON; replies are sanitized where they enter, so one here is a bug.
    sys.stdout.write(json.dumps(document, separators=(",", ":"), allow_nan=False) + "\n")
    sys.stdout.flush()


def progress_json(document: dict[str, Any]) -> None:
    """One JSON progress line on stderr (stdout keeps the command's one answer); ASCII-escaped, so a
    node's text reaches a terminal as plain characters."""
    line = json.dumps({"generated_at": iso_utc(time.time()), **document}, separators=(",", ":"), allow_nan=False)
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def say_wrapped(line: str, out: Console | None = None) -> None:
    """One human line on stdout, wrapped at the console's width (a table's note), escaped."""
    from rich.text import Text

    (out or console()).print(Text(terminal_safe(line)))


def say(line: str) -> None:
    """One human line on stdout, escaped for the terminal."""
    print(terminal_safe(line))


def warn(message: str) -> None:
    """One `gpuconsole: …` line on stderr, escaped for the terminal (messages quote node texts)."""
    print(f"gpuconsole: {terminal_safe(message)}", file=sys.stderr)


def cell(value: str | Text, style: str = "") -> Text:
    """A table cell that shows `value` literally: a `Text`, never markup, escaped for the terminal."""
    return rich_text(value, style)


def add_row(table: Table, *cells: str | Text) -> None:
    """Add a row whose every cell goes through `cell` (the way rows enter a CLI table)."""
    table.add_row(*(cell(value) for value in cells))


def console(width: int | None = None) -> Console:
    """A rich console on stdout (imported lazily: JSON paths never load rich) that takes no markup or
    emoji codes from strings and escapes whatever it prints (gpuconsole.cli.safe_console)."""
    from gpuconsole.cli.safe_console import SafeConsole

    # Piped output keeps whole columns (a file or `less` has no width to respect), unless COLUMNS
    # asks for a width (rich reads it): `COLUMNS=80 gpuconsole reservations | less`, tests, watch(1).
    if width is None and not sys.stdout.isatty() and not os.environ.get("COLUMNS", "").isdigit():
        width = 160
    return SafeConsole(highlight=False, markup=False, emoji=False, soft_wrap=False, width=width)
