"""The history checker's runs (issue 11): the `history` group of run.py, and the long run.

`python bench/history.py [--seconds 3600] [--segment 120] [--out bench/results/history-long.json]`
runs the CI-shaped nemesis history (tests/history: four CLI and two API clients on 2 nodes × 4
GPUs, every fault kind) back to back for `--seconds`, each segment on a fresh demo and checked on
its own, and writes the totals: operations by kind and outcome, faults by kind, observations, job
runs, violations (those a pending finding explains are counted apart). A segment with a violation
keeps its history under the work directory (`--keep DIR`, default a temp dir).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness import REPO_ROOT, Check, Result, machine_info

if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.history import controls
from tests.history.long import Totals, run_long
from tests.history.nemesis import NemesisSpec
from tests.history.runner import RunSpec

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "history-long.json"
QUICK_S = 8.0
FULL_S = 120.0


def quick_spec(index: int, seconds: float) -> RunSpec:
    """A smoke history: two CLI clients and one API client, faults every second."""
    spec = controls.nemesis(seconds, seed=index + 1)
    spec.cli_clients, spec.api_clients = 2, 1
    spec.nemesis = NemesisSpec(every_s=(0.2, 0.6), stop_s=(1.0, 2.0), lock_s=(0.5, 1.5), enospc_s=(0.5, 1.0),
                               down_s=(0.2, 0.5), first_s=0.5)
    return spec


def run(seconds: float, work: Path, segment_s: float, quick: bool = False) -> Totals:
    def show(index: int, outcome: Any) -> None:
        report = outcome.report
        print(f"[history] segment {index}: {report.total_ops} ops, {len(report.violations)} violations, "
              f"faults {sum(report.faults.values())}", file=sys.stderr)

    spec = quick_spec if quick else (lambda i, s: controls.nemesis(s, seed=i + 1))
    return run_long(work, spec, seconds, segment_s, on_segment=show)


def bench_history(quick: bool, work: Path) -> list[Result]:
    """The run.py group: one short history (quick) or two minutes (full), with its figures."""
    seconds = QUICK_S if quick else FULL_S
    totals = run(seconds, work / "history", segment_s=seconds, quick=quick)
    data = totals.to_json()
    return [
        Result("history: operations per second", "history", "ops/s", value=totals.operations / max(totals.seconds, 1),
               notes=f"{totals.operations} operations by {totals.clients} clients in {totals.seconds:.0f} s",
               extra=data),
        Result("history: faults injected", "history", "count", value=float(sum(totals.faults.values())),
               extra={"faults": data["faults"]}),
        Result("history: violations not explained by a pending finding", "history", "count",
               value=float(totals.unexplained), budget="= 0", checks=[Check("value", "==", 0.0)],
               extra={"examples": totals.examples[:5], "pending_findings": data["pending_findings"]}),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3600.0, help="total length (default: an hour)")
    parser.add_argument("--segment", type=float, default=120.0, help="length of one checked history")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON totals")
    parser.add_argument("--keep", type=Path, help="where segments with a violation are kept")
    args = parser.parse_args(argv)
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="gpuconsole-history-") as tmp:
        work = args.keep or Path(tmp)
        machine = machine_info(Path(tmp))
        totals = run(args.seconds, work, args.segment)
    report = {"schema": 1, "started_at": started_at, "elapsed_s": round(time.monotonic() - started, 1),
              "spec": "tests/history/controls.py:nemesis (2 nodes x 4 GPUs, 4 CLI + 2 API clients, every fault)",
              "segment_s": args.segment, "machine": machine, "totals": totals.to_json()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["totals"], indent=1))
    return 1 if totals.unexplained or totals.leftovers else 0


if __name__ == "__main__":
    sys.exit(main())
