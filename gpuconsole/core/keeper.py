"""The per-user connection keeper (OpenSSH's ControlPersist, for the whole fleet): one process per
user and config file that holds one connection and agent per node through the same registry as every
command (so host keys are verified exactly as on the direct path) and answers commands over a 0600
Unix socket in a private runtime dir, until it has been idle for `keeper_idle`.

It never widens trust: every accepted connection's peer uid (SO_PEERCRED) must be the keeper's own;
it serves only the config file it was started for, re-reading it (and dropping every connection) when
the file's content or any file that decides a connection (known_hosts, ssh config, identity) changes;
and the connections are the user's own, so ownership on the nodes is unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import signal
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gpuconsole.config import Config, parse_config
from gpuconsole.core.fleet import Fleet
from gpuconsole.core.keeper_client import (
    MAX_LINE_BYTES,
    PROTOCOL,
    KeeperPaths,
    code_mark,
    config_hash,
    keeper_paths,
)
from gpuconsole.core.registry import Registry
from gpuconsole.core.rundir import peer_uid
from gpuconsole.errors import GpuConsoleError, UnreachableError
from gpuconsole.ssh.hostkeys import trust_set

# The node ops a client may send through the keeper: one-shot requests. Never `hello` or `stream`
# (they would change the keeper's own agent for every later client), nor what binds state to the
# asking connection (a queued reserve's ticket, `poll`, `reattach`) or only a job supervisor sends.
SERVED_OPS = frozenset({"snapshot", "reservations", "capacity", "doctor", "ping", "jobs", "logs", "ledger", "submit",
                        "submit_array", "cancel", "reserve", "release", "renew", "preempt"})
MAX_TIMEOUT_S = 600.0

FileMark = tuple[str, int, int, int] | tuple[str]  # (path, inode, size, mtime_ns), or (path,) when absent


def _mark(path: str) -> FileMark:
    try:
        info = os.stat(os.path.expanduser(path))
    except OSError:
        return (path,)
    return (path, info.st_ino, info.st_size, info.st_mtime_ns)


def _watched(config: Config) -> list[str]:
    """The local files that decide how a node is reached: a change to any of them drops the
    connections, so a changed host key is checked again before the next request is served."""
    files = {str(config.path), "~/.ssh/config"}
    for node in config.members():
        files.update(trust_set(node).files)
        files.update(f for f in (node.ssh_config, node.identity_file) if f)
    return sorted(files)


class Keeper:
    """The keeper's state: the loaded config and its registry, counters for `keeper status`."""

    def __init__(self, config_path: Path, paths: KeeperPaths) -> None:
        self.config_path = config_path.absolute()
        self.paths = paths
        self.requests = 0  # node requests served (not status/stop)
        self.refused = 0  # connections from another user
        self.reloads = 0
        self.active = 0
        self.last_used = time.monotonic()
        self.stop = asyncio.Event()
        self.config: Config | None = None
        self.registry: Registry | None = None
        self.loaded_hash = ""
        self.marks: list[FileMark] = []
        self._retired: list[Registry] = []
        self._reload_lock = asyncio.Lock()
        self.code = code_mark()  # the code this keeper runs (read at its start)

    @property
    def idle_s(self) -> float:
        return self.config.defaults.keeper_idle_s if self.config is not None else 600.0

    def load(self) -> None:
        """(Re)read the config file; every connection of the old one is closed once unused."""
        text = self.config_path.read_bytes()
        config = parse_config(text.decode("utf-8"), self.config_path)
        if self.registry is not None:
            self._retired.append(self.registry)
        self.config, self.registry = config, Registry(config)
        self.loaded_hash = config_hash(text)
        self.marks = [_mark(f) for f in _watched(config)]

    async def _fresh(self, wanted_hash: str) -> Registry | None:
        """The registry for the config whose content hash the client read (reloading if the file or
        a connection-deciding file changed); None when the file says otherwise by now."""
        async with self._reload_lock:
            stale = any(_mark(m[0]) != m for m in self.marks)
            if stale or wanted_hash != self.loaded_hash:
                self.load()
                self.reloads += 1
            return self.registry if wanted_hash == self.loaded_hash else None

    async def _close_retired(self) -> None:
        if self.active == 0 and self._retired:
            retired, self._retired = self._retired, []
            await asyncio.gather(*(r.aclose() for r in retired), return_exceptions=True)

    async def answer(self, request: Any) -> dict[str, Any]:
        """One request's answer (always a dict with `ok`)."""
        if isinstance(request, dict) and request.get("op") == "keeper.stop":
            self.stop.set()  # any version may stop it: a newer client stops an older keeper
            return {"ok": True, "pid": os.getpid()}
        if not isinstance(request, dict) or request.get("v") != PROTOCOL:
            return {"ok": False, "error": "bad request"}
        op = request.get("op")
        if op == "keeper.status":
            registry = self.registry
            return {"ok": True, "pid": os.getpid(), "config": str(self.config_path), "requests": self.requests,
                    "active": self.active, "refused": self.refused, "reloads": self.reloads, "idle_s": self.idle_s,
                    "connected": sorted(n.name for n in registry.nodes if registry.connection(n.name))
                    if registry is not None else []}
        if op not in ("keeper.exchange", "keeper.exchange_all"):
            return {"ok": False, "error": f"op {op!r} is not served by the keeper"}
        if request.get("code") != self.code:
            self.stop.set()  # the code was upgraded under it: the next command starts a new keeper
            return {"ok": False, "error": "the installed code changed: this keeper stops"}
        if request.get("config") != str(self.config_path):
            return {"ok": False, "error": "not this keeper's config"}
        checked = _checked(request)
        if isinstance(checked, str):
            return {"ok": False, "error": checked}
        node_op, args, names, timeout_s, retries = checked
        try:
            registry = await self._fresh(str(request.get("hash")))
        except (OSError, UnicodeDecodeError, GpuConsoleError) as exc:
            return {"ok": False, "error": f"cannot load the config: {exc}"}
        if registry is None:
            return {"ok": False, "error": "the config changed again"}
        self.active += 1
        fleet = Fleet(registry)
        try:
            replies: dict[str, Any]
            if op == "keeper.exchange":
                try:
                    replies = {names[0]: await fleet.exchange(names[0], node_op, args, retries=retries,
                                                              timeout_s=timeout_s)}
                except GpuConsoleError as exc:
                    replies = {names[0]: exc}
            else:
                try:
                    replies = await fleet.exchange_all(node_op, args, names or None, timeout_s=timeout_s)
                except GpuConsoleError as exc:  # an unknown node name: the direct path says it properly
                    return {"ok": False, "error": str(exc)}
            return {"ok": True, "answers": {
                n: _failure(r) if isinstance(r, GpuConsoleError) else {"reply": r} for n, r in replies.items()},
                "hellos": _hellos(fleet, list(replies))}
        finally:
            self.active -= 1
            self.last_used = time.monotonic()
            self.requests += 1
            await self._close_retired()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One client connection: its peer must be our own uid; one request line, one answer line."""
        try:
            sock = writer.get_extra_info("socket")
            if sock is None or peer_uid(sock) != os.getuid():
                self.refused += 1
                writer.write(b'{"ok": false, "error": "refused: not the keeper\'s user"}\n')
                return
            try:
                line = await reader.readuntil(b"\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                return
            try:
                request = json.loads(line)
            except ValueError:
                request = None
            answer = await self.answer(request)
            writer.write(json.dumps(answer, separators=(",", ":")).encode() + b"\n")
            await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


def _checked(request: dict[str, Any]) -> tuple[str, dict[str, Any] | None, list[str], float, int] | str:
    """An exchange request's node op, args, node names, timeout and retries, or why it is refused."""
    node_op, args, names = request.get("node_op"), request.get("args"), request.get("nodes")
    timeout_s, retries = request.get("timeout_s", 30.0), request.get("retries", 1)
    if node_op not in SERVED_OPS:
        return f"op {node_op!r} is not served by the keeper"
    if not (args is None or isinstance(args, dict)) or (node_op == "reserve" and args and args.get("wait")):
        return "bad args"  # a queued reserve's ticket belongs to the asking connection: direct only
    if not (names is None or (isinstance(names, list) and all(isinstance(n, str) for n in names))):
        return "bad node list"
    if request["op"] == "keeper.exchange" and (names is None or len(names) != 1):
        return "exchange asks one node"
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float) or not 0 < timeout_s <= MAX_TIMEOUT_S:
        return "bad timeout"
    if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= 3:
        return "bad retries"
    return node_op, args, names or [], float(timeout_s), retries


