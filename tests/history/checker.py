"""The history checker: (a) no GPU held by two, (b) every acknowledged operation visible until it
ends, (c) no operation reported as failed took effect, (d) fencing tokens only grow per node.

Indeterminate operations (killed, timed out, connection lost) may or may not have taken effect;
every rule gives them the benefit of the doubt, so a violation is always a certain one.
"""

from __future__ import annotations

import bisect
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from tests.history.facts import EPS_S, Facts, Lease, Obs, death_lb, end_s, failed_enders_before, index, settled
from tests.history.history import FAIL, INFO, OK, JobRun, Op
from tests.history.holds import double_holds

KEEP_FINISHED = 200  # the node keeps this many ended jobs (node/jobs.py); older ones may vanish
ENDED = ("succeeded", "failed", "cancelled", "preempted", "lost")


@dataclass
class Violation:
    rule: str  # double_hold, lost_ack, false_not_found, failed_took_effect, token, phantom, duplicate
    message: str
    op: int | None = None  # the operation blamed (a failed one that took effect), when there is one


@dataclass
class Report:
    """The figures of one history and what it broke."""

    ops: dict[str, dict[str, int]]  # client op kind -> outcome -> count
    clients: list[str]
    faults: dict[str, int]
    observations: int
    job_runs: int
    duration_s: float
    violations: list[Violation] = field(default_factory=list)

    @property
    def total_ops(self) -> int:
        return sum(sum(by.values()) for by in self.ops.values())

    def by_rule(self) -> dict[str, int]:
        return dict(Counter(v.rule for v in self.violations))

    def to_json(self) -> dict[str, Any]:
        return {"operations": self.total_ops, "ops": self.ops, "clients": self.clients, "faults": self.faults,
                "observations": self.observations, "job_runs": self.job_runs,
                "duration_s": round(self.duration_s, 1), "violations": len(self.violations),
                "violations_by_rule": self.by_rule(), "violation_examples": [
                    f"{v.rule}: {v.message}" for v in self.violations[:20]]}

    def summary(self) -> str:
        lines = [f"history: {self.total_ops} operations by {len(self.clients)} clients in {self.duration_s:.0f} s, "
                 f"{self.observations} observations, {self.job_runs} job runs"]
        lines += [f"  {kind:13s} " + ", ".join(f"{k} {v}" for k, v in sorted(self.ops[kind].items()))
                  for kind in sorted(self.ops)]
        faults = ", ".join(f"{k} {v}" for k, v in sorted(self.faults.items())) or "none"
        lines.append(f"  faults: {faults}")
        lines.append(f"  violations: {len(self.violations)} {self.by_rule() or ''}".rstrip())
        lines += [f"    {v.rule}: {v.message}" for v in self.violations[:20]]
        return "\n".join(lines)


def check(ops: list[Op], runs: list[JobRun], nodes: list[str]) -> Report:
    """Judge a whole history."""
    facts = index(ops, runs, nodes)
    violations = [Violation("double_hold", m) for m in double_holds(facts)]
    violations += _visibility(facts)
    violations += _failed_took_effect(facts)
    violations += _tokens(facts)
    violations += _duplicate_jobs(facts)
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for op in facts.client_ops:
        label = op.f + ("_wait" if op.f == "reserve" and op.args.get("wait") else "")
        outcome = settled(op)
        detail = {INFO: op.info or "unknown", FAIL: op.exit_code}.get(outcome)  # e.g. fail:3 is "no capacity"
        counts[label][f"{outcome}:{detail}" if detail is not None else outcome] += 1
    times = [op.start_s for op in ops] + [op.end_s for op in ops if op.end_s is not None]
    return Report(
        ops={k: dict(v) for k, v in counts.items()},
        clients=sorted({op.process for op in facts.client_ops}),
        faults=dict(Counter(op.f for op in facts.faults)),
        observations=len(facts.obs), job_runs=len(runs),
        duration_s=(max(times) - min(times)) if times else 0.0, violations=violations,
    )


def _between(obs_list: list[Obs], lo: float, hi: float) -> list[Obs]:
    """Observations that began at or after lo and ended at or before hi."""
    found: list[Obs] = []
    for obs in obs_list[bisect.bisect_left([o.s for o in obs_list], lo):]:
        if obs.s > hi:
            break  # sorted by start
        if obs.e <= hi:
            found.append(obs)
    return found


