"""Warnings that nodes attach to successful replies, routed to whoever shows diagnostics.

A committed change can still carry news the user must see (the state's mirror copy could not be
written on a full disk, a forged record was quarantined). The connection reports each one here;
the CLI prints it on stderr once per process, and a process with no handler drops them.
"""

from __future__ import annotations

from collections.abc import Callable

NoticeHandler = Callable[[str, str], None]
_handler: NoticeHandler | None = None
_seen: set[tuple[str, str]] = set()


def set_handler(handler: NoticeHandler | None) -> NoticeHandler | None:
    """Send node warnings to ``handler(node, text)`` from now on (None: drop them); returns the
    previous handler. A new handler sees every warning once again (it is a new audience)."""
    global _handler
    previous, _handler = _handler, handler
    _seen.clear()
    return previous


def node_warning(node: str, text: str) -> None:
    """Report one warning from ``node``; the same text from the same node is shown once."""
    if _handler is None or (node, text) in _seen:
        return
    _seen.add((node, text))
    _handler(node, text)
