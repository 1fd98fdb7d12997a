"""The `peers` group: gpuconsole against the tools an admin would otherwise use, on the same demo nodes.

Fan-out: `status --json` (cold) vs `pdsh -R ssh`, ClusterShell's `clush` and a sequential OpenSSH
loop, each running the same probe per node (host load and memory, the node's state file, the
processes bound to its simulated GPUs), interleaved per repetition. Queue: sequential `submit`s of
`true` vs task-spooler's `tsp true` (and Slurm's `sbatch` where installed: skipped here).
Every OpenSSH-based peer verifies host keys against the demo's known_hosts and connects to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.util
import json
import resource
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drivers import DemoFleet, DemoProcess
from harness import Check, Result, bench_env, cli_argv, ms, percentile
from plan import PeerPlan

from gpuconsole.config import load_config
from gpuconsole.core.fleet import Fleet
from groups.common import Series, demo_children, measured, wait_reaped

# The probe: what the agent reads for one snapshot, as one `python3 -c`: load and memory, the
# node's state file, and every process bound to one of its simulated GPUs (environment scan, as
# gpuconsole.node.gpus.SimulatedGpus does). One host line, then one line per GPU, so a server that
# loses the tail of a command's output shows up in the line counts.
PROBE_PY = r"""import json, os, sys
n = int(sys.argv[1]); key = os.environ.get("GPUCONSOLE_SIM_NODE", "")
root = os.environ.get("GPUCONSOLE_BENCH_STATE_ROOT", "")
host = {"load": open("/proc/loadavg").read().split()[:3]}
host["mem_kib"] = {l.split(":")[0]: int(l.split()[1]) for l in open("/proc/meminfo")
                   if l.startswith(("MemTotal:", "MemAvailable:"))}
try:
    state = json.load(open(os.path.join(root, key.rsplit(".", 1)[0], "state.json")))
except (OSError, ValueError):
    state = {}
host["state_keys"] = len(state) if isinstance(state, dict) else 0
gpus = [[] for _ in range(n)]
for pid in os.listdir("/proc"):
    if not pid.isdigit():
        continue
    try:
        env = dict(x.split(b"=", 1) for x in open("/proc/%s/environ" % pid, "rb").read().split(b"\0") if b"=" in x)
    except OSError:
        continue
    if env.get(b"GPUCONSOLE_SIM_NODE") == key.encode() and b"CUDA_VISIBLE_DEVICES" in env:
        for item in env[b"CUDA_VISIBLE_DEVICES"].split(b","):
            if item.strip().isdigit() and int(item) < n:
                gpus[int(item)].append(int(pid))
print(json.dumps(host))
for index in range(n):
    print(json.dumps({"gpu": index, "pids": gpus[index]}))
"""
PEER_TIMEOUT_S = 300.0
DRAIN_POLL_S = 0.05  # the drain rows' resolution


def probe_command(gpus: int) -> str:
    """The probe as one shell command line (the same string for every node and every peer); the
    node's state root comes from the demo's environment (drivers.DemoProcess)."""
    return f"python3 -c '{PROBE_PY}' {gpus}"


@dataclass
class Target:
    """The nodes the peers reach: names, ports, the ssh_config that pins them, the expected lines."""

    names: list[str]
    ssh_config: Path
    command: str
    lines_per_node: int


def write_ssh_config(path: Path, nodes: list[tuple[str, int, str, str]]) -> Path:
    """An ssh_config with one Host alias per (name, port, identity file, known_hosts): 127.0.0.1,
    its port, strict host key checking against that known_hosts only."""
    parts = []
    for name, port, identity, known_hosts in nodes:
        parts.append(f"Host {name}\n  HostName 127.0.0.1\n  Port {port}\n  IdentityFile {identity}\n"
                     f"  IdentitiesOnly yes\n  UserKnownHostsFile {known_hosts}\n"
                     "  GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking yes\n"
                     "  BatchMode yes\n  LogLevel ERROR\n")
    path.write_text("".join(parts))
    return path


def demo_target(demo: DemoProcess | DemoFleet, gpus: int) -> Target:
    """The demo's nodes as the OpenSSH peers see them (the demo's own ports and known_hosts)."""
    config = load_config(str(demo.config_path))
    nodes = [(n.name, n.port, str(n.identity_file), str(n.known_hosts)) for n in config.nodes]
    ssh_config = write_ssh_config(demo.root / "ssh_config", nodes)
    return Target([n[0] for n in nodes], ssh_config, probe_command(gpus), gpus + 1)


def run_checked(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """(wall s, children's CPU s, stdout) of one peer command; a failure raises with its stderr."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    out = subprocess.run(argv, capture_output=True, text=True, timeout=PEER_TIMEOUT_S,
                         env=env or bench_env(), stdin=subprocess.DEVNULL, check=False)
    elapsed_s = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        raise RuntimeError(f"{argv[0]} exit {out.returncode}: {out.stderr[-400:]}")
    return elapsed_s, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime, out.stdout