def _visibility(facts: Facts) -> list[Violation]:
    """(b) An acknowledged reservation is in every listing taken wholly between its ack and the
    earliest moment it could have ended; an acknowledged job in every `jobs` listing after it."""
    found: list[Violation] = []
    for lease in facts.leases.values():
        ack = lease.acked_by
        if ack is None or ack.end_s is None:
            continue
        until = death_lb(facts, lease) - EPS_S
        for obs in _between(facts.obs_by_node[(lease.node, "reservations")], ack.end_s, until):
            if lease.id in obs.items:
                continue
            # A release that failed with "not found" is a symptom of the loss, not its cause.
            failed = [op for op in failed_enders_before(facts, lease.id, obs.e) if op.exit_code != 6]
            if failed:
                found.append(Violation("failed_took_effect", f"{failed[0].f} of {lease.id} on {lease.node} "
                                       f"failed (exit {failed[0].exit_code}) but the reservation is gone "
                                       f"from listing #{obs.op} at {obs.s:.3f}", failed[0].index))
            else:
                found.append(Violation("lost_ack", f"reservation {lease.id} on {lease.node} acknowledged at "
                                       f"{ack.end_s:.3f} (op #{ack.index}), live until at least {until:.3f}, "
                                       f"missing from listing #{obs.op} at [{obs.s:.3f}, {obs.e:.3f}]"))
            break  # one report per reservation
        # A "not found" answer about it misses it just like a listing would.
        for op in [*facts.enders.get(lease.id, []), *facts.renews.get(lease.id, [])]:
            if op.exit_code == 6 and op.end_s is not None and op.start_s >= ack.end_s and op.end_s <= until:
                found.append(Violation("false_not_found", f"{op.f} of {lease.id} (op #{op.index} by {op.process}) "
                                       f"exited 6 ({op.error.strip()[-120:]}) while the reservation on "
                                       f"{lease.node} was certainly live until {until:.3f}", op.index))
                break
    found += _job_visibility(facts)
    return found


def _job_visibility(facts: Facts) -> list[Violation]:
    found: list[Violation] = []
    submit_starts = sorted(op.start_s for op in facts.client_ops if op.f == "submit")
    ended_seen: dict[str, float] = {}
    for (_, job_id), views in facts.job_views.items():
        ends = [obs.e for obs, view in views if view.get("state") in ENDED]
        if ends:
            ended_seen[job_id] = min(ends)
    ended_times = sorted(ended_seen.values())
    for op in facts.client_ops:
        result = op.result if isinstance(op.result, dict) else {}
        if op.f != "submit" or op.outcome != OK or op.end_s is None or not result.get("id"):
            continue
        job_id, node = result["id"], result.get("node")
        listings = facts.obs_by_node[(str(node), "jobs")]
        for obs in listings[bisect.bisect_left([o.s for o in listings], op.end_s):]:
            if job_id in obs.items:
                continue
            # Pruning needs KEEP_FINISHED jobs that ended after this one: only jobs not seen ended
            # before it was submitted can have (and that count only grows with time).
            later = bisect.bisect_right(submit_starts, obs.e) - bisect.bisect_left(ended_times, op.start_s)
            if later >= KEEP_FINISHED:
                break
            found.append(Violation("lost_ack", f"job {job_id} on {node} acknowledged at {op.end_s:.3f} "
                                   f"(op #{op.index}) is missing from `jobs` listing #{obs.op} at {obs.s:.3f}"))
            break
    return found


