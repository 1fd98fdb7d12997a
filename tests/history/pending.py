"""Defects the checker found whose fix is pending (reproductions in test_findings.py, notes in
/work/notes/history-findings.md): a nemesis run tolerates their instances by name, nothing else."""

from __future__ import annotations

from tests.history.checker import Violation
from tests.history.history import Op

PENDING = {
    "H1b": "a `reserve --wait` granted while its node was unreachable times out with exit 3 although the grant "
           "exists",
    "H2": "release/renew/preempt of a live reservation whose node is briefly unreachable exits 6 (not found) "
          "instead of 5",
    "H3": "`reserve` whose node committed the grant but lost the connection before the reply moves on to the "
          "next node: exit 3 (no capacity) while the grant exists, or a second grant elsewhere",
}


def pending_defect(ops: list[Op], violation: Violation) -> str | None:
    """The pending finding a violation is an instance of, if any."""
    op = ops[violation.op] if violation.op is not None else None
    if op is None:
        return None
    if violation.rule == "failed_took_effect" and op.f == "reserve" and op.args.get("wait") and op.exit_code == 3 \
            and "unreachable" in op.error:
        return "H1b"
    if violation.rule == "false_not_found" and "unreachable" in op.error:
        return "H2"
    if op.f == "reserve" and not op.args.get("wait") and (
            (violation.rule == "failed_took_effect" and op.exit_code == 3) or violation.rule == "phantom"):
        return "H3"
    return None


def split(ops: list[Op], violations: list[Violation]) -> tuple[list[Violation], list[str]]:
    """(violations no pending finding explains, names of the pending findings seen)."""
    unexplained = [v for v in violations if pending_defect(ops, v) is None]
    known = sorted({name for v in violations if (name := pending_defect(ops, v)) is not None})
    return unexplained, known