def _prefixed_lines(stdout: str) -> Counter[str]:
    """Lines per node of pdsh/clush output (`node: text`)."""
    return Counter(line.split(": ", 1)[0] for line in stdout.splitlines() if ": " in line)


def run_pdsh(target: Target) -> tuple[float, float, Counter[str]]:
    env = {**bench_env(), "PDSH_SSH_ARGS": f"-F {target.ssh_config} -l%u %h"}
    fanout = str(max(32, len(target.names)))
    wall, cpu, out = run_checked(["pdsh", "-R", "ssh", "-f", fanout, "-w", ",".join(target.names),
                           target.command], env)
    return wall, cpu, _prefixed_lines(out)


def run_clush(target: Target) -> tuple[float, float, Counter[str]]:
    fanout = str(max(64, len(target.names)))
    wall, cpu, out = run_checked(["clush", "-f", fanout, "-o", f"-F {target.ssh_config}",
                           "-w", ",".join(target.names), target.command])
    return wall, cpu, _prefixed_lines(out)


def run_ssh_loop(target: Target) -> tuple[float, float, Counter[str]]:
    """`for h in hosts; do ssh h PROBE; done`: a new ssh process and connection per node."""
    wall = cpu = 0.0
    lines: Counter[str] = Counter()
    for name in target.names:
        one_wall, one_cpu, out = run_checked(["ssh", "-F", str(target.ssh_config), name, target.command])
        wall, cpu = wall + one_wall, cpu + one_cpu
        lines[name] = len(out.splitlines())
    return wall, cpu, lines


def run_gpuconsole(config_path: Path, nodes: int, keeper_env: dict[str, str] | None = None
                   ) -> tuple[float, float, Counter[str]]:
    """`status --json`: every node must be reachable (one count per reachable node).

    Cold unless `keeper_env`: GPUCONSOLE_KEEPER=0 (what `--no-keeper` sets), a direct connection
    per node, never a keeper's.
    """
    env = {**bench_env(), **(keeper_env or {"GPUCONSOLE_KEEPER": "0"})}
    wall, cpu, out = run_checked(cli_argv("--config", str(config_path), "status", "--json"), env)
    reachable = Counter(n["name"] for n in json.loads(out)["nodes"] if n["reachable"])
    if len(reachable) != nodes:
        raise RuntimeError(f"status --json: {len(reachable)}/{nodes} nodes reachable")
    return wall, cpu, reachable


PEERS: dict[str, tuple[str | None, Callable[[Target], tuple[float, float, Counter[str]]]]] = {
    "pdsh -R ssh": ("pdsh", run_pdsh),
    "clush": ("clush", run_clush),
    "OpenSSH loop": ("ssh", run_ssh_loop),
}


