"""A keeper's resident CLI: a process, started by the keeper and ending with it, that has already
imported what the one-shot commands need and forks one child per command forwarded to it
(cli/forward.py). The child takes on the caller's argv, environment, working dir, umask and stdio
and runs the command as `main` would have in the caller, which only waits for its exit code.

Trust is the keeper's: a 0600 socket in the private runtime dir, and the peer's uid checked on
both ends. A child turns a command down before doing anything when it is not one the keeper serves,
the keeper is off for it, the config is another's, or the code changed since this process started
(which then ends, as the keeper does).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import selectors
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import IO, Any

from gpuconsole.core import keeper_client as kc
from gpuconsole.core.rundir import peer_uid

MAX_HEADER_BYTES = 1 << 20
HEADER_TIMEOUT_S = 10.0
RELAYED = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT})


def serve(config_path: Path, lifeline: int) -> int:
    """Listen on the keeper's resident socket until the lifeline ends or SIGTERM; fork per command."""
    import gpuconsole.cli.jobs
    import gpuconsole.cli.keeper
    import gpuconsole.cli.reservations
    import gpuconsole.cli.status  # noqa: F401  (the imports are this process's point)

    code = kc.code_mark()
    paths = kc.keeper_paths(config_path)
    signal.signal(signal.SIGTERM, lambda _s, _f: sys.exit(0))
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(paths.resident)  # a dead resident's: the keeper's lock says there is no other
    old_umask = os.umask(0o177)
    try:
        listener.bind(str(paths.resident))
    finally:
        os.umask(old_umask)
    inode = os.stat(paths.resident).st_ino
    listener.listen(64)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    selector.register(lifeline, selectors.EVENT_READ)
    try:
        while True:
            ready = selector.select(timeout=5.0)
            _reap()
            if any(key.fd == lifeline for key, _ in ready):
                return 0  # the keeper ended
            if ready:
                _accept(listener, selector, lifeline, config_path, code)
    finally:
        with contextlib.suppress(OSError):
            if os.stat(paths.resident).st_ino == inode:  # never a newer resident's socket
                os.unlink(paths.resident)
        listener.close()


def _reap() -> None:
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass


def _accept(listener: socket.socket, selector: selectors.BaseSelector, lifeline: int, config_path: Path,
            code: str) -> None:
    try:
        conn, _ = listener.accept()
    except OSError:
        return
    if peer_uid(conn) != os.getuid():
        conn.close()
        return
    pid = os.fork()
    if pid:
        conn.close()
        return
    status = 0
    try:
        selector.close()
        listener.close()
        os.close(lifeline)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        _child(conn, config_path, code)
    except BaseException:  # a child never returns into the accept loop
        status = 70
    finally:
        os._exit(status)


def _child(conn: socket.socket, config_path: Path, code: str) -> None:
    """Run one forwarded command in this forked child, or turn it down."""
    conn.settimeout(HEADER_TIMEOUT_S)
    header, fds = _read_header(conn)
    try:
        if header is None or len(fds) != 3 or not _take_on(header, fds):
            conn.sendall(b"decline\n")
            return
    finally:
        for fd in fds:
            os.close(fd)
    conn.settimeout(None)
    kc.code_mark.cache_clear()
    if kc.code_mark() != code:
        os.kill(os.getppid(), signal.SIGTERM)  # upgraded under us: end, as the keeper does
        conn.sendall(b"decline\n")
        return
    threading.Thread(target=_watch, args=(conn,), daemon=True).start()
    started: list[bool] = []

    def gate(opts: Any) -> bool:
        if not _serves(opts, config_path):
            return False
        conn.sendall(b"run\n")
        started.append(True)
        return True

    from gpuconsole.cli import run

    try:
        exit_code = run(header["argv"][1:], gate)
    except SystemExit as exc:  # argparse's --help and --version
        exit_code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            if stream is not None:
                stream.flush()
    if exit_code is None:
        conn.sendall(b"decline\n")
        return
    conn.sendall((b"" if started else b"run\n") + f"exit {exit_code}\n".encode())


def _read_header(conn: socket.socket) -> tuple[dict[str, Any] | None, list[int]]:
    try:
        data, fds, _flags, _addr = socket.recv_fds(conn, 1 << 16, 3)
        while data and not data.endswith(b"\n") and len(data) < MAX_HEADER_BYTES:
            chunk = conn.recv(1 << 16)
            if not chunk:
                break
            data += chunk
        header = json.loads(data)
    except (OSError, ValueError):
        return None, []
    ok = (isinstance(header, dict) and isinstance(header.get("argv"), list) and len(header["argv"]) >= 1
          and all(isinstance(a, str) for a in header["argv"]) and isinstance(header.get("env"), dict)
          and all(isinstance(k, str) and isinstance(v, str) for k, v in header["env"].items())
          and isinstance(header.get("cwd"), str) and isinstance(header.get("umask"), int)
          and isinstance(header.get("streams"), list) and len(header["streams"]) == 3)
    return (header if ok else None), list(fds)


def _take_on(header: dict[str, Any], fds: list[int]) -> bool:
    """Become the caller: its environment, working dir, umask and stdio (False: cannot)."""
    try:
        os.chdir(header["cwd"])
        streams = [_stream(fd, mode, spec) for fd, mode, spec in zip((0, 1, 2), "rww", header["streams"], strict=True)]
    except (OSError, ValueError, TypeError, LookupError):
        return False
    os.environ.clear()
    os.environ.update(header["env"])
    os.umask(header["umask"] & 0o777)
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
    sys.argv = list(header["argv"])
    sys.stdin, sys.stdout, sys.stderr = streams
    return True


def _stream(fd: int, mode: str, spec: Any) -> IO[str] | None:
    """A text stream on fd as the caller's was (encoding, errors, line buffering)."""
    if spec is None:
        return None
    encoding, errors, line_buffering = spec
    raw = open(fd, mode + "b", closefd=False)  # noqa: SIM115  (the stream outlives this function)
    return io.TextIOWrapper(raw, encoding=str(encoding), errors=str(errors), line_buffering=bool(line_buffering))


def _serves(opts: Any, config_path: Path) -> bool:
    """The gate: a command the keeper serves, for this keeper's config, with the keeper on for it."""
    from gpuconsole.cli.keeper import keeper_serves
    from gpuconsole.config import load_config
    from gpuconsole.errors import GpuConsoleError

    if not keeper_serves(opts) or not kc.enabled(True):
        return False
    try:
        config = load_config(opts.config)
    except GpuConsoleError:
        return True  # the command fails on it the same way here
    return config.path.absolute() == config_path and kc.enabled(config.defaults.keeper) and config.aws is None


def _watch(conn: socket.socket) -> None:
    """The caller's relayed signals, raised here; its end (it was killed) ends the command too."""
    reader = conn.makefile("rb")
    for line in reader:
        words = line.split()
        if len(words) == 2 and words[0] == b"signal" and words[1].isdigit() and int(words[1]) in RELAYED:
            os.kill(os.getpid(), int(words[1]))
    os.kill(os.getpid(), signal.SIGTERM)


if __name__ == "__main__":
    sys.exit(serve(Path(sys.argv[1]), int(sys.argv[2])))
