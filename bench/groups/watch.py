"""The `watch` group: the unattended watcher's CPU and memory at N nodes, its idle_reservation latency
and a clean exit on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drivers import DemoProcess
from harness import (
    Check,
    Result,
    bench_env,
    cli_argv,
    machine_cpu_ticks,
    ms,
    proc_children,
    proc_cpu_ns,
    proc_cpu_s,
    proc_tree_cpu_ns,
)
from plan import CloudPlan

from gpuconsole.config import NodeConfig, load_config
from gpuconsole.ssh.connection import NodeConnection
from groups.common import TTL_S

WATCH_CPU_BUDGET_PCT = 15.0  # the console's budget at 64 nodes x 8 GPUs at 1 Hz, applied to the watcher
WATCH_CPU_BUDGET = "≤ 15% of one core (64 nodes)"
WATCH_GPUS = 8
WATCH_INTERVAL_S = 1.0
WATCH_IDLE_MINUTES = 0.05  # a 3 s idle window
WATCH_CONNECT_TIMEOUT_S = 180.0
WATCH_ALERT_TIMEOUT_S = 30.0


@dataclass
class _Watcher:
    """`gpuconsole watch --json` in a subprocess; a thread timestamps each alert line on arrival."""

    proc: subprocess.Popen[str]
    stderr_path: Path
    alerts: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    bad_lines: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None

    @classmethod
    def start(cls, config: Path, work: Path) -> _Watcher:
        argv = cli_argv("--config", str(config), "watch", "--json", "--interval", f"{WATCH_INTERVAL_S:g}",
                        "--idle-minutes", f"{WATCH_IDLE_MINUTES:g}", "--state-file", str(work / "watch-state.json"))
        stderr_path = work / "watch.stderr"
        with open(stderr_path, "w") as stderr:
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=stderr, text=True,
                                    stdin=subprocess.DEVNULL, env=bench_env(), start_new_session=True)
        watcher = cls(proc, stderr_path)
        watcher.reader = threading.Thread(target=watcher._read, name="watch-stdout", daemon=True)
        watcher.reader.start()
        return watcher

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            seen = time.monotonic()
            try:
                self.alerts.append((seen, json.loads(line)))
            except ValueError:
                self.bad_lines.append(line)

    def alive(self) -> None:
        """Raise if the watcher has exited (a crash of the group)."""
        if self.proc.poll() is not None:
            raise RuntimeError(f"watch exited early with {self.proc.returncode}: {self.stderr_tail()}")

    def stderr_tail(self) -> str:
        return self.stderr_path.read_text()[-800:]

    def stop(self) -> float:
        """SIGTERM and wait; a non-zero exit raises. Returns the seconds from signal to exit."""
        if self.proc.poll() is not None:
            raise RuntimeError(f"watch exited early with {self.proc.returncode}: {self.stderr_tail()}")
        started = time.perf_counter()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)  # its own session: only what we started
            self.proc.wait(10)
            raise RuntimeError(f"watch did not exit within 30 s of SIGTERM: {self.stderr_tail()}") from None
        elapsed_s = time.perf_counter() - started
        if self.reader is not None:
            self.reader.join(5)
        if code != 0:
            raise RuntimeError(f"watch exited {code} on SIGTERM: {self.stderr_tail()}")
        return elapsed_s

    def kill(self) -> None:
        """Leave nothing behind after a failure (its own session: only what we started)."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def _proc_status_kib(pid: int, key: str) -> float:
    """A `Key:  N kB` line of /proc/PID/status (VmRSS, VmHWM), in KiB."""
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith(f"{key}:"):
                return float(line.split()[1])
    raise RuntimeError(f"/proc/{pid}/status: no {key}")