def installed_peers() -> tuple[list[str], list[Result]]:
    """The peers whose binary is on PATH, and a skip row for each one that is not."""
    present, skipped = [], []
    for label, (binary, _) in PEERS.items():
        if binary is None or shutil.which(binary):
            present.append(label)
        else:
            skipped.append(Result(f"peer {label}: skipped", "peers", "ms",
                                  notes=f"{binary} not installed (apt-get install -y {binary})"))
    return present, skipped


COLD = "gpuconsole status --json"
WARM = "gpuconsole status --json (keeper warm)"


def keeper_available() -> bool:
    """Whether this checkout has the per-user connection keeper (issue 14, item 1)."""
    return importlib.util.find_spec("gpuconsole.core.keeper_client") is not None


@contextlib.contextmanager
def warm_keeper(demo: DemoProcess | DemoFleet, nodes: int, config_path: Path | None = None,
                timeout_s: float = 60.0) -> Iterator[tuple[dict[str, str] | str, frozenset[int]]]:
    """A keeper for the config (default: the demo's) in a private runtime dir, up and holding an
    agent per node: (the environment that reaches it, the demo's children it keeps), or (why not,
    the children) when it does not warm up. Stopped on the way out, its agents reaped."""
    config_path = config_path or demo.config_path
    runtime = demo.root / "xdg"
    runtime.mkdir(mode=0o700, exist_ok=True)
    env = {"GPUCONSOLE_KEEPER": "1", "XDG_RUNTIME_DIR": str(runtime)}
    keeper_cmd = cli_argv("--config", str(config_path), "keeper")
    wait_reaped(demo)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            wait_reaped(demo, persistent=demo_children(demo))
            run_gpuconsole(config_path, nodes, env)  # the first one starts it
            status = subprocess.run([*keeper_cmd, "status", "--json"], capture_output=True, text=True,
                                    env={**bench_env(), **env}, timeout=60, check=False)
            if status.returncode == 0 and len(demo_children(demo)) >= nodes:
                break
            if time.monotonic() > deadline:
                yield (f"keeper not warm in {timeout_s:g} s: {status.stdout[-200:]} {status.stderr[-200:]}",
                       demo_children(demo))
                return
            time.sleep(0.2)
        yield env, demo_children(demo)
    finally:
        subprocess.run([*keeper_cmd, "stop"], capture_output=True, env={**bench_env(), **env}, timeout=60,
                       check=False)
        wait_reaped(demo)


def _target(label: str, nodes: int, ours: str, peer: str | None) -> dict[str, Any]:
    """Issue 14's targets for a fan-out row (a wall-time row when `peer` is None, else the ratio of
    `ours` to that peer); none for other rows."""
    checks: list[Check] = []
    if peer is None and label == "fan-out" and ours == WARM and nodes == 64:
        checks = [Check("median", "<=", 250.0)]
    elif peer == "pdsh -R ssh" and label == "fan-out" and ours == WARM and nodes == 64:
        checks = [Check("value", "<=", 0.2)]  # ≥ 5× faster than pdsh
    elif peer == "pdsh -R ssh" and label == "fan-out" and ours == COLD and nodes == 1:
        checks = [Check("value", "<=", 1.5)]
    elif peer in ("pdsh -R ssh", "clush") and label.startswith("RTT 20 ") and ours == COLD and nodes == 64:
        checks = [Check("value", "<", 1.0)]  # faster than pdsh and clush over a 20 ms link
    if not checks:
        return {}
    return {"checks": checks, "budget": " and ".join(f"{c.stat} {c.op} {c.limit:g}" for c in checks)}


