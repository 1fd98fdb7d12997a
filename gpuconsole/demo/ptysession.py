"""A demo node's session that asked for a pty (`gpuconsole shell`): the command runs on a real pty,
as sshd runs it: its own session with the pty as controlling terminal, TERM and the window size
from the request, size changes passed on, and a hangup when the client goes away."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import struct
import sys
import termios

import asyncssh

# Makes the pty (stdin) the controlling terminal of the new session, then runs the command as the
# plain session does; a trampoline instead of preexec_fn, which is unsafe in a threaded process.
_TRAMPOLINE = ("import fcntl,os,sys,termios;fcntl.ioctl(0,termios.TIOCSCTTY,0);"
               "os.execv('/bin/sh',['/bin/sh','-c',sys.argv[1]])")
DRAIN_S = 2.0  # output still in the pty after the command exited


def _set_size(fd: int, cols: int, rows: int) -> None:
    if cols > 0 and rows > 0:
        with contextlib.suppress(OSError):
            fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


class _Master:
    """The pty's master side on the event loop: reads to the channel, buffered non-blocking writes."""

    def __init__(self, fd: int, process: asyncssh.SSHServerProcess[bytes]) -> None:
        self.fd, self.process = fd, process
        self.loop = asyncio.get_running_loop()
        self.pending = b""
        self.eof = asyncio.Event()
        os.set_blocking(fd, False)
        self.loop.add_reader(fd, self._readable)

    def _readable(self) -> None:
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return
        except OSError:  # EIO: every slave side is closed
            data = b""
        if not data:
            self.loop.remove_reader(self.fd)
            self.eof.set()
            return
        with contextlib.suppress(asyncssh.Error, OSError):
            self.process.stdout.write(data)

    def write(self, data: bytes) -> None:
        self.pending += data
        self._flush()

    def _flush(self) -> None:
        try:
            written = os.write(self.fd, self.pending)
        except BlockingIOError:
            written = 0
        except OSError:
            written = len(self.pending)  # the command is gone: nobody reads it any more
        self.pending = self.pending[written:]
        if self.pending:
            self.loop.add_writer(self.fd, self._flush)
        else:
            self.loop.remove_writer(self.fd)

    def close(self) -> None:
        self.loop.remove_reader(self.fd)
        self.loop.remove_writer(self.fd)
        with contextlib.suppress(OSError):
            os.close(self.fd)  # the kernel hangs up the session: SIGHUP, as sshd's close does


async def _forward_input(master: _Master, process: asyncssh.SSHServerProcess[bytes]) -> None:
    """Channel to pty until the client closes; window size changes become TIOCSWINSZ (SIGWINCH)."""
    while True:
        try:
            data = await process.stdin.read(65536)
        except asyncssh.TerminalSizeChanged as change:
            _set_size(master.fd, change.width, change.height)
            continue
        except (asyncssh.Error, OSError):
            return
        if not data:
            return
        master.write(data)


async def run_on_pty(process: asyncssh.SSHServerProcess[bytes], command: str, env: dict[str, str],
                     children: set[asyncio.subprocess.Process]) -> None:
    """Run `command` on a new pty bridged to the channel; exit with its status, as sshd would."""
    master_fd, slave_fd = os.openpty()
    cols, rows, _, _ = process.get_terminal_size()
    _set_size(slave_fd, cols, rows)
    env = dict(env, TERM=process.get_terminal_type() or "xterm")
    try:
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-S", "-c", _TRAMPOLINE, command, stdin=slave_fd, stdout=slave_fd, stderr=slave_fd,
            env=env, start_new_session=True)
    finally:
        os.close(slave_fd)
    children.add(child)
    master = _Master(master_fd, process)
    forward = asyncio.create_task(_forward_input(master, process))
    closed = asyncio.create_task(process.channel.wait_closed())
    exited = asyncio.create_task(child.wait())
    try:
        await asyncio.wait({exited, closed}, return_when=asyncio.FIRST_COMPLETED)
        if exited.done():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(DRAIN_S):
                    await master.eof.wait()
            code = exited.result()
            process.exit(code if code >= 0 else 128 - code)
    finally:
        forward.cancel()
        closed.cancel()
        master.close()
        if child.returncode is None:  # the client left: hang up, then make sure
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGHUP)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2):
                    await child.wait()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
        exited.cancel()
        children.discard(child)
