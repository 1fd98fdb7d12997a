"""The benchmarks of design.md section 5, each returning Result rows (see README.md)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import math
import os
import random
import re
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import asyncssh
from harness import (
    Check,
    DemoProcess,
    Result,
    Tmux,
    bench_env,
    cli_argv,
    machine_cpu_ticks,
    ms,
    percentile,
    proc_children,
    proc_cpu_ns,
    proc_cpu_s,
    proc_tree_cpu_ns,
    run_timed,
)

from gpuconsole.config import Config, NodeConfig, load_config
from gpuconsole.core.fleet import Fleet
from gpuconsole.core.status import fleet_snapshot
from gpuconsole.node.agent import MIN_RATE_WINDOW_S
from gpuconsole.ssh.connection import AgentError, NodeConnection

TTL_S = 3600.0
# What a naive monitor does per node: read host counters, then start a Python tool (the stand-in
# for `gpustat --json` / `nvidia-smi`, which the demo nodes do not have).
NAIVE_COMMAND = ("cat /proc/loadavg /proc/meminfo >/dev/null && "
                 "python3 -c 'import json, os; print(json.dumps(os.getloadavg()))'")
HEAVY_MODULES = ("asyncssh", "textual", "boto3", "botocore")


@dataclass(frozen=True)
class Plan:
    """Sizes and repetitions: full mode follows design.md section 5, quick is a CI smoke run."""

    quick: bool
    status_nodes: tuple[int, ...]
    status_reps: int
    naive_reps: int
    state_pairs: int
    renews: int
    reserve_cli_runs: int
    help_runs: int
    clients: int
    ops_per_client: int
    agent_cpu_s: float
    ping_n: int
    exec_n: int
    handshake_n: int
    fsync_n: int
    pystart_n: int
    poll_nodes: tuple[int, ...]
    poll_rounds: int
    tui_nodes: int
    tui_cpu_s: float
    tui_presses: int
    first_paint_runs: int
    jobs_n: int
    jobs_backlog_n: int
    jobs_submit_cap_s: float
    jobs_latency_trials: int

    @classmethod
    def make(cls, quick: bool) -> Plan:
        if quick:
            return cls(True, (1, 4), 2, 1, 25, 25, 3, 5, 4, 20, 3.0, 30, 10, 5, 30, 5,
                       (1, 8), 10, 8, 5.0, 10, 1, 20, 10, 10.0, 5)
        return cls(False, (1, 8, 32, 64), 7, 3, 300, 300, 10, 20, 16, 200, 10.0, 500, 100, 20,
                   300, 20, (1, 8, 32, 64), 20, 64, 30.0, 40, 5, 500, 100, 60.0, 30)


def _node_kwargs(cfg: NodeConfig) -> dict[str, Any]:
    """asyncssh.connect options for a demo node, as NodeConnection builds them."""
    return {"port": cfg.port, "client_keys": [cfg.identity_file], "known_hosts": cfg.known_hosts}


def _req() -> str:
    return uuid.uuid4().hex


# -- 1. status fan-out ------------------------------------------------------------------------


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


async def _naive_round(nodes: tuple[NodeConfig, ...]) -> float:
    """Sequential per node, asyncssh in-process: connect, run one command, close."""
    started = time.perf_counter()
    for cfg in nodes:
        async with asyncssh.connect(cfg.host, **_node_kwargs(cfg)) as conn:
            result = await conn.run(NAIVE_COMMAND, check=True)
            json.loads(str(result.stdout))
    return time.perf_counter() - started


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


@dataclass
class _Series:
    """Samples of one variant at one fleet size, with the CPU it cost on each side."""

    wall_ms: list[float]
    client_cpu_ms: list[float]
    server_cpu_ms: list[float]

    @classmethod
    def empty(cls) -> _Series:
        return cls([], [], [])

    def extra(self) -> dict[str, float]:
        cores = len(os.sched_getaffinity(0))
        client_ms = percentile(self.client_cpu_ms, 50)
        server_ms = percentile(self.server_cpu_ms, 50)
        return {"client_cpu_ms_median": client_ms, "server_and_agents_cpu_ms_median": server_ms,
                "cpu_bound_floor_ms": (client_ms + server_ms) / cores}


def _measured(demo: DemoProcess, series: _Series | None, func: Any) -> Any:
    """Run func(); record its wall time and the client/server CPU it cost unless series is None.

    func returns (elapsed_s, client_cpu_s, value); server CPU is the demo process plus its
    reaped children (the agents and commands), read once every child has exited and been reaped.
    """
    _wait_reaped(demo)
    server_before_s = proc_cpu_s(demo.pid, children=True)
    elapsed_s, client_cpu_s, value = func()
    _wait_reaped(demo)
    if series is not None:
        series.wall_ms.append(ms(elapsed_s))
        series.client_cpu_ms.append(ms(client_cpu_s))
        series.server_cpu_ms.append(ms(proc_cpu_s(demo.pid, children=True) - server_before_s))
    return value


def _wait_reaped(demo: DemoProcess, timeout_s: float = 10.0) -> None:
    """Wait until the demo has no child processes: agents of closed connections are reaped."""
    deadline = time.monotonic() + timeout_s
    while proc_children(demo.pid) and time.monotonic() < deadline:
        time.sleep(0.01)


def _in_process(coro_factory: Any) -> tuple[float, float, Any]:
    cpu_before_s = time.process_time()
    result = asyncio.run(coro_factory())
    elapsed_s, value = (result[0], result[1:]) if isinstance(result, tuple) else (result, None)
    return elapsed_s, time.process_time() - cpu_before_s, value


def _status_at(plan: Plan, work: Path, nodes: int, ssh: str | None) -> dict[str, _Series | Any]:
    """All variants at one fleet size, interleaved per repetition; repetition 0 is a warm-up."""
    series = {kind: _Series.empty() for kind in ("inproc", "cli", "naive", "openssh")}
    phase_runs: list[dict[str, float]] = []
    with DemoProcess(work / f"status-{nodes}", nodes) as demo:
        config = load_config(str(demo.config_path))
        argv = cli_argv("--config", str(demo.config_path), "status", "--json")
        for rep in range(plan.status_reps + 1):
            keep = rep > 0
            reachable, phases = _measured(demo, series["inproc"] if keep else None,
                                          lambda: _in_process(lambda: _snapshot_round(config)))
            if reachable != nodes:
                raise RuntimeError(f"status: {reachable}/{nodes} nodes reachable")
            if keep:
                phase_runs.append(phases)

            def cli() -> tuple[float, float, Any]:
                timed = run_timed(argv)
                if timed.returncode != 0:
                    raise RuntimeError(f"status CLI exit {timed.returncode}: {timed.stderr[-500:]}")
                return timed.elapsed_s, timed.cpu_s, json.loads(timed.stdout)

            document = _measured(demo, series["cli"] if keep else None, cli)
            if sum(n["reachable"] for n in document["nodes"]) != nodes:
                raise RuntimeError(f"status CLI: not all {nodes} nodes reachable")
            if rep > plan.naive_reps:
                continue
            _measured(demo, series["naive"] if keep else None,
                      lambda: _in_process(lambda: _naive_round(config.nodes)))
            if ssh is not None:
                def openssh() -> tuple[float, float, Any]:
                    before = resource.getrusage(resource.RUSAGE_CHILDREN)
                    elapsed_s = _openssh_round(config.nodes, ssh)
                    after = resource.getrusage(resource.RUSAGE_CHILDREN)
                    return elapsed_s, (after.ru_utime - before.ru_utime
                                       + after.ru_stime - before.ru_stime), None

                _measured(demo, series["openssh"] if keep else None, openssh)
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


# -- 2. state operations on an open connection -------------------------------------------------


async def _state_ops(cfg: NodeConfig, pairs: int, renews: int, pings: int) -> dict[str, Any]:
    conn = await NodeConnection.open(cfg)
    try:
        for _ in range(10):  # warm-up: first writes create the files, caches fill
            lease = await conn.request("reserve", {"gpus": 1, "ttl_s": TTL_S, "req_id": _req()})
            await conn.request("release", {"id": lease["id"], "req_id": _req()})
        reserve_ms: list[float] = []
        release_ms: list[float] = []
        for _ in range(pairs):
            started = time.perf_counter()
            lease = await conn.request("reserve", {"gpus": 1, "ttl_s": TTL_S, "req_id": _req()})
            mid = time.perf_counter()
            await conn.request("release", {"id": lease["id"], "req_id": _req()})
            reserve_ms.append(ms(mid - started))
            release_ms.append(ms(time.perf_counter() - mid))
        held = await conn.request("reserve", {"gpus": 1, "ttl_s": TTL_S, "req_id": _req()})
        renew_ms: list[float] = []
        for _ in range(renews):
            started = time.perf_counter()
            await conn.request("renew", {"id": held["id"], "ttl_s": TTL_S, "req_id": _req()})
            renew_ms.append(ms(time.perf_counter() - started))
        await conn.request("release", {"id": held["id"], "req_id": _req()})
        ping_ms: list[float] = []
        for _ in range(pings):
            started = time.perf_counter()
            await conn.request("ping")
            ping_ms.append(ms(time.perf_counter() - started))
        state_bytes = Path(cfg.state_dir, "state.json").stat().st_size  # noqa: ASYNC240
        return {"reserve": reserve_ms, "release": release_ms, "renew": renew_ms, "ping": ping_ms,
                "state_bytes": state_bytes}
    finally:
        await conn.close()


def prefill_replay_window(state_dir: str, entries: int) -> int:
    """Fill the node's replay window (remembered request ids) to ``entries``, as on a busy node.

    The agent keeps every applied request id for an hour, up to APPLIED_KEEP_MAX, so any node
    with more than one state change every two seconds lives with a full window. Returns bytes.
    """
    from gpuconsole.node import procs
    from gpuconsole.node.store import StateStore

    store = StateStore(state_dir)
    store.acquire()
    try:
        state, _, _ = store.load_locked(procs.identity()["boot_id"])
        now_bt = time.clock_gettime(time.CLOCK_BOOTTIME)
        result = {"id": "r-fill00", "gpus": [0], "owner": "bench", "token": 1, "state": "granted",
                  "expires_at": "2030-01-01T00:00:00Z", "cuda_visible_devices": "0",
                  "priority": "normal"}
        for index in range(max(0, entries - len(state["applied"]))):
            state["applied"][_req()] = {"bt": now_bt, "res": dict(result, id=f"r-fill{index}")}
        store.commit(state)
    finally:
        store.release_lock()
    return Path(store.path).stat().st_size


def bench_state_ops(plan: Plan, cfg: NodeConfig, *, full_window: bool = False
                    ) -> tuple[list[Result], list[float]]:
    """reserve/release pairs and renews on one open connection; returns rows and ping samples.

    With ``full_window`` the node's replay window is first filled to its cap (steady state of a
    busy node) and fewer operations run.
    """
    from gpuconsole.node.state import APPLIED_KEEP_MAX

    prefill_bytes = None
    if full_window:
        prefill_bytes = prefill_replay_window(cfg.state_dir, APPLIED_KEEP_MAX)
        pairs, renews, pings = max(10, plan.state_pairs // 3), max(10, plan.renews // 3), 0
        label = f", replay window full ({APPLIED_KEEP_MAX} ids)"
    else:
        pairs, renews, pings = plan.state_pairs, plan.renews, plan.ping_n
        label = ", fresh node"
    data = asyncio.run(_state_ops(cfg, pairs, renews, pings))
    budget = "p50 ≤ 5 ms, p99 ≤ 20 ms"
    checks = [Check("p50", "<=", 5.0), Check("p99", "<=", 20.0)]
    rows = []
    for op in ("reserve", "release", "renew"):
        samples: list[float] = data[op]
        tenth = max(1, len(samples) // 10)
        rows.append(Result(
            f"state op {op}{label}", "state ops", "ms", samples, budget=budget,
            checks=checks, extra={"p50_first_10pct_ms": percentile(samples[:tenth], 50),
                                  "p50_last_10pct_ms": percentile(samples[-tenth:], 50)}))
    combined = data["reserve"] + data["release"] + data["renew"]
    rows.append(Result(f"state ops, all{label}", "state ops", "ms", combined,
                       budget=budget, checks=checks,
                       extra={"state_json_bytes_at_start": prefill_bytes,
                              "state_json_bytes_at_end": data["state_bytes"]}))
    return rows, data["ping"]


# -- 3. reserve CLI end to end ----------------------------------------------------------------


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
    lease = await fleet.request(target, "reserve", {"gpus": 1, "ttl_s": TTL_S, "req_id": _req()})
    phases["reserve_request_ms"] = ms(time.perf_counter() - mark)
    await fleet.request(target, "release", {"id": lease["id"], "req_id": _req()})
    mark = time.perf_counter()
    await fleet.close()
    phases["close_ms"] = ms(time.perf_counter() - mark)
    phases["total_ms"] = ms(time.perf_counter() - started)
    return phases


async def _release_all(config: Config) -> int:
    from gpuconsole.core.reservations import release_mine

    async with Fleet(config) as fleet:
        return len(await release_mine(fleet))


def _import_ms(statement: str, runs: int) -> float:
    """Best-of-N wall time of a fresh `python -c STATEMENT`: its inherent cost, least noise."""
    return min(ms(run_timed([sys.executable, "-c", statement]).elapsed_s) for _ in range(runs))


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
    # Interpreter and import costs are best-of-N (see _import_ms); the phases above are medians.
    runs = 3 if plan.quick else 7
    python_ms = _import_ms("pass", runs)
    phases["python_start_ms"] = python_ms
    phases["import_cli_reserve_path_ms"] = _import_ms(
        "import gpuconsole.cli.parser, gpuconsole.config, gpuconsole.cli.reservations", runs
    ) - python_ms
    phases["import_asyncssh_alone_ms"] = _import_ms("import asyncssh", runs) - python_ms
    return [Result("reserve --gpus 1 --json CLI, fresh process, 4 nodes", "reserve CLI", "ms",
                   samples, budget="≤ 500 ms", checks=[Check("median", "<=", 500.0)],
                   extra={"cli_cpu_ms_median": percentile(cpu_ms, 50),
                          "phases_ms": phases, "released_after": released})]


# -- 4. --help start time and imports ----------------------------------------------------------


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


# -- 5. contention ----------------------------------------------------------------------------


@dataclass
class _Contention:
    """Client-side view of who holds which GPU, plus counters; one event loop, so no lock."""

    held: dict[int, int]
    violations: list[str]
    latencies_ms: list[float]
    tokens: list[int]
    granted: int = 0
    refused: int = 0
    busy: int = 0
    released: int = 0


async def _client(index: int, conn: NodeConnection, ops: int, shared: _Contention) -> None:
    done = 0
    while done < ops:
        started = time.perf_counter()
        try:
            lease = await conn.request("reserve", {"gpus": 1, "ttl_s": TTL_S, "req_id": _req()})
        except AgentError as exc:
            if exc.code not in ("insufficient", "busy"):
                raise
            if exc.code == "busy":
                shared.busy += 1  # the node's lock wait (10 s) ran out
            else:
                shared.refused += 1
            shared.latencies_ms.append(ms(time.perf_counter() - started))
            done += 1
            await asyncio.sleep(0)  # let the holders release
            continue
        shared.latencies_ms.append(ms(time.perf_counter() - started))
        done += 1
        shared.granted += 1
        shared.tokens.append(int(lease["token"]))
        for gpu in lease["gpus"]:
            other = shared.held.get(gpu)
            if other is not None and other != index:
                shared.violations.append(f"GPU {gpu} granted to client {index} while client "
                                         f"{other} held it (lease {lease['id']})")
            shared.held[gpu] = index
        if done >= ops:
            break
        # Forget the GPUs before asking: the node may re-grant them as soon as it commits.
        for gpu in lease["gpus"]:
            if shared.held.get(gpu) == index:
                del shared.held[gpu]
        started = time.perf_counter()
        await conn.request("release", {"id": lease["id"], "req_id": _req()})
        shared.latencies_ms.append(ms(time.perf_counter() - started))
        shared.released += 1
        done += 1


async def _contention(cfg: NodeConfig, plan: Plan) -> tuple[_Contention, float, int]:
    conns = await asyncio.gather(*(NodeConnection.open(cfg) for _ in range(plan.clients)))
    shared = _Contention({}, [], [], [])
    try:
        started = time.perf_counter()
        await asyncio.gather(*(_client(i, c, plan.ops_per_client, shared)
                               for i, c in enumerate(conns)))
        elapsed_s = time.perf_counter() - started
        leftover = await conns[0].request("reservations")
        for lease in leftover.get("reservations", []):
            await conns[0].request("release", {"id": lease["id"], "req_id": _req()})
    finally:
        await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)
    return shared, elapsed_s, len(leftover.get("reservations", []))


def bench_contention(plan: Plan, work: Path) -> list[Result]:
    """N clients, each with its own connection, reserve 1 GPU / release on one 8-GPU node."""
    with DemoProcess(work / "contention", 1) as demo:
        cfg = load_config(str(demo.config_path)).nodes[0]
        shared, elapsed_s, leftover = asyncio.run(_contention(cfg, plan))
    total_ops = shared.granted + shared.refused + shared.busy + shared.released
    duplicate_tokens = len(shared.tokens) - len(set(shared.tokens))
    label = f"{plan.clients} clients x {plan.ops_per_client} ops, 1 node x 8 GPUs"
    extra = {"ops": total_ops, "elapsed_s": elapsed_s, "granted": shared.granted,
             "refused_no_capacity": shared.refused, "refused_lock_busy": shared.busy,
             "released": shared.released,
             "committed_ops_per_s": (shared.granted + shared.released) / elapsed_s,
             "duplicate_tokens": duplicate_tokens, "leases_left_at_end": leftover,
             "violations": shared.violations[:10]}
    return [
        Result(f"contention throughput, {label}", "contention", "ops/s",
               value=total_ops / elapsed_s, budget="≥ 200 ops/s",
               checks=[Check("value", ">=", 200.0)], extra=extra),
        Result(f"contention double allocations, {label}", "contention", "count",
               value=float(len(shared.violations) + duplicate_tokens), budget="0",
               checks=[Check("value", "==", 0.0)],
               notes="client-side check after every grant, plus unique fencing tokens"),
        Result(f"contention per-op latency, {label}", "contention", "ms", shared.latencies_ms,
               notes="informational: every reply, granted, refused or released"),
    ]


# -- 6. physical limits -----------------------------------------------------------------------


async def _ssh_limits(cfg: NodeConfig, plan: Plan) -> tuple[list[float], list[float], list[float]]:
    exec_ms: list[float] = []
    async with asyncssh.connect(cfg.host, **_node_kwargs(cfg)) as conn:
        for index in range(plan.exec_n + 2):
            started = time.perf_counter()
            await conn.run("true", check=True)
            if index >= 2:
                exec_ms.append(ms(time.perf_counter() - started))
    handshake_ms: list[float] = []
    for index in range(plan.handshake_n + 1):
        started = time.perf_counter()
        conn = await asyncssh.connect(cfg.host, **_node_kwargs(cfg))
        conn.close()
        await conn.wait_closed()
        if index:
            handshake_ms.append(ms(time.perf_counter() - started))
    agent_ms: list[float] = []
    for index in range(min(plan.handshake_n, 10) + 1):
        started = time.perf_counter()
        node = await NodeConnection.open(cfg)
        elapsed_s = time.perf_counter() - started
        await node.close()
        if index:
            agent_ms.append(ms(elapsed_s))
    return exec_ms, handshake_ms, agent_ms


def _durable_writes(directory: Path, count: int) -> list[float]:
    """write + fsync + rename + directory fsync of a 4 KiB file, as one state commit's floor."""
    body = os.urandom(2048).hex().encode()
    target = directory / "state.json"
    samples = []
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for index in range(count + 5):
            started = time.perf_counter()
            tmp = directory / f"state.json.tmp.{index}"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                os.write(fd, body)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, target)
            os.fsync(dir_fd)
            if index >= 5:
                samples.append(ms(time.perf_counter() - started))
    finally:
        os.close(dir_fd)
    return samples


