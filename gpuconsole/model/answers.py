"""The answers to the reservation ops (reserve, poll, reattach, renew, release) and to `hello`.

Built once from a checked reply (gpuconsole.model.replies), like model/jobs.py: `to_wire()` gives
back exactly the record the agent sent (tests/integration/test_agent_views.py holds the two
together), `to_json()` the object the client always printed (the checked reply plus its node).
Fields this client does not model (a newer node's, or `replayed` on a change answered from the
node's record of it) are kept read-only in `extra`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from gpuconsole.model.jobs import NO_EXTRA, extra_fields
from gpuconsole.model.pending import FIELDS as PENDING_FIELDS
from gpuconsole.model.pending import Pending

GRANT_FIELDS = ("id", "gpus", "owner", "expires_at", "token", "cuda_visible_devices", "priority")
TICKET_FIELDS = ("id", "state", "position", "owner", "gpus_requested")
RELEASED_FIELDS = ("id", "released", "was", "gpus")


@dataclass(frozen=True, slots=True)
class Grant:
    """GPUs held: a reserve or poll that was granted (`state` "granted"), or a renew (no `state`).
    `expires_at` is ISO 8601 UTC; `token` fences the grant (a stale one is refused)."""

    id: str
    node: str
    gpus: tuple[int, ...]
    owner: str
    expires_at: str
    token: int
    cuda_visible_devices: str
    priority: str = "normal"
    state: str | None = None
    extra: Mapping[str, Any] = field(default_factory=lambda: NO_EXTRA, compare=False, repr=False)

    @classmethod
    def from_agent(cls, node: str, data: Mapping[str, Any]) -> Grant:
        return cls(
            id=data["id"], node=node, gpus=tuple(data["gpus"]), owner=data["owner"], expires_at=data["expires_at"],
            token=int(data["token"]), cuda_visible_devices=data["cuda_visible_devices"],
            priority=data.get("priority", "normal"), state=data.get("state"),
            extra=extra_fields(data, (*GRANT_FIELDS, "state", "node")),
        )

    @property
    def replayed(self) -> bool:
        """The node answered from its record of this change (a retry of a request it had committed)."""
        return self.extra.get("replayed") is True

    def to_wire(self) -> dict[str, Any]:
        """The grant as the agent sent it (`state` only where the op says it)."""
        data: dict[str, Any] = {
            "id": self.id, "gpus": list(self.gpus), "owner": self.owner, "expires_at": self.expires_at,
            "token": self.token, "cuda_visible_devices": self.cuda_visible_devices, "priority": self.priority,
        }
        if self.state is not None:
            data["state"] = self.state
        return data

    def to_json(self) -> dict[str, Any]:
        """The checked reply and its node, as the client always handed a grant on."""
        state = {"state": self.state} if self.state is not None else {}
        wire = self.to_wire()
        wire.pop("state", None)
        return {**state, **self.extra, **wire, "node": self.node}


@dataclass(frozen=True, slots=True)
class Ticket:
    """A queued request: its place in the node's queue (1 = next). A reserve's answer also names its
    owner and the GPUs it wants; a poll's only where it stands."""

    id: str
    node: str
    state: str
    position: int
    owner: str | None = None
    gpus_requested: int | None = None
    extra: Mapping[str, Any] = field(default_factory=lambda: NO_EXTRA, compare=False, repr=False)
    why: Mapping[str, Any] = field(default_factory=lambda: NO_EXTRA, compare=False, repr=False)  # PENDING_FIELDS

    @classmethod
    def from_agent(cls, node: str, data: Mapping[str, Any]) -> Ticket:
        return cls(
            id=data["id"], node=node, state=data["state"], position=int(data["position"]),
            owner=data.get("owner"), gpus_requested=data.get("gpus_requested"),
            extra=extra_fields(data, (*TICKET_FIELDS, *PENDING_FIELDS, "node")),
            why=MappingProxyType({key: value for key, value in data.items() if key in PENDING_FIELDS}),
        )

    @property
    def replayed(self) -> bool:
        """The node answered from its record of this request (a retry of one it had queued)."""
        return self.extra.get("replayed") is True

    @property
    def pending(self) -> Pending | None:
        """Why it waits and until when, where the node said."""
        return Pending.of(self.why)

    def to_wire(self) -> dict[str, Any]:
        """The ticket as the agent sent it (owner and GPUs wanted only where the op says them)."""
        data: dict[str, Any] = {"id": self.id, "state": self.state, "position": self.position}
        if self.owner is not None:
            data["owner"] = self.owner
        if self.gpus_requested is not None:
            data["gpus_requested"] = self.gpus_requested
        return {**data, **self.why}


def grant_or_ticket(node: str, data: Mapping[str, Any]) -> Grant | Ticket:
    """A reserve, poll or reattach answer (checked: `state` is "granted" or "queued")."""
    return Grant.from_agent(node, data) if data["state"] == "granted" else Ticket.from_agent(node, data)


@dataclass(frozen=True, slots=True)
class Released:
    """A release's answer: the reservation (`was` "active", with the GPUs it freed) or the queued
    request (`was` "queued") that ended."""

    id: str
    node: str
    released: bool
    was: str | None
    gpus: tuple[int, ...]
    extra: Mapping[str, Any] = field(default_factory=lambda: NO_EXTRA, compare=False, repr=False)

    @classmethod
    def from_agent(cls, node: str, data: Mapping[str, Any]) -> Released:
        return cls(
            id=data["id"], node=node, released=data.get("released", True) is True, was=data.get("was"),
            gpus=tuple(data.get("gpus") or ()), extra=extra_fields(data, (*RELEASED_FIELDS, "node")),
        )

    def to_wire(self) -> dict[str, Any]:
        """The answer as the agent sent it."""
        return {"id": self.id, "released": self.released, "was": self.was, "gpus": list(self.gpus)}

    def to_json(self) -> dict[str, Any]:
        """One `release --json` entry of the CLI contract: fields a newer node added, the answer, its node."""
        return {**self.extra, **self.to_wire(), "node": self.node}


HELLO_FIELDS = ("agent_version", "user", "uid", "admin", "hostname", "boot_id", "python", "gpu_source",
                "gpu_count", "gpu_error", "state_dir", "state_dir_error", "pid", "mode", "service_error",
                "agent_digest")


@dataclass(frozen=True, slots=True)
class Hello:
    """Who the agent runs as and what it found when it started: user and uid (`admin` when it may
    act on others' reservations), the host, its GPU source and state dir (or why they failed)."""

    user: str
    agent_version: int | None = None
    uid: int | None = None
    admin: bool = False
    hostname: str | None = None
    boot_id: str | None = None
    python: str | None = None
    gpu_source: str | None = None
    gpu_count: int | None = None
    gpu_error: str | None = None
    state_dir: str | None = None
    state_dir_error: str | None = None
    pid: int | None = None
    mode: str | None = None
    service_error: str | None = None
    agent_digest: str | None = None
    extra: Mapping[str, Any] = field(default_factory=lambda: NO_EXTRA, compare=False, repr=False)

    @classmethod
    def from_agent(cls, data: Mapping[str, Any]) -> Hello:
        return cls(**{name: data[name] for name in HELLO_FIELDS if name in data},
                   extra=extra_fields(data, HELLO_FIELDS))

    def to_wire(self) -> dict[str, Any]:
        """The hello answer as the agent sent it."""
        return {name: getattr(self, name) for name in HELLO_FIELDS}
