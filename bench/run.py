"""Run the gpuconsole benchmark suite: `python bench/run.py [--quick] [--only GROUP ...]`.

Writes bench/results/latest.json and prints a markdown table. Missed budgets are reported, not
fatal; a crashed benchmark makes full mode (or `--strict`) exit 1. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import history
from groups import (
    cloud,
    contention,
    exporter,
    jobs,
    jobs_latency,
    jobs_queue,
    lab,
    latency,
    peers,
    peers_lock,
    poll,
    reserve,
    scale,
    status,
    tui,
    watch,
)
from groups import help as startup
from harness import REPO_ROOT, Result, machine_info
from plan import CloudPlan, PeerPlan, Plan

GROUPS = ("help", "lab", "reserve", "contention", "status", "poll", "tui", "jobs", "cloud", "watch", "history",
          "peers", "latency", "scale", "exporter")
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "latest.json"


def _fmt(value: float | None, unit: str) -> str:
    """A number for the table, with as many digits as its size deserves."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if unit == "x":
        return f"{value:.1f}x"
    if unit == "count":
        return f"{value:.0f}"
    if unit == "% core":
        return f"{value:.2f}%"
    if unit == "fraction":
        return f"{value:.2f}"
    if unit == "ops/s":
        return f"{value:.0f}"
    if abs(value) < 10:
        return f"{value:.2f}"
    if abs(value) < 100:
        return f"{value:.1f}"
    return f"{value:.0f}"


def markdown_table(rows: list[Result]) -> str:
    """One line per result: headline (median or value), tail percentiles, budget and outcome."""
    lines = ["| benchmark | unit | n | median | p95 | p99 | min | max | budget | result |",
             "| --- | --- | --: | --: | --: | --: | --: | --: | --- | --- |"]
    for row in rows:
        has_samples = bool(row.samples)
        cells = [row.name, row.unit, str(len(row.samples)) if has_samples else "1",
                 _fmt(row.headline(), row.unit)]
        cells += [_fmt(row.stat(stat), row.unit) if has_samples else ""
                  for stat in ("p95", "p99", "min", "max")]
        verdict = {True: "pass", False: "**MISS**", None: ""}[row.passed]
        cells += [row.budget or "", verdict]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_groups(plan: Plan, work: Path, groups: list[str], errors: list[dict[str, str]],
               timings: list[dict[str, Any]]) -> list[Result]:
    """Run the selected groups in a fixed order; a crash is recorded and the next group runs.

    `timings` gets each group's wall time and the 1-minute load average when it started.
    """
    rows: list[Result] = []

    def guarded(name: str, func: Callable[[], list[Result]]) -> None:
        started = time.perf_counter()
        entry: dict[str, Any] = {"group": name, "loadavg_1m_at_start": os.getloadavg()[0]}
        timings.append(entry)
        try:
            rows.extend(func())
        except Exception as exc:
            errors.append({"group": name, "error": f"{exc.__class__.__name__}: {exc}",
                           "traceback": traceback.format_exc()})
            print(f"[bench] {name}: CRASHED: {exc.__class__.__name__}: {exc}", file=sys.stderr)
        entry["elapsed_s"] = round(time.perf_counter() - started, 2)
        print(f"[bench] {name}: {time.perf_counter() - started:.1f} s", file=sys.stderr)

    if "help" in groups:
        guarded("help", lambda: startup.bench_help(plan))
    if "lab" in groups:
        def lab_group() -> list[Result]:
            # One node for the state-op, physical-limit and agent-CPU steps, each guarded alone.
            with lab.lab(work) as node_cfg:
                ping_ms: list[float] = []

                def state_ops() -> list[Result]:
                    state_rows, ping_ms[:] = lab.bench_state_ops(plan, node_cfg)
                    return state_rows

                guarded("lab/agent-cpu", lambda: lab.bench_agent_cpu(plan, node_cfg))
                guarded("lab/state-ops", state_ops)
                guarded("lab/physical", lambda: lab.bench_physical(plan, node_cfg, ping_ms))
                guarded("lab/efficiency", lambda: lab.efficiency(rows))
                guarded("lab/state-ops-full-window",
                        lambda: lab.bench_state_ops(plan, node_cfg, full_window=True)[0])
                guarded("lab/agent-cpu-full-window",
                        lambda: lab.bench_agent_cpu(plan, node_cfg, "replay window full"))
            return []
        guarded("lab", lab_group)
    if "reserve" in groups:
        guarded("reserve", lambda: reserve.bench_reserve_cli(plan, work))
    if "contention" in groups:
        guarded("contention", lambda: contention.bench_contention(plan, work))
    if "status" in groups:
        guarded("status", lambda: status.bench_status(plan, work))
    if "poll" in groups:
        guarded("poll", lambda: poll.bench_poll(plan, work))
    if "tui" in groups:
        def tui_group() -> list[Result]:
            # One demo for both steps, each guarded alone (a terminal problem keeps the rest).
            with tui.tui_demo(plan, work) as config_path:
                guarded("tui/headless", lambda: tui.bench_tui_headless(plan, work, config_path))
                guarded("tui/terminal", lambda: tui.bench_tui_terminal(plan, config_path))
            return []
        guarded("tui", tui_group)
    if "jobs" in groups:
        def jobs_group() -> list[Result]:
            # One 1-node demo: the latency step runs on the state the throughput step left.
            with jobs.jobs_demo(work) as config_path:
                guarded("jobs/throughput",
                        lambda: jobs.bench_jobs_throughput(plan, work, config_path))
                guarded("jobs/latency", lambda: jobs_latency.bench_jobs_latency(plan, work, config_path))
            # A node of its own: the latency step leaves gate jobs holding GPUs, and the queue step
            # must hold all eight itself.
            with jobs.jobs_demo(work / "queue") as config_path:
                guarded("jobs/queue", lambda: jobs_queue.bench_jobs_queue(plan, work, config_path))
            return []
        guarded("jobs", jobs_group)
    cloud_plan = CloudPlan.make(plan.quick)
    if "cloud" in groups:
        guarded("cloud", lambda: cloud.bench_cloud(cloud_plan, work))
    if "watch" in groups:
        guarded("watch", lambda: watch.bench_watch(cloud_plan, work))
    if "history" in groups:
        guarded("history", lambda: history.bench_history(plan.quick, work))
    peer_plan = PeerPlan.make(plan.quick)
    if "peers" in groups:
        guarded("peers/fan-out", lambda: peers.bench_fanout(peer_plan, work))
        guarded("peers/queue", lambda: peers.bench_queue(peer_plan, work))
        guarded("peers/lock", lambda: peers_lock.bench_lock(peer_plan, work))
    if "latency" in groups:
        guarded("latency", lambda: latency.bench_latency(peer_plan, work))
    if "scale" in groups:
        guarded("scale", lambda: scale.bench_scale(peer_plan, work))
    if "exporter" in groups:
        guarded("exporter", lambda: exporter.bench_exporter(peer_plan, work))
    return rows