def _store_commits(directory: Path, count: int) -> list[float]:
    """The product's StateStore.commit (temp+fsync, .prev link, rename, mirror, dir fsync)."""
    from gpuconsole.node import state as st
    from gpuconsole.node.store import StateStore

    store = StateStore(str(directory))
    store.ensure_dir()
    state = st.new_state("bench-boot")
    samples = []
    for index in range(count + 5):
        store.acquire()
        try:
            started = time.perf_counter()
            store.commit(state)
            elapsed_s = time.perf_counter() - started
        finally:
            store.release_lock()
        if index >= 5:
            samples.append(ms(elapsed_s))
    return samples


def bench_physical(plan: Plan, cfg: NodeConfig, ping_ms: list[float]) -> list[Result]:
    """Floors measured in the same run: SSH round trips, handshake, durable write, interpreter."""
    exec_ms, handshake_ms, agent_ms = asyncio.run(_ssh_limits(cfg, plan))
    state_parent = Path(cfg.state_dir).parent
    with tempfile.TemporaryDirectory(dir=state_parent, prefix="fsync-") as raw_dir:
        write_ms = _durable_writes(Path(raw_dir), plan.fsync_n)
    with tempfile.TemporaryDirectory(dir=state_parent, prefix="store-") as store_dir:
        commit_ms = _store_commits(Path(store_dir), plan.fsync_n)
    python_ms = [ms(run_timed([sys.executable, "-c", "pass"]).elapsed_s)
                 for _ in range(plan.pystart_n + 1)][1:]
    nosite_ms = [ms(run_timed([sys.executable, "-S", "-c", "pass"]).elapsed_s)
                 for _ in range(plan.pystart_n + 1)][1:]
    node_python_ms = [ms(run_timed(["/bin/sh", "-c", "exec python3 -c pass"]).elapsed_s)
                      for _ in range(plan.pystart_n + 1)][1:]
    return [
        Result("SSH round trip: agent ping on open connection", "physical", "ms", ping_ms),
        Result("SSH round trip: raw exec `true` on open connection", "physical", "ms", exec_ms),
        Result("SSH handshake: asyncssh connect + close", "physical", "ms", handshake_ms),
        Result("agent start: connect + agent spawn + hello (NodeConnection.open)", "physical",
               "ms", agent_ms),
        Result("durable write: write+fsync+rename+dir fsync", "physical", "ms", write_ms,
               extra={"filesystem_dir": str(state_parent)}),
        Result("StateStore.commit (2 fsync + mirror + dir fsync)", "physical", "ms", commit_ms),
        Result(f"python -c pass ({sys.executable})", "physical", "ms", python_ms),
        Result("python -S -c pass (no site: without .pth processing)", "physical", "ms",
               nosite_ms, notes="the gap to `python -c pass` is site-packages start-up cost"),
        Result("node python3 -c pass (via /bin/sh, PATH)", "physical", "ms", node_python_ms,
               notes="the interpreter the demo nodes start for each agent"),
    ]


