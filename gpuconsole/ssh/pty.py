"""`gpuconsole shell` on the wire: the shell-mode agent's handshake and the local terminal bridge.

The remote command is a constant (`shell_command`); the reservation and the argv travel as one
JSON line on stdin after the node prints its READY marker (node/ptyshell.py, docs/design.md 2.11).
Whatever the node prints before the marker (a login script's noise, or a hostile node's escape
sequences) is dropped, never shown. With a local tty the session gets a pty and the local terminal
is raw for its length (restored on every exit path); without one, stdin/stdout/stderr are plain
streams, for scripts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import signal
import termios
import threading
import tty
from collections.abc import Iterator, Sequence
from typing import Any

import asyncssh

from gpuconsole.errors import UnreachableError
from gpuconsole.model.replies import BadReplyError, decode_line
from gpuconsole.node import ptyshell
from gpuconsole.ssh.bundle import agent_preamble
from gpuconsole.ssh.connection import AgentError, NodeConnection

READY_LIMIT_BYTES = 1 << 20  # what a node may print before its marker before we give up on it
ANSWER_LIMIT_BYTES = 65536  # the node's answer line ({"ok": true} or an error): far more than it needs
CHUNK_BYTES = 65536
HANDSHAKE_EXTRA_S = 30.0  # beyond the connect timeout: the agent's start and its state read


def shell_command(python: str) -> str:
    """The constant command line of a shell session; `python` comes from the validated config."""
    return f"exec {shlex.quote(python)} -S -c {shlex.quote(ptyshell.BOOTSTRAP)} shell"


async def skip_to_marker(stream: asyncssh.SSHReader[bytes], marker: bytes, what: str) -> bytes:
    """Drop everything up to and including `marker` and its newline; what followed it in the same
    read. EOF or more than READY_LIMIT_BYTES first: UnreachableError."""
    tail, total = b"", 0
    needle = marker + b"\n"
    while True:
        chunk = await stream.read(CHUNK_BYTES)
        if not chunk:
            raise UnreachableError(f"{what}: the node closed the session before it was ready")
        total += len(chunk)
        tail = (tail + chunk)[-(len(needle) + CHUNK_BYTES):]
        at = tail.find(needle)
        if at >= 0:
            return tail[at + len(needle):]
        if total > READY_LIMIT_BYTES:
            raise UnreachableError(f"{what}: no ready line in the node's first {READY_LIMIT_BYTES} bytes")


def _request_line(conn: NodeConnection, reservation: str, argv: Sequence[str] | None) -> bytes:
    request = {"hello": conn.hello_args(), "reservation": reservation,
               "argv": list(argv) if argv is not None else None}
    return (json.dumps(request) + "\n").encode()


async def start(conn: NodeConnection, reservation: str, argv: Sequence[str] | None, *,
                pty: bool) -> asyncssh.SSHClientProcess[bytes]:
    """Open the session, load the agent, send the request; the session once the node said yes.

    The node's refusal raises AgentError (exit 4 for another user's reservation, 6 for an unknown
    or expired one); a broken handshake, UnreachableError."""
    options: dict[str, Any] = {"request_pty": False}
    if pty:
        cols, rows = _size()
        options = {"term_type": os.environ.get("TERM") or "xterm", "term_size": (cols, rows),
                   "request_pty": "force"}
    proc = await conn.start_session(shell_command(conn.cfg.python), **options)
    try:
        async with asyncio.timeout(conn.cfg.connect_timeout_s + HANDSHAKE_EXTRA_S):
            await skip_to_marker(proc.stdout, ptyshell.READY, conn.name)  # nothing follows until asked
            proc.stdin.write(agent_preamble() + _request_line(conn, reservation, argv))
            line = await read_answer(proc.stdout)
    except TimeoutError:
        proc.close()
        raise UnreachableError(f"{conn.name}: shell: no answer from the node") from None
    except (asyncssh.Error, OSError) as exc:
        proc.close()
        raise UnreachableError(f"{conn.name}: shell: {exc}") from None
    except BaseException:
        proc.close()
        raise
    if line is None:
        proc.close()
        raise BadReplyError(f"{conn.name}: bad reply from the shell agent: an answer longer than "
                            f"{ANSWER_LIMIT_BYTES} bytes")
    try:
        reply = decode_line(line)  # the agent's decoder: deep nesting is a ValueError, not a RecursionError
        if not isinstance(reply, dict) or not isinstance(reply.get("ok"), bool):
            raise ValueError("not a reply")
    except ValueError:
        proc.close()
        raise BadReplyError(f"{conn.name}: bad reply from the shell agent") from None
    if not reply["ok"]:
        proc.close()
        error = reply.get("error")
        raise AgentError(conn.name, error if isinstance(error, dict) else {"code": "internal"})
    return proc


async def read_answer(stream: asyncssh.SSHReader[bytes]) -> bytes | None:
    """The node's one answer line, None once it runs past ANSWER_LIMIT_BYTES (a hostile node cannot
    make us buffer more). Byte by byte: what follows the line is the session's own output, which
    must stay in the stream for the bridge."""
    line = bytearray()
    while len(line) <= ANSWER_LIMIT_BYTES:
        byte = await stream.read(1)
        if not byte or byte == b"\n":
            return bytes(line)
        line += byte
    return None


def _size() -> tuple[int, int]:
    try:
        size = os.get_terminal_size(0)
    except OSError:
        return 80, 24
    return size.columns, size.lines


@contextlib.contextmanager
def raw_terminal(fd: int) -> Iterator[None]:
    """The local terminal in raw mode (keys go to the remote pty as typed), restored however we leave."""
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd, termios.TCSADRAIN)  # TCSADRAIN, not FLUSH: keys typed ahead still go through
        yield
    finally:
        with contextlib.suppress(termios.error, OSError):
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)


async def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            await asyncio.sleep(0.01)
            continue
        view = view[written:]


async def _copy_out(stream: asyncssh.SSHReader[bytes], fd: int) -> None:
    with contextlib.suppress(asyncssh.Error, OSError):
        while chunk := await stream.read(CHUNK_BYTES):
            await _write_all(fd, chunk)


@contextlib.contextmanager
def _pump_stdin(proc: asyncssh.SSHClientProcess[bytes], fd: int, is_tty: bool) -> Iterator[None]:
    """Local stdin to the session: a tty through the loop's reader; anything else (a pipe, a file)
    through a daemon thread, which a blocked read never keeps alive, with EOF passed on."""
    loop = asyncio.get_running_loop()

    def forward(data: bytes) -> None:
        with contextlib.suppress(asyncssh.Error, OSError):
            if data:
                proc.stdin.write(data)
            else:
                proc.stdin.write_eof()

    if is_tty:
        def readable() -> None:
            try:
                data = os.read(fd, CHUNK_BYTES)
            except OSError:
                data = b""
            if not data:
                loop.remove_reader(fd)
            forward(data)

        loop.add_reader(fd, readable)
        try:
            yield
        finally:
            loop.remove_reader(fd)
        return

    def reader() -> None:
        while True:
            try:
                data = os.read(fd, CHUNK_BYTES)
            except OSError:
                data = b""
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody is listening
                loop.call_soon_threadsafe(forward, data)
            if not data:
                return

    threading.Thread(target=reader, name="shell-stdin", daemon=True).start()
    yield


def _resize(proc: asyncssh.SSHClientProcess[bytes]) -> None:
    with contextlib.suppress(asyncssh.Error, OSError):
        proc.change_terminal_size(*_size())


def exit_code(proc: asyncssh.SSHClientProcess[bytes], name: str) -> int:
    """The remote command's status as a shell reports it (128 + signal for a killed one)."""
    if proc.exit_status is not None and proc.exit_status >= 0:
        return proc.exit_status
    if proc.exit_signal is not None:
        number = getattr(signal, f"SIG{proc.exit_signal[0]}", None)
        return 128 + int(number) if number is not None else 255
    raise UnreachableError(f"{name}: connection lost during the shell")


