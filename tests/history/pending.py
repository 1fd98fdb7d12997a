"""Defects the checker found whose fix is pending (reproductions in test_findings.py, notes in
/work/notes/history-findings.md): a nemesis run tolerates their instances by name, nothing else."""

from __future__ import annotations

from tests.history.checker import Violation
from tests.history.history import Op

PENDING = {
    "H1": "a timed-out `reserve --wait` that could not withdraw its ticket exits 3 and the ticket is "
          "granted later to no one",
}


def pending_defect(ops: list[Op], violation: Violation) -> str | None:
    """The pending finding a violation is an instance of, if any."""
    op = ops[violation.op] if violation.op is not None else None
    if violation.rule == "failed_took_effect" and op is not None and op.f == "reserve" \
            and op.args.get("wait") and op.exit_code == 3:
        return "H1"
    return None


def split(ops: list[Op], violations: list[Violation]) -> tuple[list[Violation], list[str]]:
    """(violations no pending finding explains, names of the pending findings seen)."""
    unexplained = [v for v in violations if pending_defect(ops, v) is None]
    known = sorted({name for v in violations if (name := pending_defect(ops, v)) is not None})
    return unexplained, known