def efficiency(rows: list[Result]) -> list[Result]:
    """η_res = reserve p50 / (agent RTT p50 + durable write p50), target ≤ 3 (research 9.4)."""
    by_name = {r.name: r for r in rows}
    reserve = by_name.get("state op reserve, fresh node")
    ping = by_name.get("SSH round trip: agent ping on open connection")
    write = by_name.get("durable write: write+fsync+rename+dir fsync")
    if not (reserve and ping and write):
        return []
    floor_ms = ping.stat("p50") + write.stat("p50")
    return [Result("η_res: reserve p50 / (RTT + durable write)", "physical", "x",
                   value=reserve.stat("p50") / floor_ms, budget="≤ 3 (research target)",
                   checks=[Check("value", "<=", 3.0)],
                   extra={"floor_ms": floor_ms})]


# -- 7. agent CPU while streaming ---------------------------------------------------------------


async def _agent_cpu(cfg: NodeConfig, duration_s: float) -> dict[str, Any]:
    snapshots: list[float] = []
    first = asyncio.Event()

    def on_snapshot(name: str, data: dict[str, Any]) -> None:
        snapshots.append(time.monotonic())
        first.set()

    conn = await NodeConnection.open(cfg, stream_s=1.0, on_snapshot=on_snapshot)
    try:
        pid = int(conn.hello["pid"])
        await asyncio.wait_for(first.wait(), 10)
        await asyncio.sleep(0.1)
        cpu0_s, ns0, wall0 = proc_cpu_s(pid), proc_cpu_ns(pid), time.monotonic()
        count0 = len(snapshots)
        max_children = 0
        deadline = wall0 + duration_s
        while time.monotonic() < deadline:
            max_children = max(max_children, len(proc_children(pid)))
            await asyncio.sleep(min(0.25, max(0.0, deadline - time.monotonic())))
        cpu1_s, ns1, wall1 = proc_cpu_s(pid), proc_cpu_ns(pid), time.monotonic()
        wall_s = wall1 - wall0
        return {
            "pid": pid, "wall_s": wall_s, "cpu_s": cpu1_s - cpu0_s,
            "cpu_pct_ticks": 100.0 * (cpu1_s - cpu0_s) / wall_s,
            "cpu_pct_schedstat": (100.0 * (ns1 - ns0) / 1e9 / wall_s
                                  if ns0 is not None and ns1 is not None else None),
            "snapshots": len(snapshots) - count0, "max_children_seen": max_children,
        }
    finally:
        await conn.close()