def _failure(exc: GpuConsoleError) -> dict[str, Any]:
    """A transport failure as the client rebuilds it (keeper_client.rebuilt_error)."""
    kind = "unreachable" if type(exc) is UnreachableError else "final" if isinstance(exc, UnreachableError) else "other"
    return {"error": str(exc), "exit": int(exc.exit_code), "kind": kind}


def _hellos(fleet: Fleet, names: list[str]) -> dict[str, Any]:
    """The agents' hellos of these nodes (who the user is there: `--mine` decides by it)."""
    out: dict[str, Any] = {}
    for name in names:
        conn = fleet.registry.held(name)
        if conn is not None and conn.hello:
            out[name] = conn.hello
    return out


def _take_lock(paths: KeeperPaths) -> int | None:
    """The keeper's lock (held for its lifetime, naming its pid); None: another keeper holds it."""
    fd = os.open(paths.lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


async def serve(config_path: Path, companion: Callable[[Path], int] | None = None) -> int:
    """Run the keeper of this config in the foreground until it is idle for `keeper_idle` or told
    to stop; returns at once (0) when another keeper of the same config is running. `companion`
    starts a process that lives as long as the keeper (the resident CLI) and returns the fd whose
    closing tells it the keeper ended."""
    paths = keeper_paths(config_path)
    lock_fd = _take_lock(paths)
    if lock_fd is None:
        return 0
    keeper = Keeper(config_path, paths)
    server: asyncio.AbstractServer | None = None
    lifeline: int | None = None
    try:
        keeper.load()
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(os.lstat(paths.socket).st_mode):
                os.unlink(paths.socket)  # a dead keeper's (we hold the lock: nobody listens there)
        old_umask = os.umask(0o177)  # the socket is 0600 from its first instant
        try:
            server = await asyncio.start_unix_server(keeper.handle, path=str(paths.socket), limit=MAX_LINE_BYTES)
        finally:
            os.umask(old_umask)
        os.chmod(paths.socket, 0o600)
        with contextlib.suppress(OSError):  # listening: the next failed start may be retried at once
            os.unlink(paths.directory / f"{paths.socket.stem}.start")
        if companion is not None:
            with contextlib.suppress(OSError):
                lifeline = companion(keeper.config_path)
        # SIGTERM (a logout, `kill`) ends it as `keeper stop` does: socket removed, connections closed.
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, keeper.stop.set)
        while not keeper.stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(1.0, keeper.idle_s / 4)):
                    await keeper.stop.wait()
            if keeper.active == 0 and time.monotonic() - keeper.last_used >= keeper.idle_s:
                break
        return 0
    finally:
        if server is not None:
            server.close()
            with contextlib.suppress(OSError):
                os.unlink(paths.socket)
        registries = [r for r in (keeper.registry, *keeper._retired) if r is not None]
        await asyncio.gather(*(r.aclose() for r in registries), return_exceptions=True)
        if lifeline is not None:
            os.close(lifeline)
        os.close(lock_fd)
