"""The `scale` group: the console's and watcher's poll (one `call_all("snapshot")` per second on open
connections) at 256 nodes × 8 GPUs, the nodes spread over several demo processes; then the console
itself (headless: Textual's run_test composes every frame but writes none) and `gpuconsole watch
--interval 1` (its own process) on the same nodes, each one's CPU over a window once all its nodes
are connected.

Rounds start every second, as the console and watcher poll, so each sees agents whose previous
sample is a second old (no rate-window sleep). Per round: wall time, the client's CPU (the poller
both share; the console and watcher add their own rendering and judging on top: their groups
measure that at 64 nodes) and the demo + agents CPU (schedstat of every demo process's tree).
"""

from __future__ import annotations

import asyncio
import os
import resource
import subprocess
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from drivers import DemoFleet
from harness import Check, Result, bench_env, cli_argv, ms, percentile, proc_cpu_s, proc_tree_cpu_ns, stop_process
from plan import PeerPlan

from gpuconsole.config import load_config
from gpuconsole.core.fleet import Fleet

POLL_PERIOD_S = 1.0
UP_TIMEOUT_S = 180.0  # 256 handshakes and agent starts on two shared cores


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Rounds:
    """Per timed round: wall, client CPU and demo + agents CPU (ms); the connect; client CPU %."""

    wall_ms: list[float] = field(default_factory=list)
    client_ms: list[float] = field(default_factory=list)
    server_ms: list[float] = field(default_factory=list)
    connect_ms: float = 0.0
    client_cpu_pct: float = 0.0


async def _rounds(config_path: Path, nodes: int, rounds: int, pids: list[int]) -> Rounds:
    """Connect once (untimed), one warm-up round, then `rounds` rounds at 1 Hz."""
    config = load_config(str(config_path))
    fleet = Fleet(replace(config, nodes=config.nodes[:nodes]))
    out = Rounds()
    try:
        started = time.perf_counter()
        conns = await fleet.connect()
        out.connect_ms = ms(time.perf_counter() - started)
        if fleet.errors or len(conns) != nodes:
            raise RuntimeError(f"scale: {len(conns)}/{nodes} nodes connected: {list(fleet.errors.values())[:3]}")
        window_start_s, window_cpu_s = time.perf_counter(), _cpu_s()
        for index in range(rounds + 1):  # round 0 is the warm-up
            tick = time.perf_counter()
            server_before = sum(proc_tree_cpu_ns(pid) for pid in pids)
            cpu_before = _cpu_s()
            replies = await fleet.call_all("snapshot")
            elapsed_s = time.perf_counter() - tick
            failed = [name for name, reply in replies.items() if not isinstance(reply, dict)]
            if failed or len(replies) != nodes:
                raise RuntimeError(f"scale: {len(replies)} replies, failed: {failed[:5]}")
            if index:
                out.wall_ms.append(ms(elapsed_s))
                out.client_ms.append(ms(_cpu_s() - cpu_before))
                out.server_ms.append((sum(proc_tree_cpu_ns(pid) for pid in pids) - server_before) / 1e6)
            else:
                window_start_s, window_cpu_s = time.perf_counter(), _cpu_s()
            await asyncio.sleep(max(0.0, POLL_PERIOD_S - (time.perf_counter() - tick)))
        out.client_cpu_pct = 100.0 * (_cpu_s() - window_cpu_s) / (time.perf_counter() - window_start_s)
        return out
    finally:
        await fleet.close()


async def _console_cpu_pct(config_path: Path, nodes: int, window_s: float) -> float:
    """The console (headless) polling every node: its CPU share over `window_s` once all are up."""
    from gpuconsole.model.fleet import Health
    from gpuconsole.tui.app import GpuConsoleApp

    config = load_config(str(config_path))
    config = replace(config, nodes=config.nodes[:nodes])
    app = GpuConsoleApp(config, poll=True)
    async with app.run_test(size=(160, 48)) as pilot:
        deadline = time.monotonic() + UP_TIMEOUT_S
        while sum(app.fleet.nodes[n.name].health() is Health.UP for n in config.nodes) < nodes:
            if time.monotonic() > deadline:
                raise RuntimeError(f"scale: the console did not see {nodes} nodes up in {UP_TIMEOUT_S:g} s")
            await pilot.pause(0.1)
        cpu_before_s, wall_before_s = _cpu_s(), time.monotonic()
        await asyncio.sleep(window_s)
        return 100.0 * (_cpu_s() - cpu_before_s) / (time.monotonic() - wall_before_s)