def _failed_took_effect(facts: Facts) -> list[Violation]:
    """(c) Failed reserves, submits, cancels, preempts and renews left no trace."""
    found = _unexplained_leases(facts)
    runs_by_name: dict[str, list[JobRun]] = defaultdict(list)
    for run in facts.runs:
        runs_by_name[run.name].append(run)
    views_by_name: dict[str, list[Obs]] = defaultdict(list)
    for views in facts.job_views.values():
        for obs, view in views:
            views_by_name[str(view.get("name"))].append(obs)
    for name, op in facts.submits_by_name.items():
        if settled(op) != FAIL or op.end_s is None:
            continue
        ran = runs_by_name.get(name, [])
        seen = [obs for obs in views_by_name.get(name, []) if obs.s > op.end_s]
        if ran or seen:
            what = f"its job ran (pid {ran[0].pid})" if ran else f"its job is listed by #{seen[0].op}"
            found.append(Violation("failed_took_effect", f"submit {name} (op #{op.index}) exited "
                                   f"{op.exit_code} but {what}", op.index))
    for (_, job_id), views in facts.job_views.items():
        for state, kind in (("cancelled", "cancel"), ("preempted", "preempt")):
            seen = [obs for obs, view in views if view.get("state") == state]
            if not seen:
                continue
            first = min(obs.e for obs in seen)
            mine = [op for op in facts.enders.get(job_id, []) if op.f == kind and op.start_s < first]
            automatic = kind == "preempt" and any(op.f == "submit" and op.args.get("preempt")
                                                  and op.start_s < first for op in facts.client_ops)
            if mine and not automatic and all(settled(op) == FAIL for op in mine):
                found.append(Violation("failed_took_effect", f"{kind} of {job_id} failed (exit "
                                       f"{mine[0].exit_code}, op #{mine[0].index}) but the job is {state}",
                                       mine[0].index))
    found += _renews(facts)
    return found


def _duplicate_jobs(facts: Facts) -> list[Violation]:
    """One submit (its unique name), one job: a retried submit must not start a second one."""
    ids: dict[str, set[str]] = defaultdict(set)
    for (_, job_id), views in facts.job_views.items():
        for _, view in views:
            ids[str(view.get("name"))].add(job_id)
    for run in facts.runs:
        if run.job_id:
            ids[run.name].add(run.job_id)
    found: list[Violation] = []
    for name, job_ids in sorted(ids.items()):
        op = facts.submits_by_name.get(name)
        if len(job_ids) > 1 and op is not None:
            found.append(Violation("duplicate", f"submit {name} (op #{op.index}, {settled(op)}) made jobs "
                                   f"{sorted(job_ids)}", op.index))
    return found


def _renews(facts: Facts) -> list[Violation]:
    """A lease never expires later than its grant and the renews that may have happened allow."""
    found: list[Violation] = []
    for lease in facts.leases.values():
        ack = lease.acked_by
        if ack is None or ack.end_s is None:
            continue
        renews = facts.renews.get(lease.id, [])
        allowed = max([ack.end_s + float(ack.args["ttl_s"])] + [
            end_s(op) + float(op.args["ttl_s"]) for op in renews if settled(op) in (OK, INFO)]) + EPS_S
        for obs in lease.sightings:
            item = obs.items[lease.id]
            if not obs.precise or item.get("expires_in_s") is None:
                continue
            expiry = obs.s + float(item["expires_in_s"]) - EPS_S
            if expiry > allowed:
                failed = [op for op in renews if settled(op) == FAIL and op.start_s < obs.e]
                rule, why = ("failed_took_effect", f"renew op #{failed[0].index} failed (exit "
                             f"{failed[0].exit_code}) but") if failed else ("phantom", "")
                found.append(Violation(rule, f"{why} {lease.id} on {lease.node} expires at {expiry:.3f}, "
                                       f"later than any grant or renew allows ({allowed:.3f})".strip(),
                                       failed[0].index if failed else None))
                break
    return found


