"""What a history says happened: leases, jobs and observations, indexed for the checker.

Every fact is kept with its uncertainty. An *evidence window* [s, e] means "this holder was live
at some instant between s and e" (an acknowledged reserve, a renew, a release of an active lease,
an observation that lists it, a job process's own heartbeat). Holds never come back once ended
(ids are never reused and the workload never requeues), so a holder was live throughout
[min e, max s] over its windows: its *definite* interval.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from tests.history.history import FAIL, INFO, OK, PENDING, JobRun, Op

EPS_S = 0.05  # margin for `expires_in_s` rounding (0.1 s) and reading the clock around a request
Window = tuple[float, float]


@dataclass
class Obs:
    """One node's answer to `reservations` or `jobs`, read at some instant in [s, e]."""

    op: int
    node: str
    what: str  # reservations | jobs
    s: float
    e: float
    items: dict[str, dict[str, Any]]  # by id
    precise: bool  # the agent's own listing (has expires_in_s and kind); CLI listings do not


@dataclass
class Lease:
    """A grant on one node, as far as the history knows it."""

    node: str
    id: str
    kind: str  # reservation | job
    gpus: tuple[int, ...] = ()
    tokens: set[int] = field(default_factory=set)
    windows: list[Window] = field(default_factory=list)
    exp_lbs: list[float] = field(default_factory=list)  # the expiry was at least this (monotonic)
    acked_by: Op | None = None  # the reserve that returned it
    sightings: list[Obs] = field(default_factory=list)


@dataclass
class Facts:
    """The history, indexed."""

    ops: list[Op]
    runs: list[JobRun]
    nodes: list[str]
    client_ops: list[Op] = field(default_factory=list)
    faults: list[Op] = field(default_factory=list)
    obs: list[Obs] = field(default_factory=list)
    obs_by_node: dict[tuple[str, str], list[Obs]] = field(default_factory=lambda: defaultdict(list))
    leases: dict[tuple[str, str], Lease] = field(default_factory=dict)
    # Ops that may end a grant, by target id: release, preempt (and cancel for jobs).
    enders: dict[str, list[Op]] = field(default_factory=lambda: defaultdict(list))
    renews: dict[str, list[Op]] = field(default_factory=lambda: defaultdict(list))
    submits_by_name: dict[str, Op] = field(default_factory=dict)
    job_node: dict[str, str] = field(default_factory=dict)  # job id -> node
    job_views: dict[tuple[str, str], list[tuple[Obs, dict[str, Any]]]] = field(
        default_factory=lambda: defaultdict(list))

    def lease(self, node: str, lease_id: str, kind: str | None = None) -> Lease:
        key = (node, lease_id)
        if key not in self.leases:
            self.leases[key] = Lease(node, lease_id, kind or ("job" if lease_id.startswith("j-") else "reservation"))
        return self.leases[key]


def settled(op: Op) -> str:
    """The op's outcome, with a pending one (the harness never saw it end) as indeterminate."""
    return INFO if op.outcome == PENDING else op.outcome


def end_s(op: Op) -> float:
    return op.end_s if op.end_s is not None else float("inf")


def _observations(op: Op, nodes: list[str]) -> list[Obs]:
    """Per-node observations in an ok listing op (the agent's own, or a CLI `--json` listing)."""
    result = op.result if isinstance(op.result, dict) else {}
    assert op.end_s is not None
    key = op.f  # reservations | jobs
    if op.node is not None:
        items = {item["id"]: item for item in result.get(key) or []}
        return [Obs(op.index, op.node, key, op.start_s, op.end_s, items, precise=True)]
    failed = {e.get("node") for e in result.get("errors") or []}
    found: list[Obs] = []
    for node in nodes:
        if node in failed:
            continue
        items = {item["id"]: item for item in result.get(key) or [] if item.get("node") == node}
        found.append(Obs(op.index, node, key, op.start_s, op.end_s, items, precise=False))
    return found


def _release_results(op: Op) -> list[dict[str, Any]]:
    result = op.result if isinstance(op.result, dict) else {}
    if "released" in result and isinstance(result["released"], list):
        return [r for r in result["released"] if isinstance(r, dict)]
    if result.get("id") and (result.get("released") or result.get("revoked")):
        return [result]
    return []


