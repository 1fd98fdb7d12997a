"""Frozen snapshots of nodes, GPUs, processes and reservations (None = metric not available)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from types import MappingProxyType
from typing import Any

from gpuconsole.errors import GpuConsoleError
from gpuconsole.model.jobs import NO_EXTRA, Job
from gpuconsole.model.pending import FIELDS as PENDING_FIELDS
from gpuconsole.model.pending import Pending

# Agent data reaches these builders checked (gpuconsole.model.replies); the guards below only keep a
# measurement that is not a finite number from ever becoming NaN/inf in the model.


def _opt_float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _opt_int(value: Any) -> int | None:
    number = _opt_float(value)
    return None if number is None else int(value if isinstance(value, int) else number)


@dataclass(frozen=True, slots=True)
class GpuProcess:
    """A process using a GPU, as the node's NVML (or simulator) reports it."""

    pid: int
    user: str | None
    command: str | None
    mem_mib: int | None

    @classmethod
    def from_agent(cls, data: dict[str, Any]) -> GpuProcess:
        return cls(int(data["pid"]), data.get("user"), data.get("command"), _opt_int(data.get("mem_mib")))

    def to_wire(self) -> dict[str, Any]:
        """The process as the agent sent it."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class ReservationRef:
    """The reservation covering a GPU, as shown next to it."""

    id: str
    owner: str
    expires_at: str
    priority: str = "normal"

    def to_wire(self) -> dict[str, Any]:
        """The reference as the agent sent it."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class GpuSample:
    """One GPU at one instant."""

    index: int
    uuid: str | None
    name: str | None
    util_pct: float | None
    mem_used_mib: int | None
    mem_total_mib: int | None
    temperature_c: float | None
    power_w: float | None
    reservation: ReservationRef | None = None
    processes: tuple[GpuProcess, ...] = ()
    # Why no new grant may take it (a fresh XID, ECC error…) and since when; None: it may be granted.
    withheld_reason: str | None = None
    withheld_since: str | None = None
    health: Mapping[str, Any] | None = field(default=None, compare=False)  # the node's readings

    @property
    def unreserved_use(self) -> bool:
        """Processes on a GPU that no reservation covers."""
        return self.reservation is None and bool(self.processes)

    @property
    def is_free(self) -> bool:
        return self.reservation is None and not self.processes and self.withheld_reason is None

    @classmethod
    def from_agent(cls, data: dict[str, Any]) -> GpuSample:
        res = data.get("reservation")
        return cls(
            index=int(data["index"]),
            uuid=data.get("uuid"),
            name=data.get("name"),
            util_pct=_opt_float(data.get("util_pct")),
            mem_used_mib=_opt_int(data.get("mem_used_mib")),
            mem_total_mib=_opt_int(data.get("mem_total_mib")),
            temperature_c=_opt_float(data.get("temperature_c")),
            power_w=_opt_float(data.get("power_w")),
            reservation=ReservationRef(
                res["id"], res["owner"], res["expires_at"], res.get("priority", "normal")
            ) if res else None,
            processes=tuple(GpuProcess.from_agent(p) for p in data.get("processes") or ()),
            withheld_reason=(data.get("withheld") or {}).get("reason"),
            withheld_since=(data.get("withheld") or {}).get("since"),
            health=MappingProxyType(dict(data["health"])) if data.get("health") else None,
        )

    def withheld_json(self) -> dict[str, Any] | None:
        return None if self.withheld_reason is None else {"reason": self.withheld_reason, "since": self.withheld_since}

    def to_wire(self) -> dict[str, Any]:
        """The GPU as the agent sent it."""
        return {
            "index": self.index, "uuid": self.uuid, "name": self.name, "util_pct": self.util_pct,
            "mem_used_mib": self.mem_used_mib, "mem_total_mib": self.mem_total_mib,
            "temperature_c": self.temperature_c, "power_w": self.power_w,
            "processes": [p.to_wire() for p in self.processes],
            "reservation": None if self.reservation is None else self.reservation.to_wire(),
            "unreserved_use": self.unreserved_use,
            "health": None if self.health is None else dict(self.health), "withheld": self.withheld_json(),
        }


