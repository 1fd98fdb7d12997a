"""One node: an asyncssh connection, the agent process on it, and request/reply over JSON lines."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import Callable
from typing import Any

import asyncssh

from gpuconsole.config import NodeConfig
from gpuconsole.errors import (
    AgentError,
    GpuConsoleError,
    UnreachableError,
)
from gpuconsole.model.replies import BadReplyError, check_message, check_snapshot, decode_line, interpret_reply
from gpuconsole.ssh.bundle import (
    NEED_PROGRAM_LINE,
    NEED_PROGRAM_ZLIB_LINE,
    agent_digest_line,
    agent_preamble,
    agent_program_deflated,
    remote_command,
)
from gpuconsole.ssh.hostkeys import HostKeyError, TrustSet, refusal, trust_set, witness_factory

__all__ = ["AgentError", "AuthFailedError", "HostKeyError", "NodeConnection", "classify_connect_error"]

SnapshotCallback = Callable[[str, dict[str, Any]], None]


class AuthFailedError(UnreachableError):
    """Authentication was refused: final, never retried."""


def classify_connect_error(node: str, exc: BaseException, identity_file: str | None = None) -> UnreachableError:
    """Map an asyncssh/OS failure to a one-line, final-or-retryable error."""
    if isinstance(exc, asyncssh.PermissionDenied):
        return AuthFailedError(f"{node}: authentication refused ({exc.reason or 'permission denied'})")
    if isinstance(exc, asyncssh.HostKeyNotVerifiable):
        return HostKeyError(
            f"{node}: host key not trusted ({exc.reason}); add the node's key to known_hosts"
        )
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return UnreachableError(f"{node}: connection timed out")
    if isinstance(exc, ConnectionRefusedError):
        return UnreachableError(f"{node}: connection refused")
    if isinstance(exc, asyncssh.Error):
        return UnreachableError(f"{node}: ssh: {exc.reason}")
    if isinstance(exc, OSError) and exc.filename and identity_file and exc.filename == identity_file:
        return AuthFailedError(f"{node}: identity file {exc.filename}: {exc.strerror} (fix: point identity_file at "
                               f"your private key, or create one: ssh-keygen -t ed25519 -f {exc.filename})")
    if isinstance(exc, OSError) and exc.filename:
        return UnreachableError(f"{node}: {exc.filename}: {exc.strerror or exc}")
    if isinstance(exc, OSError):
        return UnreachableError(f"{node}: {exc.strerror or exc}")
    return UnreachableError(f"{node}: {exc.__class__.__name__}: {exc}")


class NodeConnection:
    """A live agent on one node. Use `await NodeConnection.open(cfg)`; close with `close()`."""

    def __init__(self, cfg: NodeConfig) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.hello: dict[str, Any] = {}
        self._conn: asyncssh.SSHClientConnection | None = None
        self._proc: asyncssh.SSHClientProcess[bytes] | None = None
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self._reader: asyncio.Task[None] | None = None
        self._stderr_task: asyncio.Task[None] | None = None
        self._stderr_tail = b""
        self.on_snapshot: SnapshotCallback | None = None
        self.closed = asyncio.Event()
        self.failure: BadReplyError | None = None  # why the stream was dropped, when the agent broke protocol
        self.sent_bytes = 0  # written to the agent's stdin: the program is sent only to a node without it
        self._program_sent = False

    @classmethod
    async def open(
        cls,
        cfg: NodeConfig,
        *,
        stream_s: float | None = None,
        timeout_s: float | None = None,
        on_snapshot: SnapshotCallback | None = None,
    ) -> NodeConnection:
        """Connect, start the agent and say hello, all within ``timeout_s``."""
        node = cls(cfg)
        node.on_snapshot = on_snapshot
        limit_s = timeout_s if timeout_s is not None else cfg.connect_timeout_s + 10.0
        try:
            async with asyncio.timeout(limit_s):  # not wait_for: it can drop a cancel (see request)
                await node._start(stream_s)
        except BaseException as exc:
            await node.close()
            if isinstance(exc, GpuConsoleError):
                raise
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise classify_connect_error(cfg.name, exc, cfg.identity_file) from None
        return node

    def _connect_options(self, trust: TrustSet | None = None) -> dict[str, Any]:
        """asyncssh options; host keys are always checked against ``trust`` (never a None known_hosts)."""
        cfg = self.cfg
        trust = trust if trust is not None else trust_set(cfg)
        options: dict[str, Any] = {
            "connect_timeout": cfg.connect_timeout_s,
            "login_timeout": cfg.connect_timeout_s,
            "keepalive_interval": 5,
            "keepalive_count_max": 3,
        }
        if cfg.port is not None:
            options["port"] = cfg.port
        if cfg.user:
            options["username"] = cfg.user
        if cfg.identity_file:
            options["client_keys"] = [cfg.identity_file]
        options["known_hosts"] = trust.load(cfg.name)
        options["client_factory"] = witness_factory(trust)
        if cfg.ssh_config:
            options["config"] = [cfg.ssh_config]
        return options

    async def _start(self, stream_s: float | None) -> None:
        trust = trust_set(self.cfg)
        try:
            self._conn = await asyncssh.connect(self.cfg.host, **self._connect_options(trust))
        except asyncssh.HostKeyNotVerifiable as exc:
            raise refusal(self.name, trust, exc.reason) from None
        self._proc = await self._conn.create_process(remote_command(self.cfg.python), encoding=None)
        # The program's digest, and hello at once: a node with the program cached answers hello in
        # one round trip; one without it asks (NEED_PROGRAM_LINE) and keeps hello for the agent.
        self._write(agent_digest_line())
        self._reader = asyncio.create_task(self._read_loop(), name=f"agent-reader-{self.name}")
        self._stderr_task = asyncio.create_task(self._drain_stderr(), name=f"agent-stderr-{self.name}")
        self.hello = await self.request("hello", self.hello_args(stream_s))

    def hello_args(self, stream_s: float | None = None) -> dict[str, Any]:
        """The hello of this node's config (also the shell's: ssh/pty.py)."""
        hello: dict[str, Any] = {
            "node": self.cfg.name,
            "state_dir": self.cfg.state_dir,
            "simulate_gpus": self.cfg.simulate_gpus,
            "stream_s": stream_s,
        }
        if self.cfg.source == "slurm":  # a cluster's login node: Slurm answers (node/slurm.py)
            hello["kind"] = "slurm"
        if self.cfg.mode == "service":  # changes go through the node's sudo rule (see node/service.py)
            hello.update(mode="service", service_user=self.cfg.service_user,
                         service_agent=self.cfg.service_agent)
        return hello

    async def start_session(self, command: str, **options: Any) -> asyncssh.SSHClientProcess[bytes]:
        """Another session on this connection (same host key check and login): `gpuconsole shell`'s.
        `command` must be a constant of the code, never built from user or node text."""
        if self._conn is None or self.closed.is_set():
            raise self._agent_died_error()
        try:
            return await self._conn.create_process(command, encoding=None, **options)
        except (asyncssh.Error, OSError) as exc:
            raise classify_connect_error(self.name, exc) from None

    async def _drain_stderr(self) -> None:
        assert self._proc is not None
        with contextlib.suppress(Exception):
            while chunk := await self._proc.stderr.read(4096):
                self._stderr_tail = (self._stderr_tail + chunk)[-2000:]

    def _agent_died_error(self) -> UnreachableError:
        if self.failure is not None:
            return self.failure
        tail = self._stderr_tail.decode("utf-8", "replace").strip().splitlines()
        reason = tail[-1] if tail else "connection lost"
        if self.cfg.python in reason and ("not found" in reason or "No such file" in reason):
            reason = (f"{self.cfg.python} not found on the node (fix: set python in the node's [[nodes]] "
                      "entry to its Python 3.8+, e.g. /usr/bin/python3)")
        return UnreachableError(f"{self.name}: agent stopped: {reason}")

    async def _read_loop(self) -> None:
        assert self._proc is not None
        try:
            while line := await self._proc.stdout.readline():
                if line in (NEED_PROGRAM_LINE, NEED_PROGRAM_ZLIB_LINE) and not self._program_sent and not self.hello:
                    self._program_sent = True  # once: a node cannot make us send it again and again
                    self._write(agent_program_deflated() if line == NEED_PROGRAM_ZLIB_LINE else agent_preamble())
                    continue
                try:
                    message = decode_line(line)
                except ValueError:
                    continue  # not JSON (e.g. a login script's output): not a reply
                self._route(message)
        except BadReplyError as exc:
            self.failure = exc  # the stream cannot be trusted any more: end it, fail what waits
        except (asyncssh.Error, OSError):
            pass
        finally:
            await asyncio.sleep(0)  # let stderr drain a little so the error names the cause
            error = self._agent_died_error()
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(error)
            self._pending.clear()
            self.closed.set()

    def _route(self, message: object) -> None:
        """Hand one message to its waiting request, or a checked snapshot to `on_snapshot`."""
        message = check_message(self.name, message)
        if "event" in message:
            if message["event"] == "snapshot" and self.on_snapshot is not None:
                data = check_snapshot(self.name, message.get("data"))
                try:
                    self.on_snapshot(self.name, data)
                except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
                    # The snapshot passed the wire check but the model could not be built from it:
                    # still the node's bad reply, not a lost connection.
                    raise BadReplyError(f"{self.name}: bad reply from agent in telemetry: "
                                        f"{exc.__class__.__name__}: {exc}") from None
            return
        msg_id = message.get("id")
        if msg_id is None:
            return  # an answer to a request the agent could not read: nobody to hand it to
        future = self._pending.pop(msg_id, None)
        if future is not None and not future.done():
            future.set_result(message)

    async def request(
        self, op: str, args: dict[str, Any] | None = None, *, timeout_s: float = 30.0
    ) -> dict[str, Any]:
        """Send one request; return its result or raise AgentError / UnreachableError."""
        return interpret_reply(self.name, op, await self.exchange(op, args, timeout_s=timeout_s))

    async def exchange(self, op: str, args: dict[str, Any] | None = None, *, timeout_s: float = 30.0) -> Any:
        """Send one request and return the agent's reply line as it came (the keeper hands it on,
        so its client checks it exactly as this connection's `request` does); transport failures
        raise UnreachableError."""
        if self._proc is None or self.closed.is_set():
            raise self._agent_died_error()
        msg_id = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = future
        line = json.dumps({"id": msg_id, "op": op, "args": args or {}}) + "\n"
        try:
            self._write(line.encode())
            # asyncio.timeout, not wait_for: on 3.11 wait_for drops a Ctrl-C that lands as the reply
            # arrives, and the command then waits on as if never interrupted.
            async with asyncio.timeout(timeout_s):
                return await future
        except TimeoutError:
            self._pending.pop(msg_id, None)
            raise UnreachableError(f"{self.name}: no answer to {op} within {timeout_s:g}s") from None
        except (asyncssh.Error, OSError, BrokenPipeError):
            self._pending.pop(msg_id, None)
            raise self._agent_died_error() from None

    def _write(self, data: bytes) -> None:
        assert self._proc is not None
        self._proc.stdin.write(data)
        self.sent_bytes += len(data)

    async def close(self) -> None:
        """Stop the agent (stdin EOF) and close the connection."""
        if self._proc is not None:
            with contextlib.suppress(Exception):
                self._proc.stdin.write_eof()
        try:
            if self._conn is not None:
                self._conn.close()
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(2.0):
                        await self._conn.wait_closed()
            if self._reader is not None:
                done, pending = await asyncio.wait({self._reader}, timeout=1.0)
                for task in pending:
                    task.cancel()
                for task in done:
                    if not task.cancelled():
                        task.exception()  # retrieved: the reader has already failed what waited on it
        finally:
            self.closed.set()