def bench_agent_cpu(plan: Plan, cfg: NodeConfig, label: str = "fresh node") -> list[Result]:
    """A node agent streaming snapshots at 1 Hz: its CPU (all threads) as % of one core."""
    data = asyncio.run(_agent_cpu(cfg, plan.agent_cpu_s))
    state_path = Path(cfg.state_dir, "state.json")
    data["state_json_bytes"] = state_path.stat().st_size if state_path.exists() else 0
    precise = data["cpu_pct_schedstat"]
    value = precise if precise is not None else data["cpu_pct_ticks"]
    return [
        Result(f"agent CPU streaming at 1 Hz for {plan.agent_cpu_s:g} s, {label}", "agent",
               "% core",
               value=value, budget="≤ 1% of a core", checks=[Check("value", "<=", 1.0)],
               notes=f"{data['snapshots']} snapshots; /proc stat ticks say "
                     f"{data['cpu_pct_ticks']:.2f}%", extra=data),
        Result(f"agent child processes while streaming, {label}", "agent", "count",
               value=float(data["max_children_seen"]), budget="0 (no process per sample)",
               checks=[Check("value", "==", 0.0)]),
    ]


@contextlib.contextmanager
def lab(work: Path) -> Any:
    """A one-node demo shared by the state-op, physical-limit and agent-CPU benchmarks."""
    with DemoProcess(work / "lab", 1) as demo:
        yield load_config(str(demo.config_path)).nodes[0]


# -- 8. poll rounds on open connections ---------------------------------------------------------

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
        await fleet.connect()
        connect_ms = ms(time.perf_counter() - started)
        if fleet.errors or len(fleet.conns) != nodes:
            raise RuntimeError(f"poll: {len(fleet.conns)}/{nodes} nodes connected: "
                               f"{list(fleet.errors.values())[:3]}")
        series = _Series.empty()
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
    series: dict[int, _Series] = {}
    with DemoProcess(work / "poll", largest) as demo:
        config = load_config(str(demo.config_path))
        for nodes in plan.poll_nodes:
            _wait_reaped(demo)  # the previous size's agents are gone
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
        naive = _Series.empty()
        for rep in range(plan.naive_reps + 1):  # repetition 0 is a warm-up
            _measured(demo, naive if rep else None,
                      lambda: _in_process(lambda: _naive_round(config.nodes)))
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


# -- 9. the console under load ------------------------------------------------------------------

UP_TIMEOUT_S = 120.0
KEY_TIMEOUT_S = 5.0
# Fresh interpreter: create the app without polling, mount it headless, check the node rows.
FIRST_PAINT_SCRIPT = """\
import time
started = time.monotonic()
import asyncio, json, sys
from gpuconsole.config import load_config
from gpuconsole.tui.app import GpuConsoleApp
imported = time.monotonic()

async def main() -> None:
    config = load_config(sys.argv[1])
    app = GpuConsoleApp(config, poll=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        rows = app.query_one("#nodes").row_count
        painted = time.monotonic()
    print(json.dumps({"started": started, "imported": imported, "painted": painted,
                      "rows": rows, "nodes": len(config.nodes)}))

asyncio.run(main())
"""


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _tui_pilot(config: Config, plan: Plan) -> dict[str, Any]:
    """Headless app polling N nodes: CPU share once all are up, then key-to-repaint latency."""
    from textual import events

    from gpuconsole.model.fleet import Health
    from gpuconsole.tui.app import GpuConsoleApp

    names = [n.name for n in config.nodes]
    app = GpuConsoleApp(config, poll=True)
    async with app.run_test(size=(120, 40)) as pilot:
        started = time.monotonic()
        while True:
            up = sum(app.fleet.nodes[n].health() is Health.UP for n in names)
            if up == len(names):
                break
            if time.monotonic() - started > UP_TIMEOUT_S:
                raise RuntimeError(f"tui: {up}/{len(names)} nodes up after {UP_TIMEOUT_S:g} s")
            await pilot.pause(0.05)
        all_up_s = time.monotonic() - started
        assert app.poller is not None
        event_count = [0]
        forward = app.poller.on_event

        def counting(event: Any) -> None:
            event_count[0] += 1
            forward(event)

        app.poller.on_event = counting  # bench-side counter of poll events in the window
        cpu_before_s, wall_before_s = _cpu_s(), time.monotonic()
        await asyncio.sleep(plan.tui_cpu_s)
        cpu_s, wall_s = _cpu_s() - cpu_before_s, time.monotonic() - wall_before_s
        window_events = event_count[0]

        pilot_ms = await _key_latencies(app, plan.tui_presses, pilot.press, pilot.pause)

        async def deliver(key: str) -> None:
            event = events.Key(key, None)  # what the terminal driver's input thread posts
            event.set_sender(app)
            app.post_message(event)

        direct_ms = await _key_latencies(app, plan.tui_presses, deliver, asyncio.sleep)
    return {"cpu_pct": 100.0 * cpu_s / wall_s, "cpu_s": cpu_s, "wall_s": wall_s,
            "poll_events_in_window": window_events, "all_up_s": all_up_s, "pilot_key_ms": pilot_ms,
            "direct_key_ms": direct_ms}


async def _key_latencies(app: Any, presses: int, press: Callable[[str], Awaitable[None]],
                         pause: Callable[[float], Awaitable[None]]) -> list[float]:
    """Walk the node table down and up: ms from key delivery until the GPU panel names the node."""
    from textual.widgets import DataTable

    table = app.query_one("#nodes", DataTable)
    gpus = app.query_one("#gpus")
    rng = random.Random(1)
    direction = "down"
    key_ms: list[float] = []
    for _ in range(presses):
        row = table.cursor_row
        if row >= table.row_count - 1:
            direction = "up"
        elif row <= 0:
            direction = "down"
        target = table.ordered_rows[row + (1 if direction == "down" else -1)].key.value
        pressed = time.perf_counter()
        await press(direction)
        while not str(gpus.border_title).endswith(f" {target}"):
            if time.perf_counter() - pressed > KEY_TIMEOUT_S:
                raise RuntimeError(f"tui: {direction} did not select {target} "
                                   f"(title {gpus.border_title!r})")
            await pause(0)
        key_ms.append(ms(time.perf_counter() - pressed))
        await asyncio.sleep(rng.uniform(0.02, 0.08))  # spread presses over poll/render phases
    return key_ms


