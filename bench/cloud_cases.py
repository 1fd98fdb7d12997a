"""The `cloud` and `watch` benchmark groups: cloud burst CLI costs and the idle watcher's footprint.

Kept apart from cases.py (the design.md section 5 budgets). Each function returns Result rows; see
README.md for what is measured, how and why.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import (
    Check,
    DemoProcess,
    Result,
    Timed,
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

from gpuconsole.config import NodeConfig, load_config
from gpuconsole.ssh.connection import NodeConnection

BOOT_S = 0.3  # the demo's simulated boot: a running instance answers SSH this long after
DISCOVERY_BUDGET_MS = 1000.0
DISCOVERY_BUDGET = "≤ +1.0 s"
WATCH_CPU_BUDGET_PCT = 15.0  # the console's budget at 64 nodes x 8 GPUs at 1 Hz, applied to the watcher
WATCH_CPU_BUDGET = "≤ 15% of one core (64 nodes)"
WATCH_GPUS = 8
WATCH_INTERVAL_S = 1.0
WATCH_IDLE_MINUTES = 0.05  # a 3 s idle window
WATCH_CONNECT_TIMEOUT_S = 180.0
WATCH_ALERT_TIMEOUT_S = 30.0
TTL_S = 3600.0


@dataclass(frozen=True)
class CloudPlan:
    """Sizes and repetitions of the two groups: full mode, or a quick CI smoke run."""

    quick: bool
    cloud_up_runs: int
    cloud_status_instances: int
    cloud_status_reps: int
    cloud_ls_reps: int
    import_runs: int
    watch_nodes: int
    watch_window_s: float
    watch_idle_trials: int

    @classmethod
    def make(cls, quick: bool) -> CloudPlan:
        if quick:
            return cls(True, 1, 1, 3, 3, 2, 4, 5.0, 1)
        return cls(False, 5, 4, 10, 10, 7, 64, 30.0, 5)


def _cli(config: Path, *args: str) -> Timed:
    """One `python -m gpuconsole --config CONFIG ARGS` in a fresh process; a failure raises."""
    timed = run_timed(cli_argv("--config", str(config), *args), timeout_s=120.0)
    if timed.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: exit {timed.returncode}: {timed.stderr[-500:]}")
    return timed


def _import_ms(statement: str, runs: int) -> float:
    """Best-of-N wall time of a fresh `python -c STATEMENT` (its inherent cost, least noise)."""
    return min(ms(run_timed([sys.executable, "-c", statement]).elapsed_s) for _ in range(runs))


# -- cloud: `cloud up`, discovery in `status`, `cloud ls` ----------------------------------------


def on_prem_copy(config: Path, dest: Path) -> Path:
    """The config without its [cloud.aws] table (every other line kept): the same fleet, on-prem only."""
    kept: list[str] = []
    in_cloud = False
    for line in config.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("["):
            in_cloud = stripped.strip("[]").strip().startswith("cloud")
        if not in_cloud:
            kept.append(line)
    dest.write_text("\n".join(kept) + "\n")
    if "[cloud" in dest.read_text():
        raise RuntimeError(f"{dest}: a [cloud.*] table is left")
    return dest


@dataclass
class _UpRuns:
    """`cloud up` samples: wall ms, phases_s per run, `cloud down` ms, the instance still running."""

    wall_ms: list[float] = field(default_factory=list)
    phases: list[dict[str, float]] = field(default_factory=list)
    down_ms: list[float] = field(default_factory=list)
    kept: str | None = None

    def down(self, config: Path, instance_id: str) -> None:
        """Terminate one instance with a timed `cloud down ID --json`."""
        reply = _cli(config, "cloud", "down", instance_id, "--json")
        if [item["id"] for item in json.loads(reply.stdout)["instances"]] != [instance_id]:
            raise RuntimeError(f"cloud down {instance_id}: unexpected reply {reply.stdout!r}")
        self.down_ms.append(ms(reply.elapsed_s))


def _cloud_up(plan: CloudPlan, config: Path, runs: _UpRuns) -> None:
    """`cloud up --json` runs, one instance each, terminated before the next; the last is kept
    running (`runs.kept`) as one of the discovery step's instances, and terminated after it."""
    for index in range(plan.cloud_up_runs):
        up = _cli(config, "cloud", "up", "--json")
        instances = json.loads(up.stdout)["instances"]
        if len(instances) != 1 or set(instances[0]["phases_s"]) != {"pending", "running", "ssh", "agent"}:
            raise RuntimeError(f"cloud up: unexpected reply {instances}")
        runs.wall_ms.append(ms(up.elapsed_s))
        runs.phases.append(instances[0]["phases_s"])
        if index == plan.cloud_up_runs - 1:
            runs.kept = instances[0]["id"]
        else:
            runs.down(config, instances[0]["id"])