def _wait_connected(watcher: _Watcher, demo: DemoProcess, nodes: int) -> float:
    """Wait until the demo serves an agent session per node (the watcher's poller is connected)."""
    started = time.monotonic()
    while len(proc_children(demo.pid)) < nodes:
        watcher.alive()
        if time.monotonic() - started > WATCH_CONNECT_TIMEOUT_S:
            raise RuntimeError(f"watch: {len(proc_children(demo.pid))}/{nodes} agent sessions after "
                               f"{WATCH_CONNECT_TIMEOUT_S:g} s: {watcher.stderr_tail()}")
        time.sleep(0.05)
    return time.monotonic() - started


def _cpu_window(watcher: _Watcher, demo: DemoProcess, window_s: float) -> dict[str, Any]:
    """The watcher's CPU (all threads, schedstat ns; stat ticks as a cross-check) over the window."""
    pid = watcher.proc.pid
    alerts_before = len(watcher.alerts)
    ns0, ticks0, demo_ns0 = proc_cpu_ns(pid), proc_cpu_s(pid), proc_tree_cpu_ns(demo.pid)
    busy0, total0 = machine_cpu_ticks()
    wall0 = time.monotonic()
    deadline = wall0 + window_s
    while (left := deadline - time.monotonic()) > 0:
        watcher.alive()
        time.sleep(min(left, 0.5))
    ns1, ticks1, demo_ns1 = proc_cpu_ns(pid), proc_cpu_s(pid), proc_tree_cpu_ns(demo.pid)
    busy1, total1 = machine_cpu_ticks()
    wall_s = time.monotonic() - wall0
    if ns0 is None or ns1 is None:
        raise RuntimeError("watch: /proc schedstat unreadable")
    return {
        "cpu_pct": 100.0 * (ns1 - ns0) / 1e9 / wall_s,
        "cpu_pct_ticks": 100.0 * (ticks1 - ticks0) / wall_s,
        "wall_s": wall_s,
        "demo_and_agents_cpu_pct": 100.0 * (demo_ns1 - demo_ns0) / 1e9 / wall_s,
        "machine_cpu_busy_pct": 100.0 * (busy1 - busy0) / max(1, total1 - total0),
        "rss_mib": _proc_status_kib(pid, "VmRSS") / 1024.0,
        "rss_peak_mib": _proc_status_kib(pid, "VmHWM") / 1024.0,
        "threads": len(os.listdir(f"/proc/{pid}/task")),
        "alerts_in_window": len(watcher.alerts) - alerts_before,
    }


async def _idle_trial(watcher: _Watcher, cfg: NodeConfig) -> dict[str, float]:
    """Reserve a GPU and leave it idle: seconds from the reserve reply to its idle_reservation line."""
    conn = await NodeConnection.open(cfg)
    try:
        lease = await conn.request("reserve", {"gpus": 1, "ttl_s": TTL_S, "req_id": uuid.uuid4().hex})
        reserved = time.monotonic()
        while True:
            watcher.alive()
            seen = next((at for at, alert in list(watcher.alerts)
                         if alert.get("kind") == "idle_reservation" and alert.get("reservation") == lease["id"]),
                        None)
            if seen is not None:
                break
            if time.monotonic() - reserved > WATCH_IDLE_MINUTES * 60 + WATCH_ALERT_TIMEOUT_S:
                raise RuntimeError(f"watch: no idle_reservation for {lease['id']} on {cfg.name}; alerts: "
                                   f"{[a for _, a in watcher.alerts][-5:]}; stderr: {watcher.stderr_tail()}")
            await asyncio.sleep(0.01)
        await conn.request("release", {"id": lease["id"], "req_id": uuid.uuid4().hex})
        return {"latency_s": seen - reserved}
    finally:
        await conn.close()


def _check_all_polled(state_path: Path, names: list[str], gpus: int, since_s: float) -> int:
    """After the watcher saved its state on SIGTERM: every node's GPUs have a window whose last
    sample is newer than `since_s` (wall clock), so the CPU window covered the whole fleet."""
    windows = json.loads(state_path.read_text())["detector"]["windows"]
    fresh = {key for key, window in windows.items() if window["last_sample_s"] >= since_s}
    missing = [name for name in names if not all(f"{name}/{index}" in fresh for index in range(gpus))]
    if missing:
        raise RuntimeError(f"watch: no recent samples of {len(missing)} node(s) ({missing[:5]}) in its state")
    return len(fresh)