def _first_paint_headless(config_path: Path, script: Path) -> dict[str, float]:
    """One fresh interpreter: spawn → headless mount with every node's row present."""
    spawned = time.monotonic()
    out = subprocess.run([sys.executable, str(script), str(config_path)], capture_output=True,
                         text=True, timeout=60, env=bench_env(), stdin=subprocess.DEVNULL,
                         check=False)
    if out.returncode != 0:
        raise RuntimeError(f"first paint script exit {out.returncode}: {out.stderr[-500:]}")
    data = json.loads(out.stdout.strip().splitlines()[-1])
    if data["rows"] != data["nodes"]:
        raise RuntimeError(f"first paint: {data['rows']}/{data['nodes']} node rows")
    return {"from_spawn_ms": ms(data["painted"] - spawned),
            "interpreter_start_ms": ms(data["started"] - spawned),
            "imports_ms": ms(data["imported"] - data["started"]),
            "mount_ms": ms(data["painted"] - data["imported"])}


def _tmux_gone(tmux: Tmux, session: str, timeout_s: float = 15.0) -> bool:
    """Quit the app with `q`; True once its session is gone (killed after the timeout)."""
    tmux.send_keys(session, "q")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if session not in tmux.cmd("list-sessions", "-F", "#{session_name}", check=False).split():
            return True
        time.sleep(0.02)
    tmux.cmd("kill-session", "-t", session, check=False)
    return False


def _tui_tmux(config_path: Path, names: list[str], plan: Plan) -> dict[str, Any]:
    """`python -m gpuconsole` in a real terminal (tmux): first paint, CPU share, key latency."""
    shell_command = "exec " + shlex.join(cli_argv("--config", str(config_path)))
    first = re.compile(rf"\b{re.escape(names[0])}\b")
    paint_ms: list[float] = []
    data: dict[str, Any] = {}
    with Tmux(120, 40) as tmux:
        data["tmux_version"] = tmux.cmd("-V").strip()
        for run in range(plan.first_paint_runs + 1):  # run 0 is a warm-up
            session = f"app{run}"
            launched = time.monotonic()
            tmux.new_session(session, shell_command)
            seen, _ = tmux.wait_for(session, lambda text: bool(first.search(text)), 30.0)
            if run:
                paint_ms.append(ms(seen - launched))
            if run == plan.first_paint_runs:
                data.update(_tmux_load(tmux, session, names, launched, plan))
            data.setdefault("quit_cleanly", []).append(_tmux_gone(tmux, session))
        data["echo_floor_ms"] = _tmux_echo_floor(tmux, plan.tui_presses)
    data["first_paint_ms"] = paint_ms
    return data


def _tmux_echo_floor(tmux: Tmux, presses: int) -> list[float]:
    """The instrument's own latency: send-keys `x` to the idle pane until capture shows its echo."""
    samples: list[float] = []
    for _ in range(presses):
        before = tmux.capture("idle").count("x")
        pressed = time.monotonic()
        tmux.send_keys("idle", "x")
        seen, _ = tmux.wait_for("idle", lambda text, n=before: text.count("x") > n, KEY_TIMEOUT_S,
                                interval_s=0.0)
        samples.append(ms(seen - pressed))
    return samples


def _tmux_load(tmux: Tmux, session: str, names: list[str], launched: float,
               plan: Plan) -> dict[str, Any]:
    """With every node up: the app's CPU from /proc over the window, then Down/Up latency."""
    all_up = re.compile(rf"nodes\s+{len(names)}/{len(names)} up")
    up_seen, _ = tmux.wait_for(session, lambda text: bool(all_up.search(text)), UP_TIMEOUT_S,
                               interval_s=0.1)
    pid = tmux.pane_pid(session)
    with open(f"/proc/{pid}/cmdline", "rb") as handle:
        cmdline = handle.read().replace(b"\0", b" ").decode(errors="replace")
    if "gpuconsole" not in cmdline:
        raise RuntimeError(f"tmux pane runs {cmdline!r}, not the app")
    server = tmux.server_pid()
    ticks_before_s, ns_before, server_before_ns = proc_cpu_s(pid), proc_cpu_ns(pid), \
        proc_cpu_ns(server)
    wall_before_s = time.monotonic()
    time.sleep(plan.tui_cpu_s)  # the measurement window; nothing polls the pane meanwhile
    wall_s = time.monotonic() - wall_before_s
    ticks_s, ns_after, server_after_ns = (proc_cpu_s(pid) - ticks_before_s, proc_cpu_ns(pid),
                                          proc_cpu_ns(server))
    cpu_s = (ns_after - ns_before) / 1e9 if ns_before is not None and ns_after else ticks_s
    server_pct = (100.0 * (server_after_ns - server_before_ns) / 1e9 / wall_s
                  if server_before_ns is not None and server_after_ns else None)
    key_ms: list[float] = []
    rng = random.Random(2)
    row, key = 0, "Down"  # the app starts on the first node
    for _ in range(plan.tui_presses):
        if row >= len(names) - 1:
            key = "Up"
        elif row <= 0:
            key = "Down"
        row += 1 if key == "Down" else -1
        title = re.compile(rf"GPUs\W+{re.escape(names[row])}\b")
        pressed = time.monotonic()
        tmux.send_keys(session, key)
        seen, _ = tmux.wait_for(session, lambda text, pattern=title: bool(pattern.search(text)),
                                KEY_TIMEOUT_S, interval_s=0.0)
        key_ms.append(ms(seen - pressed))
        time.sleep(rng.uniform(0.02, 0.08))  # spread presses over poll/render phases
    return {"pid": pid, "all_up_after_launch_s": up_seen - launched, "wall_s": wall_s,
            "cpu_pct": 100.0 * cpu_s / wall_s, "cpu_pct_ticks": 100.0 * ticks_s / wall_s,
            "tmux_server_cpu_pct": server_pct, "key_ms": key_ms}


TUI_CPU_BUDGET, TUI_KEY_BUDGET, TUI_PAINT_BUDGET = "≤ 15% of one core", "p95 ≤ 50 ms", "≤ 1000 ms"


@contextlib.contextmanager
def tui_demo(plan: Plan, work: Path) -> Any:
    """The demo (N nodes x 8 GPUs, own process) shared by the headless and terminal steps."""
    with DemoProcess(work / "tui", plan.tui_nodes) as demo:
        yield demo.config_path


