"""Batch jobs as their node reports them, and the answers to the job operations.

Built once from a checked reply (gpuconsole.model.replies); `to_wire()` gives back exactly the record
the agent sent (the round-trip test holds the two together), `to_json()` the CLI contract's object.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from gpuconsole.model.pending import FIELDS as PENDING_FIELDS
from gpuconsole.model.pending import Pending

NO_EXTRA: Mapping[str, Any] = MappingProxyType({})


def extra_fields(data: Mapping[str, Any], known: tuple[str, ...]) -> Mapping[str, Any]:
    """The fields of a record this client does not model (a newer node's): kept read-only, so the
    `--json` output passes them through as the contract always has."""
    rest = {key: value for key, value in data.items() if key not in known}
    return MappingProxyType(rest) if rest else NO_EXTRA


JOB_FIELDS = ("id", "name", "gpus", "gpus_requested", "owner", "priority", "state", "exit_code", "command",
              "created_at", "started_at", "ended_at", "position")
# Fields a newer agent sends after `position` (where it does): the runtime limit, why a queued job waits.
JOB_TAIL = ("time_limit_s", *PENDING_FIELDS)


@dataclass(frozen=True, slots=True)
class Job:
    """A batch job as its node reports it (times are ISO 8601 UTC strings; `name` as sent, which
    the node fills with the id when the submitter gave none)."""

    id: str
    node: str
    name: str | None
    gpus: tuple[int, ...]
    gpus_requested: int
    owner: str
    priority: str
    state: str
    exit_code: int | None
    command: str
    created_at: str | None
    started_at: str | None
    ended_at: str | None
    position: int | None = None
    extra: Mapping[str, Any] = field(default_factory=lambda: NO_EXTRA, compare=False, repr=False)
    tail: Mapping[str, Any] = field(default_factory=lambda: NO_EXTRA, compare=False, repr=False)  # JOB_TAIL's

    @classmethod
    def from_agent(cls, node: str, data: Mapping[str, Any]) -> Job:
        return cls(
            id=data["id"], node=node, name=data.get("name"), gpus=tuple(data.get("gpus") or ()),
            gpus_requested=int(data.get("gpus_requested") or 0), owner=data["owner"],
            priority=data.get("priority", "normal"), state=data["state"], exit_code=data.get("exit_code"),
            command=data.get("command", ""), created_at=data.get("created_at"),
            started_at=data.get("started_at"), ended_at=data.get("ended_at"), position=data.get("position"),
            extra=extra_fields(data, (*JOB_FIELDS, *JOB_TAIL, "node")),
            tail=MappingProxyType({key: value for key, value in data.items() if key in JOB_TAIL}),
        )

    @property
    def time_limit_s(self) -> float | None:
        """`submit --time`: its runtime limit (None: none, or a node that predates it)."""
        value = self.tail.get("time_limit_s")
        return float(value) if isinstance(value, int | float) else None

    @property
    def label(self) -> str:
        """What a table shows as the job's name: its name, else its id."""
        return self.name or self.id

    @property
    def pending(self) -> Pending | None:
        """Why a queued job waits and until when, where the node said."""
        return Pending.of(self.tail)

    @property
    def already_ended(self) -> bool:
        """A cancel's answer: the job had ended before the cancel arrived (nothing was done)."""
        return self.extra.get("already_ended") is True

    def to_wire(self) -> dict[str, Any]:
        """The record as the agent sent it (its modelled fields, in the agent's order)."""
        return {
            "id": self.id, "name": self.name, "gpus": list(self.gpus), "gpus_requested": self.gpus_requested,
            "owner": self.owner, "priority": self.priority, "state": self.state, "exit_code": self.exit_code,
            "command": self.command, "created_at": self.created_at, "started_at": self.started_at,
            "ended_at": self.ended_at, "position": self.position, **self.tail,
        }

    def to_json(self) -> dict[str, Any]:
        """The `jobs --json` (and `cancel --json`) object: fields a newer node added, the record, its node."""
        return {**self.extra, **self.to_wire(), "node": self.node}


@dataclass(frozen=True, slots=True)
class Submitted:
    """A submit's answer: the job's id, its node, and where it stands (queued at `position`)."""

    id: str
    node: str
    state: str
    position: int | None
    owner: str | None

    @classmethod
    def from_agent(cls, node: str, data: Mapping[str, Any]) -> Submitted:
        return cls(data["id"], node, data["state"], data.get("position"), data.get("owner"))

    def to_json(self) -> dict[str, Any]:
        """The `submit --json` object of the CLI contract."""
        return {"id": self.id, "node": self.node, "state": self.state, "position": self.position,
                "owner": self.owner}


@dataclass(frozen=True, slots=True)
class SubmittedArray:
    """A `submit --array`'s answer: the array's id, its node, and each job (with its index)."""

    id: str
    node: str
    owner: str | None
    jobs: tuple[tuple[int, Submitted], ...]  # (index, job), in index order

    @classmethod
    def from_agent(cls, node: str, data: Mapping[str, Any]) -> SubmittedArray:
        """Checked here (the agent's reply to this op has no entry in model.replies): a node's
        malformed answer is a ValueError for the caller to report, never a crash."""
        raw = data.get("jobs")
        if not isinstance(data.get("id"), str) or not isinstance(raw, list):
            raise ValueError("an array reply needs its id and jobs")
        owner = data.get("owner")
        jobs = []
        for job in raw:
            if not isinstance(job, dict) or not isinstance(job.get("id"), str) \
                    or not isinstance(job.get("index"), int) or not isinstance(job.get("state"), str):
                raise ValueError("an array job needs its id, index and state")
            position = job.get("position")
            jobs.append((job["index"], Submitted(job["id"], node, job["state"],
                                                 position if isinstance(position, int) else None,
                                                 owner if isinstance(owner, str) else None)))
        return cls(data["id"], node, owner if isinstance(owner, str) else None, tuple(jobs))

    def to_json(self) -> dict[str, Any]:
        """`submit --array --json`: submit's fields for the array as a whole (its id; the first job's
        place), plus `array` (id, indices) and `jobs` (each job's submit object with its index)."""
        first = self.jobs[0][1] if self.jobs else None
        return {"id": self.id, "node": self.node, "state": "queued",
                "position": first.position if first else None, "owner": self.owner,
                "array": {"id": self.id, "indices": [index for index, _ in self.jobs]},
                "jobs": [dict(job.to_json(), index=index) for index, job in self.jobs]}


@dataclass(frozen=True, slots=True)
class Preempted:
    """A preempt's answer: a running job being stopped, or a reservation revoked (`revoked`)."""

    id: str
    node: str
    revoked: bool
    gpus: tuple[int, ...] = ()

    @classmethod
    def from_agent(cls, node: str, data: Mapping[str, Any]) -> Preempted:
        return cls(data["id"], node, data.get("revoked") is True, tuple(data.get("gpus") or ()))


@dataclass(frozen=True, slots=True)
class LogChunk:
    """One read of a job's output stream from `offset` on: the text, where the next read starts,
    the job's state and whether it has ended."""

    data: str
    offset: int
    state: str
    ended: bool

    @classmethod
    def from_agent(cls, data: Mapping[str, Any]) -> LogChunk:
        return cls(data["data"], int(data["offset"]), data["state"], data["ended"] is True)
