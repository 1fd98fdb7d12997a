"""Check (a): no GPU is held by two live holders at any instant.

Holders are reservations, jobs (their lease, `jobs` saying "running", and their processes' own
heartbeats), each with evidence windows. Two holders of one GPU conflict when their definite
intervals overlap, or when one was live at some instant inside a window that lies wholly within
the other's definite interval. Both are certain, never guesses: an indeterminate operation adds
no evidence, so it can never produce a false alarm.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from tests.history.facts import Facts, Window, death_lb

OVERLAP_S = 0.001  # all times come from one monotonic clock; this only absorbs float noise


@dataclass
class Holder:
    key: tuple[str, str, str]  # (kind, node, id)
    gpus: set[int] = field(default_factory=set)
    windows: list[Window] = field(default_factory=list)
    extend_to: float = float("-inf")  # a reservation stays live at least until here (expiry, release)
    sources: set[str] = field(default_factory=set)

    def definite(self) -> Window | None:
        if not self.windows:
            return None
        start = min(e for _, e in self.windows)
        end = max(max(s for s, _ in self.windows), self.extend_to)
        return (start, end) if end > start else None

    def label(self) -> str:
        kind, node, ident = self.key
        return f"{kind} {ident} on {node} ({'+'.join(sorted(self.sources))})"


def holders(facts: Facts) -> list[Holder]:
    """Every holder with its GPUs and evidence."""
    found: dict[tuple[str, str, str], Holder] = {}

    def get(kind: str, node: str, ident: str) -> Holder:
        key = (kind, node, ident)
        if key not in found:
            found[key] = Holder(key)
        return found[key]

    for lease in facts.leases.values():
        if not lease.gpus or not lease.windows:
            continue
        holder = get(lease.kind, lease.node, lease.id)
        holder.gpus.update(lease.gpus)
        holder.windows.extend(lease.windows)
        holder.sources.add("lease")
        if lease.kind == "reservation" and lease.acked_by is not None:
            # Only an acknowledged grant is owned by a client who must end it: one nobody was
            # told about may be withdrawn by the failing or indeterminate reserve that made it.
            holder.extend_to = death_lb(facts, lease)
    for (node, job_id), views in facts.job_views.items():
        for obs, view in views:
            if view.get("state") == "running" and view.get("gpus"):
                holder = get("job", node, job_id)
                holder.gpus.update(int(g) for g in view["gpus"])
                holder.windows.append((obs.s, obs.e))
                holder.sources.add("jobs")
    for run in facts.runs:
        if run.node is None or run.job_id is None or not run.gpus:
            continue
        holder = get("job", run.node, run.job_id)
        holder.gpus.update(run.gpus)
        # Each heartbeat is an exact instant; the first and last bound the run.
        holder.windows.extend([(run.start_s, run.start_s), (run.last_s, run.last_s)])
        holder.sources.add("process")
    return list(found.values())


def _inside(windows: list[Window], span: Window) -> Window | None:
    for s, e in windows:
        if s >= span[0] + OVERLAP_S and e <= span[1] - OVERLAP_S:
            return (s, e)
    return None


def double_holds(facts: Facts, limit: int = 200) -> list[str]:
    """One message per pair of holders that certainly held the same GPU at the same instant (the
    first `limit`: a broken node makes them by the thousand)."""
    by_gpu: dict[tuple[str, int], list[Holder]] = defaultdict(list)
    for holder in holders(facts):
        for gpu in holder.gpus:
            by_gpu[(holder.key[1], gpu)].append(holder)
    found: list[str] = []
    seen: set[tuple[tuple[str, str, str], tuple[str, str, str]]] = set()
    for (node, gpu), group in sorted(by_gpu.items()):
        spans = []
        for holder in group:
            lo = min(s for s, _ in holder.windows)
            hi = max(max(e for _, e in holder.windows), holder.extend_to)
            spans.append((lo, hi, holder))
        spans.sort(key=lambda item: item[0])
        for i, (_, hi_a, a) in enumerate(spans):
            for lo_b, _, b in spans[i + 1:]:
                if lo_b > hi_a:
                    break  # sorted by start: nothing later can meet a
                pair = (min(a.key, b.key), max(a.key, b.key))
                if pair in seen:
                    continue
                why = _conflict(a, b)
                if why:
                    seen.add(pair)
                    found.append(f"GPU {gpu} of {node} held twice: {a.label()} and {b.label()}: {why}")
                    if len(found) >= limit:
                        return found
    return found


def _conflict(a: Holder, b: Holder) -> str | None:
    da, db = a.definite(), b.definite()
    if da and db:
        lo, hi = max(da[0], db[0]), min(da[1], db[1])
        if hi - lo > OVERLAP_S:
            return f"both held throughout [{lo:.3f}, {hi:.3f}] ({hi - lo:.3f} s)"
    for x, y, dy in ((a, b, db), (b, a, da)):
        if dy is None:
            continue
        window = _inside(x.windows, dy)
        if window is not None:
            return (f"{x.key[2]} was live within [{window[0]:.3f}, {window[1]:.3f}], while {y.key[2]} "
                    f"held throughout [{dy[0]:.3f}, {dy[1]:.3f}]")
    return None
