"""The `exporter` group (issue 16): `gpuconsole exporter` in its own process on N nodes × 8 GPUs
(64 in full mode) polling at 1 Hz: the wall time of one scrape of /metrics (a fresh HTTP request
each, one a second, as a busy Prometheus would), and the exporter's CPU share over the same window.
Budgets (full mode): scrape p95 ≤ 50 ms, CPU ≤ 10 % of a core."""

from __future__ import annotations

import subprocess
import time
import urllib.request
from pathlib import Path

from drivers import DemoFleet
from harness import Check, Result, bench_env, cli_argv, proc_cpu_s, stop_process
from plan import PeerPlan

UP_TIMEOUT_S = 180.0
SCRAPE_PERIOD_S = 1.0


def _scrape(url: str) -> tuple[float, str]:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=10) as response:
        body = response.read().decode()
    return 1000.0 * (time.perf_counter() - started), body


def _nodes_up(text: str) -> int:
    return sum(1 for line in text.splitlines() if line.startswith("gpuconsole_node_up{") and line.endswith(" 1.0"))


def bench_exporter(plan: PeerPlan, work: Path) -> list[Result]:
    nodes = 8 if plan.quick else 64
    scrapes = 5 if plan.quick else 60
    with DemoFleet(work / f"exporter-{nodes}", nodes, 8, plan.scale_processes) as demo:
        argv = cli_argv("--config", str(demo.config_path), "exporter", "--listen", "127.0.0.1:0")
        with subprocess.Popen(argv, env=bench_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True) as proc:
            try:
                assert proc.stderr is not None
                url = proc.stderr.readline().split()[-1]
                deadline = time.monotonic() + UP_TIMEOUT_S
                while _nodes_up(_scrape(url)[1]) < nodes:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"exporter: not every one of {nodes} nodes up")
                    time.sleep(0.5)
                time.sleep(2.0)  # a few polls after the last connect
                samples: list[float] = []
                before_s, wall_s = proc_cpu_s(proc.pid), time.monotonic()
                for _ in range(scrapes):
                    tick = time.monotonic()
                    samples.append(_scrape(url)[0])
                    time.sleep(max(0.0, SCRAPE_PERIOD_S - (time.monotonic() - tick)))
                cpu_pct = 100.0 * (proc_cpu_s(proc.pid) - before_s) / (time.monotonic() - wall_s)
            finally:
                stop_process(proc)
    full = not plan.quick
    note = f"{nodes} nodes × 8 GPUs in {plan.scale_processes} demo processes, polled at 1 Hz, one scrape a second"
    return [
        Result(f"exporter scrape, {nodes} nodes × 8 GPUs", "exporter", "ms", samples,
               budget="p95 ≤ 50 ms" if full else None, checks=[Check("p95", "<=", 50.0)] if full else [],
               notes=note),
        Result(f"exporter CPU at 1 Hz polling, {nodes} nodes × 8 GPUs", "exporter", "% core", value=cpu_pct,
               budget="≤ 10 %" if full else None, checks=[Check("value", "<=", 10.0)] if full else [],
               notes=note + "; the exporter process's CPU over the scrape window"),
    ]
