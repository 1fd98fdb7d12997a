"""The `status` group: one fleet snapshot with fresh connections, in-process and as `status --json`,
at several fleet sizes, against the naive per-node loops (asyncssh in-process and OpenSSH)."""

from __future__ import annotations

import json
import math
import os
import resource
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from drivers import DemoProcess
from harness import Check, Result, bench_env, cli_argv, ms, percentile, run_timed
from plan import Plan

from gpuconsole.config import Config, NodeConfig, load_config
from gpuconsole.core.fleet import Fleet
from gpuconsole.core.status import fleet_snapshot
from groups.common import NAIVE_COMMAND, Series, in_process, measured, naive_round


async def _snapshot_round(config: Config) -> tuple[float, int, dict[str, float]]:
    """Open a Fleet, take one fleet snapshot, close: what `status --json` does in-process.

    The connect is called explicitly first (fleet_snapshot would do it) to time the phases.
    """
    started = time.perf_counter()
    async with Fleet(config) as fleet:
        await fleet.connect()
        connected = time.perf_counter()
        snapshots = await fleet_snapshot(fleet)
        snapped = time.perf_counter()
    ended = time.perf_counter()
    phases = {"connect_and_agent_hello_ms": ms(connected - started),
              "snapshot_call_ms": ms(snapped - connected), "close_ms": ms(ended - snapped)}
    return ended - started, sum(s.reachable for s in snapshots), phases


def _openssh_round(nodes: tuple[NodeConfig, ...], ssh: str) -> float:
    """Sequential per node with the OpenSSH client: `for h in hosts: ssh h CMD` (research B0)."""
    started = time.perf_counter()
    for cfg in nodes:
        argv = [ssh, "-F", "/dev/null", "-p", str(cfg.port), "-i", str(cfg.identity_file),
                "-o", f"UserKnownHostsFile={cfg.known_hosts}", "-o", "StrictHostKeyChecking=yes",
                "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "LogLevel=ERROR",
                cfg.host, NAIVE_COMMAND]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True,
                             stdin=subprocess.DEVNULL, env=bench_env())
        json.loads(out.stdout)
    return time.perf_counter() - started


def _status_at(plan: Plan, work: Path, nodes: int, ssh: str | None) -> dict[str, Series | Any]:
    """All variants at one fleet size, interleaved per repetition; repetition 0 is a warm-up."""
    series = {kind: Series.empty() for kind in ("inproc", "cli", "naive", "openssh")}
    phase_runs: list[dict[str, float]] = []
    with DemoProcess(work / f"status-{nodes}", nodes) as demo:
        config = load_config(str(demo.config_path))
        argv = cli_argv("--config", str(demo.config_path), "status", "--json")
        for rep in range(plan.status_reps + 1):
            keep = rep > 0
            reachable, phases = measured(demo, series["inproc"] if keep else None,
                                          lambda: in_process(lambda: _snapshot_round(config)))
            if reachable != nodes:
                raise RuntimeError(f"status: {reachable}/{nodes} nodes reachable")
            if keep:
                phase_runs.append(phases)

            def cli() -> tuple[float, float, Any]:
                timed = run_timed(argv)
                if timed.returncode != 0:
                    raise RuntimeError(f"status CLI exit {timed.returncode}: {timed.stderr[-500:]}")
                return timed.elapsed_s, timed.cpu_s, json.loads(timed.stdout)

            document = measured(demo, series["cli"] if keep else None, cli)
            if sum(n["reachable"] for n in document["nodes"]) != nodes:
                raise RuntimeError(f"status CLI: not all {nodes} nodes reachable")
            if rep > plan.naive_reps:
                continue
            measured(demo, series["naive"] if keep else None,
                      lambda: in_process(lambda: naive_round(config.nodes)))
            if ssh is not None:
                def openssh() -> tuple[float, float, Any]:
                    before = resource.getrusage(resource.RUSAGE_CHILDREN)
                    elapsed_s = _openssh_round(config.nodes, ssh)
                    after = resource.getrusage(resource.RUSAGE_CHILDREN)
                    return elapsed_s, (after.ru_utime - before.ru_utime
                                       + after.ru_stime - before.ru_stime), None

                measured(demo, series["openssh"] if keep else None, openssh)
        return {**series, "phases": {k: percentile([p[k] for p in phase_runs], 50)
                                     for k in phase_runs[0]}, "demo_start_s": demo.start_s}