def bench_watch(plan: CloudPlan, work: Path) -> list[Result]:
    """`gpuconsole watch` against N nodes x 8 GPUs at 1 Hz: CPU, RSS, idle-alert latency, clean exit.

    The demo runs in its own process (DemoProcess, on-prem only), so neither its SSH servers nor
    its agents are counted as the watcher's CPU; they share the machine's cores (see extra).
    """
    nodes = plan.watch_nodes
    label = f"{nodes} nodes x {WATCH_GPUS} GPUs, 1 Hz"
    window_s = WATCH_IDLE_MINUTES * 60
    with DemoProcess(work / "watch", nodes, WATCH_GPUS) as demo:
        config = load_config(str(demo.config_path))
        spawned = time.monotonic()
        watcher = _Watcher.start(demo.config_path, work)
        try:
            connected_s = _wait_connected(watcher, demo, nodes)
            # Sessions exist once their commands started: give the agents time to say hello, every
            # node time for its first snapshot, and the watcher time for a judgement of them all.
            time.sleep(WATCH_INTERVAL_S + 0.5 + 0.02 * nodes)
            ready_s = time.monotonic() - spawned
            usage = _cpu_window(watcher, demo, plan.watch_window_s)
            polled_since_s = time.time() - 3 * config.defaults.poll_seconds
            rng = random.Random(1)
            trials = []
            for index in range(plan.watch_idle_trials):
                time.sleep(rng.uniform(0.0, WATCH_INTERVAL_S))  # reserve at any phase of poll and judgement
                trials.append(asyncio.run(_idle_trial(watcher, config.nodes[index % nodes])))
            stop_s = watcher.stop()
        except BaseException:
            watcher.kill()
            raise
    gpu_windows = _check_all_polled(work / "watch-state.json", [n.name for n in config.nodes], WATCH_GPUS,
                                    polled_since_s)
    beyond_ms = [ms(t["latency_s"] - window_s) for t in trials]
    cpu_row = Result(
        f"watch CPU, {label}, {plan.watch_window_s:g} s window", "watch", "% core", value=usage["cpu_pct"],
        notes=f"/proc schedstat of the watcher (all threads); stat ticks say {usage['cpu_pct_ticks']:.2f}%; "
              f"demo + agents (not counted) {usage['demo_and_agents_cpu_pct']:.1f}%; "
              f"{usage['alerts_in_window']} alerts in the window",
        extra={**usage, "connect_all_s": connected_s, "spawn_to_window_s": ready_s,
               "demo_start_s": demo.start_s, "gpu_windows_fresh_at_stop": gpu_windows})
    if not plan.quick:  # the console's budget is stated at 64 nodes
        cpu_row.budget, cpu_row.checks = WATCH_CPU_BUDGET, [Check("value", "<=", WATCH_CPU_BUDGET_PCT)]
    return [
        cpu_row,
        Result(f"watch RSS, {label}", "watch", "MiB", value=usage["rss_mib"],
               notes=f"VmRSS at the end of the CPU window; peak (VmHWM) {usage['rss_peak_mib']:.1f} MiB",
               extra={"rss_peak_mib": usage["rss_peak_mib"], "threads": usage["threads"]}),
        Result(f"watch idle_reservation latency beyond the {window_s:g} s window, {label}", "watch", "ms",
               beyond_ms,
               notes="reserve reply (in-process) → alert line read on stdout, minus the idle window; "
                     f"expected up to one poll ({config.defaults.poll_seconds:g} s) + one judgement interval "
                     f"({WATCH_INTERVAL_S:g} s)",
               extra={"latency_s": [t["latency_s"] for t in trials], "sigterm_to_exit_ms": ms(stop_s)}),
    ]
