"""Asking a person before something costs money or ends someone's work: a (y/N) question on stderr,
answered on a terminal. A command whose stdin is not a terminal is never asked (a script cannot
answer): it must say yes with a flag, or it is refused."""

from __future__ import annotations

import asyncio
import os
import sys

from gpuconsole.textsafe import terminal_safe


def can_ask() -> bool:
    """Whether a person can answer: stdin is a terminal."""
    try:
        return os.isatty(sys.stdin.fileno())
    except (AttributeError, OSError, ValueError):
        return False


def _prompt(question: str) -> None:
    sys.stderr.write(f"gpuconsole: {terminal_safe(question)} [y/N] ")
    sys.stderr.flush()


def _yes(answer: str) -> bool:
    return answer.strip().lower() in ("y", "yes")


def ask(question: str) -> bool:
    """Ask on stderr, read one line from the terminal: True only for y/yes (EOF is no)."""
    _prompt(question)
    # Bytes, not text: a stray non-UTF-8 key is a "no", not a UnicodeDecodeError (exit 1).
    return _yes(sys.stdin.buffer.readline().decode(errors="replace"))


async def ask_async(question: str) -> bool:
    """`ask` inside an event loop: the loop waits for the line without a thread, so Ctrl-C (which
    cancels the running task) is never held up by a blocked read."""
    _prompt(question)
    loop = asyncio.get_running_loop()
    fd = sys.stdin.fileno()
    answered: asyncio.Future[str] = loop.create_future()

    def readable() -> None:
        if not answered.done():
            answered.set_result(os.read(fd, 4096).decode(errors="replace"))

    loop.add_reader(fd, readable)
    try:
        return _yes(await answered)
    finally:
        loop.remove_reader(fd)
