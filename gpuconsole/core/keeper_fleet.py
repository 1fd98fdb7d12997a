"""The fleet's one-shot requests through the user's keeper (core/keeper.py), for commands that
would otherwise open a connection per node: reserve, release, renew, reservations, submit, jobs,
cancel, preempt, logs.

Each request falls back to a direct connection (core/fleet.py, imported only then) when the keeper
fails, dies mid-request or declines, resending the same arguments: a change carries its req_id, so
a change the keeper did commit is replayed by the node, never made twice. After one failure every
later request of the command goes direct.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gpuconsole.config import Config, NodeConfig
from gpuconsole.core import keeper_client as kc
from gpuconsole.core.rundir import peer_uid
from gpuconsole.errors import GpuConsoleError
from gpuconsole.model.answers import Hello
from gpuconsole.model.replies import interpret_all, interpret_reply

if TYPE_CHECKING:
    from gpuconsole.core.fleet import Fleet

KEEPER_SLACK_S = 10.0  # the keeper's own work on top of a node's connect and request timeouts


class KeeperFleet:
    """NodeRequests (core/nodeapi.py) served by the keeper of `config`, or directly once it fails."""

    def __init__(self, config: Config, config_text: bytes) -> None:
        self._config = config
        self._text = config_text
        self._paths = kc.keeper_paths(config.path)
        self._hellos: dict[str, dict[str, Any]] = {}
        self._direct: Fleet | None = None
        self.fell_back: str | None = None  # why the keeper was left (None: it answered everything)
        # What a request may wait for the keeper: a node's connect (and a reconnect) before its reply.
        self._slack_s = 2 * max((n.connect_timeout_s for n in config.members()), default=10.0) + KEEPER_SLACK_S

    async def __aenter__(self) -> KeeperFleet:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def config(self) -> Config:
        return self._config

    @property
    def live_instances(self) -> frozenset[str] | None:
        return None  # no cloud nodes: a config with [cloud.aws] never uses the keeper

    @property
    def nodes(self) -> tuple[NodeConfig, ...]:
        return self._config.members()

    def node(self, name: str) -> NodeConfig:
        return self._config.node(name)

    def has(self, name: str) -> bool:
        return any(n.name == name for n in self._config.members())

    def hello(self, name: str) -> Hello | None:
        if self._direct is not None and (hello := self._direct.hello(name)) is not None:
            return hello
        known = self._hellos.get(name)
        return Hello.from_agent(known) if known else None

    async def request(self, name: str, op: str, args: dict[str, Any] | None = None, *,
                      retries: int = 1, timeout_s: float = 30.0) -> dict[str, Any]:
        self.node(name)  # an unknown name: NotFoundError, as on the direct path
        if self._direct is None:
            request = kc.exchange_request(self._config.path, self._text, op, args, [name], timeout_s, retries)
            replies = await self._ask(request, timeout_s * (retries + 1))
            if replies is not None and name in replies:
                reply = replies[name]
                if isinstance(reply, GpuConsoleError):
                    raise reply
                return interpret_reply(name, op, reply)
        direct = await self._direct_fleet()
        return await direct.request(name, op, args, retries=retries, timeout_s=timeout_s)

    async def call_all(
        self, op: str, args: dict[str, Any] | None = None, names: Iterable[str] | None = None,
        *, timeout_s: float = 30.0,
    ) -> dict[str, dict[str, Any] | GpuConsoleError]:
        wanted = [n.name for n in (self._config.members() if names is None else [self.node(n) for n in names])]
        if self._direct is None:
            request = kc.exchange_request(self._config.path, self._text, op, args, wanted, timeout_s)
            replies = await self._ask(request, timeout_s)
            if replies is not None and set(replies) == set(wanted):
                checked = interpret_all(op, replies)
                return {n: checked[n] for n in wanted}
        direct = await self._direct_fleet()
        return await direct.call_all(op, args, wanted, timeout_s=timeout_s)

    def join(self, nodes: Iterable[NodeConfig]) -> list[NodeConfig]:
        """Never called: only a config with [cloud.aws] bursts, and such a config never uses the keeper."""
        raise GpuConsoleError("a burst's new node cannot join through the keeper")

    async def drop(self, name: str) -> None:
        if self._direct is not None:
            await self._direct.drop(name)

    async def close(self) -> None:
        if self._direct is not None:
            await self._direct.close()

    async def _direct_fleet(self) -> Fleet:
        if self._direct is None:
            from gpuconsole.core.fleet import Fleet  # asyncssh: only when the keeper could not serve

            self._direct = Fleet(self._config)
        return self._direct

    async def _ask(self, request: dict[str, Any], node_timeout_s: float) -> dict[str, Any] | None:
        """The keeper's per-node replies (reply lines or rebuilt transport errors); None: it could
        not serve (the caller goes direct from now on)."""
        try:
            async with asyncio.timeout(node_timeout_s + self._slack_s):
                answer = kc.answer_of(await _exchange_line(self._paths.socket, kc.request_line(request)))
            replies, hellos = kc.replies_of(answer)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            self.fell_back = f"no keeper: {exc.strerror or exc}"
            with contextlib.suppress(OSError, kc.KeeperUnavailableError):
                kc.start(self._config.path)  # for the next command: this one goes direct
            return None
        except (kc.KeeperUnavailableError, OSError, TimeoutError, ValueError, asyncio.LimitOverrunError) as exc:
            self.fell_back = str(exc) or type(exc).__name__
            return None
        self._hellos.update(hellos)
        return replies


async def _exchange_line(path: Path, line: bytes) -> bytes:
    """One request line to the keeper's socket and its one answer line (peer uid checked first)."""
    reader, writer = await asyncio.open_unix_connection(str(path), limit=kc.MAX_LINE_BYTES)
    try:
        sock: socket.socket | None = writer.get_extra_info("socket")
        if sock is None or peer_uid(sock) != os.getuid():
            raise kc.KeeperUnavailableError("the socket's listener is not ours")
        writer.write(line)
        await writer.drain()
        try:
            return await reader.readuntil(b"\n")
        except asyncio.IncompleteReadError as exc:
            return exc.partial  # no newline: answer_of says the keeper hung up
    finally:
        writer.close()
