"""Helpers several groups share: request ids, the naive per-node loop, CPU-charged measurements."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any

import asyncssh
from drivers import DemoFleet, DemoProcess
from harness import ms, percentile, proc_children, proc_cpu_s, run_timed

from gpuconsole.config import NodeConfig

TTL_S = 3600.0
# What a naive monitor does per node: read host counters, then start a Python tool (the stand-in
# for `gpustat --json` / `nvidia-smi`, which the demo nodes do not have).
NAIVE_COMMAND = ("cat /proc/loadavg /proc/meminfo >/dev/null && "
                 "python3 -c 'import json, os; print(json.dumps(os.getloadavg()))'")


def node_kwargs(cfg: NodeConfig) -> dict[str, Any]:
    """asyncssh.connect options for a demo node, as NodeConnection builds them."""
    return {"port": cfg.port, "client_keys": [cfg.identity_file], "known_hosts": cfg.known_hosts}


def new_req_id() -> str:
    return uuid.uuid4().hex


async def naive_round(nodes: tuple[NodeConfig, ...]) -> float:
    """Sequential per node, asyncssh in-process: connect, run one command, close."""
    started = time.perf_counter()
    for cfg in nodes:
        async with asyncssh.connect(cfg.host, **node_kwargs(cfg)) as conn:
            result = await conn.run(NAIVE_COMMAND, check=True)
            json.loads(str(result.stdout))
    return time.perf_counter() - started


@dataclass
class Series:
    """Samples of one variant at one fleet size, with the CPU it cost on each side."""

    wall_ms: list[float]
    client_cpu_ms: list[float]
    server_cpu_ms: list[float]

    @classmethod
    def empty(cls) -> Series:
        return cls([], [], [])

    def extra(self) -> dict[str, float]:
        cores = len(os.sched_getaffinity(0))
        client_ms = percentile(self.client_cpu_ms, 50)
        server_ms = percentile(self.server_cpu_ms, 50)
        return {"client_cpu_ms_median": client_ms, "server_and_agents_cpu_ms_median": server_ms,
                "cpu_bound_floor_ms": (client_ms + server_ms) / cores}


def measured(demo: DemoProcess | DemoFleet, series: Series | None, func: Any,
             persistent: frozenset[int] = frozenset()) -> Any:
    """Run func(); record its wall time and the client/server CPU it cost unless series is None.

    func returns (elapsed_s, client_cpu_s, value); server CPU is the demo process plus its
    reaped children (the agents and commands), read once every child has exited and been reaped.
    `persistent`: children that stay (a keeper's agents) and are not waited for (nor counted).
    """
    wait_reaped(demo, persistent=persistent)
    server_before_s = sum(proc_cpu_s(pid, children=True) for pid in demo.pids)
    elapsed_s, client_cpu_s, value = func()
    wait_reaped(demo, persistent=persistent)
    if series is not None:
        series.wall_ms.append(ms(elapsed_s))
        series.client_cpu_ms.append(ms(client_cpu_s))
        server_after_s = sum(proc_cpu_s(pid, children=True) for pid in demo.pids)
        series.server_cpu_ms.append(ms(server_after_s - server_before_s))
    return value


def demo_children(demo: DemoProcess | DemoFleet) -> frozenset[int]:
    """The live children of the demo's server processes (agents, commands)."""
    return frozenset(child for pid in demo.pids for child in proc_children(pid))


def wait_reaped(demo: DemoProcess | DemoFleet, timeout_s: float = 10.0,
                persistent: frozenset[int] = frozenset()) -> None:
    """Wait until the demo has no child processes but `persistent` ones: agents of closed
    connections are reaped."""
    deadline = time.monotonic() + timeout_s
    while demo_children(demo) - persistent and time.monotonic() < deadline:
        time.sleep(0.01)


def in_process(coro_factory: Any) -> tuple[float, float, Any]:
    cpu_before_s = time.process_time()
    result = asyncio.run(coro_factory())
    elapsed_s, value = (result[0], result[1:]) if isinstance(result, tuple) else (result, None)
    return elapsed_s, time.process_time() - cpu_before_s, value


def import_ms(statement: str, runs: int) -> float:
    """Best-of-N wall time of a fresh `python -c STATEMENT`: its inherent cost, least noise."""
    return min(ms(run_timed([sys.executable, "-c", statement]).elapsed_s) for _ in range(runs))

