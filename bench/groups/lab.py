"""The `lab` group on one node: state operations on an open connection, the physical limits
(SSH round trips, handshake, durable write, interpreter start), η_res and the agent's CPU."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncssh
from drivers import DemoProcess
from harness import Check, Result, ms, percentile, proc_children, proc_cpu_ns, proc_cpu_s, run_timed
from plan import Plan

from gpuconsole.config import NodeConfig, load_config
from gpuconsole.ssh.connection import NodeConnection
from groups.common import TTL_S, new_req_id, node_kwargs


async def _state_ops(cfg: NodeConfig, pairs: int, renews: int, pings: int) -> dict[str, Any]:
    conn = await NodeConnection.open(cfg)
    try:
        for _ in range(10):  # warm-up: first writes create the files, caches fill
            lease = await conn.request("reserve", {"gpus": 1, "ttl_s": TTL_S, "req_id": new_req_id()})
            await conn.request("release", {"id": lease["id"], "req_id": new_req_id()})
        reserve_ms: list[float] = []
        release_ms: list[float] = []
        for _ in range(pairs):
            started = time.perf_counter()
            lease = await conn.request("reserve", {"gpus": 1, "ttl_s": TTL_S, "req_id": new_req_id()})
            mid = time.perf_counter()
            await conn.request("release", {"id": lease["id"], "req_id": new_req_id()})
            reserve_ms.append(ms(mid - started))
            release_ms.append(ms(time.perf_counter() - mid))
        held = await conn.request("reserve", {"gpus": 1, "ttl_s": TTL_S, "req_id": new_req_id()})
        renew_ms: list[float] = []
        for _ in range(renews):
            started = time.perf_counter()
            await conn.request("renew", {"id": held["id"], "ttl_s": TTL_S, "req_id": new_req_id()})
            renew_ms.append(ms(time.perf_counter() - started))
        await conn.request("release", {"id": held["id"], "req_id": new_req_id()})
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
            state["applied"][new_req_id()] = {"bt": now_bt, "res": dict(result, id=f"r-fill{index}")}
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


async def _ssh_limits(cfg: NodeConfig, plan: Plan) -> tuple[list[float], list[float], list[float]]:
    exec_ms: list[float] = []
    async with asyncssh.connect(cfg.host, **node_kwargs(cfg)) as conn:
        for index in range(plan.exec_n + 2):
            started = time.perf_counter()
            await conn.run("true", check=True)
            if index >= 2:
                exec_ms.append(ms(time.perf_counter() - started))
    handshake_ms: list[float] = []
    for index in range(plan.handshake_n + 1):
        started = time.perf_counter()
        conn = await asyncssh.connect(cfg.host, **node_kwargs(cfg))
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
    """η_res = reserve p50 / (agent RTT p50 + durable write p50), target ≤ 3 (docs/design.md section 5)."""
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
