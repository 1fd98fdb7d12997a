"""Defects the checker found whose fix is pending (reproductions in test_findings.py, notes in
/work/notes/history-findings.md): a nemesis run tolerates their instances by name, nothing else."""

from __future__ import annotations

from tests.history.checker import Violation
from tests.history.history import Op

PENDING: dict[str, str] = {
    # "H4": "what the defect is", with its rule in pending_defect() below; empty: none pending.
}


def pending_defect(ops: list[Op], violation: Violation) -> str | None:
    """The pending finding a violation is an instance of, if any: one rule per entry of PENDING, e.g.
    (H2, fixed in b8c2b4f) `violation.rule == "false_not_found" and "unreachable" in op.error`."""
    op = ops[violation.op] if violation.op is not None else None
    if op is None or not PENDING:
        return None
    return None


def split(ops: list[Op], violations: list[Violation]) -> tuple[list[Violation], list[str]]:
    """(violations no pending finding explains, names of the pending findings seen)."""
    unexplained = [v for v in violations if pending_defect(ops, v) is None]
    known = sorted({name for v in violations if (name := pending_defect(ops, v)) is not None})
    return unexplained, known
