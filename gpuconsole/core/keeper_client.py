"""Talking to the per-user connection keeper (core/keeper.py): where its socket lives, asking it one
request, starting it. Stdlib only, so a command that the keeper answers never imports asyncssh.

Every failure here means "no keeper": the caller falls back to direct connections.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import socket
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpuconsole.core.rundir import base_dir, config_tag, peer_uid
from gpuconsole.errors import ExitCode, GpuConsoleError, UnreachableError
from gpuconsole.model.replies import interpret_all

PROTOCOL = 2  # 2: node ops as raw reply lines (keeper.exchange, keeper.exchange_all)
MAX_LINE_BYTES = 64 * 1024 * 1024  # a 256-node fleet's snapshots fit many times over
ENV_SWITCH = "GPUCONSOLE_KEEPER"  # "0": never use or start a keeper (the test suite's default; --no-keeper)


class KeeperUnavailableError(Exception):
    """No usable keeper: not running, not ours, died mid-request, or answered "not this config"."""

    def __init__(self, message: str, *, absent: bool = False) -> None:
        super().__init__(message)
        self.absent = absent  # nothing listens: worth starting one


RESIDENT_SUFFIX = ".resident"  # the resident CLI's socket, next to the keeper's (cli/forward.py finds it)
START_BACKOFF_S = 30.0  # after a start, another only once this passed without a socket appearing


@functools.lru_cache(maxsize=1)
def code_mark() -> str:
    """What identifies the installed code (each module's path, size and mtime): a keeper started
    before an upgrade must not answer for the new code."""
    digest = hashlib.sha256()
    pending = [os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]
    while pending:
        with os.scandir(pending.pop()) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                if entry.is_dir(follow_symlinks=False) and entry.name != "__pycache__":
                    pending.append(entry.path)
                elif entry.name.endswith((".py", ".json", ".toml", ".tcss")):
                    info = entry.stat(follow_symlinks=False)
                    digest.update(f"{entry.path}:{info.st_size}:{info.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class KeeperPaths:
    """The keeper of one config file: its socket, its lock (which also names its pid), its log, and
    the socket of its resident CLI (cli/resident.py)."""

    directory: Path
    socket: Path
    lock: Path
    log: Path
    resident: Path


def enabled(keeper_key: bool) -> bool:
    """The keeper is used unless `keeper = false`, `--no-keeper` or GPUCONSOLE_KEEPER=0 says no."""
    return keeper_key and os.environ.get(ENV_SWITCH, "1") != "0"


def runtime_dir(create: bool = True) -> Path:
    """`$XDG_RUNTIME_DIR/gpuconsole`, else `/tmp/gpuconsole-UID`: a 0700 directory that we own and
    that is not a symlink (anything else is refused: another user could plant or read sockets)."""
    path = Path(base_dir())
    if create:
        with contextlib.suppress(FileExistsError):
            path.mkdir(mode=0o700)
    try:
        info = os.lstat(path)
    except OSError as exc:
        raise KeeperUnavailableError(f"{path}: {exc.strerror or exc}", absent=True) from None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise KeeperUnavailableError(f"{path}: not a private directory of ours (owner, mode or a symlink)")
    return path


def keeper_paths(config_path: Path, create: bool = True) -> KeeperPaths:
    """One keeper per config file (by its absolute path), so two configs never thrash one keeper."""
    directory = runtime_dir(create)
    tag = config_tag(str(config_path.absolute()))
    return KeeperPaths(directory, directory / f"{tag}.sock", directory / f"{tag}.lock",
                       directory / f"{tag}.log", directory / f"{tag}{RESIDENT_SUFFIX}")


def config_hash(text: bytes) -> str:
    """What identifies a config's content between the client and the keeper."""
    return hashlib.sha256(text).hexdigest()


def ask(paths: KeeperPaths, request: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """Send one request line and read the one answer line; KeeperUnavailableError on any failure."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout_s)
        try:
            sock.connect(str(paths.socket))
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise KeeperUnavailableError(f"no keeper: {exc.strerror or exc}", absent=True) from None
        if peer_uid(sock) != os.getuid():  # the dir is private, but never talk to another user's process
            raise KeeperUnavailableError("the socket's listener is not ours")
        sock.sendall(request_line(request))
        chunks: list[bytes] = []
        size = 0
        while True:
            chunk = sock.recv(1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if chunk.endswith(b"\n") or size > MAX_LINE_BYTES:
                break
    except OSError as exc:  # refused, reset, timed out: the keeper died or hangs
        raise KeeperUnavailableError(f"keeper failed: {exc}") from None
    finally:
        sock.close()
    return answer_of(b"".join(chunks))


def request_line(request: dict[str, Any]) -> bytes:
    return json.dumps({"v": PROTOCOL, **request}, separators=(",", ":")).encode() + b"\n"


def answer_of(data: bytes) -> dict[str, Any]:
    """The keeper's answer line, or KeeperUnavailableError when it is not a usable one."""
    if not data.endswith(b"\n"):
        raise KeeperUnavailableError("keeper hung up before answering")
    try:
        answer = json.loads(data)
    except ValueError:
        raise KeeperUnavailableError("keeper answered garbage") from None
    if not isinstance(answer, dict) or answer.get("ok") is not True:
        error = answer.get("error") if isinstance(answer, dict) else None
        raise KeeperUnavailableError(f"keeper declined: {error}")
    return answer


def exchange_request(config_path: Path, config_text: bytes, node_op: str, args: dict[str, Any] | None,
                     names: list[str] | None, timeout_s: float, retries: int | None = None) -> dict[str, Any]:
    """The request for a node op through the keeper: one node with `retries` (keeper.exchange), or
    every named node once (keeper.exchange_all)."""
    request: dict[str, Any] = {"op": "keeper.exchange_all" if retries is None else "keeper.exchange",
                               "node_op": node_op, "args": args, "nodes": names, "timeout_s": timeout_s,
                               "config": str(config_path.absolute()), "hash": config_hash(config_text),
                               "code": code_mark()}
    if retries is not None:
        request["retries"] = retries
    return request


def rebuilt_error(name: str, item: Any) -> GpuConsoleError:
    """A node's transport failure as the keeper reported it, as the direct path would have raised it:
    plain UnreachableError (retried by callers that retry), a final one (host key, auth, bad
    reply: never retried), or another error with its exit code."""
    if not (isinstance(item, dict) and isinstance(item.get("error"), str) and item.get("exit") in set(ExitCode)):
        raise KeeperUnavailableError(f"keeper answered a bad result for {name!r}")
    if item.get("kind") == "unreachable":
        return UnreachableError(item["error"])
    if item.get("kind") == "final":
        return FinalUnreachableError(item["error"])
    return GpuConsoleError(item["error"], ExitCode(item["exit"]))


class FinalUnreachableError(UnreachableError):
    """A node failure the keeper saw that asking again cannot clear (host key, auth, bad reply)."""


def replies_of(answer: dict[str, Any]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Per node the agent's reply line or its rebuilt transport error, and the nodes' hellos."""
    answers, hellos = answer.get("answers"), answer.get("hellos")
    if not isinstance(answers, dict) or not isinstance(hellos, dict):
        raise KeeperUnavailableError("keeper answered without results")
    replies: dict[str, Any] = {}
    for name, item in answers.items():
        replies[name] = item["reply"] if isinstance(item, dict) and "reply" in item else rebuilt_error(name, item)
    return replies, {n: h for n, h in hellos.items() if isinstance(h, dict)}


def call_all(config_path: Path, config_text: bytes, op: str, args: dict[str, Any] | None,
             names: list[str] | None, timeout_s: float) -> dict[str, dict[str, Any] | GpuConsoleError]:
    """Fleet.call_all through the keeper: per node the agent's result, checked here exactly as on
    the direct path, or the error the direct path would have raised."""
    answer = ask(keeper_paths(config_path),
                 exchange_request(config_path, config_text, op, args, names, timeout_s), timeout_s)
    replies, _hellos = replies_of(answer)
    return interpret_all(op, replies)


def start(config_path: Path) -> None:
    """Start a keeper for this config in the background (its own session, stdio to /dev/null, its log
    in the runtime dir); a second one started at the same time exits at once (the lock)."""
    paths = keeper_paths(config_path)
    marker = paths.directory / f"{paths.socket.stem}.start"
    with contextlib.suppress(OSError):
        if time.time() - os.lstat(marker).st_mtime < START_BACKOFF_S:
            return  # one was started moments ago and is not listening: it failed, or is still starting
    with contextlib.suppress(OSError):
        os.close(os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600))
        os.utime(marker)
    fd = os.open(paths.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
    try:
        subprocess.Popen(
            [sys.executable, "-m", "gpuconsole", "--config", str(config_path.absolute()), "keeper", "run"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=fd, start_new_session=True,
            close_fds=True, cwd="/",  # it outlives the command: never hold the command's cwd busy
        )
    finally:
        os.close(fd)