def bench_tui_headless(plan: Plan, work: Path, config_path: Path) -> list[Result]:
    """The console in-process (run_test) polling N nodes: CPU share, key latency; first paint."""
    label = f"{plan.tui_nodes} nodes x 8 GPUs"
    config = load_config(str(config_path))
    pilot = asyncio.run(_tui_pilot(config, plan))
    script = work / "first_paint.py"
    script.write_text(FIRST_PAINT_SCRIPT)
    paints = [_first_paint_headless(config_path, script)
              for _ in range(plan.first_paint_runs + 1)][1:]  # run 0 is a warm-up
    return [
        Result(f"tui CPU, headless (run_test), {label}, {plan.tui_cpu_s:g} s", "tui", "% core",
               value=pilot["cpu_pct"], budget=TUI_CPU_BUDGET, checks=[Check("value", "<=", 15.0)],
               notes=f"{pilot['poll_events_in_window']} poll events in the window; headless "
                     "renders frames but does not write them",
               extra={k: pilot[k] for k in ("cpu_s", "wall_s", "poll_events_in_window",
                                            "all_up_s")}),
        Result(f"tui key to repaint (pilot.press → GPU panel title), headless, {label}", "tui",
               "ms", pilot["pilot_key_ms"], budget=TUI_KEY_BUDGET,
               checks=[Check("p95", "<=", 50.0)],
               notes="pilot.press until #gpus border_title names the new node; pilot.press "
                     "itself waits for an idle process twice (≥ 2 x 20 ms sleeps)"),
        Result(f"tui key to repaint (key event → GPU panel title), headless, {label}", "tui",
               "ms", pilot["direct_key_ms"], budget=TUI_KEY_BUDGET,
               checks=[Check("p95", "<=", 50.0)],
               notes="events.Key posted to the app, as the terminal driver does, until #gpus "
                     "border_title names the new node (state set; the frame follows)"),
        Result(f"tui first paint, fresh process, headless, {label}", "tui", "ms",
               [p["from_spawn_ms"] for p in paints], budget=TUI_PAINT_BUDGET,
               checks=[Check("median", "<=", 1000.0)],
               notes="spawn → run_test mounted with every node's row (poll=False)",
               extra={key: percentile([p[key] for p in paints], 50)
                      for key in ("interpreter_start_ms", "imports_ms", "mount_ms")}),
    ]


def bench_tui_terminal(plan: Plan, config_path: Path) -> list[Result]:
    """`python -m gpuconsole` in tmux polling N nodes: first paint, CPU share, key to screen."""
    if shutil.which("tmux") is None:
        print("[bench] tui/terminal: tmux not found, skipped", file=sys.stderr)
        return []
    label = f"{plan.tui_nodes} nodes x 8 GPUs"
    names = [n.name for n in load_config(str(config_path)).nodes]
    terminal = _tui_tmux(config_path, names, plan)
    return [
        Result(f"tui CPU, real terminal (tmux 120x40), {label}, {plan.tui_cpu_s:g} s", "tui",
               "% core", value=terminal["cpu_pct"], budget=TUI_CPU_BUDGET,
               checks=[Check("value", "<=", 15.0)],
               notes=f"/proc schedstat of the app; /proc stat ticks say "
                     f"{terminal['cpu_pct_ticks']:.2f}%; tmux server (not counted) "
                     f"{terminal['tmux_server_cpu_pct'] or math.nan:.2f}%",
               extra={k: v for k, v in terminal.items()
                      if k not in ("key_ms", "first_paint_ms", "echo_floor_ms")}),
        Result(f"tui key to repaint (Down/Up → title on screen), real terminal, {label}", "tui",
               "ms", terminal["key_ms"], budget=TUI_KEY_BUDGET, checks=[Check("p95", "<=", 50.0)],
               notes="tmux send-keys until capture-pane shows the new node in the GPU panel "
                     "title; includes one tmux client spawn and the capture polling"),
        Result("tmux instrument floor: send-keys → echo seen by capture-pane", "tui", "ms",
               terminal["echo_floor_ms"],
               notes="`cat` in an idle pane: one tmux client spawn plus capture polling"),
        Result(f"tui first paint, real terminal (tmux), {label}", "tui", "ms",
               terminal["first_paint_ms"], budget=TUI_PAINT_BUDGET,
               checks=[Check("median", "<=", 1000.0)],
               notes="tmux new-session → first capture-pane showing the first node name"),
    ]


# -- 10. batch jobs: queue throughput, GPU free → queued job start --------------------------------

JOB_TERMINAL = frozenset({"succeeded", "failed", "cancelled", "preempted", "lost"})
JOBS_GPUS = 8
JOBS_POLL_S = 0.1  # the `jobs` poller's period while a batch drains
JOBS_DRAIN_TIMEOUT_S = 300.0
JOB_STEP_TIMEOUT_S = 30.0
JOB_SETTLE_S = (0.3, 0.5)  # a queued job's supervisor is up and polling before the gate opens
SHORT_JOB_ARGV = ("true",)
STAMP_ARGV = ("date", "+%s.%N")  # GNU date: wall clock in ns as the job's first action, ~1 ms
JOBS_LATENCY_BUDGET = "p99 ≤ 1 s"


@dataclass
class _JobWatch:
    """What the `jobs` poller saw of the submitted jobs: when each started and ended (perf s)."""

    submitted: dict[str, float] = field(default_factory=dict)
    started: dict[str, float] = field(default_factory=dict)
    ended: dict[str, float] = field(default_factory=dict)
    final: dict[str, str] = field(default_factory=dict)
    poll_ms: list[float] = field(default_factory=list)
    expected: int | None = None
    peak_queued: int = 0
    queued_now: int = 0


async def _watch_jobs(fleet: Fleet, node: str, watch: _JobWatch) -> None:
    """Poll `jobs` every JOBS_POLL_S until `watch.expected` submitted jobs have all ended.

    A job counts as started when first seen running or with a start time, and as ended when first
    seen in a final state, or gone from the listing (only finished jobs are pruned).
    """
    began = time.perf_counter()
    while True:
        sent = time.perf_counter()
        reply = await fleet.request(node, "jobs", {})
        seen = time.perf_counter()
        watch.poll_ms.append(ms(seen - sent))
        listed = {job["id"]: job for job in reply["jobs"]}
        queued = 0
        for job_id, submitted in list(watch.submitted.items()):
            if job_id in watch.ended:
                continue
            job = listed.get(job_id)
            if job is None:
                if submitted < sent:
                    watch.ended[job_id], watch.final[job_id] = seen, "pruned"
                continue
            queued += job["state"] == "queued"
            if job["state"] == "running" or job["started_at"]:
                watch.started.setdefault(job_id, seen)
            if job["state"] in JOB_TERMINAL:
                watch.ended[job_id], watch.final[job_id] = seen, job["state"]
        watch.queued_now = queued
        watch.peak_queued = max(watch.peak_queued, queued)
        if watch.expected is not None and len(watch.ended) >= watch.expected:
            return
        if seen - began > JOBS_DRAIN_TIMEOUT_S:
            raise RuntimeError(f"jobs: {len(watch.ended)}/{len(watch.submitted)} ended after "
                               f"{JOBS_DRAIN_TIMEOUT_S:g} s")
        await asyncio.sleep(JOBS_POLL_S)


async def _submit_burst(fleets: list[Fleet], node: str, count: int, per_fleet: int,
                        watch: _JobWatch, cap_s: float | None = None) -> tuple[list[float], float]:
    """`count` submits of SHORT_JOB_ARGV, `per_fleet` submitters on each Fleet, as fast as they go.

    Returns each request's latency (ms) and the wall time from the first send to the last reply;
    with `cap_s` no new submit starts after that many seconds.
    """
    remaining = [count]
    latencies_ms: list[float] = []
    began = time.perf_counter()

    async def submitter(fleet: Fleet, index: int) -> None:
        while remaining[0] > 0 and (cap_s is None or time.perf_counter() - began < cap_s):
            remaining[0] -= 1
            sent = time.perf_counter()
            reply = await fleet.request(node, "submit", {
                "argv": list(SHORT_JOB_ARGV), "gpus": 1, "name": f"bench-{index}",
                "req_id": _req()})
            done = time.perf_counter()
            watch.submitted[reply["id"]] = done
            latencies_ms.append(ms(done - sent))

    await asyncio.gather(*(submitter(fleet, f * per_fleet + i)
                           for f, fleet in enumerate(fleets) for i in range(per_fleet)))
    return latencies_ms, time.perf_counter() - began


async def _job_state(fleet: Fleet, node: str, job_id: str) -> str | None:
    """The job's state in the node's listing (None once pruned)."""
    reply = await fleet.request(node, "jobs", {})
    return next((job["state"] for job in reply["jobs"] if job["id"] == job_id), None)


