"""The `poll` group: `call_all("snapshot")` rounds on a Fleet's open connections (the console's and the
watcher's path) at several sizes, against the naive per-node loop."""

from __future__ import annotations

import asyncio
import resource
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from drivers import DemoProcess
from harness import Check, Result, ms, percentile, proc_tree_cpu_ns
from plan import Plan

from gpuconsole.config import Config, load_config
from gpuconsole.core.fleet import Fleet
from gpuconsole.node.telemetry import MIN_RATE_WINDOW_S
from groups.common import Series, in_process, measured, naive_round, wait_reaped

POLL_GAP_S = MIN_RATE_WINDOW_S + 0.02


async def _poll_round(fleet: Fleet, nodes: int, demo_pid: int) -> tuple[float, float, float]:
    """One `call_all("snapshot")`: (wall ms, client CPU ms, demo + agents CPU ms)."""
    server_before_ns = proc_tree_cpu_ns(demo_pid)
    usage_before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    replies = await fleet.call_all("snapshot")
    elapsed_s = time.perf_counter() - started
    usage_after = resource.getrusage(resource.RUSAGE_SELF)
    server_ns = proc_tree_cpu_ns(demo_pid) - server_before_ns
    failed = sorted(name for name, reply in replies.items() if not isinstance(reply, dict))
    if failed or len(replies) != nodes:
        raise RuntimeError(f"poll: {len(replies)} replies, failed: {failed[:5]}")
    return (ms(elapsed_s), ms(usage_after.ru_utime - usage_before.ru_utime
                              + usage_after.ru_stime - usage_before.ru_stime), server_ns / 1e6)


async def _poll_session(config: Config, nodes: int, rounds: int, demo_pid: int) -> dict[str, Any]:
    """Connect to the first `nodes` nodes once (untimed), one warm-up round, then timed rounds.

    Rounds start POLL_GAP_S after the previous one ended: an agent sleeps until its previous
    sample is MIN_RATE_WINDOW_S old (it needs a window for rates), so back-to-back rounds would
    time that sleep; the console and watcher poll at 1 Hz and never meet it. A few back-to-back
    rounds at the end show that floor.
    """
    fleet = Fleet(replace(config, nodes=config.nodes[:nodes]))
    try:
        started = time.perf_counter()
        conns = await fleet.connect()
        connect_ms = ms(time.perf_counter() - started)
        if fleet.errors or len(conns) != nodes:
            raise RuntimeError(f"poll: {len(conns)}/{nodes} nodes connected: "
                               f"{list(fleet.errors.values())[:3]}")
        series = Series.empty()
        for index in range(rounds + 1):  # round 0 is the warm-up
            await asyncio.sleep(POLL_GAP_S)
            wall_ms, client_ms, server_ms = await _poll_round(fleet, nodes, demo_pid)
            if index:
                series.wall_ms.append(wall_ms)
                series.client_cpu_ms.append(client_ms)
                series.server_cpu_ms.append(server_ms)
        back_to_back_ms = [(await _poll_round(fleet, nodes, demo_pid))[0] for _ in range(3)]
        return {"series": series, "connect_ms": connect_ms, "back_to_back_ms": back_to_back_ms}
    finally:
        await fleet.close()


def bench_poll(plan: Plan, work: Path) -> list[Result]:
    """Poll rounds on a Fleet's open connections at several sizes, against the naive loop."""
    largest, smallest = max(plan.poll_nodes), min(plan.poll_nodes)
    results: list[Result] = []
    series: dict[int, Series] = {}
    with DemoProcess(work / "poll", largest) as demo:
        config = load_config(str(demo.config_path))
        for nodes in plan.poll_nodes:
            wait_reaped(demo)  # the previous size's agents are gone
            data = asyncio.run(_poll_session(config, nodes, plan.poll_rounds, demo.pid))
            series[nodes] = data["series"]
            results += [
                Result(f"poll round call_all(snapshot), open connections, {nodes} nodes", "poll",
                       "ms", data["series"].wall_ms,
                       extra={**data["series"].extra(), "connect_ms_untimed": data["connect_ms"],
                              "back_to_back_round_ms_median":
                              percentile(data["back_to_back_ms"], 50),
                              "gap_between_rounds_s": POLL_GAP_S,
                              "demo_nodes": largest, "demo_start_s": demo.start_s}),
                Result(f"poll round client CPU, {nodes} nodes", "poll", "ms",
                       data["series"].client_cpu_ms,
                       notes="getrusage(RUSAGE_SELF) utime+stime per round"),
            ]
        naive = Series.empty()
        for rep in range(plan.naive_reps + 1):  # repetition 0 is a warm-up
            measured(demo, naive if rep else None,
                      lambda: in_process(lambda: naive_round(config.nodes)))
    results.append(Result(f"naive loop, asyncssh connect+run+close, {largest} nodes (poll)",
                          "poll", "ms", naive.wall_ms, extra=naive.extra(),
                          notes="the status group's baseline, on the poll group's demo"))
    small_ms = percentile(series[smallest].wall_ms, 50)
    large_ms = percentile(series[largest].wall_ms, 50)
    extra_client_ms = (percentile(series[largest].client_cpu_ms, 50)
                       - percentile(series[smallest].client_cpu_ms, 50))
    results += [
        Result(f"poll round: T({largest})/T({smallest})", "poll", "x", value=large_ms / small_ms,
               budget="≤ 3x", checks=[Check("value", "<=", 3.0)],
               extra={"p95_ratio": percentile(series[largest].wall_ms, 95)
                      / percentile(series[smallest].wall_ms, 95),
                      "projected_ratio_nodes_on_own_machines":
                      (small_ms + extra_client_ms) / small_ms,
                      "cpu_bound_floor_ms_at_large": series[largest].extra()["cpu_bound_floor_ms"]}),
        Result(f"poll round: speedup vs asyncssh loop at {largest} nodes", "poll", "x",
               value=percentile(naive.wall_ms, 50) / large_ms, budget="≥ 20x",
               checks=[Check("value", ">=", 20.0)]),
    ]
    return results