def _sockets(pid: int) -> int:
    try:
        return sum(os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:") for fd in os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def _watcher_cpu_pct(config_path: Path, nodes: int, window_s: float, work: Path) -> float:
    """`gpuconsole watch --interval 1` in its own process: its CPU share over `window_s` once it
    holds a connection to every node."""
    config = work / "scale-watch.toml"
    text = config_path.read_text()
    config.write_text(text)
    argv = cli_argv("--config", str(config), "watch", "--interval", "1", "--json",
                    "--state-file", str(work / "scale-watch-state.json"))
    with subprocess.Popen(argv, env=bench_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as proc:
        try:
            deadline = time.monotonic() + UP_TIMEOUT_S
            while _sockets(proc.pid) < nodes:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"scale: the watcher holds {_sockets(proc.pid)}/{nodes} connections")
                time.sleep(0.2)
            time.sleep(2.0)  # its first judging rounds after the last connect
            before_s, wall_s = proc_cpu_s(proc.pid), time.monotonic()
            time.sleep(window_s)
            return 100.0 * (proc_cpu_s(proc.pid) - before_s) / (time.monotonic() - wall_s)
        finally:
            stop_process(proc)


def bench_scale(plan: PeerPlan, work: Path) -> list[Result]:
    """N nodes × 8 GPUs over several demo processes, polled at 1 Hz on open connections."""
    nodes = plan.scale_nodes
    with DemoFleet(work / f"scale-{nodes}", nodes, 8, plan.scale_processes) as demo:
        data = asyncio.run(_rounds(demo.config_path, nodes, plan.scale_rounds, demo.pids))
        start_s = demo.start_s
        window_s = 5.0 if plan.quick else 30.0
        console_pct = asyncio.run(_console_cpu_pct(demo.config_path, nodes, window_s))
        watcher_pct = _watcher_cpu_pct(demo.config_path, nodes, window_s, work)
    note = f"{nodes} nodes × 8 GPUs in {plan.scale_processes} demo processes, one round a second"
    full = not plan.quick
    return [
        Result(f"scale poll round at 1 Hz, {nodes} nodes × 8 GPUs", "scale", "ms", data.wall_ms,
               budget="p95 ≤ 200 ms" if full else None, checks=[Check("p95", "<=", 200.0)] if full else [],
               extra={"connect_ms_untimed": data.connect_ms, "demo_start_s": start_s,
                      "client_cpu_ms_median": percentile(data.client_ms, 50),
                      "demo_and_agents_cpu_ms_median": percentile(data.server_ms, 50)}, notes=note),
        Result(f"scale poller client CPU at 1 Hz, {nodes} nodes", "scale", "% core",
               value=data.client_cpu_pct,
               notes="the benchmark process over the timed rounds (poll + sleep): the floor of the console's "
                     "and the watcher's CPU at this size"),
        Result(f"scale demo + agents CPU per round, {nodes} nodes", "scale", "ms", data.server_ms,
               notes="schedstat of the demo processes' trees; on a real cluster spread over the nodes"),
        Result(f"scale console CPU at 1 Hz, {nodes} nodes × 8 GPUs, headless", "scale", "% core",
               value=console_pct, budget="≤ 15 %" if full else None,
               checks=[Check("value", "<=", 15.0)] if full else [],
               notes=f"GpuConsoleApp under run_test (frames composed, not written), {window_s:g} s once all up"),
        Result(f"scale watcher CPU at 1 Hz, {nodes} nodes × 8 GPUs", "scale", "% core",
               value=watcher_pct, budget="≤ 8 %" if full else None,
               checks=[Check("value", "<=", 8.0)] if full else [],
               notes=f"`gpuconsole watch --interval 1` in its own process, {window_s:g} s once connected"),
    ]