async def _submit_until(fleet: Fleet, node: str, argv: list[str], want: str,
                        lost: list[str]) -> str:
    """Submit argv and return its id once it is `want` (queued/running); a lost job is resubmitted.

    For "queued" the job must still be queued after JOB_SETTLE_S (its supervisor started and
    survived); lost jobs' ids are appended to `lost`.
    """
    for _ in range(20):
        reply = await fleet.request(node, "submit", {"argv": argv, "gpus": 1, "name": "bench",
                                                     "req_id": _req()})
        job_id = str(reply["id"])
        deadline = time.monotonic() + JOB_STEP_TIMEOUT_S
        if want == "queued":
            await asyncio.sleep(random.uniform(*JOB_SETTLE_S))
        while True:
            state = await _job_state(fleet, node, job_id)
            if state == want:
                return job_id
            if state == "lost":
                lost.append(job_id)
                break
            if state != "queued" or time.monotonic() > deadline:
                raise RuntimeError(f"jobs: job {job_id} is {state}, expected {want}")
            await asyncio.sleep(0.02)
    raise RuntimeError(f"jobs: 20 submits of {argv} in a row were lost")


def _open_gate(fifo: Path) -> float:
    """Release a `cat FIFO` job: open the write end and close it (EOF); time.time() at the close.

    The non-blocking open fails until the job's `cat` has the FIFO open, so the returned time
    never includes waiting for the job to start.
    """
    deadline = time.monotonic() + JOB_STEP_TIMEOUT_S
    while True:
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno != errno.ENXIO or time.monotonic() > deadline:
                raise
            time.sleep(0.002)
            continue
        released = time.time()
        os.close(fd)
        return released


class _Gates:
    """Jobs that hold one GPU each until released: `cat FIFO`, no CPU while they wait.

    (A `while [ ! -e GATE ]; do sleep 0.01; done` loop would spawn 800 `sleep`s a second for
    8 GPUs on the same cores as the queue under test.)
    """

    def __init__(self, fleet: Fleet, node: str, directory: Path) -> None:
        self.fleet = fleet
        self.node = node
        self.directory = directory
        self.held: dict[str, Path] = {}  # job id → FIFO, oldest first
        self.lost: list[str] = []
        self.count = 0

    async def hold(self) -> str:
        """Start one gate job and wait until it runs (holds its GPU)."""
        self.count += 1
        fifo = self.directory / f"gate-{self.count}"
        os.mkfifo(fifo)
        job_id = await _submit_until(self.fleet, self.node, ["cat", str(fifo)], "running",
                                     self.lost)
        self.held[job_id] = fifo
        return job_id

    def release_oldest(self) -> tuple[str, float]:
        """Open the oldest gate: (its job id, time.time() of the release)."""
        job_id = next(iter(self.held))
        return job_id, _open_gate(self.held.pop(job_id))

    def release_all(self) -> None:
        """Open every gate still held (cleanup)."""
        while self.held:
            with contextlib.suppress(OSError):
                self.release_oldest()


def _peak_per_s(times: list[float], window_s: float = 1.0) -> int:
    """Most events inside any window of `window_s` seconds."""
    ordered, best, low = sorted(times), 0, 0
    for high, stamp in enumerate(ordered):
        while stamp - ordered[low] > window_s:
            low += 1
        best = max(best, high - low + 1)
    return best


async def _jobs_burst(config: Config, count: int, fleets_n: int, per_fleet: int,
                      gate_dir: Path | None, cap_s: float | None) -> dict[str, Any]:
    """Submit `count` short jobs and poll `jobs` until all ended, on connections opened untimed.

    With `gate_dir`, 8 gate jobs hold every GPU during the submits (a backlog forms) and are
    released together once the submits are done.
    """
    node = config.nodes[0].name
    fleets = [Fleet(config) for _ in range(fleets_n)]
    poller = Fleet(config)
    gates = None
    try:
        for fleet in (*fleets, poller):
            await fleet.connect()
        if gate_dir is not None:
            gates = _Gates(poller, node, gate_dir)
            for _ in range(JOBS_GPUS):
                await gates.hold()
        watch = _JobWatch()
        busy0 = machine_cpu_ticks()
        watcher = asyncio.create_task(_watch_jobs(poller, node, watch))
        first_submit = time.perf_counter()
        try:
            latencies_ms, submit_s = await _submit_burst(fleets, node, count, per_fleet, watch,
                                                         cap_s)
            watch.expected = len(watch.submitted)
            queued_at_release = None
            released = first_submit
            if gates is not None:
                await asyncio.sleep(2 * JOBS_POLL_S)  # one poll sees the backlog as it stands
                queued_at_release = watch.queued_now
                released = time.perf_counter()
                gates.release_all()
            await watcher
        finally:
            watcher.cancel()
        ended = max(watch.ended.values(), default=released)
        busy1 = machine_cpu_ticks()
        state_path = Path(config.nodes[0].state_dir, "state.json")
        finals: dict[str, int] = {}
        for state in watch.final.values():
            finals[state] = finals.get(state, 0) + 1
        return {
            "submitted": len(watch.submitted), "submit_s": submit_s, "submit_ms": latencies_ms,
            "drain_s": ended - released, "started": len(watch.started),
            "started_times": [t - released for t in watch.started.values()],
            "finals": finals, "lost": finals.get("lost", 0), "peak_queued": watch.peak_queued,
            "queued_at_release": queued_at_release, "poll_ms": watch.poll_ms,
            "gate_jobs_lost": len(gates.lost) if gates else 0,
            "machine_cpu_busy_pct": 100.0 * (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]),
            "state_json_bytes": state_path.stat().st_size,  # noqa: ASYNC240
        }
    finally:
        if gates is not None:
            gates.release_all()
        for fleet in (*fleets, poller):
            await fleet.close()


@contextlib.contextmanager
def jobs_demo(work: Path) -> Any:
    """A one-node, 8-GPU demo shared by the throughput and latency steps."""
    with DemoProcess(work / "jobs", 1, JOBS_GPUS) as demo:
        yield demo.config_path


def _burst_extra(data: dict[str, Any]) -> dict[str, Any]:
    """The JSON `extra` of a burst: counts, drain, CPU, poll cost (raw lists left out)."""
    extra = {k: v for k, v in data.items()
             if k not in ("submit_ms", "started_times", "poll_ms")}
    extra["submit_ms_p50"] = percentile(data["submit_ms"], 50)
    extra["submit_ms_p99"] = percentile(data["submit_ms"], 99)
    extra["jobs_poll_ms_p50"] = percentile(data["poll_ms"], 50)
    extra["jobs_poll_ms_max"] = max(data["poll_ms"], default=math.nan)
    extra["drain_jobs_per_s"] = data["submitted"] / data["drain_s"] if data["drain_s"] else None
    extra["peak_started_in_1s"] = _peak_per_s(data["started_times"])
    return extra


def _dispatch_extra(data: dict[str, Any]) -> dict[str, Any]:
    """The drain side of a burst's `extra`."""
    keys = ("submitted", "started", "drain_s", "drain_jobs_per_s", "peak_started_in_1s",
            "peak_queued", "queued_at_release", "finals", "machine_cpu_busy_pct")
    extra = _burst_extra(data)
    return {key: extra[key] for key in keys}


