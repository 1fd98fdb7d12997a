"""The only writers: data to stdout (JSON or rich tables), diagnostics to stderr."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console


def print_json(document: Any) -> None:
    """One JSON document (or one line of a stream) on stdout."""
    sys.stdout.write(json.dumps(document, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def warn(message: str) -> None:
    print(f"gpuconsole: {message}", file=sys.stderr)


def console() -> Console:
    """A rich console on stdout (imported lazily: JSON paths never load rich)."""
    from rich.console import Console

    # Piped output keeps whole columns (a file or `less` has no width to respect).
    return Console(highlight=False, soft_wrap=False, width=None if sys.stdout.isatty() else 160)
