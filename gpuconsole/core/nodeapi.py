"""What the one-shot commands need of a fleet: requests to nodes and who answered them. Both the
direct fleet (core/fleet.py, asyncssh) and the keeper's (core/keeper_fleet.py, a Unix socket)
provide it, so reserve, release, submit and the rest run the same code either way."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any, Protocol

from gpuconsole.config import Config, NodeConfig
from gpuconsole.errors import GpuConsoleError
from gpuconsole.model.answers import Hello


class NodeRequests(Protocol):
    """Requests to the nodes in play (see Fleet for the semantics of each)."""

    @property
    def config(self) -> Config: ...

    def node(self, name: str) -> NodeConfig: ...

    def has(self, name: str) -> bool: ...

    def hello(self, name: str) -> Hello | None: ...

    async def request(self, name: str, op: str, args: dict[str, Any] | None = None, *,
                      retries: int = 1, timeout_s: float = 30.0) -> dict[str, Any]: ...

    async def call_all(
        self, op: str, args: dict[str, Any] | None = None, names: Iterable[str] | None = None,
        *, timeout_s: float = 30.0,
    ) -> dict[str, dict[str, Any] | GpuConsoleError]: ...

    async def drop(self, name: str) -> None: ...

    def join(self, nodes: Iterable[NodeConfig]) -> list[NodeConfig]: ...


def new_req_id() -> str:
    """A fresh request id: a change's retries carry the same one, so the node replays a change it
    already committed instead of making it twice (128 random bits, as uuid4 without its import)."""
    return os.urandom(16).hex()