@dataclass(frozen=True, slots=True)
class Reservation:
    """An active reservation on a node."""

    id: str
    node: str
    gpus: tuple[int, ...]
    owner: str
    priority: str
    state: str
    created_at: str
    expires_at: str
    preemptible: bool = False
    token: int | None = None  # the fencing token: only the holder's own reservations carry it
    uid: int | None = None
    kind: str = "reservation"  # or "job": the GPUs a running job holds
    expires_in_s: float | None = None  # on the node's clock when it answered
    withheld_gpus: tuple[int, ...] = ()  # its GPUs the node withholds for their health (node/health.py)

    @classmethod
    def from_agent(cls, node: str, data: dict[str, Any]) -> Reservation:
        return cls(
            id=data["id"], node=node, gpus=tuple(data["gpus"]), owner=data["owner"],
            priority=data.get("priority", "normal"), state=data.get("state", "active"),
            created_at=data["created_at"], expires_at=data["expires_at"],
            preemptible=bool(data.get("preemptible")), token=data.get("token"), uid=data.get("uid"),
            kind=data.get("kind", "reservation"), expires_in_s=_opt_float(data.get("expires_in_s")),
            withheld_gpus=tuple(data.get("withheld_gpus") or ()),
        )

    def to_wire(self) -> dict[str, Any]:
        """The reservation as the agent sent it."""
        data: dict[str, Any] = {
            "id": self.id, "gpus": list(self.gpus), "owner": self.owner, "uid": self.uid,
            "priority": self.priority, "preemptible": self.preemptible, "state": self.state, "kind": self.kind,
            "created_at": self.created_at, "expires_at": self.expires_at, "expires_in_s": self.expires_in_s,
        }
        if self.token is not None:
            data["token"] = self.token
        if self.withheld_gpus:
            data["withheld_gpus"] = list(self.withheld_gpus)
        return data

    def to_json(self) -> dict[str, Any]:
        """The `reservations --json` object of the CLI contract."""
        data: dict[str, Any] = {
            "id": self.id, "node": self.node, "gpus": list(self.gpus), "owner": self.owner,
            "priority": self.priority, "state": self.state, "created_at": self.created_at,
            "expires_at": self.expires_at, "preemptible": self.preemptible,
            "cuda_visible_devices": ",".join(map(str, self.gpus)), "kind": self.kind,
        }
        if self.token is not None:
            data["token"] = self.token
        if self.withheld_gpus:
            data["withheld_gpus"] = list(self.withheld_gpus)
        return data


@dataclass(frozen=True, slots=True)
class QueuedRequest:
    """A request waiting in a node's queue."""

    id: str
    node: str
    gpus_requested: int
    owner: str
    priority: str
    position: int
    created_at: str
    uid: int | None = None
    kind: str = "reservation"  # or "job": a submitted job waiting for GPUs
    pending: Pending | None = None  # why it waits and until when, where the node said
    pending_wire: Mapping[str, Any] = field(default_factory=lambda: NO_EXTRA, compare=False, repr=False)

    @classmethod
    def from_agent(cls, node: str, data: dict[str, Any]) -> QueuedRequest:
        return cls(
            id=data["id"], node=node, gpus_requested=int(data["gpus_requested"]),
            owner=data["owner"], priority=data.get("priority", "normal"),
            position=int(data["position"]), created_at=data["created_at"], uid=data.get("uid"),
            kind=data.get("kind", "reservation"), pending=Pending.of(data),
            pending_wire=MappingProxyType({k: data[k] for k in PENDING_FIELDS if k in data}),
        )

    def to_wire(self) -> dict[str, Any]:
        """The queued request as the agent sent it."""
        return {
            "id": self.id, "gpus_requested": self.gpus_requested, "owner": self.owner, "uid": self.uid,
            "priority": self.priority, "position": self.position, "created_at": self.created_at,
            "kind": self.kind, **self.pending_wire,
        }

    def to_json(self) -> dict[str, Any]:
        """The `reservations --json` queue object of the CLI contract."""
        return {
            "id": self.id, "node": self.node, "gpus_requested": self.gpus_requested, "owner": self.owner,
            "priority": self.priority, "position": self.position, "created_at": self.created_at,
            "kind": self.kind, **self.pending_wire,
        }


@dataclass(frozen=True, slots=True)
class SlurmNode:
    """What Slurm says of one of its nodes (model/slurm.py builds it)."""

    cluster: str
    node: str
    state: str
    reason: str
    partitions: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"cluster": self.cluster, "node": self.node, "state": self.state, "reason": self.reason or None,
                "partitions": list(self.partitions)}