async def bridge(proc: asyncssh.SSHClientProcess[bytes], name: str, *, pty: bool) -> int:
    """Join the local terminal (or stdio) to the session until it ends; its exit status."""
    loop = asyncio.get_running_loop()
    stdin_tty = os.isatty(0)
    tasks = [asyncio.create_task(_copy_out(proc.stdout, 1), name="shell-stdout")]
    if not pty:
        async def stderr() -> None:
            with contextlib.suppress(UnreachableError):
                await _write_all(2, await skip_to_marker(proc.stderr, ptyshell.STDERR_READY, name))
                await _copy_out(proc.stderr, 2)

        tasks.append(asyncio.create_task(stderr(), name="shell-stderr"))
    resized = False
    try:
        with contextlib.ExitStack() as stack:
            if pty:
                stack.enter_context(raw_terminal(0))
                loop.add_signal_handler(signal.SIGWINCH, _resize, proc)
                resized = True
            stack.enter_context(_pump_stdin(proc, 0, stdin_tty))
            await proc.wait_closed()
            with contextlib.suppress(TimeoutError, UnreachableError):
                async with asyncio.timeout(5):
                    await asyncio.gather(*tasks)
    finally:
        if resized:
            loop.remove_signal_handler(signal.SIGWINCH)
        for task in tasks:
            task.cancel()
        proc.close()
    return exit_code(proc, name)