def _up_rows(runs: _UpRuns) -> list[Result]:
    """Rows for `cloud up` (wall, agent ready, phase medians) and `cloud down`."""
    agent_ms = [ms(phases["agent"]) for phases in runs.phases]
    medians = {f"{phase}_ms_median": percentile([ms(p[phase]) for p in runs.phases], 50)
               for phase in ("pending", "running", "ssh", "agent")}
    medians["outside_wait_ms_median"] = percentile(
        [wall - agent for wall, agent in zip(runs.wall_ms, agent_ms, strict=True)], 50)
    return [
        Result("cloud up --json (1 instance, launch → agent ready), fresh process", "cloud", "ms",
               runs.wall_ms,
               notes=f"local EC2 (moto); simulated boot {BOOT_S:g} s + the demo's 0.2 s EC2 poll are in the "
                     "agent-ready time; `outside_wait` = wall − agent ready (interpreter, imports, type "
                     "choice, RunInstances)",
               extra={**medians, "phases_s_runs": runs.phases}),
        Result("cloud up: agent ready after launch (phases_s.agent)", "cloud", "ms", agent_ms,
               notes=f"includes the simulated {BOOT_S:g} s boot; running = "
                     f"{medians['running_ms_median']:.0f} ms, SSH = {medians['ssh_ms_median']:.0f} ms (medians)"),
        Result("cloud down ID --json (terminate 1 instance), fresh process", "cloud", "ms", runs.down_ms),
    ]


