"""The `reserve` group: `reserve --gpus 1 --json` in a fresh process, with an in-process phase split."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from drivers import DemoProcess
from harness import Check, Result, cli_argv, ms, percentile, run_timed
from plan import Plan

from gpuconsole.config import Config, load_config
from gpuconsole.core.fleet import Fleet
from groups.common import TTL_S, import_ms, new_req_id


async def _reserve_phases(config: Config) -> dict[str, float]:
    """Where a CLI reserve spends its time, in-process: connect+agent, capacity, grant, close."""
    from gpuconsole.core.placement import best_fit
    from gpuconsole.core.reservations import capacities

    phases: dict[str, float] = {}
    started = time.perf_counter()
    fleet = Fleet(config)
    await fleet.connect()
    phases["connect_and_agent_hello_ms"] = ms(time.perf_counter() - started)
    mark = time.perf_counter()
    caps = await capacities(fleet)
    phases["capacity_all_nodes_ms"] = ms(time.perf_counter() - mark)
    mark = time.perf_counter()
    target = best_fit(caps, 1)[0]
    lease = await fleet.request(target, "reserve", {"gpus": 1, "ttl_s": TTL_S, "req_id": new_req_id()})
    phases["reserve_request_ms"] = ms(time.perf_counter() - mark)
    await fleet.request(target, "release", {"id": lease["id"], "req_id": new_req_id()})
    mark = time.perf_counter()
    await fleet.close()
    phases["close_ms"] = ms(time.perf_counter() - mark)
    phases["total_ms"] = ms(time.perf_counter() - started)
    return phases


async def _release_all(config: Config) -> int:
    from gpuconsole.core.reservations import release_mine

    async with Fleet(config) as fleet:
        return len(await release_mine(fleet))


def bench_reserve_cli(plan: Plan, work: Path) -> list[Result]:
    """`reserve --gpus 1 --json` in a fresh process against a 4-node demo, plus a phase split."""
    with DemoProcess(work / "reserve-cli", 4) as demo:
        config = load_config(str(demo.config_path))
        argv = cli_argv("--config", str(demo.config_path), "reserve", "--gpus", "1", "--json")
        samples: list[float] = []
        cpu_ms: list[float] = []
        for run in range(plan.reserve_cli_runs + 1):
            timed = run_timed(argv)
            if timed.returncode != 0:
                raise RuntimeError(f"reserve CLI exit {timed.returncode}: {timed.stderr[-500:]}")
            grant = json.loads(timed.stdout)
            if grant["node"] not in {n.name for n in config.nodes} or len(grant["gpus"]) != 1:
                raise RuntimeError(f"reserve CLI: unexpected grant {grant}")
            if run:  # run 0 is the warm-up
                samples.append(ms(timed.elapsed_s))
                cpu_ms.append(ms(timed.cpu_s))
            if run % 16 == 15:  # 4 nodes x 8 GPUs: free them before they run out
                asyncio.run(_release_all(config))
        released = asyncio.run(_release_all(config))
        phase_runs = [asyncio.run(_reserve_phases(config)) for _ in range(3 if plan.quick else 5)]
        phases = {key: percentile([p[key] for p in phase_runs], 50) for key in phase_runs[0]}
    # Interpreter and import costs are best-of-N (see import_ms); the phases above are medians.
    runs = 3 if plan.quick else 7
    python_ms = import_ms("pass", runs)
    phases["python_start_ms"] = python_ms
    phases["import_cli_reserve_path_ms"] = import_ms(
        "import gpuconsole.cli.parser, gpuconsole.config, gpuconsole.cli.reservations", runs
    ) - python_ms
    phases["import_asyncssh_alone_ms"] = import_ms("import asyncssh", runs) - python_ms
    return [Result("reserve --gpus 1 --json CLI, fresh process, 4 nodes", "reserve CLI", "ms",
                   samples, budget="≤ 500 ms", checks=[Check("median", "<=", 500.0)],
                   extra={"cli_cpu_ms_median": percentile(cpu_ms, 50),
                          "phases_ms": phases, "released_after": released})]