@dataclass(frozen=True, slots=True)
class NodeSnapshot:
    """A node as last seen: host I/O, GPUs, reservations and queue, or why it is unreachable."""

    name: str
    source: str = "onprem"
    reachable: bool = False
    error: str | None = None
    taken_at: float | None = None  # Unix time of the node's sample
    cpu_pct: float | None = None
    cpu_count: int | None = None
    load1: float | None = None
    mem_used_bytes: int | None = None
    mem_total_bytes: int | None = None
    disk_read_bps: int | None = None
    disk_write_bps: int | None = None
    net_rx_bps: int | None = None
    net_tx_bps: int | None = None
    gpu_source: str | None = None
    gpus: tuple[GpuSample, ...] = ()
    reservations: tuple[Reservation, ...] = ()
    queue: tuple[QueuedRequest, ...] = ()
    jobs: tuple[Job, ...] = ()
    state_error: str | None = None
    warnings: tuple[str, ...] = field(default_factory=tuple)
    slurm: SlurmNode | None = None  # a Slurm cluster's node (model/slurm.py): what Slurm says of it

    @classmethod
    def from_agent(cls, name: str, data: dict[str, Any], source: str = "onprem") -> NodeSnapshot:
        return cls(
            name=name, source=source, reachable=True, error=None,
            taken_at=_opt_float(data.get("t_wall")),
            cpu_pct=_opt_float(data.get("cpu_pct")), cpu_count=_opt_int(data.get("cpu_count")),
            load1=_opt_float(data.get("load1")),
            mem_used_bytes=_opt_int(data.get("mem_used_bytes")),
            mem_total_bytes=_opt_int(data.get("mem_total_bytes")),
            disk_read_bps=_opt_int(data.get("disk_read_bps")),
            disk_write_bps=_opt_int(data.get("disk_write_bps")),
            net_rx_bps=_opt_int(data.get("net_rx_bps")), net_tx_bps=_opt_int(data.get("net_tx_bps")),
            gpu_source=data.get("gpu_source"),
            gpus=tuple(GpuSample.from_agent(g) for g in data.get("gpus") or ()),
            reservations=tuple(Reservation.from_agent(name, r) for r in data.get("reservations") or ()),
            queue=tuple(QueuedRequest.from_agent(name, q) for q in data.get("queue") or ()),
            jobs=tuple(Job.from_agent(name, j) for j in data.get("jobs") or ()),
            state_error=data.get("state_error"),
            warnings=tuple(data.get("warnings") or ()),
        )

    @classmethod
    def unreachable(cls, name: str, error: str, source: str = "onprem") -> NodeSnapshot:
        return cls(name=name, source=source, reachable=False, error=error)

    @classmethod
    def from_result(cls, name: str, result: object, source: str = "onprem") -> NodeSnapshot:
        """A node's `snapshot` answer as a fleet call returns it: the reply, its error, or None when
        the node was not contacted (the direct path and the keeper's answer alike)."""
        if isinstance(result, GpuConsoleError):
            return cls.unreachable(name, str(result), source)
        if not isinstance(result, dict):
            return cls.unreachable(name, "not contacted", source)
        return cls.from_agent(name, result, source)

    @property
    def gpus_free(self) -> int:
        return sum(1 for g in self.gpus if g.is_free)

    def to_wire(self) -> dict[str, Any]:
        """The snapshot of a reachable node as its agent sent it."""
        return {
            "t_wall": self.taken_at, "cpu_pct": self.cpu_pct, "cpu_count": self.cpu_count, "load1": self.load1,
            "mem_used_bytes": self.mem_used_bytes, "mem_total_bytes": self.mem_total_bytes,
            "disk_read_bps": self.disk_read_bps, "disk_write_bps": self.disk_write_bps,
            "net_rx_bps": self.net_rx_bps, "net_tx_bps": self.net_tx_bps, "gpu_source": self.gpu_source,
            "gpus": [g.to_wire() for g in self.gpus],
            "reservations": [r.to_wire() for r in self.reservations],
            "queue": [q.to_wire() for q in self.queue],
            "jobs": [j.to_wire() for j in self.jobs],
            "state_error": self.state_error, "warnings": list(self.warnings),
        }

    def to_json(self) -> dict[str, Any]:
        """The `status --json` node object of the CLI contract (fields only ever added)."""
        return {
            "name": self.name, "source": self.source, "reachable": self.reachable,
            "error": self.error, "cpu_pct": self.cpu_pct, "cpu_count": self.cpu_count,
            "load1": self.load1,
            "mem_used_bytes": self.mem_used_bytes, "mem_total_bytes": self.mem_total_bytes,
            "disk_read_bps": self.disk_read_bps, "disk_write_bps": self.disk_write_bps,
            "net_rx_bps": self.net_rx_bps, "net_tx_bps": self.net_tx_bps,
            "gpu_source": self.gpu_source, "state_error": self.state_error,
            "warnings": list(self.warnings),
            "cluster": self.slurm.cluster if self.slurm is not None else None,
            "slurm": self.slurm.to_json() if self.slurm is not None else None,
            "gpus": [
                {
                    "index": g.index, "uuid": g.uuid, "name": g.name, "util_pct": g.util_pct,
                    "mem_used_mib": g.mem_used_mib, "mem_total_mib": g.mem_total_mib,
                    "temperature_c": g.temperature_c, "power_w": g.power_w,
                    "reservation": None if g.reservation is None else {
                        "id": g.reservation.id, "owner": g.reservation.owner,
                        "expires_at": g.reservation.expires_at,
                    },
                    "unreserved_use": g.unreserved_use,
                    "processes": [asdict(p) for p in g.processes],
                    "withheld": g.withheld_json(),
                    "health": None if g.health is None else dict(g.health),
                }
                for g in self.gpus
            ],
        }
