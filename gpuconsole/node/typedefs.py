"""The shapes of the node's records, for the type checker only: the state file and its tables.

Never imported at run time (every use sits under `if TYPE_CHECKING:`), so it is not shipped:
the agent starts on every connection and `typing` alone would cost it milliseconds. Python 3.8
rules apply (no `X | Y` outside annotations, `Dict`/`List` in aliases). records.py checks the
same shapes at run time, on files any group member can write.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, TypedDict

Args = Dict[str, Any]  # a request's arguments: hostile input until each field is checked
Result = Dict[str, Any]  # a reply's result object
Warnings = List[str]


class Ident(TypedDict, total=False):
    """A process identity (procs.identity()); a job's supervisor also carries its uid."""

    pid: int
    start: int | None
    boot_id: str
    uid: int


Alive = Callable[[Optional[Ident]], bool]


class _LeaseBase(TypedDict):
    id: str
    uid: int
    owner: str
    gpus: list[int]
    token: int
    priority: int
    exp_bt: float
    exp_wall: float
    created_wall: float


class Lease(_LeaseBase, total=False):
    """A grant of GPUs (a reservation, or a job's GPUs when `job`), fenced by its token."""

    ttl_s: float
    preemptible: bool
    from_queue: bool
    job: bool
    preempted_by: str | None
    ends_by_bt: float  # a time-limited job's grant ends by then (its lease is renewed until then)
    queued_wall: float  # when the request it was granted from was queued
    idle_since_wall: float  # the watcher judged it idle since then (reservations.idle_note)
    idle_release_wall: float  # and will release it then (`watch --release-idle`)
    idle_by: str  # the user whose watcher said so
    backfill_for: str  # granted by backfill ahead of this queued request…
    backfill_until_bt: float  # …which it must not delay: its end may not move past this


class _TicketBase(TypedDict):
    id: str
    uid: int
    owner: str
    n: int
    ttl_s: float
    priority: int
    created_bt: float
    created_wall: float
    seq: int


class Ticket(_TicketBase, total=False):
    """A queued request for `n` GPUs; its waiter (`agent`) is a live process or the ticket goes."""

    agent: Ident | None
    preemptible: bool
    job: bool
    preempt: bool
    deadline_bt: float
    ends_after_s: float  # a job's time limit plus its kill grace: how long its grant can last at most


class DroppedTicket(Ticket):
    """A ticket whose waiter vanished, kept for REATTACH_GRACE_S so the waiter can come back."""

    dropped_bt: float


class PreemptNotice(TypedDict):
    by: str
    grace_s: float
    deadline_wall: float


class _JobBase(TypedDict):
    id: str
    uid: int
    owner: str
    n: int
    priority: int
    state: str
    created_wall: float


class ArrayRef(TypedDict):
    """Which `submit --array` a job belongs to, and its index there."""

    id: str
    index: int


class Job(_JobBase, total=False):
    """A batch job's record; its private files (spec, logs) live in the job's own directory."""

    name: str
    exit_code: int | None
    command: str
    started_wall: float | None
    ended_wall: float | None
    supervisor: Ident | None
    gpus: list[int]
    requeue: bool
    cancel_requested: bool
    preempt_others: bool
    grace_s: float
    preempt: PreemptNotice | None
    requeues: int
    created_bt: float
    seq: int
    orphaned: bool
    note: str
    array: ArrayRef
    time_limit_s: float | None


class Applied(TypedDict):
    """The recorded answer of a committed request, replayed to a retry with the same req_id."""

    bt: float
    res: Result


class QuarantineEntry(TypedDict):
    where: str
    reason: str
    record: str


class UsageEntry(TypedDict):
    """A user's decayed GPU-seconds as of `at_wall` (fairshare.py)."""

    gpu_s: float
    at_wall: float


class FairShare(TypedDict):
    """A user's fair-share factor (1: no recent use) and the decayed GPU-hours behind it."""

    factor: float
    gpu_h: float


class _StateBase(TypedDict):
    schema: int
    gen: int
    next_token: int
    boot_id: str
    leases: dict[str, Lease]
    queue: dict[str, Ticket]
    applied: dict[str, Applied]
    jobs: dict[str, Job]


class State(_StateBase, total=False):
    """The whole of state.json once read, checked (store.validate_state) and sanitized."""

    seq: int
    checksum: str
    dropped: dict[str, DroppedTicket]
    quarantine: list[QuarantineEntry]
    recoveries: int
    ledger: dict[str, Any]  # the ledger's head (node/ledger.py): checked where it is read
    usage: dict[str, UsageEntry]  # by owner (fairshare.py)
    fair_share: dict[str, FairShare]  # by owner, as the last transaction computed it
    fair_share_weight: float  # priority levels a factor of 1 adds; absent: fair share off
    gpu_health: dict[str, Any]  # by GPU index: withheld, baseline, last clear (health.py)
    unreserved: dict[str, Any]  # by GPU index: since_wall, users (occupancy.py)


class ProcessRecord(TypedDict):
    pid: int
    user: str | None
    command: str | None
    mem_mib: int | None


class _GpuBase(TypedDict):
    index: int
    uuid: str | None
    name: str | None
    util_pct: float | None
    mem_used_mib: int | None
    mem_total_mib: int | None
    temperature_c: float | None
    power_w: float | None
    processes: list[ProcessRecord]


class GpuSample(_GpuBase, total=False):
    """One GPU of a telemetry sample; the agent adds who holds it."""

    reservation: dict[str, Any] | None
    unreserved_use: bool
    health: dict[str, Any] | None  # health.py's readings, the unknown ones left out
    withheld: dict[str, Any] | None  # {reason, since}: no new grant takes it