def fanout_rows(label: str, nodes: int, series: dict[str, Series], lines: dict[str, list[int]],
                expected: int, group: str, note: str) -> list[Result]:
    """Wall-time rows, gpuconsole/peer ratios of medians, and each peer's lines received / expected."""
    rows = [Result(f"{label} {kind}, {nodes} nodes", group, "ms", s.wall_ms, extra=s.extra(), notes=note,
                   **_target(label, nodes, kind, None))
            for kind, s in series.items() if s.wall_ms]
    for kind, s in series.items():
        if kind.startswith("gpuconsole") or not s.wall_ms:
            continue
        for ours, tag in ((COLD, "gpuconsole"), (WARM, "gpuconsole (keeper warm)")):
            if series.get(ours) and series[ours].wall_ms:
                rows.append(Result(f"{label} {tag} / {kind}, {nodes} nodes", group, "x",
                                   value=percentile(series[ours].wall_ms, 50) / percentile(s.wall_ms, 50),
                                   notes="ratio of medians, same run (< 1: gpuconsole is faster)",
                                   **_target(label, nodes, ours, kind)))
        got = lines.get(kind, [])
        if got:
            rows.append(Result(f"{label} {kind} lines received / expected, {nodes} nodes", group,
                               "fraction", value=min(got) / expected,
                               extra={"expected_per_run": expected, "received_per_run": got},
                               notes="worst run; < 1: the server lost the tail of some outputs"))
    return rows


def bench_fanout(plan: PeerPlan, work: Path, gpus: int = 8) -> list[Result]:
    """At each fleet size: gpuconsole and every installed peer, alternating; repetition 0 is a warm-up."""
    present, results = installed_peers()
    keeper = keeper_available()
    if not keeper:
        results.append(Result(f"fan-out {WARM}: skipped", "peers", "ms",
                              notes="no per-user connection keeper in this checkout"))
    for nodes in plan.fanout_nodes:
        kinds = [COLD, *([WARM] if keeper else []), *present]
        series = {k: Series.empty() for k in kinds}
        lines: dict[str, list[int]] = {k: [] for k in present}
        with DemoFleet(work / f"peers-{nodes}", nodes, gpus, plan.demo_processes) as demo, \
                (warm_keeper(demo, nodes) if keeper else contextlib.nullcontext((None, frozenset()))) as warm:
            keeper_env, kept = warm
            if isinstance(keeper_env, str):
                kinds.remove(WARM)
                results.append(Result(f"fan-out {WARM}: skipped, {nodes} nodes", "peers", "ms", notes=keeper_env))
            target = demo_target(demo, gpus)
            runs: dict[str, Callable[[], tuple[float, float, Counter[str]]]] = {
                COLD: functools.partial(run_gpuconsole, demo.config_path, nodes),
                WARM: functools.partial(run_gpuconsole, demo.config_path, nodes,
                                        keeper_env if isinstance(keeper_env, dict) else None),
                **{kind: functools.partial(PEERS[kind][1], target) for kind in present}}
            for rep in range(plan.fanout_reps + 1):
                keep = rep > 0
                for kind in kinds:
                    got = measured(demo, series[kind] if keep else None, runs[kind], kept)
                    if keep and kind in lines:
                        lines[kind].append(sum(got[n] for n in target.names))
        results += fanout_rows("fan-out", nodes, series, lines, nodes * target.lines_per_node, "peers",
                               "cold: one process per call; same probe per node")
    return results


# -- the queue ------------------------------------------------------------------------------------


async def _drained(config_path: Path, ids: set[str], timeout_s: float) -> float:
    """perf_counter time at which every job in `ids` was seen ended (final state or pruned)."""
    config = load_config(str(config_path))
    terminal = {"succeeded", "failed", "cancelled", "preempted", "lost"}
    deadline = time.monotonic() + timeout_s
    async with Fleet(config) as fleet:
        node = config.nodes[0].name
        while time.monotonic() < deadline:
            reply = await fleet.request(node, "jobs", {})
            listed = {job["id"]: job["state"] for job in reply["jobs"]}
            if all(listed.get(i, "succeeded") in terminal for i in ids):
                return time.perf_counter()
            await asyncio.sleep(DRAIN_POLL_S)
    raise RuntimeError(f"queue: {len(ids)} gpuconsole jobs not ended in {timeout_s:g} s")