def _discovery(plan: CloudPlan, work: Path, config: Path, kept: str) -> list[Result]:
    """`status --json` with [cloud.aws] and N running instances vs on-prem only; then `cloud ls`.

    `kept` (the last `cloud up` run's instance) is one of the N; the others are launched here and
    terminated at the end (untimed).
    """
    count = plan.cloud_status_instances
    more: list[str] = []
    if count > 1:
        launched = _cli(config, "cloud", "up", "--count", str(count - 1), "--json")
        more = [item["id"] for item in json.loads(launched.stdout)["instances"]]
    ids = [kept, *more]
    try:
        onprem = on_prem_copy(config, work / "cloud-onprem.toml")
        onprem_nodes = len(load_config(str(onprem)).nodes)
        series: dict[str, list[float]] = {"onprem": [], "cloud": []}
        cpu: dict[str, list[float]] = {"onprem": [], "cloud": []}
        # No warm-up repetition: the `cloud ls` and `cloud up` runs before this imported the same
        # modules, and `cloud up` started each instance's agent once.
        for rep in range(plan.cloud_status_reps):
            order = ("cloud", "onprem") if rep % 2 else ("onprem", "cloud")  # alternate: drift hits both
            for variant in order:
                timed = _cli(onprem if variant == "onprem" else config, "status", "--json")
                nodes = json.loads(timed.stdout)["nodes"]
                want = onprem_nodes + (count if variant == "cloud" else 0)
                cloud_up = {n["name"] for n in nodes if n["reachable"] and n["source"] == "cloud"}
                if len(nodes) != want or not all(n["reachable"] for n in nodes):
                    raise RuntimeError(f"status ({variant}): {len(nodes)} nodes, want {want} reachable")
                if variant == "cloud" and cloud_up != set(ids):
                    raise RuntimeError(f"status: cloud nodes {sorted(cloud_up)}, want {sorted(ids)}")
                series[variant].append(ms(timed.elapsed_s))
                cpu[variant].append(ms(timed.cpu_s))
        ls_ms: list[float] = []
        for _ in range(plan.cloud_ls_reps):
            timed = _cli(config, "cloud", "ls", "--json")
            listed = {item["id"] for item in json.loads(timed.stdout)["instances"]}
            if not set(ids) <= listed:
                raise RuntimeError(f"cloud ls: {sorted(set(ids) - listed)} missing")
            ls_ms.append(ms(timed.elapsed_s))
    finally:
        if more:
            _cli(config, "cloud", "down", *more)
    python_ms = _import_ms("pass", plan.import_runs)
    boto3_ms = _import_ms("import boto3", plan.import_runs) - python_ms
    paired = [with_cloud - without for with_cloud, without in zip(series["cloud"], series["onprem"], strict=True)]
    label = f"{count} cloud instance{'s' if count != 1 else ''}"
    return [
        Result("status --json, on-prem only (1 node, no [cloud.aws])", "cloud", "ms", series["onprem"],
               extra={"cli_cpu_ms_median": percentile(cpu["onprem"], 50)}),
        Result(f"status --json with [cloud.aws], 1 on-prem node + {label}", "cloud", "ms", series["cloud"],
               extra={"cli_cpu_ms_median": percentile(cpu["cloud"], 50)}),
        Result(f"status --json: discovery cost ([cloud.aws] − on-prem), {label}", "cloud", "ms", paired,
               budget=DISCOVERY_BUDGET, checks=[Check("median", "<=", DISCOVERY_BUDGET_MS)],
               notes=f"paired per repetition; boto3 import alone ≈ {boto3_ms:.0f} ms (best of "
                     f"{plan.import_runs}); the rest is DescribeInstances and the {count} extra SSH "
                     "connection(s)",
               extra={"import_boto3_ms_best": boto3_ms, "python_start_ms_best": python_ms,
                      "cli_cpu_ms_difference_median":
                      percentile(cpu["cloud"], 50) - percentile(cpu["onprem"], 50)}),
        Result(f"cloud ls --json, {label}, fresh process", "cloud", "ms", ls_ms),
    ]


def bench_cloud(plan: CloudPlan, work: Path) -> list[Result]:
    """The cloud CLI against the demo's local EC2: `cloud up`, discovery in `status`, `cloud ls`.

    The demo runs in this process (DemoThread, as the tests run it): its SSH servers, the moto
    server and the bridge that boots instances as nodes are idle while a CLI process is measured.
    """
    from gpuconsole.demo.cluster import DemoThread

    with DemoThread(work / "cloud-demo", nodes=1, gpus=2, cloud=True, boot_s=BOOT_S,
                    max_instances=max(4, plan.cloud_status_instances)) as demo:
        config = demo.config_path
        # Warm-up: page cache and .pyc files of boto3/botocore, moto's first (slow) requests.
        _cli(config, "cloud", "ls", "--json")
        demo.cloud.emulator.ec2.gpu_counts(["g6.xlarge"])
        runs = _UpRuns()
        try:
            _cloud_up(plan, config, runs)
            assert runs.kept is not None
            rows = _discovery(plan, work, config, runs.kept)
        finally:
            if runs.kept is not None:
                runs.down(config, runs.kept)
        return _up_rows(runs) + rows


# -- watch: the watcher's CPU and memory at N nodes, idle_reservation latency --------------------


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