def main(argv: list[str] | None = None) -> int:
    """Parse flags, run, write the JSON report and print the markdown table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="CI smoke mode: tiny sizes, < 60 s")
    parser.add_argument("--only", nargs="+", choices=GROUPS, metavar="GROUP",
                        help=f"run only these groups: {', '.join(GROUPS)}")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON report path")
    parser.add_argument("--strict", action="store_true", help="exit 1 on a crash in quick mode too")
    args = parser.parse_args(argv)
    for key in ("SSH_AUTH_SOCK", "GPUCONSOLE_CONFIG"):
        os.environ.pop(key, None)  # the in-process clients must not use them either

    plan = Plan.make(args.quick)
    groups = list(args.only or GROUPS)
    errors: list[dict[str, str]] = []
    timings: list[dict[str, Any]] = []
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpuconsole-bench-") as tmp:
        work = Path(tmp)
        machine = machine_info(work)
        rows = run_groups(plan, work, groups, errors, timings)
    elapsed_s = time.perf_counter() - started
    machine["loadavg_end"] = list(os.getloadavg())

    report: dict[str, Any] = {
        "schema": 1, "mode": "quick" if args.quick else "full", "groups": groups,
        "started_at": started_at, "elapsed_s": round(elapsed_s, 2), "machine": machine,
        "plan": {**plan.__dict__, "cloud_watch": CloudPlan.make(args.quick).__dict__,
                 "peers_latency": PeerPlan.make(args.quick).__dict__},
        "group_timings": timings, "benchmarks": [r.to_json() for r in rows], "errors": errors,
        "missed_budgets": [r.name for r in rows if r.passed is False],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")

    print(f"## gpuconsole benchmarks ({report['mode']} mode, {elapsed_s:.0f} s)\n")
    print(f"Machine: {machine['cpu_count']} CPUs ({machine['cpu_model']}), "
          f"Python {machine['python']}, asyncssh {machine['versions']['asyncssh']}, "
          f"cryptography {machine['versions']['cryptography']}, {machine['platform']}, "
          f"tmp on {machine['tmp_filesystem']}, load avg {machine['loadavg_start'][0]:.2f} → "
          f"{machine['loadavg_end'][0]:.2f}\n")
    print(markdown_table(rows))
    if errors:
        print("\nCrashed: " + "; ".join(f"{e['group']}: {e['error']}" for e in errors))
    missed = report["missed_budgets"]
    print(f"\n{len(missed)} budget(s) missed" + (": " + "; ".join(missed) if missed else ""))
    try:
        shown = args.out.resolve().relative_to(REPO_ROOT)
    except ValueError:
        shown = args.out
    print(f"Report: {shown}")
    return 1 if errors and (not args.quick or args.strict) else 0


if __name__ == "__main__":
    sys.exit(main())