def bench_status(plan: Plan, work: Path) -> list[Result]:
    """`status --json` at several fleet sizes: in-process, CLI subprocess and naive loops."""
    ssh = shutil.which("ssh")
    cores = len(os.sched_getaffinity(0))
    results: list[Result] = []
    medians: dict[tuple[str, int], float] = {}
    client_cpu: dict[tuple[str, int], float] = {}
    cpu_floor: dict[tuple[str, int], float] = {}
    for nodes in plan.status_nodes:
        data = _status_at(plan, work, nodes, ssh)
        inproc, cli, naive, openssh = (data[k] for k in ("inproc", "cli", "naive", "openssh"))
        results += [
            Result(f"status fleet_snapshot in-process, {nodes} nodes", "status", "ms",
                   inproc.wall_ms, extra={**inproc.extra(), "phases_median_ms": data["phases"],
                                          "demo_start_s": data["demo_start_s"]}),
            Result(f"status --json CLI, {nodes} nodes", "status", "ms", cli.wall_ms,
                   extra=cli.extra()),
            Result(f"naive loop, asyncssh connect+run+close, {nodes} nodes", "status", "ms",
                   naive.wall_ms, extra=naive.extra(),
                   notes="in-process asyncssh: no ssh binary spawn, a charitable baseline"),
        ]
        if openssh.wall_ms:
            results.append(Result(
                f"naive loop, OpenSSH `ssh host CMD`, {nodes} nodes", "status", "ms",
                openssh.wall_ms, extra=openssh.extra(),
                notes="a new ssh process and connection per node (research baseline B0)"))
        for kind in ("inproc", "cli", "naive", "openssh"):
            medians[(kind, nodes)] = percentile(data[kind].wall_ms, 50)
            client_cpu[(kind, nodes)] = percentile(data[kind].client_cpu_ms, 50)
            server_cpu_ms = percentile(data[kind].server_cpu_ms, 50)
            cpu_floor[(kind, nodes)] = (client_cpu[(kind, nodes)] + server_cpu_ms) / cores
    small, large = min(plan.status_nodes), max(plan.status_nodes)
    labels = {"cli": "status --json CLI", "inproc": "fleet_snapshot in-process"}
    for kind, label in labels.items():
        # With every node on its own machine only the client's extra CPU would add to T(small).
        extra_client_ms = client_cpu[(kind, large)] - client_cpu[(kind, small)]
        results.append(Result(
            f"{label}: T({large})/T({small})", "status", "x",
            value=medians[(kind, large)] / medians[(kind, small)], budget="≤ 3x",
            checks=[Check("value", "<=", 3.0)],
            extra={"projected_ratio_nodes_on_own_machines":
                   (medians[(kind, small)] + extra_client_ms) / medians[(kind, small)],
                   "cpu_bound_floor_ms_at_large": cpu_floor[(kind, large)]}))
    for baseline, baseline_label in (("openssh", "OpenSSH loop"), ("naive", "asyncssh loop")):
        if math.isnan(medians[(baseline, large)]):
            continue
        for kind, label in labels.items():
            results.append(Result(
                f"{label}: speedup vs {baseline_label} at {large} nodes", "status", "x",
                value=medians[(baseline, large)] / medians[(kind, large)], budget="≥ 20x",
                checks=[Check("value", ">=", 20.0)]))
    return results
