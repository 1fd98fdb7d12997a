"""A long history as back-to-back segments (each on a fresh demo, checked on its own), with totals.

An hour of listings does not fit in memory as one history, and nothing the checker relates spans
more than a few seconds (leases of at most 10 s, jobs of at most 3 s), so segments lose nothing
but the seconds between them. A segment with a violation keeps its directory; the others are
removed.
"""

from __future__ import annotations

import shutil
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.history.pending import pending_defect
from tests.history.runner import Outcome, RunSpec, run_history


@dataclass
class Totals:
    """What every segment added up to."""

    segments: int = 0
    seconds: float = 0.0
    ops: dict[str, Counter[str]] = field(default_factory=dict)
    faults: Counter[str] = field(default_factory=Counter)
    clients: int = 0
    observations: int = 0
    job_runs: int = 0
    violations: int = 0
    unexplained: int = 0
    examples: list[str] = field(default_factory=list)  # the first unexplained violations
    pending: Counter[str] = field(default_factory=Counter)  # instances of each pending finding
    leftovers: int = 0
    kept: list[str] = field(default_factory=list)

    @property
    def operations(self) -> int:
        return sum(sum(c.values()) for c in self.ops.values())

    def add(self, outcome: Outcome) -> None:
        report = outcome.report
        self.segments += 1
        self.seconds += report.duration_s
        for kind, by in report.ops.items():
            self.ops.setdefault(kind, Counter()).update(by)
        self.faults.update(report.faults)
        self.clients = max(self.clients, len(report.clients))
        self.observations += report.observations
        self.job_runs += report.job_runs
        self.violations += len(report.violations)
        unexplained = [v for v in report.violations if pending_defect(outcome.ops, v) is None]
        self.unexplained += len(unexplained)
        self.examples = (self.examples + [f"{v.rule}: {v.message}" for v in unexplained])[:20]
        self.pending.update(name for v in report.violations if (name := pending_defect(outcome.ops, v)))
        self.leftovers += len(outcome.leftovers)

    def to_json(self) -> dict[str, Any]:
        return {"segments": self.segments, "seconds": round(self.seconds, 1), "operations": self.operations,
                "ops": {k: dict(v) for k, v in sorted(self.ops.items())}, "clients": self.clients,
                "faults": dict(sorted(self.faults.items())), "observations": self.observations,
                "job_runs": self.job_runs, "violations": self.violations,
                "violations_unexplained": self.unexplained, "unexplained_examples": self.examples,
                "pending_findings": dict(self.pending), "processes_left_by_demo": self.leftovers,
                "kept_histories": self.kept}


def run_long(root: Path, spec: Callable[[int, float], RunSpec], total_s: float, segment_s: float = 120.0,
             on_segment: Callable[[int, Outcome], None] | None = None) -> Totals:
    """Segments of `segment_s` (the last one shorter) until `total_s`; spec(index, seconds) shapes each."""
    totals = Totals()
    started = time.monotonic()
    index = 0
    while (left_s := total_s - (time.monotonic() - started)) > 1.0:
        seconds = min(segment_s, left_s)
        where = root / f"segment-{index:03d}"
        outcome = run_history(where, spec(index, seconds))
        totals.add(outcome)
        if on_segment is not None:
            on_segment(index, outcome)
        if outcome.report.violations or outcome.leftovers:
            totals.kept.append(str(where))
        else:
            shutil.rmtree(where, ignore_errors=True)
        index += 1
    return totals