def bench_jobs_throughput(plan: Plan, work: Path, config_path: Path) -> list[Result]:
    """Submits/s (1 and 4 submitters) and dispatches/s of short jobs on one 8-GPU node."""
    config = load_config(str(config_path))
    n = plan.jobs_n
    label = f"{n} x `true`, 1 node x {JOBS_GPUS} GPUs"
    variants = (("sequential, 1 connection", 1, 1), ("4 concurrent submitters, 1 connection", 1, 4),
                ("4 concurrent submitters, 4 connections", 4, 1))
    cap_s = plan.jobs_submit_cap_s
    runs = {name: asyncio.run(_jobs_burst(config, n, fleets_n, per_fleet, None, cap_s))
            for name, fleets_n, per_fleet in variants}
    backlog_dir = work / "jobs-gates-backlog"
    backlog_dir.mkdir()
    backlog = asyncio.run(_jobs_burst(config, plan.jobs_backlog_n, 1, 1, backlog_dir, cap_s))
    rows = [Result(f"jobs submit, {name}, {label}", "jobs", "jobs/s",
                   value=data["submitted"] / data["submit_s"], extra=_burst_extra(data),
                   notes=f"{data['submitted']} submitted in {data['submit_s']:.1f} s (cap "
                         f"{cap_s:g} s), {data['lost']} lost; drain "
                         f"{data['submitted'] / data['drain_s']:.1f} jobs/s")
            for name, data in runs.items()]
    sequential = runs["sequential, 1 connection"]
    rows += [
        Result(f"jobs submit request latency, sequential, 1 connection, {label}", "jobs", "ms",
               sequential["submit_ms"], notes="one `submit` request on an open connection"),
        Result(f"jobs dispatch rate, first submit → all ended, sequential submits, {label}",
               "jobs", "jobs/s", value=sequential["started"] / sequential["drain_s"],
               extra=_dispatch_extra(sequential),
               notes=f"jobs that ran ({sequential['started']}) over first submit → last end "
                     f"({sequential['drain_s']:.1f} s); `jobs` polled every {JOBS_POLL_S:g} s"),
        Result(f"jobs submit into a backlog (8 GPUs held), sequential, up to "
               f"{plan.jobs_backlog_n} x `true`", "jobs", "jobs/s",
               value=backlog["submitted"] / backlog["submit_s"], extra=_burst_extra(backlog),
               notes=f"{backlog['submitted']} submitted in {backlog['submit_s']:.1f} s (cap "
                     f"{cap_s:g} s); {backlog['lost']} lost"),
        Result(f"jobs dispatch rate, backlog of up to {plan.jobs_backlog_n} queued behind "
               f"{JOBS_GPUS} held GPUs, release → all ended", "jobs", "jobs/s",
               value=backlog["started"] / backlog["drain_s"] if backlog["drain_s"] else None,
               extra=_dispatch_extra(backlog),
               notes=f"{backlog['queued_at_release']} queued at release, {backlog['started']} "
                     f"ran in {backlog['drain_s']:.1f} s"),
    ]
    lost = {name: data["lost"] for name, data in [*runs.items(), ("backlog", backlog)]}
    submitted = sum(data["submitted"] for data in [*runs.values(), backlog])
    rows.append(Result(
        "jobs lost in the throughput runs", "jobs", "count", value=float(sum(lost.values())),
        budget="0", checks=[Check("value", "==", 0.0)],
        notes=f"of {submitted} submitted: a lost job never ran (its supervisor was gone)",
        extra={"lost_by_run": lost, "submitted": submitted}))
    return rows


async def _latency_trials(config: Config, trials: int, gate_dir: Path) -> dict[str, Any]:
    """8 gate jobs hold the GPUs; per trial queue a stamp job, open one gate, read the stamp.

    Trial 0 is a warm-up. Phases come from the node's state file (float wall times): gate →
    gate job recorded ended (exit seen + finish commit), → stamp job claimed (supervisor poll +
    claim), → stamp (spawn + exec of the command).
    """
    node = config.nodes[0].name
    state_path = Path(config.nodes[0].state_dir, "state.json")
    async with Fleet(config) as fleet:
        await fleet.connect()
        reply = await fleet.request(node, "jobs", {})
        active = [job["id"] for job in reply["jobs"] if job["state"] not in JOB_TERMINAL]
        if active:
            raise RuntimeError(f"jobs latency: node not idle, active jobs {active[:5]}")
        gates = _Gates(fleet, node, gate_dir)
        stamp_lost: list[str] = []
        samples_ms: list[float] = []
        phases: dict[str, list[float]] = {"gate_to_gpu_freed_ms": [], "freed_to_claimed_ms": [],
                                          "claimed_to_stamp_ms": []}
        try:
            for _ in range(JOBS_GPUS):
                await gates.hold()
            for trial in range(trials + 1):
                stamp_id = await _submit_until(fleet, node, list(STAMP_ARGV), "queued",
                                               stamp_lost)
                gate_id, released = gates.release_oldest()
                stamp = await _read_stamp(fleet, node, stamp_id)
                await _wait_ended(fleet, node, stamp_id)
                await gates.hold()  # the stamp job's GPU is free again: hold all 8 once more
                if not trial:
                    continue
                samples_ms.append(ms(stamp - released))
                jobs = json.loads(state_path.read_text())["jobs"]  # noqa: ASYNC240
                freed, claimed = jobs[gate_id]["ended_wall"], jobs[stamp_id]["started_wall"]
                phases["gate_to_gpu_freed_ms"].append(ms(freed - released))
                phases["freed_to_claimed_ms"].append(ms(claimed - freed))
                phases["claimed_to_stamp_ms"].append(ms(stamp - claimed))
        finally:
            gates.release_all()
        return {"samples_ms": samples_ms, "phases": phases, "stamp_jobs_lost": len(stamp_lost),
                "gate_jobs_lost": len(gates.lost), "gate_jobs": gates.count}


async def _read_stamp(fleet: Fleet, node: str, job_id: str) -> float:
    """The wall time the stamp job printed, polling its stdout every 20 ms."""
    deadline = time.monotonic() + JOB_STEP_TIMEOUT_S
    while True:
        reply = await fleet.request(node, "logs", {"id": job_id, "stream": "stdout", "offset": 0})
        if reply["data"].endswith("\n"):
            return float(reply["data"].split()[0])
        if reply["ended"] or time.monotonic() > deadline:
            raise RuntimeError(f"jobs: stamp job {job_id} is {reply.get('state')} "
                               f"without output")
        await asyncio.sleep(0.02)


async def _wait_ended(fleet: Fleet, node: str, job_id: str) -> None:
    """Wait until the job has ended (its GPU is free again)."""
    deadline = time.monotonic() + JOB_STEP_TIMEOUT_S
    while await _job_state(fleet, node, job_id) not in JOB_TERMINAL:
        if time.monotonic() > deadline:
            raise RuntimeError(f"jobs: job {job_id} did not end")
        await asyncio.sleep(0.02)


def _stamp_floor_ms(runs: int) -> list[float]:
    """Spawn → wall time printed by STAMP_ARGV from this process: the instrument's own share."""
    samples = []
    for _ in range(runs):
        spawned = time.time()
        out = subprocess.run(list(STAMP_ARGV), capture_output=True, text=True, timeout=10,
                             check=True)
        samples.append(ms(float(out.stdout) - spawned))
    return samples


def bench_jobs_latency(plan: Plan, work: Path, config_path: Path) -> list[Result]:
    """GPU free → queued job start: open one gate job's FIFO, time until the queued job stamps."""
    from gpuconsole.node.supervisor import POLL_S

    gate_dir = work / "jobs-gates-latency"
    gate_dir.mkdir()
    data = asyncio.run(_latency_trials(load_config(str(config_path)), plan.jobs_latency_trials,
                                       gate_dir))
    floor_ms = percentile(_stamp_floor_ms(10), 50)
    phases = {f"{key}_p50": percentile(values, 50) for key, values in data["phases"].items()}
    phases.update({f"{key}_max": max(values) for key, values in data["phases"].items()})
    return [Result(
        f"jobs GPU free → queued job start (gate release → job's first action), "
        f"1 node x {JOBS_GPUS} GPUs", "jobs", "ms", data["samples_ms"],
        budget=JOBS_LATENCY_BUDGET, checks=[Check("p99", "<=", 1000.0)],
        notes=f"8 `cat FIFO` jobs hold the GPUs; supervisor poll {POLL_S:g} s is the floor; "
              f"stamp `{shlex.join(STAMP_ARGV)}` spawn floor {floor_ms:.1f} ms",
        extra={**phases, "supervisor_poll_s": POLL_S, "stamp_spawn_floor_ms": floor_ms,
               **{k: v for k, v in data.items() if k not in ("samples_ms", "phases")}})]
