"""The `help` group: `gpuconsole --help` start time in fresh processes, and which heavy packages it imports."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from harness import Check, Result, cli_argv, ms, run_timed
from plan import Plan

HEAVY_MODULES = ("asyncssh", "textual", "boto3", "botocore")


def _imported_top_level(importtime_stderr: str) -> dict[str, float]:
    """Top-level packages in a `-X importtime` report with their largest cumulative ms."""
    found: dict[str, float] = {}
    pattern = re.compile(r"^import time:\s+(\d+)\s+\|\s+(\d+)\s+\|\s?(\s*)(\S+)")
    for line in importtime_stderr.splitlines():
        match = pattern.match(line)
        if not match:
            continue
        top = match.group(4).split(".")[0]
        found[top] = max(found.get(top, 0.0), int(match.group(2)) / 1000.0)
    return found


def bench_help(plan: Plan) -> list[Result]:
    """`gpuconsole --help` wall time in fresh processes, and which heavy packages it imports."""
    rows = []
    argv = cli_argv("--help")
    timed = [run_timed(argv) for _ in range(plan.help_runs + 1)][1:]
    if any(t.returncode != 0 for t in timed):
        raise RuntimeError("--help failed")
    report = run_timed([sys.executable, "-X", "importtime", "-m", "gpuconsole", "--help"])
    imported = _imported_top_level(report.stderr)
    heavy = sorted(m for m in HEAVY_MODULES if m in imported)
    slowest = sorted(imported.items(), key=lambda kv: -kv[1])[:8]
    rows.append(Result(
        "gpuconsole --help (python -m gpuconsole)", "startup", "ms",
        [ms(t.elapsed_s) for t in timed], budget="≤ 150 ms; no asyncssh/textual/boto3",
        checks=[Check("median", "<=", 150.0)],
        notes=f"heavy imports: {', '.join(heavy) or 'none'}",
        extra={"heavy_imported": heavy, "slowest_top_level_imports_ms": dict(slowest),
               "import_total_ms": sum(imported.get(m, 0.0) for m in imported)}))
    rows.append(Result("--help imports asyncssh/textual/boto3", "startup", "count",
                       value=float(len(heavy)), budget="0",
                       checks=[Check("value", "==", 0.0)], notes=", ".join(heavy) or "none"))
    script = Path(sys.executable).parent / "gpuconsole"
    if script.exists():
        timed = [run_timed([str(script), "--help"]) for _ in range(plan.help_runs + 1)][1:]
        rows.append(Result(f"gpuconsole --help ({script})", "startup", "ms",
                           [ms(t.elapsed_s) for t in timed], budget="≤ 150 ms",
                           checks=[Check("median", "<=", 150.0)],
                           notes="the installed console script, no pyenv shim"))
    return rows