def _tsp_drained(env: dict[str, str], timeout_s: float) -> float:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        listing = subprocess.run(["tsp", "-l"], capture_output=True, text=True, env=env, timeout=30,
                                 check=True).stdout.splitlines()[1:]
        if not any(line.split()[1] in ("running", "queued", "allocating") for line in listing if line.split()):
            return time.perf_counter()
        time.sleep(DRAIN_POLL_S)
    raise RuntimeError(f"queue: tsp jobs not ended in {timeout_s:g} s")


def bench_queue(plan: PeerPlan, work: Path) -> list[Result]:
    """N sequential `submit --gpus 1 -- true` and N `tsp true`, alternating submit by submit, on one
    8-GPU node and 8 tsp slots; then each one's drain, from its last submit's return."""
    rows: list[Result] = []
    if shutil.which("sbatch") is None:
        rows.append(Result("queue Slurm sbatch: skipped", "peers", "jobs/s",
                           notes="Slurm not installed (sbatch not on PATH)"))
    tsp = shutil.which("tsp") or shutil.which("ts")
    if tsp is None:
        rows.append(Result("queue task-spooler: skipped", "peers", "jobs/s",
                           notes="task-spooler not installed (apt-get install -y task-spooler)"))
    root = work / "peers-queue"
    root.mkdir(parents=True, exist_ok=True)
    env = {**bench_env(), "TS_SOCKET": str(root / "tsp.sock"), "TMPDIR": str(root)}
    ours_ms: list[float] = []
    ours_last = 0.0
    theirs_ms: list[float] = []
    ids: set[str] = set()
    with DemoProcess(root, 1, 8) as demo:
        submit = cli_argv("--config", str(demo.config_path), "submit", "--gpus", "1", "--json", "--", "true")
        try:
            if tsp is not None:
                subprocess.run([tsp, "-S", "8"], env=env, capture_output=True, timeout=30, check=True)
            for _ in range(plan.queue_jobs):
                wall, _, out = run_checked(submit)
                ours_ms.append(ms(wall))
                ids.add(json.loads(out)["id"])
                ours_last = time.perf_counter()
                if tsp is not None:
                    theirs_ms.append(ms(run_checked([tsp, "true"], env)[0]))
            theirs_last = time.perf_counter()
            theirs_drain_s = (_tsp_drained(env, 300.0) - theirs_last) if tsp else None
            ours_drain_s = asyncio.run(_drained(demo.config_path, ids, 300.0)) - ours_last
        finally:
            if tsp is not None:
                subprocess.run([tsp, "-K"], env=env, capture_output=True, timeout=30, check=False)
    n = plan.queue_jobs
    rows.append(Result(f"queue gpuconsole submit (fresh process), {n} jobs", "peers", "jobs/s",
                       value=n / (sum(ours_ms) / 1000), extra={"submit_ms_p50": percentile(ours_ms, 50),
                                                               "submit_ms_p95": percentile(ours_ms, 95)}))
    rows.append(Result(f"queue gpuconsole drain after last submit, {n} jobs", "peers", "ms",
                       value=ms(ours_drain_s), notes="last submit returned → every job seen ended "
                       "(`jobs` polled every 0.05 s, after tsp's drain)"))
    if tsp is not None and theirs_drain_s is not None:
        rows += [
            Result(f"queue tsp true, {n} jobs", "peers", "jobs/s", value=n / (sum(theirs_ms) / 1000),
                   extra={"submit_ms_p50": percentile(theirs_ms, 50), "slots": 8}),
            Result(f"queue tsp drain after last submit, {n} jobs", "peers", "ms",
                   value=ms(theirs_drain_s),
                   notes="last `tsp true` returned → `tsp -l` (every 0.05 s) shows none queued or running"),
            Result(f"queue gpuconsole / tsp time per submit, {n} jobs", "peers", "x",
                   value=sum(ours_ms) / sum(theirs_ms),
                   notes="submits alternating in one run (> 1: tsp is faster)"),
        ]
    return rows

