"""Why a queued request waits and until when, as its node explains it (node/pending.py): the frozen
model, read from a checked reply's fields, and the one line the CLI and the console print of it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gpuconsole.durations import format_duration_s
from gpuconsole.format import when_h

OURS = frozenset({"resources", "priority", "quota"})  # node/pending.py's reasons; any other is a scheduler's
FIELDS = ("pending_reason", "ahead", "blockers", "eta", "eta_in_s", "quota", "fair_share")


@dataclass(frozen=True, slots=True)
class Ahead:
    """A request the node grants before this one."""

    id: str
    owner: str
    kind: str
    gpus_requested: int
    priority: str


@dataclass(frozen=True, slots=True)
class Blocker:
    """A grant whose GPUs this request waits for; `ends_in_s` None: it has no end the node can promise
    (a running job)."""

    id: str
    owner: str
    kind: str
    gpus: tuple[int, ...]
    priority: str
    ends_in_s: float | None
    idle_for_s: float | None = None  # the watcher judged it idle this long (None: not idle)
    idle_release_in_s: float | None = None  # and releases it then (`watch --release-idle`)


@dataclass(frozen=True, slots=True)
class Pending:
    """`reason`: "resources" (next in line, its GPUs are held), "priority" (others go first) or
    "quota" (its owner holds the most the node allows one user);
    `eta_in_s`: the latest start if no lease is renewed and nothing of higher priority arrives (None:
    unknown, it waits on a running job)."""

    reason: str
    ahead: tuple[Ahead, ...]
    blockers: tuple[Blocker, ...]
    eta: str | None
    eta_in_s: float | None
    quota_held: int | None = None  # reason "quota": the GPUs its owner holds on the node ...
    quota_cap: int | None = None  # ... and the most the node's policy allows one user
    fair_share: float | None = None  # its owner's fair-share factor (1: no recent use); None: off

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> Pending | None:
        """From a checked reply's fields (replies.PENDING); None when the node did not explain."""
        if not isinstance(data.get("pending_reason"), str):
            return None
        quota = data.get("quota") or {}
        return cls(
            reason=data["pending_reason"],
            ahead=tuple(Ahead(a["id"], a["owner"], a.get("kind", "reservation"), int(a["gpus_requested"]),
                              a.get("priority", "normal")) for a in data.get("ahead") or ()),
            blockers=tuple(Blocker(b["id"], b["owner"], b.get("kind", "reservation"), tuple(b["gpus"]),
                                   b.get("priority", "normal"), b.get("ends_in_s"), b.get("idle_for_s"),
                                   b.get("idle_release_in_s"))
                           for b in data.get("blockers") or ()),
            eta=data.get("eta"), eta_in_s=data.get("eta_in_s"),
            quota_held=quota.get("held"), quota_cap=quota.get("max_gpus_per_user"),
            fair_share=data.get("fair_share"))

    def describe(self, position: int | None, now_s: float) -> str:
        """'behind 2 requests: bob's j-x (4 GPUs, high); GPUs 0-3 held by alice r-7dj until 14:20 UTC
        (in 9m); starts by 14:20 UTC (in 9m)'. Plain text of node strings: escape it to print."""
        parts = []
        if self.reason not in OURS:  # a scheduler's own reason (Slurm's Resources, Priority, QOS…): its word
            return f"the scheduler says: {self.reason}" + (f"; starts by {when_h(now_s + self.eta_in_s, now_s)}"
                                                          if self.eta_in_s is not None else "")
        if self.reason == "quota":
            parts.append(f"held by the node's quota: its owner holds {_gpus(self.quota_held or 0)} there, "
                         f"at most {self.quota_cap} per user")
        if self.reason == "priority" and self.ahead:
            nearest = self.ahead[-1]
            count = (position - 1) if position else len(self.ahead)
            parts.append(f"behind {count} request{'s' if count != 1 else ''}: {nearest.owner}'s {nearest.id} "
                         f"({_gpus(nearest.gpus_requested)}, {nearest.priority})")
            if self.fair_share is not None:  # the requester's recent use orders the queue too
                parts.append(f"fair share {self.fair_share:.2f} (1: no recent use)")
        for blocker in self.blockers[-2:]:
            until = ("with the job" if blocker.ends_in_s is None
                     else f"until {when_h(now_s + blocker.ends_in_s, now_s)}")
            idle = ""
            if blocker.idle_for_s is not None:
                idle = f", idle {format_duration_s(blocker.idle_for_s)}"
                if blocker.idle_release_in_s is not None:
                    idle += (f", released at {when_h(now_s + blocker.idle_release_in_s, now_s)} by "
                             "the watcher's --release-idle unless used")
            parts.append(f"GPU{'s' if len(blocker.gpus) != 1 else ''} {_ranges(blocker.gpus)} held by "
                         f"{blocker.owner} {blocker.id} {until}{idle}")
        if len(self.blockers) > 2:
            parts.append(f"and {len(self.blockers) - 2} more")
        if self.reason == "quota":
            parts.append("it starts after enough of them end")
        else:
            parts.append("start time unknown (it waits on a running job)" if self.eta_in_s is None
                         else f"starts by {when_h(now_s + self.eta_in_s, now_s)}")
        return "; ".join(parts)


def _gpus(n: int) -> str:
    return f"{n} GPU{'s' if n != 1 else ''}"


def _ranges(gpus: tuple[int, ...]) -> str:
    """'0-3,6': GPU indices as ranges."""
    out: list[str] = []
    for gpu in sorted(set(gpus)):
        if out and "-" not in out[-1] and int(out[-1]) == gpu - 1:
            out[-1] = f"{out[-1]}-{gpu}"
        elif out and "-" in out[-1] and int(out[-1].split("-")[1]) == gpu - 1:
            out[-1] = f"{out[-1].split('-')[0]}-{gpu}"
        else:
            out.append(str(gpu))
    return ",".join(out)