def _unexplained_leases(facts: Facts) -> list[Violation]:
    """A reservation no acknowledged reserve returned must come from a reserve that may have
    happened (indeterminate), or from a failed one that was undone before it reported failure."""
    found: list[Violation] = []
    reserves = [op for op in facts.client_ops if op.f == "reserve"]
    for lease in facts.leases.values():
        if lease.kind != "reservation" or lease.acked_by is not None or not lease.sightings:
            continue
        # Its expiry pins its creation (expiry - ttl), until someone renews it (clients renew ids they saw).
        renewed = min((op.start_s for op in facts.renews.get(lease.id, [])), default=float("inf"))
        precise = [o for o in lease.sightings if o.precise and o.e < renewed]
        exp_lo = max((o.s + float(o.items[lease.id]["expires_in_s"]) - EPS_S for o in precise), default=None)
        exp_hi = min((o.e + float(o.items[lease.id]["expires_in_s"]) + EPS_S for o in precise), default=None)
        if exp_lo is not None and exp_hi is not None and exp_lo > exp_hi:
            exp_lo = exp_hi = None  # inconsistent: judge without it
        first_e = min(o.e for o in lease.sightings)
        last_s = max(o.s for o in lease.sightings)
        candidates = []
        for op in reserves:
            if op.args.get("gpus") != len(lease.gpus) or op.start_s > first_e:
                continue
            if exp_lo is not None and exp_hi is not None:
                ttl = float(op.args["ttl_s"])
                # A queued ticket may be granted after its waiter gave up (if it was not withdrawn).
                latest = float("inf") if op.args.get("wait") else end_s(op)
                if exp_hi - ttl < op.start_s - EPS_S or exp_lo - ttl > min(latest, first_e) + EPS_S:
                    continue  # created outside the time this op could have created it
            candidates.append(op)
        what = (f"reservation {lease.id} on {lease.node} (GPUs {list(lease.gpus)}, first seen by "
                f"#{lease.sightings[0].op})")
        if any(settled(op) == INFO for op in candidates):
            continue
        failed = sorted((op for op in candidates if settled(op) == FAIL),
                        key=lambda op: _blame_rank(op, lease, exp_lo, exp_hi))
        if any(last_s < end_s(op) for op in failed):
            continue  # it existed only while a failing op was still running (undone before it answered)
        if failed:
            op = failed[0]
            found.append(Violation("failed_took_effect", f"{what} is still there after reserve op #{op.index} by "
                                   f"{op.process} failed (exit {op.exit_code}: {op.error.strip()[-160:]})", op.index))
        elif candidates:
            found.append(Violation("phantom", f"{what}: a second grant of an acknowledged reserve (op "
                                   f"#{candidates[0].index} returned another id)", candidates[0].index))
        else:
            found.append(Violation("phantom", f"{what} matches no reserve of the history"))
    return found


def _blame_rank(op: Op, lease: Lease, exp_lo: float | None, exp_hi: float | None) -> tuple[bool, bool, float]:
    """Likeliest creator first: a wait queued on the lease's node ("… GPUs on NODE (position …)"),
    whose lifetime holds the lease's creation, the latest."""
    on_node = f" on {lease.node} " in op.error or f" on {lease.node}:" in op.error
    created = (exp_lo + exp_hi) / 2 - float(op.args["ttl_s"]) if exp_lo is not None and exp_hi is not None else None
    within = created is not None and op.start_s - EPS_S <= created <= end_s(op) + 1.0
    return (not on_node, not within, -op.start_s)


def _tokens(facts: Facts) -> list[Violation]:
    """(d) Per node, a grant made certainly after another carries a larger token; a lease keeps one."""
    found: list[Violation] = []
    grants: dict[str, list[tuple[float, float, int, str]]] = defaultdict(list)  # node -> (lb, ub, token, id)
    submit_start = {str((op.result or {}).get("id")): op.start_s for op in facts.client_ops
                    if op.f == "submit" and op.outcome == OK and isinstance(op.result, dict)}
    for lease in facts.leases.values():
        if len(lease.tokens) > 1:
            found.append(Violation("token", f"{lease.id} on {lease.node} carried tokens {sorted(lease.tokens)}"))
        if not lease.tokens or not lease.windows:
            continue
        ub = min(e for _, e in lease.windows)
        lb = lease.acked_by.start_s if lease.acked_by else submit_start.get(lease.id, float("-inf"))
        grants[lease.node].append((lb, ub, min(lease.tokens), lease.id))
    for node, items in grants.items():
        by_ub = sorted(items, key=lambda g: g[1])
        best: tuple[float, float, int, str] | None = None
        j = 0
        for lb, _, token, ident in sorted(items, key=lambda g: g[0]):
            while j < len(by_ub) and by_ub[j][1] < lb - EPS_S:
                if best is None or by_ub[j][2] > best[2]:
                    best = by_ub[j]
                j += 1
            if best is not None and best[2] >= token:
                found.append(Violation("token", f"on {node}, {ident} was granted after {best[3]} (token "
                                       f"{best[2]}) but got token {token}"))
    return found


def lease_of(facts: Facts, node: str, lease_id: str) -> Lease | None:
    """A lease by node and id (for tests and reports)."""
    return facts.leases.get((node, lease_id))