def index(ops: list[Op], runs: list[JobRun], nodes: list[str]) -> Facts:
    """Sort the history into leases, jobs, observations and faults."""
    facts = Facts(ops, runs, nodes)
    for op in ops:
        if op.process == "nemesis":
            facts.faults.append(op)
            continue
        if op.f in ("reservations", "jobs"):
            if op.outcome == OK:
                for obs in _observations(op, nodes):
                    facts.obs.append(obs)
                    facts.obs_by_node[(obs.node, obs.what)].append(obs)
            if op.process != "observer":
                facts.client_ops.append(op)
            continue
        facts.client_ops.append(op)
        target = op.args.get("id")
        if op.f in ("release", "preempt", "cancel") and target:
            facts.enders[str(target)].append(op)
        if op.f == "renew" and target:
            facts.renews[str(target)].append(op)
        if op.f == "submit":
            facts.submits_by_name[str(op.args.get("name"))] = op
    for obs_list in facts.obs_by_node.values():
        obs_list.sort(key=lambda o: o.s)
    _collect_leases(facts)
    return facts


def _collect_leases(facts: Facts) -> None:
    for op in facts.client_ops:
        result = op.result if isinstance(op.result, dict) else {}
        if op.outcome != OK or op.end_s is None:
            continue
        if op.f == "reserve" and result.get("id") and result.get("node"):
            lease = facts.lease(result["node"], result["id"], "reservation")
            lease.acked_by = op
            lease.gpus = tuple(result.get("gpus") or ())
            if result.get("token") is not None:
                lease.tokens.add(int(result["token"]))
            lease.windows.append((op.start_s, op.end_s))
            lease.exp_lbs.append(op.start_s + float(op.args["ttl_s"]) - EPS_S)
        elif op.f == "renew" and result.get("id") and result.get("node"):
            lease = facts.lease(result["node"], result["id"])
            if result.get("token") is not None:
                lease.tokens.add(int(result["token"]))
            lease.windows.append((op.start_s, op.end_s))
            lease.exp_lbs.append(op.start_s + float(op.args["ttl_s"]) - EPS_S)
        elif op.f in ("release", "preempt"):
            for item in _release_results(op):
                if item.get("was", "active") == "active" and item.get("node"):
                    facts.lease(item["node"], item["id"]).windows.append((op.start_s, op.end_s))
        elif op.f == "submit" and result.get("id") and result.get("node"):
            facts.job_node[result["id"]] = result["node"]
    for obs in facts.obs:
        for item_id, item in obs.items.items():
            if obs.what == "jobs":
                facts.job_node.setdefault(item_id, obs.node)
                facts.job_views[(obs.node, item_id)].append((obs, item))
                continue
            lease = facts.lease(obs.node, item_id, item.get("kind"))
            lease.sightings.append(obs)
            lease.windows.append((obs.s, obs.e))
            lease.gpus = lease.gpus or tuple(item.get("gpus") or ())
            if item.get("token") is not None:
                lease.tokens.add(int(item["token"]))
            if obs.precise and item.get("expires_in_s") is not None:
                lease.exp_lbs.append(obs.s + float(item["expires_in_s"]) - EPS_S)


def death_lb(facts: Facts, lease: Lease) -> float:
    """The earliest instant a reservation may have ended, given what succeeded or may have.

    Ended by a release or preempt (ok or indeterminate: a failed one must not have taken effect)
    no earlier than its invocation, or by expiry no earlier than its largest known lower bound;
    and never before a window in which it was seen live.
    """
    latest_seen = max((s for s, _ in lease.windows), default=float("-inf"))
    first_end = min((op.start_s for op in facts.enders.get(lease.id, []) if settled(op) in (OK, INFO)),
                    default=float("inf"))
    expiry = max(lease.exp_lbs, default=float("-inf"))
    return max(latest_seen, min(first_end, expiry))


def failed_enders_before(facts: Facts, lease_id: str, t: float) -> list[Op]:
    return [op for op in facts.enders.get(lease_id, []) if settled(op) == FAIL and op.start_s < t]
