"""The quick way in for a one-shot command: when the keeper of its config runs a resident CLI
(cli/resident.py), hand that process this one's argv, environment, working dir and stdio, relay
signals, and return its exit code, instead of importing and running the CLI here (most of a warm
command's time: Python's own start is the only part left).

Stdlib only, and nothing from gpuconsole but core.rundir: this runs before any other import.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from typing import Any

from gpuconsole.core.rundir import base_dir, config_tag, peer_uid

# What the resident may run (it decides for good after a full parse; cli/keeper.resident_serves).
COMMANDS = frozenset({"status", "reserve", "release", "renew", "reservations", "submit", "jobs", "logs",
                      "cancel", "preempt", "audit", "usage"})
RELAYED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
MAX_HEADER_BYTES = 1 << 20
# How long a resident may take to say it runs the command (a stopped one never would): the caller
# then runs it itself. Generous: the child's answer comes after a parse and a config read.
ANSWER_TIMEOUT_S = 30.0


def forward(argv: list[str]) -> int | None:
    """The command's exit code as the resident ran it; None: run it here (no resident, it declined,
    or it could not be asked). Once the resident has said it runs the command, the answer is its."""
    config = _config_path(argv)
    if config is None or os.environ.get("GPUCONSOLE_KEEPER", "1") == "0":
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    relay = _Relay(sock)
    try:
        sock.settimeout(ANSWER_TIMEOUT_S)
        sock.connect(os.path.join(base_dir(), config_tag(config) + ".resident"))
        if peer_uid(sock) != os.getuid():  # never hand our terminal to another user's process
            raise ValueError("not ours")
        socket.send_fds(sock, [_header(argv)], [0, 1, 2])
        reader = sock.makefile("rb")
        if reader.readline() != b"run\n":
            raise ValueError("declined")  # (or died) before the command started: nothing was done yet
        sock.settimeout(None)  # from here the command's own time: as long as it runs
    except (OSError, ValueError):
        sock.close()
        relay.undo()  # a signal that came meanwhile is this process's own again
        return None
    return relay.wait(reader)


class _Relay:
    """From the first moment, the signals a terminal or a parent sends us go to the command (they
    wait in the socket until it runs); undone if it never does."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.seen: list[int] = []
        self.saved = {signum: signal.signal(signum, self._on_signal) for signum in RELAYED}

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.seen.append(signum)
        try:
            self.sock.sendall(f"signal {signum}\n".encode())
        except OSError:
            pass

    def undo(self) -> None:
        for signum, handler in self.saved.items():
            signal.signal(signum, handler)
        self._die_of_seen()  # a Ctrl-C before anything ran: nothing to finish

    def _die_of_seen(self) -> None:
        if self.seen:
            signal.signal(self.seen[-1], signal.SIG_DFL)
            os.kill(os.getpid(), self.seen[-1])

    def wait(self, reader: Any) -> int:
        """The command's exit code; if it died of a signal we passed on, die of it too, as the
        command itself would have."""
        try:
            line = reader.readline()
        except OSError:
            line = b""
        finally:
            self.sock.close()
        if line.startswith(b"exit ") and line[5:].strip().lstrip(b"-").isdigit():
            return int(line[5:])
        self._die_of_seen()
        sys.stderr.write("gpuconsole: the resident CLI ended without an exit status (run with --no-keeper)\n")
        return 1


def _config_path(argv: list[str]) -> str | None:
    """The config file's absolute path as the CLI resolves it, for a command the resident may run;
    None for any other command (the first word that is not an option or `--config`'s value)."""
    words = argv[:argv.index("--")] if "--" in argv else argv
    if "--no-keeper" in words:
        return None
    chosen, command, i = None, None, 0
    while i < len(words):
        word = words[i]
        if word == "--config" and i + 1 < len(words):
            chosen, i = words[i + 1], i + 2
            continue
        if word.startswith("--config="):
            chosen = word.partition("=")[2]
        elif command is None and not word.startswith("-"):
            command = word
        i += 1
    if command not in COMMANDS:
        return None
    path = chosen or os.environ.get("GPUCONSOLE_CONFIG") or os.path.join(
        os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config"),
        "gpuconsole", "config.toml")
    # As pathlib's absolute() (the keeper's name for it): `.` and `//` dropped, `..` kept.
    expanded = os.path.expanduser(path)
    base = [] if expanded.startswith("/") else [p for p in os.getcwd().split("/") if p]
    parts = [p for p in expanded.split("/") if p not in ("", ".")]
    return "/" + "/".join(base + parts)


def _header(argv: list[str]) -> bytes:
    """What the resident needs to run the command as this process would."""
    umask = os.umask(0o077)
    os.umask(umask)
    streams = [[s.encoding, s.errors, s.line_buffering] if s is not None else None
               for s in (sys.stdin, sys.stdout, sys.stderr)]
    header: dict[str, Any] = {"argv": [sys.argv[0], *argv], "env": dict(os.environ), "cwd": os.getcwd(),
                              "umask": umask, "streams": streams}
    data = json.dumps(header, separators=(",", ":"), ensure_ascii=True, default=str).encode() + b"\n"
    if len(data) > MAX_HEADER_BYTES:
        raise ValueError("too large to forward")
    return data
